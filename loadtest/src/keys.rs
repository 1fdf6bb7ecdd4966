//! What the sink saw per ordering key (bodies with `lt_key`): the most
//! requests of one key it held open at once, and first deliveries that came
//! after a later-sent event of their key. On an ordered route the first is
//! 1 and the second 0, provided each key's events were acked in the order
//! they were sent (true when they are sent farther apart than an ack takes).

use std::collections::HashMap;

use serde::Serialize;

#[derive(Default)]
struct KeyState {
    open: u32,
    max_seq: Option<u64>,
}

/// Every key seen so far.
#[derive(Default)]
pub struct KeyLedger {
    keys: HashMap<String, KeyState>,
    max_open: u32,
    overtaken: u64,
}

/// The per-key figures of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyReport {
    /// Distinct keys that arrived.
    pub keys: u64,
    /// The most requests of one key the sink held open at once.
    pub max_in_flight_per_key: u32,
    /// First deliveries of an event sent before one of its key already
    /// delivered.
    pub out_of_order: u64,
}

impl KeyLedger {
    /// A request of `key` arrived (any answer to come).
    pub fn opened(&mut self, key: &str) {
        let state = match self.keys.get_mut(key) {
            Some(state) => state,
            None => self.keys.entry(key.to_owned()).or_default(),
        };
        state.open += 1;
        self.max_open = self.max_open.max(state.open);
    }

    /// A request of `key` was answered.
    pub fn closed(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            state.open = state.open.saturating_sub(1);
        }
    }

    /// Event `seq` of `key` was delivered for the first time.
    pub fn delivered(&mut self, key: &str, seq: u64) {
        if let Some(state) = self.keys.get_mut(key) {
            if state.max_seq.is_some_and(|max| seq < max) {
                self.overtaken += 1;
            }
            state.max_seq = state.max_seq.max(Some(seq));
        }
    }

    /// `None` when no request carried a key.
    pub fn report(&self) -> Option<KeyReport> {
        (!self.keys.is_empty()).then_some(KeyReport {
            keys: self.keys.len() as u64,
            max_in_flight_per_key: self.max_open,
            out_of_order: self.overtaken,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_and_order_are_kept_per_key() {
        let mut ledger = KeyLedger::default();
        assert_eq!(ledger.report(), None);
        // k0: 1 open then answered, then 2 and 3 open together.
        ledger.opened("k0");
        ledger.delivered("k0", 1);
        ledger.closed("k0");
        ledger.opened("k0");
        ledger.opened("k0");
        ledger.delivered("k0", 3);
        ledger.delivered("k0", 2);
        // Other keys do not add to k0's concurrency nor its order.
        ledger.opened("k1");
        ledger.delivered("k1", 0);
        assert_eq!(
            ledger.report(),
            Some(KeyReport {
                keys: 2,
                max_in_flight_per_key: 2,
                out_of_order: 1
            })
        );
    }
}
