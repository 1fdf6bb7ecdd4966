//! How far behind a route with `max_lag` (or an ordered route) is: the age
//! of its oldest undelivered job (pending, retrying, held or waiting in its
//! key's line).
//!
//! Per partition, `lag:<route>` holds the route's undelivered jobs by job id,
//! scored by when they became undelivered (accepted, or replayed), Unix ms.
//! While held, a job sits in `lag-held:<route>` instead, so a paused route's
//! held jobs can be left out. Every script that moves such a job keeps the
//! index in the same step: enqueue and replay add it, completion and
//! dead-lettering remove it, hold and release move it between the two sets
//! (a retry keeps it: the job is still undelivered). Only routes with
//! `max_lag` or `ordered` are indexed, so the others cost Redis nothing more.

use std::collections::HashMap;

use super::script::ScriptCall;
use super::{Partition, Queue, QueueError};

/// Lua shared by the batch scripts: `lag_entry(arg)` reads an argument
/// written by [`LagKeys::arg`] as (the route's lag key, job id), or nil
/// when the job's route is not indexed.
macro_rules! lag_entry_lua {
    () => {
        r"
local function lag_entry(arg)
  if arg == '' then return nil end
  local cut = string.find(arg, ':', 1, true)
  return KEYS[tonumber(string.sub(arg, 1, cut - 1))], string.sub(arg, cut + 1)
end
"
    };
}
pub(super) use lag_entry_lua;

/// The lag keys one script call declares (each after every other key).
pub(super) struct LagKeys {
    index: HashMap<String, usize>,
}

impl LagKeys {
    /// The argument for a job of `route` with id `job_id`: empty when its
    /// route is not indexed, else `<KEYS index of its lag key>:<job id>`.
    pub(super) fn arg(&self, route: &str, job_id: &str) -> String {
        match self.index.get(route) {
            Some(index) => format!("{index}:{job_id}"),
            None => String::new(),
        }
    }
}

impl Queue {
    /// Whether `route`'s undelivered jobs are indexed.
    pub(super) fn tracks_lag(&self, route: &str) -> bool {
        self.lag_tracked.contains(route)
    }

    /// Declares in `call` the lag key, in `partition`, of each indexed
    /// route among `routes`; call after every other key.
    pub(super) fn lag_keys<'a>(
        &self,
        call: &mut ScriptCall,
        partition: &Partition,
        routes: impl IntoIterator<Item = &'a str>,
    ) -> LagKeys {
        let mut index = HashMap::new();
        if self.lag_tracked.is_empty() {
            return LagKeys { index };
        }
        for route in routes {
            if self.tracks_lag(route) && !index.contains_key(route) {
                index.insert(route.to_owned(), call.next_key_index());
                call.key(partition.keys.lag(route));
            }
        }
        LagKeys { index }
    }

    /// Declares `route`'s lag key and held lag key in `call` when the
    /// route is indexed; the hold and release scripts look for them after
    /// their other keys.
    pub(super) fn held_lag_keys(&self, call: &mut ScriptCall, partition: &Partition, route: &str) {
        if self.tracks_lag(route) {
            call.key(partition.keys.lag(route))
                .key(partition.keys.lag_held(route));
        }
    }

    /// When the oldest undelivered job of each of `routes` became
    /// undelivered (Unix ms), over every partition; `None` for a route
    /// with none (or not indexed). Held jobs count where `count_held` is
    /// true (a paused route's do not).
    pub async fn oldest_undelivered(
        &self,
        routes: &[(&str, bool)],
    ) -> Result<Vec<Option<u64>>, QueueError> {
        let mut oldest: Vec<Option<u64>> = vec![None; routes.len()];
        if routes.is_empty() {
            return Ok(oldest);
        }
        for partition in self.partitions().iter() {
            let mut pipe = redis::pipe();
            for (route, count_held) in routes {
                pipe.cmd("ZRANGE")
                    .arg(partition.keys.lag(route))
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES");
                if *count_held {
                    pipe.cmd("ZRANGE")
                        .arg(partition.keys.lag_held(route))
                        .arg(0)
                        .arg(0)
                        .arg("WITHSCORES");
                }
            }
            let mut conn = self.conn.clone();
            let found: Vec<Vec<(String, f64)>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            let mut found = found.into_iter();
            for ((_, count_held), slot) in routes.iter().zip(oldest.iter_mut()) {
                let sets = if *count_held { 2 } else { 1 };
                for set in found.by_ref().take(sets) {
                    for (_, score) in set {
                        let ms = score as u64;
                        *slot = Some(slot.map_or(ms, |o| o.min(ms)));
                    }
                }
            }
        }
        Ok(oldest)
    }

    /// Drops the index of routes that no longer have `max_lag` (what it
    /// held would never be removed).
    pub async fn forget_lag(&self, routes: &[&str]) -> Result<(), QueueError> {
        if routes.is_empty() {
            return Ok(());
        }
        for partition in self.partitions().iter() {
            let mut cmd = redis::cmd("DEL");
            for route in routes {
                cmd.arg(partition.keys.lag(route))
                    .arg(partition.keys.lag_held(route));
            }
            let mut conn = self.conn.clone();
            let _: u64 = cmd
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}
