//! Ordered delivery: on a route with `ordered = true`, the jobs of one
//! ordering key go one at a time, in the order they were acked.
//!
//! Only a key's head job is ever in the delivery pipeline (the stream, the
//! retry schedule, held or in flight); the key's later jobs wait in its line,
//! `line:<route>:<key hash>`, a list in ack order. `lines:<route>` holds one
//! field per key with a head: `1` while the head is on its way, `b:<dead
//! letter id>` while the key is blocked by its head's dead letter
//! (`on_dead_letter = "block"`). The scripts that add and remove jobs keep
//! both in the same step as the job's own move: enqueue puts a job in its
//! key's line when the key has a head (else it becomes the head); completion
//! and dead-lettering put the next in line on the stream (or forget the key
//! when its line is empty); a blocked key moves on when its dead letter is
//! replayed (to the back of the line) or deleted. A key's state lives only
//! while it has jobs, and all of it is in the key's partition.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use redis::AsyncCommands;

use super::script::ScriptCall;
use super::{Partition, Queue, QueueError};

/// Lua shared by the scripts that move ordered jobs: `ord_entry(arg)` reads
/// an argument written by [`OrderKeys::arg`] as (the route's lines key, the
/// key's line, the key's field), or nil for a job of no key;
/// `ord_next(lines, line, field, jobs, blocked)` puts the key's next job on
/// the `jobs` stream, or forgets the key when its line is empty; `blocked`
/// says the key's field names a dead letter (else it already says `1`, a
/// head on its way, and is left as it is).
macro_rules! ord_lua {
    () => {
        r"
local function ord_entry(arg)
  if arg == '' then return nil end
  local a = string.find(arg, ':', 1, true)
  local b = string.find(arg, ':', a + 1, true)
  return KEYS[tonumber(string.sub(arg, 1, a - 1))],
    KEYS[tonumber(string.sub(arg, a + 1, b - 1))], string.sub(arg, b + 1)
end
local function ord_next(lines, line, field, jobs, blocked)
  local next = redis.call('LPOP', line)
  if next then
    if blocked then redis.call('HSET', lines, field, '1') end
    redis.call('XADD', jobs, '*', 'job', next)
  else
    redis.call('HDEL', lines, field)
  end
end
"
    };
}
pub(super) use ord_lua;

/// The field and line name of an ordering key: a digest, so any key (long,
/// binary-looking, with separators) makes a safe, bounded Redis key.
pub(super) fn key_hash(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// The ordering keys one script call declares (after every other key).
pub(super) struct OrderKeys<'p> {
    partition: &'p Partition,
    lines: HashMap<String, usize>,
}

impl<'p> OrderKeys<'p> {
    /// Nothing declared yet, for a call on `partition`.
    pub(super) fn new(partition: &'p Partition) -> Self {
        Self {
            partition,
            lines: HashMap::new(),
        }
    }

    /// Declares what a job of `route` with `ordering_key` needs in `call`
    /// and returns its argument: empty for a job of no key, else
    /// `<KEYS index of the route's lines>:<KEYS index of the key's line>:<key field>`.
    pub(super) fn arg(
        &mut self,
        call: &mut ScriptCall,
        route: &str,
        ordering_key: Option<&str>,
    ) -> String {
        let Some(key) = ordering_key else {
            return String::new();
        };
        let field = key_hash(key);
        let lines = match self.lines.get(route) {
            Some(index) => *index,
            None => {
                let index = call.next_key_index();
                call.key(self.partition.keys.lines(route));
                self.lines.insert(route.to_owned(), index);
                index
            }
        };
        let line = call.next_key_index();
        call.key(self.partition.keys.line(route, &field));
        format!("{lines}:{line}:{field}")
    }
}

impl Queue {
    /// Whether `route` delivers its events in order per key.
    pub(super) fn is_ordered(&self, route: &str) -> bool {
        self.ordered.contains(route)
    }
}

/// A key of an ordered route that waits for its head's dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedKey {
    /// The ordering key, as the dead letter recorded it.
    pub key: String,
    /// The dead letter it waits for: replay or delete it to let the key go.
    pub dead_letter: String,
}

/// An ordered route's keys now, over every partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderedKeys {
    /// Keys with a job on its way or waiting (blocked ones included).
    pub active: u64,
    /// Jobs waiting behind their key's head.
    pub waiting_jobs: u64,
    /// Blocked keys, at most [`BLOCKED_SHOWN`].
    pub blocked: Vec<BlockedKey>,
    /// Blocked keys in all.
    pub blocked_count: u64,
}

/// Blocked keys listed per route at most (all are counted).
pub const BLOCKED_SHOWN: usize = 50;

impl Queue {
    /// `route`'s keys now (see [`OrderedKeys`]).
    pub async fn ordered_keys(&self, route: &str) -> Result<OrderedKeys, QueueError> {
        let mut keys = OrderedKeys::default();
        for partition in self.partitions().iter() {
            let mut conn = self.conn.clone();
            let states: HashMap<String, String> = conn
                .hgetall(partition.keys.lines(route))
                .await
                .map_err(|e| self.error(e))?;
            if states.is_empty() {
                continue;
            }
            keys.active += states.len() as u64;
            let mut pipe = redis::pipe();
            for field in states.keys() {
                pipe.llen(partition.keys.line(route, field));
            }
            let waiting: Vec<u64> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            keys.waiting_jobs += waiting.iter().sum::<u64>();
            for id in states.values().filter_map(|s| s.strip_prefix("b:")) {
                keys.blocked_count += 1;
                if keys.blocked.len() < BLOCKED_SHOWN {
                    let key: Option<String> = conn
                        .hget(partition.keys.dead_letter(id), "ordering_key")
                        .await
                        .map_err(|e| self.error(e))?;
                    keys.blocked.push(BlockedKey {
                        key: key.unwrap_or_default(),
                        dead_letter: id.to_owned(),
                    });
                }
            }
        }
        Ok(keys)
    }
}
