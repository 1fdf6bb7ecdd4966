//! The `switchyard` binary: parse arguments, set up logging, run the CLI.

use std::process::ExitCode;

use clap::Parser;

/// Allocation is a fifth of the ingest path's CPU (tower's boxed services
/// and futures, bodies, buffers), and glibc's allocator is slow at it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = switchyard::cli::Cli::parse();
    switchyard::telemetry::init_logging();
    switchyard::cli::main(cli).await
}
