//! The `switchyard` binary: parse arguments, set up logging, run the CLI.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = switchyard::cli::Cli::parse();
    switchyard::telemetry::init_logging();
    switchyard::cli::main(cli).await
}
