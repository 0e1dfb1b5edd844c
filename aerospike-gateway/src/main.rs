use clap::Parser;

use aerospike_gateway::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    aerospike_gateway::init_tracing();
    match cli.command {
        Some(Command::CheckHealth { url }) => aerospike_gateway::check_health(&url).await,
        None => aerospike_gateway::serve(cli.serve).await,
    }
}
