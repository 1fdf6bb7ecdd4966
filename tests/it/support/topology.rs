//! Real Redis Cluster and Redis Sentinel topologies made of private
//! `redis-server` processes, for tests of the gateway's cluster and sentinel
//! modes: start one, find its masters, kill and restart nodes, and wait until
//! Redis itself has failed over and resynced.
//!
//! Every node is a [`RedisServer`] with its own port and temp dir, so dropping
//! a topology kills all of it, even when a test panics. Admin commands go
//! over short-lived blocking connections with short timeouts, so a dead or
//! stalled node makes a poll fail rather than hang.

use std::collections::HashMap;
use std::net::TcpListener;
use std::ops::RangeInclusive;
use std::process::Command;
use std::time::{Duration, Instant};

use ::redis::{Cmd, FromRedisValue, RedisResult, cmd};

use super::free_port;
use super::redis::RedisServer;

/// How often the waiting helpers ask the nodes again.
const POLL: Duration = Duration::from_millis(50);

/// Connect, read and write timeout of one admin command.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a new topology gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Log lines shown per node when a wait times out.
const LOG_TAIL: usize = 15;

const SLOTS: usize = 16384;

/// Durable like the gateway's own Redis; the diskless sync delay (5 s by
/// default, to batch replicas) would only slow every first sync down.
const DATA_ARGS: [&str; 6] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--repl-diskless-sync-delay",
    "0",
];

/// A node is suspected failing after this long without a pong, and a
/// replica's election waits about half a second plus 1 s per rank after
/// that: a failover takes 2–3 s. Smaller timeouts risk spurious failovers
/// when fsync or a busy CI machine stalls a node for a moment.
const CLUSTER_NODE_TIMEOUT_MS: &str = "1000";

/// A Redis Cluster: `masters` masters with `replicas` replicas each.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
}

impl RedisCluster {
    /// Starts `masters` (at least 3) masters with `replicas` replicas each,
    /// created by `redis-cli --cluster create`. Returns once every node says
    /// `cluster_state:ok` with all slots covered and every replica has
    /// finished its first sync (a replica that has not is never promoted).
    pub fn start(masters: usize, replicas: usize) -> Self {
        assert!(
            masters >= 3,
            "redis-cli creates clusters of 3 masters or more"
        );
        let ports = cluster_ports(masters * (1 + replicas));
        let mut args = DATA_ARGS.to_vec();
        args.extend([
            "--cluster-enabled",
            "yes",
            // Relative to the node's own --dir.
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            CLUSTER_NODE_TIMEOUT_MS,
        ]);
        let nodes = ports
            .iter()
            .map(|&port| RedisServer::start_on_with(port, &args))
            .collect();
        let cluster = Self { nodes, masters };

        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be on PATH");
        if !output.status.success() {
            panic!(
                "redis-cli --cluster create failed:\n{}{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                cluster.describe(),
            );
        }
        cluster.wait("the new cluster to be ready", READY_TIMEOUT, |c| {
            c.check_healthy()?;
            c.check_replicas_synced()
        });
        cluster
    }

