//! What the sink has received, keyed by (request path, event seq): with
//! fan-out the gateway delivers one event to several routes, each with its
//! own destination path, so a delivery is a duplicate only when that same
//! path already received that same event.
//!
//! Paths are interned to a small index, and the paths an event arrived on
//! are one `u64` bitset per event: 16 bytes of map entry per event whatever
//! the fan-out, which keeps a million-event run in tens of MiB. Per path,
//! the pace of first deliveries (first and last arrival, the busiest
//! wall-clock second) and how many arrived after a later-sent event are
//! kept as they come, in constant memory per second of the run.

use std::collections::HashMap;

use hdrhistogram::Histogram;

use crate::report::latency_histogram;

/// Distinct request paths tracked: one bit each in an event's path set.
pub const MAX_PATHS: usize = u64::BITS as usize;

/// What one path received.
pub struct PathStats {
    pub path: String,
    /// Distinct events delivered on this path.
    pub delivered: u64,
    /// Second and later deliveries of an event on this path.
    pub duplicates: u64,
    /// End-to-end latency (µs) of each event's first delivery on this path.
    pub e2e: Histogram<u64>,
    /// Arrival (Unix µs) of the first and the last first delivery.
    pub first_us: u64,
    pub last_us: u64,
    /// First deliveries per wall-clock second (Unix seconds).
    per_second: HashMap<u64, u64>,
    /// The highest event seq delivered so far on this path.
    max_seq: Option<u64>,
    /// First deliveries of an event sent before one already delivered here.
    pub overtaken: u64,
}

impl PathStats {
    /// First deliveries per second between the first and the last (0 with
    /// fewer than two).
    pub fn rate_per_s(&self) -> f64 {
        let span = self.last_us.saturating_sub(self.first_us) as f64 / 1e6;
        if self.delivered < 2 || span <= 0.0 {
            return 0.0;
        }
        (self.delivered - 1) as f64 / span
    }

    /// The most first deliveries in one wall-clock second.
    pub fn busiest_second(&self) -> u64 {
        self.per_second.values().copied().max().unwrap_or(0)
    }
}

/// How `Deliveries::record` counted a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// First delivery of this event on this path.
    First,
    /// This path already received this event.
    Duplicate,
    /// The path would be one more than `MAX_PATHS`: not counted.
    Untracked,
}

/// This run's deliveries, by path and event.
pub struct Deliveries {
    /// Interned paths in order of first delivery; the index is the path's bit.
    paths: Vec<PathStats>,
    /// For each event seq, the bitset of path indices it arrived on.
    seen: HashMap<u64, u64>,
    /// Distinct (path, seq) pairs: the sum of `paths[..].delivered`, kept
    /// so the once-a-second progress line need not add them up.
    pairs: u64,
    /// End-to-end latency (µs) of every first (path, seq) delivery.
    e2e: Histogram<u64>,
}

impl Default for Deliveries {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            seen: HashMap::new(),
            pairs: 0,
            e2e: latency_histogram(),
        }
    }
}

impl Deliveries {
    /// Counts a 2xx-answered delivery of event `seq` on `path`, arrived at
    /// `arrived_us` (Unix µs), `latency_us` after its intended send time.
    pub fn record(&mut self, path: &str, seq: u64, latency_us: u64, arrived_us: u64) -> Recorded {
        let Some(index) = self.intern(path) else {
            return Recorded::Untracked;
        };
        let bit = 1u64 << index;
        let stats = &mut self.paths[index];
        let paths_of_seq = self.seen.entry(seq).or_default();
        if *paths_of_seq & bit != 0 {
            stats.duplicates += 1;
            return Recorded::Duplicate;
        }
        *paths_of_seq |= bit;
        if stats.delivered == 0 {
            stats.first_us = arrived_us;
        }
        stats.last_us = stats.last_us.max(arrived_us);
        *stats.per_second.entry(arrived_us / 1_000_000).or_default() += 1;
        if stats.max_seq.is_some_and(|max| seq < max) {
            stats.overtaken += 1;
        }
        stats.max_seq = stats.max_seq.max(Some(seq));
        stats.delivered += 1;
        stats.e2e.saturating_record(latency_us);
        self.e2e.saturating_record(latency_us);
        self.pairs += 1;
        Recorded::First
    }

    /// The index of `path`, interning it if there is room. A linear scan:
    /// there are as many paths as routes to the sink, a handful.
    fn intern(&mut self, path: &str) -> Option<usize> {
        if let Some(index) = self.paths.iter().position(|p| p.path == path) {
            return Some(index);
        }
        if self.paths.len() == MAX_PATHS {
            return None;
        }
        self.paths.push(PathStats {
            path: path.to_owned(),
            delivered: 0,
            duplicates: 0,
            e2e: latency_histogram(),
            first_us: 0,
            last_us: 0,
            per_second: HashMap::new(),
            max_seq: None,
            overtaken: 0,
        });
        Some(self.paths.len() - 1)
    }

