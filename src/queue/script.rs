//! Calling the queue's Lua scripts, and confirming their writes on replicas.
//!
//! A script is sent as EVALSHA (loaded and sent again after a Redis restart
//! emptied the script cache). With `redis.ack_replicas`, a write that must
//! survive the loss of its primary is sent in one pipeline with `WAIT`: both
//! go down the same connection to the same primary, so `WAIT` counts the
//! replicas that have this very write, never a reconnected connection's
//! empty history.

use redis::{Cmd, ErrorKind, FromRedisValue, Script, ServerErrorKind, ToRedisArgs};

use super::{Queue, QueueError};

/// One call of a script: its keys and arguments.
pub(super) struct ScriptCall {
    script: &'static Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl ScriptCall {
    pub(super) fn new(script: &'static Script) -> Self {
        Self {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds `KEYS[n]`.
    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// The `n` of the next [`ScriptCall::key`]'s `KEYS[n]`.
    pub(super) fn next_key_index(&self) -> usize {
        self.keys.len() + 1
    }

    /// Adds `ARGV[n]`.
    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }
}

/// Replicas that must have a write before it counts as made.
#[derive(Debug, Clone, Copy)]
pub(super) struct AckReplicas {
    pub(super) replicas: u32,
    pub(super) timeout_ms: u64,
}

/// Whether a call's write must reach `redis.ack_replicas` replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Acked to a sender, or the only copy of a job: confirmed by replicas.
    Replicated,
    /// Losing it in a failover only repeats work (a delivery, a move).
    Primary,
}

impl Queue {
    /// Runs `call`; with [`Durability::Replicated`] and `ack_replicas` set,
    /// fails with `NotReplicated` when too few replicas confirm in time (the
    /// write stays on the primary).
    pub(super) async fn run_script<T: FromRedisValue>(
        &self,
        call: &ScriptCall,
        durability: Durability,
    ) -> Result<T, QueueError> {
        let mut conn = self.conn.clone();
        let mut loaded = false;
        loop {
            let answer = match (durability, self.ack) {
                (Durability::Replicated, Some(ack)) => {
                    let sent: redis::RedisResult<(T, u32)> = redis::pipe()
                        .add_command(call.evalsha())
                        .cmd("WAIT")
                        .arg(ack.replicas)
                        .arg(ack.timeout_ms)
                        .query_async(&mut conn)
                        .await;
                    match sent {
                        Ok((value, confirmed)) if confirmed >= ack.replicas => Ok(value),
                        Ok((_, confirmed)) => {
                            return Err(QueueError::NotReplicated {
                                url: self.display_url.clone(),
                                wanted: ack.replicas,
                                confirmed,
                            });
                        }
                        Err(err) => Err(err),
                    }
                }
                _ => call.evalsha().query_async(&mut conn).await,
            };
            match answer {
                Err(err)
                    if !loaded && err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                {
                    loaded = true;
                    call.script
                        .load_async(&mut conn)
                        .await
                        .map_err(|e| self.error(e))?;
                }
                answer => return answer.map_err(|e| self.error(e)),
            }
        }
    }
}