    /// `redis://127.0.0.1:<port>` for every node, live or not.
    pub fn seed_urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.node_url(i)).collect()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[i].port())
    }

    /// Indexes of the live nodes that say they are masters now (`role:master`
    /// in their INFO replication).
    pub fn masters(&self) -> Vec<usize> {
        self.live()
            .filter(|&i| role(self.nodes[i].port()).is_ok_and(|role| role == "master"))
            .collect()
    }

    /// The live master that claims `slot` itself.
    pub fn master_for_slot(&self, slot: u16) -> usize {
        self.masters()
            .into_iter()
            .find(|&i| self.slots_of(i).iter().any(|range| range.contains(&slot)))
            .unwrap_or_else(|| panic!("no live master claims slot {slot}\n{}", self.describe()))
    }

    /// The slot ranges `node` claims in its own `CLUSTER NODES` (none for a
    /// replica, or a node that does not answer).
    pub fn slots_of(&self, node: usize) -> Vec<RangeInclusive<u16>> {
        let Ok(nodes) = query::<String>(self.nodes[node].port(), cmd("CLUSTER").arg("NODES"))
        else {
            return Vec::new();
        };
        nodes
            .lines()
            .find(|line| {
                line.split(' ')
                    .nth(2)
                    .is_some_and(|flags| flags.split(',').any(|flag| flag == "myself"))
            })
            .map(own_slots)
            .unwrap_or_default()
    }

    /// Kills the node like a crash would (SIGKILL).
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].kill();
    }

    /// Starts the node again on its port with its data and `nodes.conf`; it
    /// rejoins, as a replica if it was failed over meanwhile.
    pub fn restart(&mut self, node: usize) {
        self.nodes[node].restart();
    }

    /// Waits until the live masters, exactly as many as the cluster was
    /// started with, claim every slot once between them and every live node
    /// says `cluster_state:ok` with all slots served: after a master is
    /// killed, until its replica has taken over and the others have noticed.
    pub fn wait_until_healthy(&self, within: Duration) {
        self.wait("the cluster to be healthy", within, Self::check_healthy);
    }

    /// Waits until there are as many masters as the cluster was started with
    /// and every live replica has finished syncing with its master: after a
    /// restart, until the node has rejoined and been resynced.
    pub fn wait_replicas_synced(&self, within: Duration) {
        self.wait(
            "the replicas to be synced",
            within,
            Self::check_replicas_synced,
        );
    }

    fn check_healthy(&self) -> Result<(), String> {
        let masters = self.masters();
        if masters.len() != self.masters {
            return Err(format!("live masters {masters:?}, want {}", self.masters));
        }
        let mut claimed = vec![false; SLOTS];
        for &master in &masters {
            for slot in self.slots_of(master).into_iter().flatten() {
                if std::mem::replace(&mut claimed[usize::from(slot)], true) {
                    return Err(format!("slot {slot} claimed twice"));
                }
            }
        }
        let unclaimed = claimed.iter().filter(|claimed| !**claimed).count();
        if unclaimed > 0 {
            return Err(format!("{unclaimed} slots claimed by no live master"));
        }
        for i in self.live() {
            let info = info(self.nodes[i].port(), "CLUSTER", "INFO")
                .map_err(|e| format!("node {i}: CLUSTER INFO: {e}"))?;
            let state = field(&info, "cluster_state");
            let served = field(&info, "cluster_slots_ok");
            if state != "ok" || served != SLOTS.to_string() {
                return Err(format!(
                    "node {i}: cluster_state:{state} cluster_slots_ok:{served}"
                ));
            }
        }
        Ok(())
    }

    fn check_replicas_synced(&self) -> Result<(), String> {
        let masters = self.masters();
        if masters.len() != self.masters {
            return Err(format!("live masters {masters:?}, want {}", self.masters));
        }
        for i in self.live().filter(|i| !masters.contains(i)) {
            replica_synced(self.nodes[i].port()).map_err(|e| format!("node {i}: {e}"))?;
        }
        Ok(())
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running())
    }

    fn wait(&self, what: &str, within: Duration, check: impl Fn(&Self) -> Result<(), String>) {
        wait_or_explain(what, within, || check(self), || self.describe());
    }

    /// Every node's own view (`CLUSTER NODES`) and its log's tail.
    fn describe(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let view = if node.is_running() {
                query::<String>(node.port(), cmd("CLUSTER").arg("NODES"))
                    .unwrap_or_else(|e| format!("CLUSTER NODES: {e}"))
            } else {
                "(killed)".to_owned()
            };
            out += &format!(
                "--- node {i} (port {}):\n{view}\n--- its log:\n{}\n",
                node.port(),
                node.log_tail(LOG_TAIL)
            );
        }
        out
    }
}

