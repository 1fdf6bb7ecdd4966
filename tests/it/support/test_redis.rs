//! The Redis under a test's gateway, chosen for the whole run by
//! `SWITCHYARD_TEST_REDIS`: `single` (the default) is one `redis-server`;
//! `cluster` is a 3-master Redis Cluster on which the gateway runs with the
//! cluster's default partitions. Tests written against [`TestRedis`] run
//! unchanged in either mode (the suite is a matrix, not copies): the gateway
//! config's `[redis]` body, a connection that reaches every partition, and
//! each partition's keys come from here.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster_async::ClusterConnection;
use ::redis::streams::StreamPendingReply;
use ::redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Value};
use switchyard::queue::partition;

use super::gateway::GatewayProcess;
use super::redis::RedisServer;
use super::topology::RedisCluster;

/// The variable that picks the mode.
pub const MODE_VAR: &str = "SWITCHYARD_TEST_REDIS";

/// The key prefix of the test configs (the default).
const PREFIX: &str = "switchyard";

/// The partitions the gateway uses on a cluster when the config names none.
pub const CLUSTER_PARTITIONS: u16 = 16;

/// A private Redis or Redis Cluster; stopped on drop.
pub enum TestRedis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    /// Starts one in the mode `SWITCHYARD_TEST_REDIS` names. A cluster here
    /// has no replicas: these tests are about the gateway's behaviour on
    /// partitions spread over masters, not about failover.
    pub fn start() -> Self {
        if on_cluster() {
            TestRedis::Cluster(RedisCluster::start(3, 0))
        } else {
            TestRedis::Single(RedisServer::start())
        }
    }

    /// The body of the gateway config's `[redis]` table.
    pub fn redis_block(&self) -> String {
        match self {
            TestRedis::Single(redis) => format!("url = \"{}\"", redis.url()),
            TestRedis::Cluster(cluster) => {
                let nodes: Vec<String> = cluster
                    .seed_urls()
                    .iter()
                    .map(|url| format!("\"{url}\""))
                    .collect();
                format!("cluster = [{}]", nodes.join(", "))
            }
        }
    }

    /// The one Redis, or `None` on a cluster.
    pub fn single(&self) -> Option<&RedisServer> {
        match self {
            TestRedis::Single(redis) => Some(redis),
            TestRedis::Cluster(_) => None,
        }
    }

    /// Stops it like a crash would (SIGTERM; on a cluster every node).
    pub fn stop(&mut self) {
        match self {
            TestRedis::Single(redis) => redis.stop(),
            TestRedis::Cluster(cluster) => (0..cluster.node_count()).for_each(|i| cluster.kill(i)),
        }
    }

    /// Starts it again on the same data; on a cluster, returns once the
    /// cluster is healthy again.
    pub fn restart(&mut self) {
        match self {
            TestRedis::Single(redis) => redis.restart(),
            TestRedis::Cluster(cluster) => {
                (0..cluster.node_count()).for_each(|i| cluster.restart(i));
                cluster.wait_until_healthy(std::time::Duration::from_secs(30));
            }
        }
    }

    /// The gateway's partitions' hash tags, partition 0 first: the keys of
    /// partition `tag` are `{tag}:jobs`, `{tag}:dead`…
    pub fn partition_tags(&self) -> Vec<String> {
        match self {
            TestRedis::Single(_) => tags(1),
            TestRedis::Cluster(_) => tags(CLUSTER_PARTITIONS),
        }
    }

    /// A connection for inspecting what the gateway wrote; on a cluster it
    /// sends each command to the master of its keys.
    pub async fn connection(&self) -> TestConnection {
        match self {
            TestRedis::Single(redis) => TestConnection::Single(redis.connection().await),
            TestRedis::Cluster(cluster) => cluster_connection(cluster).await,
        }
    }
}

/// The tags of a layout of `count` partitions.
fn tags(count: u16) -> Vec<String> {
    partition::layout(PREFIX, count)
        .into_iter()
        .map(|p| p.tag)
        .collect()
}

async fn cluster_connection(cluster: &RedisCluster) -> TestConnection {
    TestConnection::Cluster(
        ::redis::cluster::ClusterClient::new(cluster.seed_urls())
            .expect("cluster seeds")
            .get_async_connection()
            .await
            .expect("connect to the test cluster"),
    )
}

/// The gateway's queue in Redis: a connection and the partitions' tags,
/// read partition by partition (each one's keys share a slot).
#[derive(Clone)]
pub struct QueueKeys {
    pub conn: TestConnection,
    pub tags: Vec<String>,
}

