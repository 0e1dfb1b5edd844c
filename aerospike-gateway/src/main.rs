use clap::Parser;

use aerospike_gateway::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    aerospike_gateway::init_tracing();
    match cli.command {
        Some(Command::CheckHealth { url }) => {
            let url = url
                .unwrap_or_else(|| format!("http://127.0.0.1:{}/healthz", cli.serve.listen.port()));
            aerospike_gateway::check_health(&url).await
        }
        Some(Command::Reconcile { apply }) => aerospike_gateway::reconcile(cli.serve, apply).await,
        None => aerospike_gateway::serve(cli.serve).await,
    }
}
