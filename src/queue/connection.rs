//! The connection to whichever Redis deployment the config names: one
//! Redis, a primary found through Sentinel, or a Redis Cluster. Each is the
//! redis crate's own client underneath; what this module adds is one type the
//! rest of the queue talks to, lazy connecting (a gateway started while Redis
//! is down comes up and connects once it can), and following a Sentinel
//! failover to the new primary.
//!
//! Every connection multiplexes: concurrent commands share its sockets.
//! Blocking reads get connections of their own ([`Connector::dedicated`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::RedisTarget;

/// Bounds one connection attempt, so a black-holed Redis fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect attempts inside one command before it fails back to the caller;
/// the caller (or the next command) triggers the next round.
const RECONNECT_RETRIES: usize = 2;
/// Asking the sentinels again sooner than this after they could not name a
/// primary only loads them: a failover takes seconds.
const SENTINEL_ASK_EVERY: Duration = Duration::from_millis(250);

/// Makes connections to the configured Redis.
#[derive(Clone)]
pub(super) struct Connector {
    target: RedisTarget,
}

impl Connector {
    pub(super) fn new(target: &RedisTarget) -> Self {
        Self {
            target: target.clone(),
        }
    }

    /// A connection that answers within `response_timeout` (longer for
    /// blocking reads), connecting on first use.
    pub(super) fn dedicated(&self, response_timeout: Duration) -> RedisResult<Connection> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(RECONNECT_RETRIES);
        match &self.target {
            RedisTarget::Single(info) => {
                let client = redis::Client::open(info.clone())?;
                let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
                Ok(Connection::Single {
                    manager,
                    address: info.addr().to_string().into(),
                })
            }
            RedisTarget::Sentinel { master, nodes } => {
                let primary_settings = nodes
                    .first()
                    .map(|node| node.redis_settings().clone())
                    .unwrap_or_default();
                let sentinels = SentinelClient::build(
                    nodes.clone(),
                    master.clone(),
                    Some(
                        SentinelNodeConnectionInfo::default()
                            .set_redis_connection_info(primary_settings.clone()),
                    ),
                    SentinelServerType::Master,
                )?;
                Ok(Connection::Sentinel(Arc::new(SentinelPrimary {
                    db: primary_settings.db(),
                    sentinels: tokio::sync::Mutex::new(Sentinels {
                        client: sentinels,
                        failed: None,
                    }),
                    current: Mutex::new(None),
                    manager_config,
                })))
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    .build()?;
                Ok(Connection::Cluster(Arc::new(Cluster {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                })))
            }
        }
    }
}

/// One logical connection; cheap to clone (clones share sockets).
#[derive(Clone)]
pub(super) enum Connection {
    /// One Redis, at `address`.
    Single {
        manager: ConnectionManager,
        address: Arc<str>,
    },
    /// The primary the sentinels name.
    Sentinel(Arc<SentinelPrimary>),
    /// A Redis Cluster: commands go to the master of their keys' slot.
    Cluster(Arc<Cluster>),
}

impl Connection {
    /// `cmd` on the master that holds `slot`: on a cluster, keyless
    /// commands (PING, INFO, WAIT) would otherwise go to every node or any.
    pub(super) async fn on_slot<T: FromRedisValue>(&self, cmd: &Cmd, slot: u16) -> RedisResult<T> {
        match self {
            Connection::Cluster(cluster) => {
                let mut conn = cluster.connection().await?;
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                let value = conn
                    .route_command(cmd.clone(), RoutingInfo::SingleNode(route))
                    .await?;
                T::from_redis_value(value).map_err(Into::into)
            }
            other => cmd.query_async(&mut other.clone()).await,
        }
    }

    /// `host:port` of the primary that serves `slot`, from an answer of that
    /// primary (so an address also says it is up).
    pub(super) async fn serving(&self, slot: u16) -> RedisResult<String> {
        match self {
            Connection::Cluster(_) => {
                let nodes: String = self
                    .on_slot(redis::cmd("CLUSTER").arg("NODES"), slot)
                    .await?;
                own_address(&nodes, slot).map_err(|detail| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "no master for the slot",
                        detail,
                    ))
                })
            }
            Connection::Single { address, .. } => {
                self.on_slot::<String>(&redis::cmd("PING"), slot).await?;
                Ok(address.to_string())
            }
            Connection::Sentinel(primary) => {
                self.on_slot::<String>(&redis::cmd("PING"), slot).await?;
                primary.address().ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Client, "no primary known yet"))
                })
            }
        }
    }
}

