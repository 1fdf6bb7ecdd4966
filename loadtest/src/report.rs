//! The report: latency percentiles from HDR histograms, the JSON shape of
//! `--json`, and the human-readable text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::keys::KeyReport;

/// A histogram of latencies in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }

    /// `p50 1.23  p90 …  p99 …  p99.9 …  max … ms (n=…)`
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".to_owned();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {} ms  (n={})",
            fmt_ms(self.p50_ms),
            fmt_ms(self.p90_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.p999_ms),
            fmt_ms(self.max_ms),
            self.count
        )
    }
}

/// Three significant digits, at least two decimals below 1 ms.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    /// "open" (fixed rate) or "closed" (N connections).
    pub mode: &'static str,
    pub target: String,
    pub scheme: switchyard_loadtest::signer::Scheme,
    pub body_bytes: usize,
    pub duration_s: f64,
    pub connections: Option<usize>,
    pub ingest: Ingest,
    pub end_to_end: Option<EndToEnd>,
    pub gateway: Option<Gateway>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ingest {
    /// Requests per second asked for (open loop), or sent per second (closed loop).
    pub offered_rate: f64,
    /// 2xx answers per second over the load phase.
    pub achieved_rate: f64,
    pub sent: u64,
    pub completed: u64,
    /// Transport failures: connect errors, resets, timeouts.
    pub errors: u64,
    /// Answers by HTTP status ("202": n).
    pub status_counts: BTreeMap<String, u64>,
    pub latency: Percentiles,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndToEnd {
    /// Events acked by the gateway (2xx) in this run.
    pub acked: u64,
    /// Distinct request paths each event is expected on (`--fanout`).
    pub fanout: u32,
    /// Distinct (path, event) pairs of this run, acked or not, the sink
    /// received with a 2xx.
    pub delivered: u64,
    /// Second and later 2xx deliveries of the same event on the same path.
    pub duplicates: u64,
    /// Deliveries of acked events still owed when the drain ended: `fanout`
    /// per event minus the distinct paths it arrived on.
    pub missing: u64,
    /// Delivered (path, event) pairs whose ingest answer was not a 2xx
    /// (timeouts, errors).
    pub delivered_unacked: u64,
    /// Requests the sink answered 503 on purpose (`--sink-fail-ratio`).
    pub injected_failures: u64,
    /// Bodies that were not this run's (leftovers, foreign traffic).
    pub foreign: u64,
    /// How long the drain waited, and whether every acked event arrived.
    pub drain_s: f64,
    pub drained: bool,
    /// Of every first (path, event) delivery.
    pub latency: Percentiles,
    /// The same, per request path.
    pub by_path: BTreeMap<String, PathReport>,
    /// Per ordering key, when the events carried one (`--keys`).
    pub keys: Option<KeyReport>,
}

/// What the sink received on one request path.
#[derive(Clone, Debug, Serialize)]
pub struct PathReport {
    /// Distinct events of this run delivered on this path.
    pub delivered: u64,
    /// Second and later deliveries of an event on this path.
    pub duplicates: u64,
    pub latency: Percentiles,
    /// When the first and the last event arrived, seconds after the load started.
    pub first_s: f64,
    pub last_s: f64,
    /// First deliveries per second between the first and the last.
    pub rate_per_s: f64,
    /// The most first deliveries in one wall-clock second.
    pub busiest_second: u64,
    /// Events that arrived after an event sent later than them.
    pub out_of_order: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Gateway {
    pub pid: u32,
    pub rss_mib_start: f64,
    pub rss_mib_end: f64,
    pub rss_mib_peak: f64,
    /// Over the load phase, in percent of one core.
    pub cpu_percent: f64,
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let load = match self.connections {
            Some(c) => format!("closed loop, {c} connections"),
            None => format!("open loop, {} req/s", self.ingest.offered_rate),
        };
        let _ = writeln!(
            s,
            "scenario {} ({load}, {:.1}s, {}-byte bodies, {:?}) -> {}",
            self.scenario, self.duration_s, self.body_bytes, self.scheme, self.target
        );
        let i = &self.ingest;
        let _ = writeln!(
            s,
            "ingest      offered {:.0} req/s, achieved {:.0} req/s; sent {}, answered {}, transport errors {}",
            i.offered_rate, i.achieved_rate, i.sent, i.completed, i.errors
        );
        let statuses: Vec<String> = i
            .status_counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            s,
            "  status    {}",
            if statuses.is_empty() {
                "none".to_owned()
            } else {
                statuses.join(", ")
            }
        );
        let _ = writeln!(s, "  latency   {}", i.latency.line());
        match &self.end_to_end {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "end-to-end  acked {} (fanout {}), delivered {}, duplicates {}, missing {}, delivered-unacked {}, injected 503s {}, foreign {}",
                    e.acked,
                    e.fanout,
                    e.delivered,
                    e.duplicates,
                    e.missing,
                    e.delivered_unacked,
                    e.injected_failures,
                    e.foreign
                );
                let _ = writeln!(
                    s,
                    "  drain     {:.1}s, {}",
                    e.drain_s,
                    if e.drained {
                        "every acked event arrived"
                    } else {
                        "ended with events missing"
                    }
                );
                let _ = writeln!(s, "  latency   {}", e.latency.line());
                let width = e.by_path.keys().map(String::len).max().unwrap_or(0);
                for (path, p) in &e.by_path {
                    let _ = writeln!(
                        s,
                        "  path {path:<width$}  delivered {}, duplicates {}; {}",
                        p.delivered,
                        p.duplicates,
                        p.latency.line()
                    );
                    let _ = writeln!(
                        s,
                        "  path {path:<width$}  arrived {:.1}s to {:.1}s after the start, {:.1}/s, busiest second {}, {} out of order",
                        p.first_s, p.last_s, p.rate_per_s, p.busiest_second, p.out_of_order
                    );
                }
                if let Some(k) = &e.keys {
                    let _ = writeln!(
                        s,
                        "  keys      {} keys: at most {} request(s) of one key in flight, {} out of order within a key",
                        k.keys, k.max_in_flight_per_key, k.out_of_order
                    );
                }
            }
            None => {
                let _ = writeln!(s, "end-to-end  not measured (no --sink-listen)");
            }
        }
        if let Some(g) = &self.gateway {
            let _ = writeln!(
                s,
                "gateway     pid {}: RSS {:.1} MiB at start, {:.1} MiB at end, peak {:.1} MiB; CPU {:.0}% of one core",
                g.pid, g.rss_mib_start, g.rss_mib_end, g.rss_mib_peak, g.cpu_percent
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_a_histogram() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap(); // 10 µs .. 10 ms
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p90_ms - 9.0).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.01, "{p:?}");
        assert_eq!(
            Percentiles::of(&latency_histogram()),
            Percentiles::default()
        );
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(fmt_ms(0.1234), "0.12");
        assert_eq!(fmt_ms(12.345), "12.3");
        assert_eq!(fmt_ms(250.4), "250");
        let p = Percentiles {
            count: 3,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: 3.0,
            p999_ms: 4.0,
            max_ms: 150.0,
            mean_ms: 1.5,
        };
        assert_eq!(
            p.line(),
            "p50 1.00  p90 2.00  p99 3.00  p99.9 4.00  max 150 ms  (n=3)"
        );
        assert_eq!(Percentiles::default().line(), "no samples");
    }

    fn sample_report() -> Report {
        Report {
            scenario: "steady".into(),
            mode: "open",
            target: "http://127.0.0.1:8080/hooks/demo".into(),
            scheme: switchyard_loadtest::signer::Scheme::Github,
            body_bytes: 1024,
            duration_s: 5.0,
            connections: None,
            ingest: Ingest {
                offered_rate: 50.0,
                achieved_rate: 49.8,
                sent: 250,
                completed: 250,
                errors: 0,
                status_counts: BTreeMap::from([("202".into(), 250)]),
                latency: Percentiles {
                    count: 250,
                    ..Default::default()
                },
            },
            end_to_end: Some(EndToEnd {
                acked: 250,
                fanout: 2,
                delivered: 500,
                duplicates: 0,
                missing: 0,
                delivered_unacked: 0,
                injected_failures: 0,
                foreign: 0,
                drain_s: 0.2,
                drained: true,
                latency: Percentiles::default(),
                by_path: BTreeMap::from([
                    (
                        "/fast".into(),
                        PathReport {
                            delivered: 250,
                            duplicates: 0,
                            latency: Percentiles {
                                count: 250,
                                p50_ms: 1.0,
                                ..Default::default()
                            },
                            first_s: 0.1,
                            last_s: 5.0,
                            rate_per_s: 50.8,
                            busiest_second: 52,
                            out_of_order: 0,
                        },
                    ),
                    (
                        "/slow".into(),
                        PathReport {
                            delivered: 250,
                            duplicates: 1,
                            latency: Percentiles::default(),
                            first_s: 0.3,
                            last_s: 5.2,
                            rate_per_s: 50.6,
                            busiest_second: 51,
                            out_of_order: 3,
                        },
                    ),
                ]),
                keys: Some(KeyReport {
                    keys: 10,
                    max_in_flight_per_key: 1,
                    out_of_order: 0,
                }),
            }),
            gateway: None,
        }
    }

    #[test]
    fn text_and_json_reports() {
        let r = sample_report();
        let text = r.text();
        assert!(
            text.starts_with(
                "scenario steady (open loop, 50 req/s, 5.0s, 1024-byte bodies, Github)"
            )
        );
        assert!(text.contains("status    202: 250"), "{text}");
        assert!(text.contains("missing 0"), "{text}");
        assert!(text.contains("every acked event arrived"), "{text}");
        assert!(
            text.contains("acked 250 (fanout 2), delivered 500"),
            "{text}"
        );
        assert!(
            text.contains("  path /fast  delivered 250, duplicates 0; p50 1.00  "),
            "{text}"
        );
        assert!(
            text.contains("  path /slow  delivered 250, duplicates 1; no samples\n"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ingest"]["status_counts"]["202"], 250);
        assert_eq!(json["end_to_end"]["missing"], 0);
        assert_eq!(json["scheme"], "github");
        assert_eq!(json["gateway"], serde_json::Value::Null);
        assert_eq!(json["ingest"]["latency"]["count"], 250);
        assert_eq!(json["end_to_end"]["fanout"], 2);
        let fast = &json["end_to_end"]["by_path"]["/fast"];
        assert_eq!(fast["delivered"], 250);
        assert_eq!(fast["duplicates"], 0);
        assert_eq!(fast["latency"]["count"], 250);
        assert_eq!(fast["latency"]["p50_ms"], 1.0);
        assert_eq!(json["end_to_end"]["by_path"]["/slow"]["duplicates"], 1);
        assert!(
            text.contains(
                "  keys      10 keys: at most 1 request(s) of one key in flight, 0 out of order"
            ),
            "{text}"
        );
        assert_eq!(json["end_to_end"]["keys"]["max_in_flight_per_key"], 1);
    }
}