impl QueueKeys {
    pub async fn of(redis: &TestRedis) -> Self {
        Self {
            conn: redis.connection().await,
            tags: redis.partition_tags(),
        }
    }

    /// The queue of a gateway on `cluster` with the default partitions.
    pub async fn on_cluster(cluster: &RedisCluster) -> Self {
        Self {
            conn: cluster_connection(cluster).await,
            tags: tags(CLUSTER_PARTITIONS),
        }
    }

    /// The queue of a gateway with one partition on the primary at `url`.
    pub async fn of_primary(url: &str) -> Self {
        let conn = ::redis::Client::open(url)
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the primary");
        Self {
            conn: TestConnection::Single(conn),
            tags: tags(1),
        }
    }

    /// The jobs' states: one MULTI per partition, summed.
    pub async fn work(&mut self) -> ::redis::RedisResult<Work> {
        let mut work = Work::default();
        for tag in &self.tags {
            let jobs = format!("{{{tag}}}:jobs");
            let (stream, pending, scheduled, dead): (usize, StreamPendingReply, usize, usize) =
                ::redis::pipe()
                    .atomic()
                    .xlen(&jobs)
                    .xpending(&jobs, switchyard::queue::GROUP)
                    .zcard(format!("{{{tag}}}:retry"))
                    .zcard(format!("{{{tag}}}:dead"))
                    .query_async(&mut self.conn)
                    .await?;
            work.stream += stream;
            work.pending += pending.count();
            work.scheduled += scheduled;
            work.dead += dead;
        }
        Ok(work)
    }

    /// SIGKILLs `gateway` once it has deliveries in flight (it must within
    /// 10 s); how many it still held when it died (0 when it finished them
    /// between the look and the kill).
    pub async fn kill_with_jobs_in_flight(&mut self, gateway: &mut GatewayProcess) -> usize {
        let pid = gateway.pid().expect("running");
        let busy = super::eventually(Duration::from_secs(10), || {
            let mut queue = self.clone();
            async move { queue.pending_of(pid).await > 0 }
        })
        .await;
        assert!(busy, "the process to kill must have deliveries in flight");
        gateway.signal(nix::sys::signal::Signal::SIGKILL);
        tokio::task::block_in_place(|| gateway.wait_exit(Duration::from_secs(5)))
            .expect("SIGKILL ends the gateway");
        self.pending_of(pid).await
    }

    /// Jobs pending (read, not acknowledged) on the consumer of the gateway
    /// process `pid` (consumer names are `<host>-<pid>-<suffix>`).
    pub async fn pending_of(&mut self, pid: u32) -> usize {
        let marker = format!("-{pid}-");
        let mut pending = 0;
        for tag in &self.tags {
            let reply: ::redis::RedisResult<StreamPendingReply> = self
                .conn
                .xpending(format!("{{{tag}}}:jobs"), switchyard::queue::GROUP)
                .await;
            if let Ok(StreamPendingReply::Data(data)) = reply {
                pending += data
                    .consumers
                    .iter()
                    .filter(|c| c.name.contains(&marker))
                    .map(|c| c.pending)
                    .sum::<usize>();
            }
        }
        pending
    }
}

/// The jobs' states in Redis, over every partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Entries in the stream (queued or pending).
    pub stream: usize,
    /// Entries read by a consumer and not yet acknowledged.
    pub pending: usize,
    /// Jobs waiting in the retry schedule.
    pub scheduled: usize,
    /// Dead letters.
    pub dead: usize,
}

impl Work {
    /// No job left to deliver: nothing queued, in flight or scheduled.
    pub fn idle(&self) -> bool {
        self.stream == 0 && self.pending == 0 && self.scheduled == 0
    }
}

/// Whether this run's tests are on a Redis Cluster.
pub fn on_cluster() -> bool {
    match std::env::var(MODE_VAR).as_deref() {
        Ok("cluster") => true,
        Ok("single") | Err(_) => false,
        Ok(other) => panic!("{MODE_VAR} is `single` or `cluster`, not `{other}`"),
    }
}

/// A connection to a [`TestRedis`]: commands (and pipelines whose keys
/// share a slot) work alike in both modes.
#[derive(Clone)]
pub enum TestConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for TestConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            TestConnection::Single(conn) => conn.req_packed_command(cmd),
            TestConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            TestConnection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            TestConnection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            TestConnection::Single(conn) => conn.get_db(),
            TestConnection::Cluster(_) => 0,
        }
    }
}
