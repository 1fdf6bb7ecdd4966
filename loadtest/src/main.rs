//! switchyard-loadtest: drives a Switchyard gateway with signed webhooks,
//! receives what it delivers, and reports ingest and end-to-end latency.

mod body;
mod deliveries;
mod generator;
mod keys;
mod procstat;
mod report;
mod schedule;
mod sink;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

use generator::{Generator, Load, Target};
use report::{EndToEnd, Gateway, Ingest, PathReport, Percentiles, Report};
use sink::{Sink, SinkOptions};
use switchyard_loadtest::signer::{Scheme, Signer};

/// Named scenarios. Explicit flags override a scenario's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Open loop at --rate (default 200/s).
    Steady,
    /// Closed loop, 64 connections, 1 KiB bodies: the most the gateway ingests.
    IngestMax,
    /// Open loop (default 2000/s), each event expected on 3 sink paths.
    Fanout3,
    /// Open loop (default 1000/s), fan-out 2, the sink answers /slow 200 ms late.
    SlowDestination,
    /// Open loop (default 1000/s), the sink answers half its requests 503.
    FailingDestination,
    /// Open loop (default 1000/s), fan-out 1: only /healthy reaches the sink,
    /// the gateway's other route points where nothing listens.
    MixedHealthyAndDead,
    /// Open loop (default 100/s), fan-out 2: /limited's destination has a
    /// `rate_limit` below the offered rate, /free has none.
    RateLimited,
    /// Open loop (default 100/s) to a route paused before the load and
    /// resumed at a rate after it (by loadtest/run.sh).
    PausedThenResumed,
    /// Open loop (default 400/s) to a destination that takes 40/s (4 in
    /// flight, the sink answers 100 ms late): saturated 10×.
    Saturated,
    /// Open loop (default 1000/s), the events spread round robin over
    /// 1,000 ordering keys (`/lt_key`): for ordered delivery, and the same
    /// route unordered as its comparator.
    Ordered,
}

/// Open-loop rate when nothing else sets one: a light load, for checking a
/// setup rather than measuring it.
const DEFAULT_RATE: f64 = 200.0;
/// Closed-loop connections of `ingest-max`: enough requests in flight that
/// the gateway, not the wait for answers, sets the pace.
const INGEST_MAX_CONNECTIONS: usize = 64;
/// Open-loop rate of `fanout3`: the rate `steady` is measured at, so the
/// two compare, with three deliveries per event.
const FANOUT3_RATE: f64 = 2000.0;
/// Open-loop rate of the slow, failing and dead-destination scenarios:
/// lower than `fanout3`'s because slow answers and retries keep each event
/// in the gateway longer.
const DESTINATION_SCENARIO_RATE: f64 = 1000.0;
/// Open-loop rate of the flow-control scenarios: twice the 50/s the rate
/// limit and the resume of loadtest/run.sh allow, so events wait.
const FLOW_SCENARIO_RATE: f64 = 100.0;
/// Open-loop rate of `saturated`: 10× what its destination takes (4 in
/// flight at [`SATURATED_SINK_DELAY`] each: 40/s).
const SATURATED_RATE: f64 = 400.0;
/// The sink's answer time in `saturated`.
const SATURATED_SINK_DELAY: Duration = Duration::from_millis(100);
/// Open-loop rate of `ordered`: each of its keys gets an event a second.
const ORDERED_RATE: f64 = 1000.0;
/// Ordering keys of `ordered`.
const ORDERED_KEYS: u64 = 1000;
/// Body size of every scenario: a typical webhook payload.
const DEFAULT_BODY_BYTES: usize = 1024;

/// What a scenario sets when the matching flag is absent.
#[derive(Clone, Copy, Debug)]
struct ScenarioDefaults {
    /// The loop, and its rate or connections.
    load: Load,
    fanout: u32,
    sink_delay: Duration,
    sink_delay_path: Option<&'static str>,
    sink_fail_ratio: f64,
    keys: Option<u64>,
}

