//! switchyard-loadtest: drives a Switchyard gateway with signed webhooks,
//! receives what it delivers, and reports ingest and end-to-end latency.

mod body;
mod generator;
mod procstat;
mod report;
mod schedule;
mod signer;
mod sink;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

use generator::{Generator, Load, Target};
use report::{EndToEnd, Gateway, Ingest, Percentiles, Report};
use signer::{Scheme, Signer};
use sink::{Sink, SinkOptions};

/// Named scenarios. Explicit flags override a scenario's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Open loop at --rate (default 200/s).
    Steady,
    /// Closed loop, 64 connections, 1 KiB bodies: the most the gateway ingests.
    IngestMax,
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Load generator, receiver and report for the Switchyard gateway"
)]
struct Cli {
    /// Named scenario; without one, --rate means open loop and --connections closed loop.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// The source URL webhooks are posted to.
    #[arg(long, default_value = "http://127.0.0.1:8080/hooks/demo")]
    url: String,
    /// The source's signing secret.
    #[arg(
        long,
        env = "SWITCHYARD_LOADTEST_SECRET",
        default_value = "demo-webhook-secret",
        hide_env_values = true
    )]
    secret: String,
    /// Signature scheme of the source.
    #[arg(long, value_enum, default_value = "github")]
    scheme: Scheme,
    /// Open loop: requests per second on a fixed schedule.
    #[arg(long, conflicts_with = "connections")]
    rate: Option<f64>,
    /// Closed loop: concurrent connections, each sending back to back.
    #[arg(long)]
    connections: Option<usize>,
    /// How long the load runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Size of each JSON body in bytes.
    #[arg(long)]
    body_bytes: Option<usize>,
    /// Per-request timeout (a timed-out request counts as a transport error).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Run the built-in receiver on this address (the route's destination).
    #[arg(long)]
    sink_listen: Option<SocketAddr>,
    /// Share of deliveries the receiver answers 503 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    sink_fail_ratio: f64,
    /// Delay before the receiver answers.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    sink_delay: Duration,
    /// After the load, wait at most this long for every acked event to arrive.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    drain: Duration,
    /// The gateway's pid: report its RSS and CPU from /proc.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

struct Plan {
    scenario: String,
    load: Load,
    body_bytes: usize,
}

