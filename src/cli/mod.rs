//! Command-line interface: `serve` (the default), `check`, and the ops
//! commands (`routes`, `dlq …`) that talk to a running gateway.

mod ops;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use comfy_table::{ContentArrangement, Table, presets};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::server::{self, Listeners};
use crate::telemetry::error_chain;

/// Exit code for a configuration that does not load.
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for a runtime failure (a port taken, a listener failing).
pub const EXIT_FAILURE: u8 = 1;

/// Switchyard: verify, queue, route and deliver webhooks; dead letters have owners.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH, env = "SWITCHYARD_CONFIG")]
    pub config: PathBuf,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Validate the configuration and print the route inventory.
    Check,
    /// Show the live route inventory of a running gateway; pause or resume a route.
    Routes {
        /// Where the admin API is.
        #[command(flatten)]
        admin: ops::AdminArgs,
        /// Pause or resume; the inventory when omitted.
        #[command(subcommand)]
        command: Option<ops::RoutesCommand>,
    },
    /// Inspect, replay and delete dead letters of a running gateway.
    Dlq {
        /// Where the admin API is.
        #[command(flatten)]
        admin: ops::AdminArgs,
        /// What to do.
        #[command(subcommand)]
        command: ops::DlqCommand,
    },
}

/// Roles of a `serve` process, so ingest and delivery scale separately.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Do not run delivery workers (an ingest-only process).
    #[arg(long)]
    pub no_workers: bool,
    /// Do not serve the public listener (a delivery-only process).
    #[arg(long)]
    pub no_ingest: bool,
}

/// Runs the parsed command line and returns the process exit code.
pub async fn main(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(&cli.config, &args).await,
        Command::Check => check(&cli.config),
        Command::Routes { admin, command } => ops::routes(&admin, command).await,
        Command::Dlq { admin, command } => ops::dlq(&admin, command).await,
    }
}

fn load_or_report(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|err| {
        report_config_error(&err);
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

fn report_config_error(err: &ConfigError) {
    eprintln!("error: invalid configuration\n{err}");
}

fn check(path: &std::path::Path) -> ExitCode {
    match load_or_report(path) {
        Ok(config) => {
            println!("{}", inventory_table(&config));
            println!(
                "{}: OK ({} sources, {} routes, {} owners)",
                path.display(),
                config.sources.len(),
                config.routes.len(),
                config.owners.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The route inventory: who owns what, where it goes, what breaks.
pub fn inventory_table(config: &Config) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["route", "source", "owner", "destination", "on failure"]);
    for route in &config.routes {
        let team = config
            .owner_of(route)
            .map_or(route.owner.as_str(), |o| o.team.as_str());
        table.add_row([
            route.name.as_str(),
            route.source.as_str(),
            team,
            route.destination.url.as_str(),
            route.on_failure.as_str(),
        ]);
    }
    table
}

async fn serve(path: &std::path::Path, args: &ServeArgs) -> ExitCode {
    let mut config = match load_or_report(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    config.delivery.workers &= !args.no_workers;
    config.server.ingest &= !args.no_ingest;
    let listeners = match Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "cannot start");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match server::run(config, listeners, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "gateway failed");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the gateway");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
    shutdown.cancel();
}