/// Without a scenario, and the base of every scenario: open loop at the
/// default rate, one path per event, a sink that answers at once.
const BASELINE: ScenarioDefaults = ScenarioDefaults {
    load: Load::Open { rate: DEFAULT_RATE },
    fanout: 1,
    sink_delay: Duration::ZERO,
    sink_delay_path: None,
    sink_fail_ratio: 0.0,
    keys: None,
};

impl Scenario {
    /// The value `--scenario` takes for it, which the report repeats.
    fn name(self) -> String {
        self.to_possible_value()
            .expect("no scenario is skipped")
            .get_name()
            .to_owned()
    }

    fn defaults(self) -> ScenarioDefaults {
        match self {
            Scenario::Steady => BASELINE,
            Scenario::IngestMax => ScenarioDefaults {
                load: Load::Closed {
                    connections: INGEST_MAX_CONNECTIONS,
                },
                ..BASELINE
            },
            Scenario::Fanout3 => ScenarioDefaults {
                load: Load::Open { rate: FANOUT3_RATE },
                fanout: 3,
                ..BASELINE
            },
            Scenario::SlowDestination => ScenarioDefaults {
                load: Load::Open {
                    rate: DESTINATION_SCENARIO_RATE,
                },
                fanout: 2,
                sink_delay: Duration::from_millis(200),
                sink_delay_path: Some("/slow"),
                ..BASELINE
            },
            Scenario::FailingDestination => ScenarioDefaults {
                load: Load::Open {
                    rate: DESTINATION_SCENARIO_RATE,
                },
                sink_fail_ratio: 0.5,
                ..BASELINE
            },
            Scenario::MixedHealthyAndDead => ScenarioDefaults {
                load: Load::Open {
                    rate: DESTINATION_SCENARIO_RATE,
                },
                ..BASELINE
            },
            Scenario::RateLimited => ScenarioDefaults {
                load: Load::Open {
                    rate: FLOW_SCENARIO_RATE,
                },
                fanout: 2,
                ..BASELINE
            },
            Scenario::PausedThenResumed => ScenarioDefaults {
                load: Load::Open {
                    rate: FLOW_SCENARIO_RATE,
                },
                ..BASELINE
            },
            Scenario::Saturated => ScenarioDefaults {
                load: Load::Open {
                    rate: SATURATED_RATE,
                },
                sink_delay: SATURATED_SINK_DELAY,
                ..BASELINE
            },
            Scenario::Ordered => ScenarioDefaults {
                load: Load::Open { rate: ORDERED_RATE },
                keys: Some(ORDERED_KEYS),
                ..BASELINE
            },
        }
    }
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
    /// Size of each JSON body in bytes (default 1024).
    #[arg(long)]
    body_bytes: Option<usize>,
    /// Spread the events round robin over this many ordering keys (the
    /// body's `lt_key`); the report then has per-key figures.
    #[arg(long)]
    keys: Option<u64>,
    /// Distinct sink paths each acked event is expected on (the gateway's
    /// routes to the sink); default 1, or the scenario's.
    #[arg(long)]
    fanout: Option<u32>,
    /// Per-request timeout (a timed-out request counts as a transport error).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Run the built-in receiver on this address (the route's destination).
    #[arg(long)]
    sink_listen: Option<SocketAddr>,
    /// Share of deliveries the receiver answers 503, 0.0 to 1.0 (default 0,
    /// or the scenario's).
    #[arg(long)]
    sink_fail_ratio: Option<f64>,
    /// Apply --sink-fail-ratio only to requests to this path (e.g. /events).
    #[arg(long)]
    sink_fail_path: Option<String>,
    /// Delay before the receiver answers (default 0s, or the scenario's).
    #[arg(long, value_parser = humantime::parse_duration)]
    sink_delay: Option<Duration>,
    /// Apply --sink-delay only to requests to this path (e.g. /slow).
    #[arg(long)]
    sink_delay_path: Option<String>,
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

/// The run the flags and the scenario ask for.
#[derive(Debug)]
struct Plan {
    scenario: String,
    load: Load,
    body_bytes: usize,
    fanout: u32,
    keys: Option<u64>,
    sink: SinkOptions,
}

/// Resolves the scenario's defaults against explicit flags, and checks the
/// result; every problem is reported in one error.
fn plan(cli: &Cli) -> anyhow::Result<Plan> {
    let (scenario, defaults) = match cli.scenario {
        Some(s) => (s.name(), s.defaults()),
        // Without a scenario, --connections is what asks for a closed loop.
        None => (
            "custom".to_owned(),
            ScenarioDefaults {
                load: match cli.connections {
                    Some(connections) => Load::Closed { connections },
                    None => BASELINE.load,
                },
                ..BASELINE
            },
        ),
    };
    let mut errors = Vec::new();
    // Only a scenario can conflict: without one, clap refuses --rate with
    // --connections and the loop follows the flag given.
    let load = match defaults.load {
        Load::Open { rate } => {
            if cli.connections.is_some() {
                errors.push(format!(
                    "--scenario {scenario} is open loop: use --rate, not --connections"
                ));
            }
            Load::Open {
                rate: cli.rate.unwrap_or(rate),
            }
        }
        Load::Closed { connections } => {
            if cli.rate.is_some() {
                errors.push(format!(
                    "--scenario {scenario} is closed loop: use --connections, not --rate"
                ));
            }
            Load::Closed {
                connections: cli.connections.unwrap_or(connections),
            }
        }
    };
    match load {
        Load::Open { rate } if !(rate > 0.0 && rate.is_finite()) => {
            errors.push("--rate must be positive".to_owned());
        }
        Load::Closed { connections: 0 } => {
            errors.push("--connections must be at least 1".to_owned());
        }
        _ => {}
    }
    let fanout = cli.fanout.unwrap_or(defaults.fanout);
    if !(1..=deliveries::MAX_PATHS as u32).contains(&fanout) {
        errors.push(format!(
            "--fanout must be between 1 and {}",
            deliveries::MAX_PATHS
        ));
    }
    let keys = cli.keys.or(defaults.keys);
    if keys == Some(0) {
        errors.push("--keys must be at least 1".to_owned());
    }
    let fail_ratio = cli.sink_fail_ratio.unwrap_or(defaults.sink_fail_ratio);
    if !(0.0..=1.0).contains(&fail_ratio) {
        errors.push("--sink-fail-ratio must be between 0 and 1".to_owned());
    }
    let delay_path = cli
        .sink_delay_path
        .clone()
        .or(defaults.sink_delay_path.map(str::to_owned));
    for (flag, path) in [
        ("--sink-delay-path", &delay_path),
        ("--sink-fail-path", &cli.sink_fail_path),
    ] {
        // A request's path always starts with '/': without it nothing would match.
        if path.as_ref().is_some_and(|p| !p.starts_with('/')) {
            errors.push(format!("{flag} must start with '/'"));
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(Plan {
        scenario,
        load,
        body_bytes: cli.body_bytes.unwrap_or(DEFAULT_BODY_BYTES),
        fanout,
        keys,
        sink: SinkOptions {
            fail_ratio,
            fail_path: cli.sink_fail_path.clone(),
            delay: cli.sink_delay.unwrap_or(defaults.sink_delay),
            delay_path,
        },
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
        Some(addr) => Some(sink::start(addr, run_tag.clone(), plan.sink.clone()).await?),
        None => None,
    };
    let generator = Generator::new(Target {
        uri,
        signer: Signer::new(cli.scheme, cli.secret.as_bytes())?,
        body_bytes: plan.body_bytes,
        keys: plan.keys,
        timeout: cli.timeout,
        run: run_tag,
    })
    .await?;

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

    let load_started_us = sink::unix_ns(SystemTime::now()) / 1000;
    let (load_time, results) = generator.run(&plan.load, cli.duration).await;
    let gw_end = cli.gateway_pid.and_then(procstat::sample);

    let drain_started = Instant::now();
    let end_to_end = match &sink {
        Some(sink) => Some(
            drain(
                sink,
                &results.acked,
                &results.unacked,
                plan.fanout,
                cli.drain,
                drain_started,
                load_started_us,
            )
            .await,
        ),
        None => None,
    };
    progress.abort();
    let peak = peak_rss_kib.load(Ordering::Relaxed);

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

/// Waits until every acked event reached the sink on `fanout` distinct
/// paths, or `limit` passed.
async fn drain(
    sink: &Arc<Sink>,
    acked: &[u64],
    unacked: &[u64],
    fanout: u32,
    limit: Duration,
    started: Instant,
    load_started_us: u64,
) -> EndToEnd {
    let mut pending: Vec<u64> = acked.to_vec();
    loop {
        {
            let state = sink.state.lock().unwrap();
            pending.retain(|&seq| state.deliveries.paths_of(seq) < fanout);
        }
        if pending.is_empty() || started.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_s = started.elapsed().as_secs_f64();
    let state = sink.state.lock().unwrap();
    let deliveries = &state.deliveries;
    // `pending` holds every acked event still short of `fanout` paths at
    // the last look; the others owe nothing.
    let missing = deliveries.missing(&pending, fanout);
    EndToEnd {
        acked: acked.len() as u64,
        fanout,
        delivered: deliveries.pairs(),
        duplicates: deliveries.duplicates(),
        missing,
        delivered_unacked: deliveries.pairs_among(unacked),
        injected_failures: sink.injected_failures.load(Ordering::Relaxed),
        foreign: state.foreign,
        drain_s,
        drained: missing == 0,
        latency: Percentiles::of(deliveries.e2e()),
        by_path: deliveries
            .by_path()
            .iter()
            .map(|p| {
                let since_start = |us: u64| us.saturating_sub(load_started_us) as f64 / 1e6;
                let report = PathReport {
                    delivered: p.delivered,
                    duplicates: p.duplicates,
                    latency: Percentiles::of(&p.e2e),
                    first_s: since_start(p.first_us),
                    last_s: since_start(p.last_us),
                    rate_per_s: p.rate_per_s(),
                    busiest_second: p.busiest_second(),
                    out_of_order: p.overtaken,
                };
                (p.path.clone(), report)
            })
            .collect(),
        keys: state.keys.report(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn plan_of(args: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(
            std::iter::once("switchyard-loadtest").chain(args.iter().copied()),
        )?;
        plan(&cli)
    }

    fn error_of(args: &[&str]) -> String {
        match plan_of(args) {
            Ok(p) => panic!("{args:?} planned {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scenario_names_are_kebab_case() {
        let names: Vec<String> = Scenario::value_variants()
            .iter()
            .map(|s| s.name())
            .collect();
        assert_eq!(
            names,
            [
                "steady",
                "ingest-max",
                "fanout3",
                "slow-destination",
                "failing-destination",
                "mixed-healthy-and-dead",
                "rate-limited",
                "paused-then-resumed",
                "saturated",
                "ordered"
            ]
        );
    }

    #[test]
    fn scenario_defaults() {
        let open = |rate| Load::Open { rate };
        let ms = Duration::from_millis;
        let cases = [
            ("steady", open(200.0), 1, ms(0), None, 0.0),
            (
                "ingest-max",
                Load::Closed { connections: 64 },
                1,
                ms(0),
                None,
                0.0,
            ),
            ("fanout3", open(2000.0), 3, ms(0), None, 0.0),
            (
                "slow-destination",
                open(1000.0),
                2,
                ms(200),
                Some("/slow"),
                0.0,
            ),
            ("failing-destination", open(1000.0), 1, ms(0), None, 0.5),
            ("mixed-healthy-and-dead", open(1000.0), 1, ms(0), None, 0.0),
        ];
        for (name, load, fanout, delay, delay_path, fail_ratio) in cases {
            let p = plan_of(&["--scenario", name]).unwrap();
            assert_eq!(p.scenario, name);
            assert_eq!(p.keys, None, "{name}");
            assert_eq!(p.load, load, "{name}");
            assert_eq!(p.body_bytes, 1024, "{name}");
            assert_eq!(p.fanout, fanout, "{name}");
            assert_eq!(
                p.sink,
                SinkOptions {
                    fail_ratio,
                    fail_path: None,
                    delay,
                    delay_path: delay_path.map(str::to_owned),
                },
                "{name}"
            );
        }
    }

    #[test]
    fn flags_override_scenario_defaults() {
        let p = plan_of(&[
            "--scenario",
            "slow-destination",
            "--rate",
            "50",
            "--fanout",
            "4",
            "--sink-delay",
            "1s",
            "--sink-delay-path",
            "/b",
            "--body-bytes",
            "200",
        ])
        .unwrap();
        assert_eq!(p.load, Load::Open { rate: 50.0 });
        assert_eq!(p.fanout, 4);
        assert_eq!(p.body_bytes, 200);
        assert_eq!(p.sink.delay, Duration::from_secs(1));
        assert_eq!(p.sink.delay_path.as_deref(), Some("/b"));

        // A new delay keeps the scenario's path unless told otherwise.
        let p = plan_of(&["--scenario", "slow-destination", "--sink-delay", "50ms"]).unwrap();
        assert_eq!(p.sink.delay, Duration::from_millis(50));
        assert_eq!(p.sink.delay_path.as_deref(), Some("/slow"));

        let p = plan_of(&[
            "--scenario",
            "failing-destination",
            "--sink-fail-ratio",
            "0.1",
            "--sink-fail-path",
            "/events",
        ])
        .unwrap();
        assert_eq!(p.sink.fail_ratio, 0.1);
        assert_eq!(p.sink.fail_path.as_deref(), Some("/events"));

        let p = plan_of(&["--scenario", "ingest-max", "--connections", "8"]).unwrap();
        assert_eq!(p.load, Load::Closed { connections: 8 });

        let p = plan_of(&["--scenario", "ordered"]).unwrap();
        assert_eq!((p.load, p.keys), (Load::Open { rate: 1000.0 }, Some(1000)));
        let p = plan_of(&["--scenario", "ordered", "--keys", "1", "--rate", "100"]).unwrap();
        assert_eq!((p.load, p.keys), (Load::Open { rate: 100.0 }, Some(1)));
    }

    #[test]
    fn without_a_scenario_the_load_flag_picks_the_loop() {
        let p = plan_of(&[]).unwrap();
        assert_eq!(p.scenario, "custom");
        assert_eq!(p.load, Load::Open { rate: 200.0 });
        assert_eq!(p.fanout, 1);
        let p = plan_of(&["--connections", "3", "--fanout", "2"]).unwrap();
        assert_eq!(p.load, Load::Closed { connections: 3 });
        assert_eq!(p.fanout, 2);
        let p = plan_of(&["--rate", "10", "--sink-delay", "5ms"]).unwrap();
        assert_eq!(p.load, Load::Open { rate: 10.0 });
        assert_eq!(p.sink.delay, Duration::from_millis(5));
        assert_eq!(p.sink.delay_path, None);
        assert!(plan_of(&["--rate", "10", "--connections", "3"]).is_err());
    }

    #[test]
    fn scenarios_refuse_the_other_loop() {
        for open_loop in [
            "steady",
            "fanout3",
            "slow-destination",
            "failing-destination",
            "mixed-healthy-and-dead",
        ] {
            assert_eq!(
                error_of(&["--scenario", open_loop, "--connections", "8"]),
                format!("--scenario {open_loop} is open loop: use --rate, not --connections")
            );
        }
        assert_eq!(
            error_of(&["--scenario", "ingest-max", "--rate", "100"]),
            "--scenario ingest-max is closed loop: use --connections, not --rate"
        );
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        assert_eq!(
            error_of(&[
                "--rate",
                "0",
                "--fanout",
                "0",
                "--sink-fail-ratio",
                "1.5",
                "--sink-delay-path",
                "slow",
                "--sink-fail-path",
                "dead",
                "--keys",
                "0",
            ]),
            "--rate must be positive; --fanout must be between 1 and 64; \
             --keys must be at least 1; --sink-fail-ratio must be between 0 and 1; \
             --sink-delay-path must start with '/'; --sink-fail-path must start with '/'"
        );
        assert_eq!(
            error_of(&["--connections", "0", "--fanout", "65"]),
            "--connections must be at least 1; --fanout must be between 1 and 64"
        );
        assert!(plan_of(&["--fanout", "64"]).is_ok());
    }
}