/// The `host:port` a cluster node gives itself in its `CLUSTER NODES`
/// answer (the line flagged `myself`; the bus port after `@` left out),
/// when it is the master of `slot`. The cluster client answers a command
/// for a master it cannot reach from another node, so the answer must show
/// that the node that answered holds the slot.
fn own_address(cluster_nodes: &str, slot: u16) -> Result<String, String> {
    let line = cluster_nodes
        .lines()
        .find(|line| {
            line.split_whitespace()
                .nth(2)
                .is_some_and(|flags| flags.split(',').any(|flag| flag == "myself"))
        })
        .ok_or("CLUSTER NODES names no node as itself")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let address = fields[1].split('@').next().unwrap_or(fields[1]);
    let holds = fields[2].split(',').any(|flag| flag == "master")
        && fields.iter().skip(8).any(|range| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            match (first.parse::<u16>(), last.parse::<u16>()) {
                (Ok(first), Ok(last)) => (first..=last).contains(&slot),
                _ => false,
            }
        });
    if holds {
        Ok(address.to_owned())
    } else {
        Err(format!(
            "{address} answered for slot {slot} but does not hold it: the slot's master does not answer"
        ))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single { manager, .. } => manager.req_packed_command(cmd),
            Connection::Sentinel(primary) => {
                let primary = primary.clone();
                Box::pin(async move {
                    let mut manager = primary.manager().await?;
                    let answer = manager.req_packed_command(cmd).await;
                    primary.after(&answer);
                    answer
                })
            }
            Connection::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(async move { cluster.connection().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single { manager, .. } => {
                manager.req_packed_commands(pipeline, offset, count)
            }
            Connection::Sentinel(primary) => {
                let primary = primary.clone();
                Box::pin(async move {
                    let mut manager = primary.manager().await?;
                    let answer = manager.req_packed_commands(pipeline, offset, count).await;
                    primary.after(&answer);
                    answer
                })
            }
            Connection::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(async move {
                    cluster
                        .connection()
                        .await?
                        .req_packed_commands(pipeline, offset, count)
                        .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single { manager, .. } => manager.get_db(),
            // The database of the sentinels' URL, used for the primary.
            Connection::Sentinel(primary) => primary.db,
            // A cluster has only database 0.
            Connection::Cluster(_) => 0,
        }
    }
}

/// A Redis Cluster client, connected on first use (and again after a
/// failed first connection).
pub(super) struct Cluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl Cluster {
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// The primary of a Sentinel-monitored group: the sentinels are asked for
/// it on first use, and again before the next command once a command failed
/// the way commands fail on a primary that is gone or was demoted (I/O
/// errors, READONLY). Until the sentinels have named a primary again, no
/// command goes to the old one: a killed primary restarted after the
/// failover takes writes as a primary until the sentinels demote it, and
/// loses them when it resyncs from the new one.
pub(super) struct SentinelPrimary {
    db: i64,
    sentinels: tokio::sync::Mutex<Sentinels>,
    current: Mutex<Option<Known>>,
    manager_config: ConnectionManagerConfig,
}

/// The sentinels' client, and when asking them last failed.
struct Sentinels {
    client: SentinelClient,
    failed: Option<(Instant, redis::RedisError)>,
}

/// The primary in use, and whether the sentinels named it since a command
/// last failed on it.
struct Known {
    address: String,
    manager: ConnectionManager,
    confirmed: bool,
}

impl SentinelPrimary {
    async fn manager(&self) -> RedisResult<ConnectionManager> {
        if let Some(manager) = self.confirmed_manager() {
            return Ok(manager);
        }
        self.ask_sentinels().await
    }

    /// The primary in use, once the sentinels named one.
    fn address(&self) -> Option<String> {
        let current = self.current.lock().ok()?;
        current.as_ref().map(|known| known.address.clone())
    }

    fn confirmed_manager(&self) -> Option<ConnectionManager> {
        let current = self.current.lock().ok()?;
        current
            .as_ref()
            .filter(|known| known.confirmed)
            .map(|known| known.manager.clone())
    }

    /// After a command: a failure that suggests the primary moved sends the
    /// next command through the sentinels first.
    fn after<T>(&self, answer: &RedisResult<T>) {
        let Err(err) = answer else { return };
        let moved = err.is_io_error()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.code() == Some("READONLY");
        if moved
            && let Ok(mut current) = self.current.lock()
            && let Some(known) = current.as_mut()
        {
            known.confirmed = false;
        }
    }

    /// Asks the sentinels for the primary (they check it answers as one);
    /// switches to it when it changed. Commands waiting here while another
    /// asks take that answer; within `SENTINEL_ASK_EVERY` of a failed ask
    /// they fail with its error without asking again.
    async fn ask_sentinels(&self) -> RedisResult<ConnectionManager> {
        let mut sentinels = self.sentinels.lock().await;
        if let Some(manager) = self.confirmed_manager() {
            return Ok(manager);
        }
        if let Some((at, err)) = &sentinels.failed
            && at.elapsed() < SENTINEL_ASK_EVERY
        {
            return Err(err.clone());
        }
        let client = match sentinels.client.async_get_client().await {
            Ok(client) => client,
            Err(err) => {
                sentinels.failed = Some((Instant::now(), err.clone()));
                return Err(err);
            }
        };
        sentinels.failed = None;
        let address = client.get_connection_info().addr().to_string();
        let mut current = self
            .current
            .lock()
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Client, "poisoned")))?;
        match current.as_mut() {
            Some(known) if known.address == address => {
                known.confirmed = true;
                Ok(known.manager.clone())
            }
            _ => {
                let manager =
                    ConnectionManager::new_lazy_with_config(client, self.manager_config.clone())?;
                if let Some(known) = current.as_ref() {
                    tracing::warn!(from = %known.address, to = %address, "redis: sentinels name a new primary; following it");
                } else {
                    tracing::info!(primary = %address, "redis: sentinels name the primary");
                }
                *current = Some(Known {
                    address,
                    manager: manager.clone(),
                    confirmed: true,
                });
                Ok(manager)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_node_is_named_by_its_own_line_without_the_bus_port() {
        let nodes = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 myself,master - 0 1426238316232 2 connected 5461-10922 12000
";
        assert_eq!(own_address(nodes, 5461).as_deref(), Ok("127.0.0.1:30002"));
        assert_eq!(own_address(nodes, 12000).as_deref(), Ok("127.0.0.1:30002"));
        assert!(own_address("garbage\n", 1).is_err());
        assert!(own_address("", 1).is_err());
    }

    #[test]
    fn a_node_that_answers_for_a_slot_it_does_not_hold_is_not_its_master() {
        let replica = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 myself,slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
";
        let other_master = "\
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 myself,master - 0 1426238316232 2 connected 5461-10922
";
        assert!(own_address(replica, 7000).is_err());
        let refused = own_address(other_master, 100).expect_err("slot 100 is elsewhere");
        assert!(refused.contains("127.0.0.1:30002"), "{refused}");
    }
}
