//! The cluster and sentinel harness itself: a write acknowledged by a
//! replica survives killing its master, the topology heals, and the killed
//! node comes back as a replica. Later tests of the gateway's cluster and
//! sentinel modes rely on exactly these steps.

use std::time::{Duration, Instant};

use ::redis::cluster::ClusterClient;
use ::redis::sentinel::{SentinelClient, SentinelServerType};
use ::redis::{Commands, Connection, cmd};

use crate::support::HEAVY_TURN;
use crate::support::topology::{RedisCluster, RedisSentinels};

/// Failover takes a few seconds; this leaves room for a loaded CI machine.
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);

const TIMEOUT: Duration = Duration::from_secs(2);

fn connect(url: &str) -> Connection {
    let conn = ::redis::Client::open(url)
        .expect("redis url")
        .get_connection_with_timeout(TIMEOUT)
        .expect("connect");
    conn.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    conn
}

fn role(url: &str) -> String {
    let info: String = cmd("INFO")
        .arg("replication")
        .query(&mut connect(url))
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("role:"))
        .expect("role in INFO replication")
        .trim()
        .to_owned()
}

#[test]
fn a_cluster_keeps_an_acknowledged_write_when_its_master_dies() {
    // Failover timing is what this measures; heavy tests would skew it.
    let _turn = HEAVY_TURN.blocking_lock();
    let mut cluster = RedisCluster::start(3, 1);
    assert_eq!(cluster.node_count(), 6);
    assert_eq!(cluster.masters().len(), 3);

    let client = ClusterClient::builder(cluster.seed_urls())
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .build()
        .expect("cluster client");
    let mut conn = client.get_connection().expect("cluster connection");
    let key = "topology:survivor";
    let () = conn.set(key, "acknowledged").expect("SET");
    // WAIT goes to every master on this connection: the fewest replicas
    // any of them reached, so 1 means the key's replica has it.
    let acked: i64 = cmd("WAIT").arg(1).arg(1000).query(&mut conn).expect("WAIT");
    assert_eq!(acked, 1, "the key's replica acknowledged the write");

    let slot: u16 = cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut connect(&cluster.node_url(0)))
        .expect("CLUSTER KEYSLOT");
    let old = cluster.master_for_slot(slot);
    let old_slots = cluster.slots_of(old);
    cluster.kill(old);
    let failing_over = Instant::now();
    cluster.wait_until_healthy(FAILOVER_WITHIN);
    eprintln!("cluster failover took {:?}", failing_over.elapsed());

    let promoted = cluster.master_for_slot(slot);
    assert_ne!(promoted, old);
    assert_eq!(
        cluster.slots_of(promoted),
        old_slots,
        "the replica took over all its slots"
    );
    // A new connection: the blocking cluster connection retries a refused
    // connection to the dead master without re-reading the slot map, so the
    // old one would not find the promoted replica (the async one does).
    let mut conn = client
        .get_connection()
        .expect("cluster connection after failover");
    let value: String = conn.get(key).expect("GET through the cluster client");
    assert_eq!(value, "acknowledged");

    let rejoining = Instant::now();
    cluster.restart(old);
    cluster.wait_replicas_synced(FAILOVER_WITHIN);
    eprintln!("cluster rejoin and resync took {:?}", rejoining.elapsed());
    assert!(
        !cluster.masters().contains(&old),
        "the old master rejoined as a replica"
    );
    assert!(cluster.slots_of(old).is_empty());
    // A replica answers reads once told the client accepts stale data.
    let mut replica = connect(&cluster.node_url(old));
    let () = cmd("READONLY").query(&mut replica).expect("READONLY");
    let value: String = replica.get(key).expect("GET from the rejoined replica");
    assert_eq!(value, "acknowledged");
}

#[test]
fn sentinels_promote_the_replica_and_demote_the_old_master() {
    let _turn = HEAVY_TURN.blocking_lock();
    let mut topology = RedisSentinels::start();
    let old = topology.master_index();

    let mut master = connect(&topology.data_url(old));
    let key = "topology:survivor";
    let () = master.set(key, "acknowledged").expect("SET");
    let acked: i64 = cmd("WAIT")
        .arg(1)
        .arg(1000)
        .query(&mut master)
        .expect("WAIT");
    assert_eq!(acked, 1, "the replica acknowledged the write");

    topology.kill_data(old);
    let failing_over = Instant::now();
    let promoted = topology.wait_failover_from(old, FAILOVER_WITHIN);
    eprintln!("sentinel failover took {:?}", failing_over.elapsed());
    assert_eq!(topology.master_index(), promoted);

    // A sentinel-aware client finds the new master by name.
    let mut client = SentinelClient::build(
        topology.sentinel_urls(),
        RedisSentinels::MASTER_NAME.to_owned(),
        None,
        SentinelServerType::Master,
    )
    .expect("sentinel client");
    let value: String = client
        .get_connection()
        .expect("connection to the master the sentinels name")
        .get(key)
        .expect("GET from the new master");
    assert_eq!(value, "acknowledged");

    let rejoining = Instant::now();
    topology.restart_data(old);
    topology.wait_replica_synced(FAILOVER_WITHIN);
    eprintln!(
        "sentinel demotion and resync took {:?}",
        rejoining.elapsed()
    );
    assert_eq!(topology.master_index(), promoted, "no second failover");
    assert_eq!(role(&topology.data_url(old)), "slave");
    assert_eq!(role(&topology.data_url(promoted)), "master");
}