/// Ports for `count` cluster nodes. A node also listens on its port + 10000
/// (the cluster bus), so both must be free; picking from 20000..22700 keeps
/// both below the kernel's ephemeral range (32768 and up), where
/// `free_port()` and outgoing connections could take them before the node
/// binds.
fn cluster_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    for _ in 0..10_000 {
        if ports.len() == count {
            break;
        }
        let port: u16 = rand::random_range(20000..22700);
        // Bus ports (30000 and up) cannot clash with ports (below 22700).
        if !ports.contains(&port) && bindable(port) && bindable(port + 10000) {
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), count, "found no free cluster ports");
    ports
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The slots of a `CLUSTER NODES` line: `a-b` or `a`, skipping the
/// `[slot->-id]` entries of a migration in progress.
fn own_slots(line: &str) -> Vec<RangeInclusive<u16>> {
    line.split(' ')
        .skip(8)
        .filter(|entry| !entry.starts_with('['))
        .filter_map(|entry| {
            let (first, last) = entry.split_once('-').unwrap_or((entry, entry));
            Some(first.parse().ok()?..=last.parse().ok()?)
        })
        .collect()
}

/// Redis Sentinel: a primary and one replica, watched by three sentinels
/// with a quorum of two.
pub struct RedisSentinels {
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinels {
    /// The name the sentinels monitor the primary under.
    pub const MASTER_NAME: &str = "switchyard";

    /// Starts data node 0 as the primary, data node 1 as its replica, and
    /// three sentinels. Returns once the replica has synced and every
    /// sentinel knows the master, the replica and the other two sentinels.
    pub fn start() -> Self {
        let primary = RedisServer::start_with(&DATA_ARGS);
        let primary_port = primary.port().to_string();
        let mut replica_args = DATA_ARGS.to_vec();
        replica_args.extend(["--replicaof", "127.0.0.1", &primary_port]);
        let replica = RedisServer::start_with(&replica_args);
        let mut topology = Self {
            data: vec![primary, replica],
            sentinels: Vec::new(),
        };
        // Sentinels learn of replicas from the master's INFO: start them
        // after the replica is attached, so their first read lists it.
        topology.wait("the replica's first sync", READY_TIMEOUT, |t| {
            t.check_replica_of(0)
        });

        // Down after 2 s without a reply, not 1: a sentinel pings an instance
        // first 1 s after it (re)connects, and a master's links are new after
        // every failover, so with 1 s the new master was at times declared
        // down at once and failed over back to a restarted old master. A
        // short failover timeout keeps a stuck failover from holding a test.
        let config = format!(
            "sentinel monitor {name} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {name} 2000\n\
             sentinel failover-timeout {name} 3000\n\
             sentinel parallel-syncs {name} 1\n",
            name = Self::MASTER_NAME,
        );
        for _ in 0..3 {
            let sentinel = RedisServer::start_sentinel(free_port(), &config);
            // A sentinel turns a restarted old master back into a replica
            // once it has said "master" for 4 hello periods (2 s each), on its
            // next INFO (every 10 s): about 10 s in all. Hellos every 0.5 s
            // and INFO every 1 s make that 3 s, and the sentinels find each
            // other sooner at start.
            let _: () = query(
                sentinel.port(),
                cmd("SENTINEL")
                    .arg("DEBUG")
                    .arg("publish-period")
                    .arg(500)
                    .arg("info-period")
                    .arg(1000),
            )
            .unwrap_or_else(|e| panic!("SENTINEL DEBUG: {e}"));
            topology.sentinels.push(sentinel);
        }
        topology.wait("the sentinels to know the topology", READY_TIMEOUT, |t| {
            t.check_sentinels_know_all()
        });
        topology
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|sentinel| format!("redis://127.0.0.1:{}", sentinel.port()))
            .collect()
    }

    /// The data node (0 or 1) every sentinel names as master now; waits a
    /// little for them to agree if a failover is being announced.
    pub fn master_index(&self) -> usize {
        let mut named = Ok(0);
        self.wait("the sentinels to agree on a master", READY_TIMEOUT, |t| {
            named = t.named_master();
            named.clone().map(|_| ())
        });
        named.expect("checked by the wait")
    }

