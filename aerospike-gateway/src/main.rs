use anyhow::Context;
use clap::Parser;

use aerospike_gateway::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    aerospike_gateway::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.serve.worker_threads.into())
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Some(Command::CheckHealth { url }) => {
                let url = url.unwrap_or_else(|| {
                    format!("http://127.0.0.1:{}/healthz", cli.serve.listen.port())
                });
                aerospike_gateway::check_health(&url).await
            }
            Some(Command::Reconcile { apply }) => {
                aerospike_gateway::reconcile(cli.serve, apply).await
            }
            None => aerospike_gateway::serve(cli.serve).await,
        }
    })
}
