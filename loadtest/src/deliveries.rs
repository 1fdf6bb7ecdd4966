//! What the sink has received, keyed by (request path, event seq): with
//! fan-out the gateway delivers one event to several routes, each with its
//! own destination path, so a delivery is a duplicate only when that same
//! path already received that same event.
//!
//! Paths are interned to a small index, and the paths an event arrived on
//! are one `u64` bitset per event: 16 bytes of map entry per event whatever
//! the fan-out, which keeps a million-event run in tens of MiB.

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
    /// Counts a 2xx-answered delivery of event `seq` on `path`, `latency_us`
    /// after its intended send time.
    pub fn record(&mut self, path: &str, seq: u64, latency_us: u64) -> Recorded {
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
        assert_eq!(d.record("/a", 7, 100), Recorded::First);
        assert_eq!(d.record("/b", 7, 200), Recorded::First);
        assert_eq!(d.record("/a", 7, 300), Recorded::Duplicate);
        assert_eq!(d.record("/a", 8, 400), Recorded::First);
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
    fn missing_counts_paths_short_of_the_fanout() {
        let mut d = Deliveries::default();
        for path in ["/a", "/b", "/c"] {
            d.record(path, 1, 1);
        }
        d.record("/a", 2, 1);
        d.record("/a", 2, 1); // a duplicate fills no gap
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
            assert_eq!(d.record(&format!("/p{i}"), 1, 1), Recorded::First);
        }
        assert_eq!(d.paths_of(1), MAX_PATHS as u32);
        assert_eq!(d.record("/one-too-many", 1, 1), Recorded::Untracked);
        assert_eq!(d.record("/p0", 2, 1), Recorded::First);
        assert_eq!(d.by_path().len(), MAX_PATHS);
        assert_eq!(d.pairs(), MAX_PATHS as u64 + 1);
    }
}