fn plan(cli: &Cli) -> anyhow::Result<Plan> {
    let (scenario, load, body_bytes) = match cli.scenario {
        Some(Scenario::Steady) => {
            if cli.connections.is_some() {
                bail!("--scenario steady is open loop: use --rate, not --connections");
            }
            (
                "steady",
                Load::Open {
                    rate: cli.rate.unwrap_or(200.0),
                },
                1024,
            )
        }
        Some(Scenario::IngestMax) => {
            if cli.rate.is_some() {
                bail!("--scenario ingest-max is closed loop: use --connections, not --rate");
            }
            let connections = cli.connections.unwrap_or(64);
            ("ingest-max", Load::Closed { connections }, 1024)
        }
        None => match (cli.rate, cli.connections) {
            (_, Some(connections)) => ("custom", Load::Closed { connections }, 1024),
            (rate, None) => (
                "custom",
                Load::Open {
                    rate: rate.unwrap_or(200.0),
                },
                1024,
            ),
        },
    };
    match load {
        Load::Open { rate } if !(rate > 0.0 && rate.is_finite()) => {
            bail!("--rate must be positive")
        }
        Load::Closed { connections: 0 } => bail!("--connections must be at least 1"),
        _ => {}
    }
    if !(0.0..=1.0).contains(&cli.sink_fail_ratio) {
        bail!("--sink-fail-ratio must be between 0 and 1");
    }
    Ok(Plan {
        scenario: scenario.to_owned(),
        load,
        body_bytes: cli.body_bytes.unwrap_or(body_bytes),
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let plan = match plan(&cli) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("switchyard-loadtest: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli, plan)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, plan: Plan) -> anyhow::Result<()> {
    let uri: hyper::Uri = cli.url.parse().context("--url")?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http:// (the tool speaks plain HTTP/1.1)");
    }
    let run_tag = format!(
        "{:x}",
        sink::unix_ns(SystemTime::now()) ^ u64::from(std::process::id())
    );
    let sink = match cli.sink_listen {
        Some(addr) => Some(
            sink::start(
                addr,
                run_tag.clone(),
                SinkOptions {
                    fail_ratio: cli.sink_fail_ratio,
                    delay: cli.sink_delay,
                },
            )
            .await?,
        ),
        None => None,
    };
    let generator = Generator::new(Target {
        uri,
        signer: Signer::new(cli.scheme, cli.secret.as_bytes())?,
        body_bytes: plan.body_bytes,
        timeout: cli.timeout,
        run: run_tag,
    });

    let gw_start = cli.gateway_pid.and_then(procstat::sample);
    if cli.gateway_pid.is_some() && gw_start.is_none() {
        bail!(
            "--gateway-pid: cannot read /proc/{}",
            cli.gateway_pid.unwrap_or(0)
        );
    }
    let peak_rss_kib = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(progress(
        generator.clone(),
        sink.clone(),
        cli.gateway_pid,
        cli.quiet,
        peak_rss_kib.clone(),
    ));

    let load_time = generator.run(&plan.load, cli.duration).await;
    let gw_end = cli.gateway_pid.and_then(procstat::sample);

    let (acked, unacked) = {
        let r = generator.results.lock().unwrap();
        (r.acked.clone(), r.unacked.clone())
    };
    let drain_started = Instant::now();
    let end_to_end = match &sink {
        Some(sink) => Some(drain(sink, &acked, &unacked, cli.drain, drain_started).await),
        None => None,
    };
    progress.abort();
    let peak = peak_rss_kib.load(Ordering::Relaxed);

    let results = generator.results.lock().unwrap();
    let c = &generator.counters;
    let sent = c.sent.load(Ordering::Relaxed);
    let secs = load_time.as_secs_f64().max(1e-9);
    let (offered_rate, connections, mode) = match plan.load {
        Load::Open { rate } => (rate, None, "open"),
        Load::Closed { connections } => (sent as f64 / secs, Some(connections), "closed"),
    };
    let report = Report {
        scenario: plan.scenario,
        mode,
        target: cli.url.clone(),
        scheme: cli.scheme,
        body_bytes: plan.body_bytes,
        duration_s: cli.duration.as_secs_f64(),
        connections,
        ingest: Ingest {
            offered_rate,
            achieved_rate: c.ok.load(Ordering::Relaxed) as f64 / secs,
            sent,
            completed: c.completed.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            status_counts: results
                .status_counts
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            latency: Percentiles::of(&results.latency),
        },
        end_to_end,
        gateway: match (cli.gateway_pid, gw_start, gw_end) {
            (Some(pid), Some(a), Some(b)) => Some(Gateway {
                pid,
                rss_mib_start: a.rss_kib as f64 / 1024.0,
                rss_mib_end: b.rss_kib as f64 / 1024.0,
                rss_mib_peak: peak.max(a.rss_kib).max(b.rss_kib) as f64 / 1024.0,
                cpu_percent: procstat::cpu_percent(&a, &b),
            }),
            _ => None,
        },
    };
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// Waits until every acked event reached the sink, or `limit` passed.
async fn drain(
    sink: &Arc<Sink>,
    acked: &[u64],
    unacked: &[u64],
    limit: Duration,
    started: Instant,
) -> EndToEnd {
    let mut pending: Vec<u64> = acked.to_vec();
    loop {
        {
            let state = sink.state.lock().unwrap();
            pending.retain(|seq| !state.seen.contains(seq));
        }
        if pending.is_empty() || started.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_s = started.elapsed().as_secs_f64();
    let state = sink.state.lock().unwrap();
    let unacked: HashSet<u64> = unacked.iter().copied().collect();
    EndToEnd {
        acked: acked.len() as u64,
        delivered: state.seen.len() as u64,
        duplicates: state.duplicates,
        missing: pending.len() as u64,
        delivered_unacked: state.seen.iter().filter(|s| unacked.contains(s)).count() as u64,
        injected_failures: sink.injected_failures.load(Ordering::Relaxed),
        foreign: state.foreign,
        drain_s,
        drained: pending.is_empty(),
        latency: Percentiles::of(&state.e2e),
    }
}

/// One line a second on stderr (until aborted); keeps the peak gateway RSS (KiB).
async fn progress(
    generator: Arc<Generator>,
    sink: Option<Arc<Sink>>,
    pid: Option<u32>,
    quiet: bool,
    peak_rss_kib: Arc<AtomicU64>,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_sent = 0;
    let mut last_delivered = 0;
    loop {
        tick.tick().await;
        let c = &generator.counters;
        let sent = c.sent.load(Ordering::Relaxed);
        let answered = c.completed.load(Ordering::Relaxed) + c.errors.load(Ordering::Relaxed);
        let mut line = format!(
            "[{:>4.0}s] sent {sent} (+{}/s), 2xx {}, other {}, errors {}, in flight {}",
            started.elapsed().as_secs_f64(),
            sent - last_sent,
            c.ok.load(Ordering::Relaxed),
            c.completed.load(Ordering::Relaxed) - c.ok.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
            sent - answered,
        );
        last_sent = sent;
        if let Some(sink) = &sink {
            let delivered = sink.delivered();
            line += &format!(
                ", delivered {delivered} (+{}/s)",
                delivered - last_delivered
            );
            last_delivered = delivered;
        }
        if let Some(s) = pid.and_then(procstat::sample) {
            peak_rss_kib.fetch_max(s.rss_kib, Ordering::Relaxed);
            line += &format!(", gateway RSS {:.1} MiB", s.rss_kib as f64 / 1024.0);
        }
        if !quiet {
            eprintln!("{line}");
        }
    }
}