    /// How many distinct paths event `seq` arrived on.
    pub fn paths_of(&self, seq: u64) -> u32 {
        self.seen.get(&seq).map_or(0, |set| set.count_ones())
    }

    /// Distinct (path, seq) pairs delivered.
    pub fn pairs(&self) -> u64 {
        self.pairs
    }

    /// Duplicate deliveries over all paths.
    pub fn duplicates(&self) -> u64 {
        self.paths.iter().map(|p| p.duplicates).sum()
    }

    /// Of `seqs`, deliveries still owed: `fanout` paths each, minus the
    /// distinct paths each arrived on (extra paths do not offset a shortfall).
    pub fn missing(&self, seqs: &[u64], fanout: u32) -> u64 {
        seqs.iter()
            .map(|&seq| u64::from(fanout.saturating_sub(self.paths_of(seq))))
            .sum()
    }

    /// Distinct (path, seq) pairs delivered among `seqs`.
    pub fn pairs_among(&self, seqs: &[u64]) -> u64 {
        seqs.iter().map(|&seq| u64::from(self.paths_of(seq))).sum()
    }

    /// End-to-end latency of every first (path, seq) delivery.
    pub fn e2e(&self) -> &Histogram<u64> {
        &self.e2e
    }

    /// Per-path counts, in order of each path's first delivery.
    pub fn by_path(&self) -> &[PathStats] {
        &self.paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_is_the_same_event_on_the_same_path() {
        let mut d = Deliveries::default();
        assert_eq!(d.record("/a", 7, 100, 0), Recorded::First);
        assert_eq!(d.record("/b", 7, 200, 0), Recorded::First);
        assert_eq!(d.record("/a", 7, 300, 0), Recorded::Duplicate);
        assert_eq!(d.record("/a", 8, 400, 0), Recorded::First);
        assert_eq!(d.paths_of(7), 2);
        assert_eq!(d.paths_of(8), 1);
        assert_eq!(d.paths_of(9), 0);
        assert_eq!(d.pairs(), 3);
        assert_eq!(d.duplicates(), 1);
        // Only first deliveries are timed.
        assert_eq!(d.e2e().len(), 3);
        let by_path: Vec<_> = d
            .by_path()
            .iter()
            .map(|p| (p.path.as_str(), p.delivered, p.duplicates, p.e2e.len()))
            .collect();
        assert_eq!(by_path, [("/a", 2, 1, 2), ("/b", 1, 0, 1)]);
    }

    #[test]
    fn pace_and_order_are_kept_per_path() {
        let mut d = Deliveries::default();
        // Seq 1 and 3 in second 10, seq 2 (overtaken by 3) and 4 in second 11.
        d.record("/a", 1, 1, 10_000_000);
        d.record("/a", 3, 1, 10_500_000);
        d.record("/a", 2, 1, 11_000_000);
        d.record("/a", 2, 1, 11_100_000); // a duplicate counts for nothing
        d.record("/a", 4, 1, 12_000_000);
        d.record("/b", 1, 1, 10_000_000);
        let a = &d.by_path()[0];
        assert_eq!((a.first_us, a.last_us), (10_000_000, 12_000_000));
        assert_eq!(a.overtaken, 1);
        assert_eq!(a.busiest_second(), 2);
        assert!((a.rate_per_s() - 1.5).abs() < 1e-9, "{}", a.rate_per_s());
        assert_eq!(d.by_path()[1].rate_per_s(), 0.0, "one delivery has no pace");
    }

    #[test]
    fn missing_counts_paths_short_of_the_fanout() {
        let mut d = Deliveries::default();
        for path in ["/a", "/b", "/c"] {
            d.record(path, 1, 1, 0);
        }
        d.record("/a", 2, 1, 0);
        d.record("/a", 2, 1, 0); // a duplicate fills no gap
        // Event 1 arrived on all three paths, 2 on one, 3 on none.
        assert_eq!(d.missing(&[1, 2, 3], 3), 5);
        assert_eq!(d.missing(&[1, 2, 3], 1), 1);
        // More paths than expected do not make up for another event's gap.
        assert_eq!(d.missing(&[1, 3], 2), 2);
        assert_eq!(d.pairs_among(&[1, 2, 3]), 4);
        assert_eq!(d.pairs_among(&[2]), 1);
        assert_eq!(d.pairs_among(&[]), 0);
    }

    #[test]
    fn paths_past_the_limit_are_not_tracked() {
        let mut d = Deliveries::default();
        for i in 0..MAX_PATHS {
            assert_eq!(d.record(&format!("/p{i}"), 1, 1, 0), Recorded::First);
        }
        assert_eq!(d.paths_of(1), MAX_PATHS as u32);
        assert_eq!(d.record("/one-too-many", 1, 1, 0), Recorded::Untracked);
        assert_eq!(d.record("/p0", 2, 1, 0), Recorded::First);
        assert_eq!(d.by_path().len(), MAX_PATHS);
        assert_eq!(d.pairs(), MAX_PATHS as u64 + 1);
    }
}