    pub fn data_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.data[i].port())
    }

    /// Kills a data node like a crash would (SIGKILL).
    pub fn kill_data(&mut self, i: usize) {
        self.data[i].kill();
    }

    /// Starts a data node again with its data. It comes back as a master
    /// (with its old data) until the sentinels turn it into a replica of the
    /// current master, about 3 s later: [`Self::wait_replica_synced`] waits
    /// for that, and should come before killing anything else.
    pub fn restart_data(&mut self, i: usize) {
        self.data[i].restart();
    }

    /// Waits until every sentinel names a live master other than data node
    /// `old`, and that node says it is a master; returns its index.
    pub fn wait_failover_from(&self, old: usize, within: Duration) -> usize {
        let mut promoted = Err(String::new());
        self.wait("a failover", within, |t| {
            promoted = t.named_master().and_then(|master| {
                if master == old {
                    return Err(format!("sentinels still name node {old}"));
                }
                let role = role(t.data[master].port())
                    .map_err(|e| format!("node {master}: INFO replication: {e}"))?;
                if role != "master" {
                    return Err(format!("node {master}, named master, says role:{role}"));
                }
                Ok(master)
            });
            promoted.clone().map(|_| ())
        });
        promoted.expect("checked by the wait")
    }

    /// Waits until the data node that is not master is a synced replica of
    /// the master, and every sentinel sees it as a healthy replica (so a
    /// later failover may pick it).
    pub fn wait_replica_synced(&self, within: Duration) {
        self.wait("the replica to be synced", within, |t| {
            let master = t.named_master()?;
            let replica = 1 - master;
            t.check_replica_of(master)?;
            let address = format!("127.0.0.1:{}", t.data[replica].port());
            for (s, sentinel) in t.sentinels.iter().enumerate() {
                let flags = sentinel_entries(sentinel.port(), "REPLICAS")
                    .map_err(|e| format!("sentinel {s}: SENTINEL REPLICAS: {e}"))?
                    .into_iter()
                    .find(|entry| entry.get("name") == Some(&address))
                    .and_then(|entry| entry.get("flags").cloned());
                if flags.as_deref() != Some("slave") {
                    return Err(format!("sentinel {s} sees node {replica} as {flags:?}"));
                }
            }
            Ok(())
        });
    }

    /// The data node every sentinel names as master.
    fn named_master(&self) -> Result<usize, String> {
        let mut named = Vec::new();
        for (s, sentinel) in self.sentinels.iter().enumerate() {
            let (_host, port): (String, u16) = query(
                sentinel.port(),
                cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(Self::MASTER_NAME),
            )
            .map_err(|e| format!("sentinel {s}: GET-MASTER-ADDR-BY-NAME: {e}"))?;
            named.push(port);
        }
        if named.iter().any(|&port| port != named[0]) {
            return Err(format!("sentinels name different masters: {named:?}"));
        }
        self.data
            .iter()
            .position(|node| node.port() == named[0])
            .ok_or_else(|| format!("sentinels name unknown port {}", named[0]))
    }

    /// The other data node is up and a synced replica of `master`.
    fn check_replica_of(&self, master: usize) -> Result<(), String> {
        let replica = 1 - master;
        let port = self.data[replica].port();
        let info = replica_synced(port).map_err(|e| format!("node {replica}: {e}"))?;
        let following = field(&info, "master_port");
        if following != self.data[master].port().to_string() {
            return Err(format!("node {replica} follows port {following}"));
        }
        Ok(())
    }

    fn check_sentinels_know_all(&self) -> Result<(), String> {
        for (s, sentinel) in self.sentinels.iter().enumerate() {
            let port = sentinel.port();
            let master: HashMap<String, String> =
                query(port, cmd("SENTINEL").arg("MASTER").arg(Self::MASTER_NAME))
                    .map_err(|e| format!("sentinel {s}: SENTINEL MASTER: {e}"))?;
            let flags = master.get("flags").map_or("", String::as_str);
            if flags != "master" {
                return Err(format!("sentinel {s}: master flags {flags}"));
            }
            for (kind, want, flag) in [("REPLICAS", 1, "slave"), ("SENTINELS", 2, "sentinel")] {
                let healthy = sentinel_entries(port, kind)
                    .map_err(|e| format!("sentinel {s}: SENTINEL {kind}: {e}"))?
                    .iter()
                    .filter(|entry| entry.get("flags").is_some_and(|f| f == flag))
                    .count();
                if healthy != want {
                    return Err(format!("sentinel {s} knows {healthy} {kind}, want {want}"));
                }
            }
        }
        Ok(())
    }

    fn wait(
        &self,
        what: &str,
        within: Duration,
        mut check: impl FnMut(&Self) -> Result<(), String>,
    ) {
        wait_or_explain(what, within, || check(self), || self.describe());
    }

    /// Every sentinel's view of the master and every node's log tail.
    fn describe(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.data.iter().enumerate() {
            let view = if node.is_running() {
                info(node.port(), "INFO", "replication").unwrap_or_else(|e| format!("INFO: {e}"))
            } else {
                "(killed)".to_owned()
            };
            out += &format!(
                "--- data node {i} (port {}):\n{view}\n--- its log:\n{}\n",
                node.port(),
                node.log_tail(LOG_TAIL)
            );
        }
        for (s, sentinel) in self.sentinels.iter().enumerate() {
            let view = query::<HashMap<String, String>>(
                sentinel.port(),
                cmd("SENTINEL").arg("MASTER").arg(Self::MASTER_NAME),
            )
            .map(|master| {
                [
                    "ip",
                    "port",
                    "flags",
                    "num-slaves",
                    "num-other-sentinels",
                    "failover-state",
                ]
                .map(|key| format!("{key}={}", master.get(key).map_or("", String::as_str)))
                .join(" ")
            })
            .unwrap_or_else(|e| format!("SENTINEL MASTER: {e}"));
            out += &format!(
                "--- sentinel {s} (port {}): {view}\n--- its log:\n{}\n",
                sentinel.port(),
                sentinel.log_tail(LOG_TAIL)
            );
        }
        out
    }
}

