//! The gateway on a real Redis Cluster and a real Sentinel group: the
//! partitions spread over the masters, delivery, dead letters and replay
//! work across partitions, and a primary SIGKILLed under load loses no acked
//! event when `ack_replicas = 1`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use switchyard::queue::partition;
use tokio::task::JoinHandle;

use crate::support::HEAVY_TURN;
use crate::support::config::{ConfigBuilder, Owner, Route, Source};
use crate::support::gateway::{TestGateway, config_toml_on, parse_config};
use crate::support::receiver::{Receiver, Reply};
use crate::support::test_redis::{CLUSTER_PARTITIONS, QueueKeys};
use crate::support::topology::{RedisCluster, RedisSentinels};
use crate::support::{eventually, github};

const SECRET: &str = "failover-secret";

/// Routes `ok-route` (GitHub `ok` events) to `ok` and `bad-route` (`bad`
/// events) to `bad`. A short visibility timeout: a job whose completion a
/// failover lost is pending again on the promoted replica, and is taken
/// over (delivered a second time) once that passes.
fn routes(ok: &Receiver, bad: &Receiver) -> String {
    ConfigBuilder::new()
        .retry(5, "100ms", "300ms")
        .breaker(100_000, None)
        .delivery("visibility_timeout", r#""4s""#)
        .owner(Owner::devex())
        .source(Source::github(SECRET))
        .route(
            Route::new("ok-route", "github", "devex", &ok.url("/ok"))
                .when_github_event("ok")
                .destination("timeout", r#""2s""#),
        )
        .route(
            Route::new("bad-route", "github", "devex", &bad.url("/bad"))
                .when_github_event("bad")
                .destination("timeout", r#""2s""#),
        )
        .build()
}

fn nodes_list(urls: &[String]) -> String {
    urls.iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn post(gateway: &TestGateway, event: &str, delivery: &str, body: &str) -> u16 {
    gateway.post_github(SECRET, event, delivery, body).await.0
}

/// The bodies `receiver` took with a 2xx.
fn taken(receiver: &Receiver) -> HashSet<Vec<u8>> {
    receiver
        .accepted()
        .into_iter()
        .map(|r| r.body.to_vec())
        .collect()
}

#[tokio::test]
async fn on_a_cluster_the_partitions_spread_evenly_and_dead_letters_merge() {
    let _turn = HEAVY_TURN.lock().await;
    let cluster = RedisCluster::start(3, 1);

    // Each master's share of partitions is within 10 points of its share
    // of slots, by the slots the cluster itself computes.
    let partitions = partition::layout("switchyard", CLUSTER_PARTITIONS);
    let client = redis::Client::open(cluster.node_url(0)).expect("node url");
    let mut node = client.get_connection().expect("connect to a node");
    for p in &partitions {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{{}}}:jobs", p.tag))
            .query(&mut node)
            .expect("KEYSLOT");
        assert_eq!(slot, p.slot, "{}", p.tag);
    }
    let mut slot_shares = Vec::new();
    for master in cluster.masters() {
        let ranges = cluster.slots_of(master);
        let slots: usize = ranges.iter().map(|r| r.clone().count()).sum();
        let held = partitions
            .iter()
            .filter(|p| ranges.iter().any(|r| r.contains(&p.slot)))
            .count();
        let slot_share = slots as f64 / 16384.0;
        let partition_share = held as f64 / partitions.len() as f64;
        assert!(
            (slot_share - partition_share).abs() <= 0.10,
            "master {master}: {held} partitions for {slots} slots"
        );
        slot_shares.push((master, slot_share));
        eprintln!("master {master}: {held} partitions, {slots} slots");
    }

    let ok = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.otherwise(Reply::status(400));
    let redis = format!("cluster = [{}]", nodes_list(&cluster.seed_urls()));
    let gateway =
        TestGateway::start(parse_config(&config_toml_on(&redis, &routes(&ok, &bad)))).await;
    for n in 0..30 {
        assert_eq!(
            post(
                &gateway,
                "ok",
                &format!("ok-{n}"),
                &format!(r#"{{"ok":{n}}}"#)
            )
            .await,
            202
        );
        assert_eq!(
            post(
                &gateway,
                "bad",
                &format!("bad-{n}"),
                &format!(r#"{{"bad":{n}}}"#)
            )
            .await,
            202
        );
    }
    assert_eq!(
        post(&gateway, "ok", "ok-0", r#"{"ok":0}"#).await,
        200,
        "a duplicate"
    );
    assert!(
        eventually(Duration::from_secs(20), || async { taken(&ok).len() == 30 }).await,
        "30 delivered, got {}",
        taken(&ok).len()
    );

    // Dead letters of every partition, in pages of 7: each once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let all_dead = eventually(Duration::from_secs(20), || async {
        let (_, page) = gateway
            .admin(Method::GET, "/admin/dead-letters?limit=100", None)
            .await;
        page["items"].as_array().map_or(0, Vec::len) == 30
    })
    .await;
    assert!(all_dead, "30 dead letters expected");
    loop {
        let mut path = "/admin/dead-letters?limit=7&route=bad-route".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = gateway.admin(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            seen.push((
                item["failed_at"].as_str().unwrap_or_default().to_owned(),
                item["id"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let ids: HashSet<&String> = seen.iter().map(|(_, id)| id).collect();
    assert_eq!((seen.len(), ids.len()), (30, 30), "each dead letter once");
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Replay by route covers every partition.
    bad.otherwise(Reply::ok());
    let (status, answer) = gateway.bulk_replay(json!({"route": "bad-route"})).await;
    assert_eq!(
        (status, answer["replayed"].as_u64()),
        (202, Some(30)),
        "{answer}"
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            taken(&bad).len() == 30
        })
        .await,
        "30 replayed deliveries"
    );
    // The inventory sums the partitions' figures.
    let (_, inventory) = gateway.admin(Method::GET, "/admin/routes", None).await;
    let ok_route = &inventory["routes"][0];
    assert_eq!(ok_route["name"], "ok-route");
    assert_eq!(ok_route["delivered"], 30, "{ok_route}");
    assert_eq!(ok_route["received"], 30, "{ok_route}");

    // Under load, each master runs a share of the queue's scripts (ingest
    // batches, completions, the pollers of its partitions) within 10 points
    // of its share of slots.
    for (master, _) in &slot_shares {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut node_connection(&cluster, *master))
            .expect("CONFIG RESETSTAT");
    }
    let sent = send_for(&gateway, 200, Duration::from_secs(5)).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            taken(&ok).len() == 30 + sent.len()
        })
        .await,
        "the load delivered"
    );
    let calls: Vec<(usize, u64)> = slot_shares
        .iter()
        .map(|(master, _)| (*master, script_calls(&cluster, *master)))
        .collect();
    let total: u64 = calls.iter().map(|(_, n)| n).sum();
    for ((master, slot_share), (_, n)) in slot_shares.iter().zip(&calls) {
        let call_share = *n as f64 / total as f64;
        assert!(
            (slot_share - call_share).abs() <= 0.10,
            "master {master}: {n} of {total} script calls for {:.0} % of the slots: {calls:?}",
            slot_share * 100.0
        );
    }
    eprintln!("script calls per master under load: {calls:?} (slot shares {slot_shares:?})");
    gateway.stop().await.expect("clean stop");
}

fn node_connection(cluster: &RedisCluster, node: usize) -> redis::Connection {
    redis::Client::open(cluster.node_url(node))
        .and_then(|client| client.get_connection())
        .expect("connect to a node")
}

/// EVALSHA and EVAL calls `node` counted since its stats were reset.
fn script_calls(cluster: &RedisCluster, node: usize) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut node_connection(cluster, node))
        .expect("INFO commandstats");
    stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// `/readyz` every 100 ms for `within`: each answer's status and body.
fn watch_readyz(gateway: &TestGateway, within: Duration) -> JoinHandle<Vec<(u16, Value)>> {
    let readyz = gateway.admin_url("/readyz");
    tokio::spawn(async move {
        let started = Instant::now();
        let mut seen = Vec::new();
        while started.elapsed() < within {
            if let Ok(answer) = reqwest::get(&readyz).await {
                let status = answer.status().as_u16();
                seen.push((status, answer.json().await.unwrap_or(Value::Null)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    })
}

/// The `host:port` of a `redis://` URL.
fn address(url: &str) -> &str {
    url.trim_start_matches("redis://")
}

/// The nodes a `/readyz` body names as answering, or as not.
fn named(body: &Value, answering: bool) -> Vec<String> {
    body["redis"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["answering"].as_bool() == Some(answering))
        .filter_map(|n| n["node"].as_str().map(str::to_owned))
        .collect()
}

/// Set to run the failover scenarios at full length (see RELIABILITY.md).
const LONG_VAR: &str = "SWITCHYARD_FAILOVER_LONG";

/// An event acked without `ack_replicas` may be lost when its primary dies
/// before the asynchronous replication sent it on: only events acked this
/// shortly before a kill may be.
const LOSS_WINDOW: Duration = Duration::from_secs(1);

/// How hard and how long a failover run goes, and when a primary dies.
struct Plan {
    rate: u32,
    run_for: Duration,
    kills: Vec<Duration>,
}

impl Plan {
    /// A few seconds and one kill; with `SWITCHYARD_FAILOVER_LONG=1`,
    /// 200 events/s for 60 s and `long_kills` kills, evenly spread.
    fn new(long_kills: u32) -> Self {
        if std::env::var_os(LONG_VAR).is_some() {
            let run_for = Duration::from_secs(60);
            Plan {
                rate: 200,
                run_for,
                kills: (1..=long_kills)
                    .map(|k| run_for * k / (long_kills + 1))
                    .collect(),
            }
        } else {
            Plan {
                rate: 50,
                run_for: Duration::from_secs(6),
                kills: vec![Duration::from_secs(2)],
            }
        }
    }
}

/// One event of a run, and when it was acked (2xx), if it was.
struct Sent {
    body: Vec<u8>,
    acked_at: Option<Instant>,
}

/// Sends `rate` `ok` events a second for `run_for`, each with its own
/// delivery id.
async fn send_for(gateway: &TestGateway, rate: u32, run_for: Duration) -> Vec<Sent> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let url = gateway.public_url("/hooks/github");
    let mut sending = tokio::task::JoinSet::new();
    let mut n = 0u32;
    // Each event at its due time from the start, so the time spawning takes
    // does not lower the rate.
    while started.elapsed() < run_for {
        tokio::time::sleep_until((started + Duration::from_secs(1) * n / rate).into()).await;
        let body = format!(r#"{{"n":{n}}}"#);
        let delivery = format!("load-{n}");
        let (client, url) = (client.clone(), url.clone());
        sending.spawn(async move {
            let (status, _) =
                github::post(&client, &url, SECRET, "ok", &delivery, body.as_bytes()).await;
            Sent {
                body: body.into_bytes(),
                acked_at: (200..300).contains(&status).then(Instant::now),
            }
        });
        n += 1;
    }
    let mut sent = Vec::new();
    while let Some(done) = sending.join_next().await {
        sent.push(done.expect("sender task"));
    }
    sent
}

/// Kills a cluster master at each of `kills` (after `started`): first the
/// one holding partition 0, then each time a master not killed before; waits
/// for its replica's promotion, restarts it (it rejoins as a replica) and
/// waits for its sync. Returns the cluster and when each kill came.
fn kill_cluster_masters(
    mut cluster: RedisCluster,
    kills: &[Duration],
    started: Instant,
) -> (RedisCluster, Vec<Instant>) {
    let mut killed = Vec::new();
    let mut at = Vec::new();
    for (k, when) in kills.iter().enumerate() {
        std::thread::sleep((started + *when).saturating_duration_since(Instant::now()));
        let victim = if k == 0 {
            cluster.master_for_slot(partition::slot_of("switchyard"))
        } else {
            cluster
                .masters()
                .into_iter()
                .find(|m| !killed.contains(m))
                .expect("a master not killed before")
        };
        cluster.kill(victim);
        at.push(Instant::now());
        killed.push(victim);
        cluster.wait_until_healthy(Duration::from_secs(20));
        cluster.restart(victim);
        cluster.wait_replicas_synced(Duration::from_secs(20));
    }
    (cluster, at)
}

/// Kills the Sentinel group's primary at each of `kills`, waits for the
/// sentinels to promote the replica, restarts the old primary (it comes
/// back as a replica) and waits for its sync.
fn kill_sentinel_primaries(
    mut group: RedisSentinels,
    kills: &[Duration],
    started: Instant,
) -> (RedisSentinels, Vec<Instant>) {
    let mut at = Vec::new();
    for when in kills {
        std::thread::sleep((started + *when).saturating_duration_since(Instant::now()));
        let old = group.master_index();
        group.kill_data(old);
        at.push(Instant::now());
        group.wait_failover_from(old, Duration::from_secs(30));
        group.restart_data(old);
        group.wait_replica_synced(Duration::from_secs(30));
    }
    (group, at)
}

/// What a run lost: acked events the destination never took, once the
/// queue is empty.
struct Losses {
    acked: usize,
    refused: usize,
    /// For each lost event, how long before the next kill it was acked.
    lost_before_kill: Vec<Option<Duration>>,
}

impl Losses {
    /// Waits until `queue` holds no work (every job delivered or
    /// dead-lettered), then compares what was acked with what `receiver` took.
    async fn of(sent: &[Sent], receiver: &Receiver, queue: &QueueKeys, kills: &[Instant]) -> Self {
        let idle = eventually(Duration::from_secs(30), || {
            let mut queue = queue.clone();
            async move { queue.work().await.is_ok_and(|work| work.idle()) }
        })
        .await;
        let mut queue = queue.clone();
        assert!(
            idle,
            "every job left the queue (stream, pending and retry of every partition): {:?}",
            queue.work().await
        );
        let taken = taken(receiver);
        let acked: Vec<&Sent> = sent.iter().filter(|s| s.acked_at.is_some()).collect();
        let lost_before_kill = acked
            .iter()
            .filter(|s| !taken.contains(&s.body))
            .filter_map(|s| s.acked_at)
            .map(|acked_at| {
                kills
                    .iter()
                    .find(|&&kill| kill >= acked_at)
                    .map(|&kill| kill - acked_at)
            })
            .collect();
        Losses {
            acked: acked.len(),
            refused: sent.len() - acked.len(),
            lost_before_kill,
        }
    }

    fn lost(&self) -> usize {
        self.lost_before_kill.len()
    }

    /// With `ack_replicas`, nothing; without, only events acked within
    /// `LOSS_WINDOW` before a kill.
    fn assert_allowed(&self, ack_replicas: bool, run: &str) {
        if ack_replicas {
            assert_eq!(self.lost(), 0, "{run}: acked events lost");
        } else {
            let unexplained: Vec<&Option<Duration>> = self
                .lost_before_kill
                .iter()
                .filter(|before| before.is_none_or(|d| d > LOSS_WINDOW))
                .collect();
            assert!(
                unexplained.is_empty(),
                "{run}: lost events acked more than {LOSS_WINDOW:?} before any kill: {unexplained:?}"
            );
        }
    }

    fn summary(&self, run: &str, plan: &Plan) -> String {
        let mut before: Vec<u128> = self
            .lost_before_kill
            .iter()
            .flatten()
            .map(Duration::as_millis)
            .collect();
        before.sort_unstable();
        format!(
            "{run}: {}/s for {:?}, {} kills: acked {}, refused {}, lost {} (acked this many ms \
             before a kill: {before:?})",
            plan.rate,
            plan.run_for,
            plan.kills.len(),
            self.acked,
            self.refused,
            self.lost(),
        )
    }
}

/// Kills nodes of a topology at the given times after a start; gives the
/// topology back with when each kill came.
type Kills<T> = fn(T, &[Duration], Instant) -> (T, Vec<Instant>);

/// Sends the plan's load while `kill` runs the plan's kills on `topology`
/// in a thread of its own: what was sent, the topology back, and when each
/// kill came.
async fn load_through_kills<T: Send + 'static>(
    gateway: &TestGateway,
    plan: &Plan,
    topology: T,
    kill: Kills<T>,
) -> (Vec<Sent>, T, Vec<Instant>) {
    let started = Instant::now();
    let kills = plan.kills.clone();
    let faults = tokio::task::spawn_blocking(move || kill(topology, &kills, started));
    let sent = send_for(gateway, plan.rate, plan.run_for).await;
    let (topology, kill_times) = faults.await.expect("the kills ran");
    (sent, topology, kill_times)
}

/// The `[redis]` lines that make acks wait for one replica, or none.
fn ack_block(ack_replicas: bool) -> &'static str {
    if ack_replicas {
        "ack_replicas = 1\nack_replicas_timeout = \"300ms\""
    } else {
        ""
    }
}

/// A cluster master killed under load (three times in the long run), with
/// or without `ack_replicas`.
async fn cluster_failover(ack_replicas: bool) {
    let _turn = HEAVY_TURN.lock().await;
    let plan = Plan::new(3);
    let cluster = RedisCluster::start(3, 1);
    let ok = Receiver::start().await;
    let bad = Receiver::start().await;
    let redis = format!(
        "cluster = [{}]\n{}",
        nodes_list(&cluster.seed_urls()),
        ack_block(ack_replicas)
    );
    let gateway =
        TestGateway::start(parse_config(&config_toml_on(&redis, &routes(&ok, &bad)))).await;
    let victim_address =
        cluster.node_url(cluster.master_for_slot(partition::slot_of("switchyard")));
    let readyz = watch_readyz(&gateway, plan.kills[0] + Duration::from_secs(4));
    let (sent, cluster, kill_times) =
        load_through_kills(&gateway, &plan, cluster, kill_cluster_masters).await;

    // While the master is gone, /readyz is 503 and names it; once its
    // replica is promoted, it names the new master instead.
    let seen = readyz.await.expect("readyz watcher");
    assert!(
        seen.iter().any(|(status, body)| *status == 503
            && named(body, false) == [address(&victim_address)]
            && body["redis"]["mode"] == "cluster"),
        "a 503 names the dead master {victim_address} alone: {:?}",
        seen.iter()
            .map(|(status, body)| format!("{status} {:?}", named(body, false)))
            .collect::<Vec<_>>()
    );
    let promoted =
        address(&cluster.node_url(cluster.master_for_slot(partition::slot_of("switchyard"))))
            .to_owned();
    let ready_again = eventually(Duration::from_secs(10), || async {
        let body: Value = gateway.admin(Method::GET, "/readyz", None).await.1;
        named(&body, true).contains(&promoted) && named(&body, false).is_empty()
    })
    .await;
    assert!(ready_again, "/readyz names the master {promoted}");

    // A connection made now: one made before the failovers keeps its slot
    // map only for single commands, not for the MULTI that reads a partition.
    let queue = QueueKeys::on_cluster(&cluster).await;
    let losses = Losses::of(&sent, &ok, &queue, &kill_times).await;
    let run = format!("cluster, ack_replicas = {}", u8::from(ack_replicas));
    eprintln!("{}", losses.summary(&run, &plan));
    assert!(
        losses.acked > plan.rate as usize * plan.run_for.as_secs() as usize / 2,
        "most events acked: {}",
        losses.summary(&run, &plan)
    );
    losses.assert_allowed(ack_replicas, &run);
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_cluster_master_killed_under_load_loses_no_acked_event() {
    cluster_failover(true).await;
}

#[tokio::test]
async fn without_ack_replicas_a_cluster_failover_loses_only_the_last_acks() {
    cluster_failover(false).await;
}

/// The Sentinel group's primary killed under load (twice in the long run),
/// with or without `ack_replicas`.
async fn sentinel_failover(ack_replicas: bool) {
    let _turn = HEAVY_TURN.lock().await;
    let plan = Plan::new(2);
    let group = RedisSentinels::start();
    let ok = Receiver::start().await;
    let bad = Receiver::start().await;
    let redis = format!(
        "sentinel = {{ master = \"{}\", nodes = [{}] }}\n{}",
        RedisSentinels::MASTER_NAME,
        nodes_list(&group.sentinel_urls()),
        ack_block(ack_replicas)
    );
    let gateway =
        TestGateway::start(parse_config(&config_toml_on(&redis, &routes(&ok, &bad)))).await;
    let old_address = group.data_url(group.master_index());
    let readyz = watch_readyz(&gateway, plan.kills[0] + Duration::from_secs(3));
    let (sent, group, kill_times) =
        load_through_kills(&gateway, &plan, group, kill_sentinel_primaries).await;

    let seen = readyz.await.expect("readyz watcher");
    assert!(
        seen.iter().any(|(status, body)| *status == 200
            && named(body, true) == [address(&old_address)]
            && body["redis"]["mode"] == "sentinel"),
        "before the kill /readyz names the primary {old_address}: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(status, body)| *status == 503 && named(body, false) == [address(&old_address)]),
        "while the primary is gone /readyz is 503 and names it: {seen:?}"
    );
    // After the failover the gateway takes events again, without a restart,
    // and names the new primary.
    let resumed = eventually(Duration::from_secs(30), || async {
        post(
            &gateway,
            "ok",
            &format!("after-{}", rand_suffix()),
            r#"{"after":true}"#,
        )
        .await
            == 202
    })
    .await;
    assert!(resumed, "the gateway follows the new primary");
    let new_address = group.data_url(group.master_index());
    let body: Value = gateway.admin(Method::GET, "/readyz", None).await.1;
    assert_eq!(
        named(&body, true),
        [address(&new_address)],
        "/readyz names the new primary: {body}"
    );

    let queue = QueueKeys::of_primary(&group.data_url(group.master_index())).await;
    let losses = Losses::of(&sent, &ok, &queue, &kill_times).await;
    let run = format!("sentinel, ack_replicas = {}", u8::from(ack_replicas));
    eprintln!("{}", losses.summary(&run, &plan));
    assert!(
        losses.acked > plan.rate as usize * plan.kills[0].as_secs() as usize / 2,
        "the events before the kill acked: {}",
        losses.summary(&run, &plan)
    );
    losses.assert_allowed(ack_replicas, &run);
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_sentinel_primary_killed_under_load_loses_no_acked_event() {
    sentinel_failover(true).await;
}

#[tokio::test]
async fn without_ack_replicas_a_sentinel_failover_loses_only_the_last_acks() {
    sentinel_failover(false).await;
}

/// A delivery id suffix unique within the test run.
fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
