//! Queue partitions: each is one hash slot (its keys share one hash tag), so
//! every state move stays a single-slot script, and on a Redis Cluster the
//! partitions spread the queue over the masters.
//!
//! Partition 0's tag is the prefix itself (`{switchyard}`), today's key
//! names. Partition p's tag, `{<prefix>-<p>-<n>}`, is chosen so that it hashes
//! near the middle of its own share of the 16,384 slots: the slots are cut
//! into as many equal ranges as there are partitions, partition 0 takes the
//! range its slot falls in, and the others take the rest in order. Any even
//! layout of slots over masters then gets an even share of partitions,
//! where naive tags (`switchyard-1`…) pile onto one master. The choice
//! depends only on the prefix and the count, so every process agrees.

use sha2::{Digest, Sha256};

use super::keys::Keys;

/// Slots of a Redis Cluster.
const SLOTS: u32 = 16_384;
/// Candidate tags tried per partition; among them one hashing exactly to
/// the middle of its range is all but certain.
const CANDIDATES: u32 = 200_000;

/// One partition: its keys and the slot they hash to.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Position in the layout that wrote it; 0 is today's keys.
    pub index: u16,
    /// Its hash tag, without braces.
    pub tag: String,
    /// The cluster slot of every key of this partition.
    pub slot: u16,
    pub(super) keys: Keys,
}

impl Partition {
    fn new(index: u16, tag: String) -> Self {
        Self {
            index,
            slot: slot_of(&tag),
            keys: Keys::new(&tag),
            tag,
        }
    }

    /// A partition of an earlier layout, known by its tag.
    pub(super) fn from_tag(tag: &str) -> Self {
        Self::new(u16::MAX, tag.to_owned())
    }
}

/// The cluster slot of a hash tag (CRC16/XMODEM mod 16,384, as Redis).
pub fn slot_of(tag: &str) -> u16 {
    (crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) as u32 % SLOTS) as u16
}

/// What spreads events over the partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spread {
    /// The sender's delivery id.
    DeliveryId,
    /// The event's ordering key.
    OrderingKey,
}

/// The partition (of `count`) an event from `source` with `value` (its
/// delivery id or ordering key, as `spread` says) goes to: the same in every
/// process and version, so a sender's retry meets the dedupe record of its
/// first attempt, and every event of one key meets the others. SHA-256
/// rather than the slots' CRC16: a CRC is linear, so ids that differ in
/// their last digits only (`evt-1`, `evt-2`, …) would fill half the
/// partitions twice as fast.
pub(super) fn index_for(source: &str, spread: Spread, value: &str, count: usize) -> usize {
    // A delivery id hashes as before ordering keys existed, so an upgrade
    // moves no sender's retries away from their dedupe records.
    let separator = match spread {
        Spread::DeliveryId => 0u8,
        Spread::OrderingKey => 1u8,
    };
    let digest = Sha256::new()
        .chain_update(source)
        .chain_update([separator])
        .chain_update(value)
        .finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    // The remainder is below `count`, which is a usize.
    (u64::from_be_bytes(head) % count.max(1) as u64) as usize
}

/// The `count` partitions under `prefix`.
pub fn layout(prefix: &str, count: u16) -> Vec<Partition> {
    let count = u32::from(count.max(1));
    let first = Partition::new(0, prefix.to_owned());
    let first_range = u32::from(first.slot) * count / SLOTS;
    let mut partitions = vec![first];
    let other_ranges = (0..count).filter(|range| *range != first_range);
    for (index, range) in (1..).zip(other_ranges) {
        let middle = ((2 * range + 1) * SLOTS / (2 * count)) as u16;
        partitions.push(Partition::new(index, tag_near(prefix, index, middle)));
    }
    partitions
}

/// The first `{prefix}-{index}-{n}` hashing to `slot`, else the nearest.
fn tag_near(prefix: &str, index: u16, slot: u16) -> String {
    let distance = |tag: &str| slot_of(tag).abs_diff(slot);
    let mut best = format!("{prefix}-{index}-0");
    for n in 1..CANDIDATES {
        if distance(&best) == 0 {
            break;
        }
        let tag = format!("{prefix}-{index}-{n}");
        if distance(&tag) < distance(&best) {
            best = tag;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_is_redis_cluster_s() {
        // As CLUSTER KEYSLOT answers (the last is the CRC16/XMODEM check value).
        assert_eq!(slot_of("switchyard"), 12385);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("123456789"), 12739);
    }

    #[test]
    fn one_partition_is_today_s_keys() {
        let partitions = layout("switchyard", 1);
        assert_eq!(partitions.len(), 1);
        assert_eq!(partitions[0].keys.jobs(), "{switchyard}:jobs");
    }

    #[test]
    fn partitions_take_one_equal_slot_range_each() {
        for count in [2u16, 3, 7, 16, 64] {
            let partitions = layout("switchyard", count);
            assert_eq!(partitions.len(), usize::from(count));
            let mut ranges: Vec<u32> = partitions
                .iter()
                .map(|p| u32::from(p.slot) * u32::from(count) / SLOTS)
                .collect();
            ranges.sort_unstable();
            assert_eq!(ranges, (0..u32::from(count)).collect::<Vec<_>>(), "{count}");
        }
    }

    #[test]
    fn sequential_delivery_ids_spread_evenly_over_partitions() {
        let mut counts = [0u32; 16];
        for n in 0..1600 {
            counts[index_for("github", Spread::DeliveryId, &format!("load-{n}"), 16)] += 1;
        }
        // 100 each on average; CRC16 gave 60 to half and 120 to the others.
        assert!(counts.iter().all(|c| (75..=125).contains(c)), "{counts:?}");
        assert_eq!(
            index_for("github", Spread::DeliveryId, "load-7", 16),
            index_for("github", Spread::DeliveryId, "load-7", 16)
        );
        assert_eq!(index_for("github", Spread::DeliveryId, "load-7", 1), 0);
    }

    #[test]
    fn events_of_one_key_share_a_partition_and_keys_spread_evenly() {
        let mut counts = [0u32; 16];
        for n in 0..1600 {
            counts[index_for("stripe", Spread::OrderingKey, &format!("cus_{n}"), 16)] += 1;
        }
        assert!(counts.iter().all(|c| (75..=125).contains(c)), "{counts:?}");
        // Fixed across versions: an upgrade must not move a sender's retries
        // away from their dedupe records, nor a key away from its line.
        assert_eq!(index_for("github", Spread::DeliveryId, "load-7", 16), 5);
        assert_eq!(index_for("stripe", Spread::OrderingKey, "cus_1", 16), 15);
    }

    #[test]
    fn the_layout_is_stable() {
        let tags = |count| -> Vec<String> {
            layout("switchyard", count)
                .into_iter()
                .map(|p| p.tag)
                .collect()
        };
        assert_eq!(tags(16), tags(16));
        assert_eq!(tags(16)[0], "switchyard");
        assert!(tags(16)[1].starts_with("switchyard-1-"));
    }
}