/// `SENTINEL REPLICAS` or `SENTINEL SENTINELS` of the master, one map each.
fn sentinel_entries(port: u16, kind: &str) -> RedisResult<Vec<HashMap<String, String>>> {
    query(
        port,
        cmd("SENTINEL").arg(kind).arg(RedisSentinels::MASTER_NAME),
    )
}

/// Calls `check` every [`POLL`] until it succeeds; panics with its last
/// complaint and `describe()` (the nodes' own views) once `within` passes.
fn wait_or_explain(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<(), String>,
    describe: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() >= deadline => {
                panic!(
                    "timed out after {within:?} waiting for {what}: {last}\n{}",
                    describe()
                )
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn query<T: FromRedisValue>(port: u16, command: &Cmd) -> RedisResult<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(ADMIN_TIMEOUT)?;
    conn.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    conn.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    command.query(&mut conn)
}

/// The text of `INFO <section>` or `CLUSTER INFO` (`name` and `arg`).
fn info(port: u16, name: &str, arg: &str) -> RedisResult<String> {
    query(port, cmd(name).arg(arg))
}

/// A `field:value` line's value in INFO text, or "" if it is missing.
fn field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map_or("", str::trim)
}

/// `master` or `slave`, from the node's INFO replication.
fn role(port: u16) -> RedisResult<String> {
    Ok(field(&info(port, "INFO", "replication")?, "role").to_owned())
}

/// The node's INFO replication if it is a replica whose link to its master
/// is up and whose sync has finished.
fn replica_synced(port: u16) -> Result<String, String> {
    let info = info(port, "INFO", "replication").map_err(|e| format!("INFO: {e}"))?;
    let (role, link, syncing) = (
        field(&info, "role"),
        field(&info, "master_link_status"),
        field(&info, "master_sync_in_progress"),
    );
    if role != "slave" || link != "up" || syncing != "0" {
        return Err(format!(
            "role:{role} master_link_status:{link} master_sync_in_progress:{syncing}"
        ));
    }
    Ok(info)
}
