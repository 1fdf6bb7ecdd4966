#!/usr/bin/env bash
# Runs one named load-test scenario end to end on this machine: a private
# redis-server (default persistence, temp dir), the release gateway with a
# config written for the scenario, and switchyard-loadtest with its sink.
# Everything it starts is killed on exit.
#
#   loadtest/run.sh <scenario> [extra switchyard-loadtest flags...]
#
# Scenarios: ingest-max steady fanout3 slow-destination failing-destination
# mixed-healthy-and-dead (their loads are the tool's scenario defaults);
# rate-limited (100/s, fan-out 2: /limited's destination has rate_limit
# "50/s", /free none; `free-solo` is the same load to /free alone, its
# comparator) and paused-then-resumed (100/s to a route paused before the
# load and resumed at LT_RESUME_RATE, default 50/s, a second after it);
# saturated (400/s to a destination that takes 40/s; prints Redis commands
# per delivered job); ordered and its comparator unordered (1000/s spread
# over 1,000 ordering keys to a route with and without `ordered = true`:
# one process ingests the load without workers, a second one started once
# the load is over delivers the backlog, so the sink's rate is delivery
# alone; prints Redis commands per delivered job; `--keys 1 --rate 100`
# checks one key); and
# `reference`: ingest-max against switchyard-reference (bare hyper + HMAC +
# XADD) instead of the gateway, the comparator of the ingest target (with
# LT_RATE set: `steady` at that rate against it).
# Sizing (Redis memory per event, printed at the end; `steady` load):
# `sizing-dedupe` (no route: each event leaves only its dedupe record),
# `sizing-queued` (no workers: each also leaves a queued job in the stream),
# `sizing-dead` (one attempt, the sink answers 503: each becomes a dead letter).
# Environment knobs: LT_RATE (open-loop rate instead of the scenario's),
# LT_DURATION (default 10s), LT_LOG (gateway RUST_LOG, default warn),
# LT_KEEP=1 (keep the temp dir and print it), LT_SERVE_FLAGS (more flags for
# `switchyard serve`, e.g. --no-workers to measure ingest alone at a rate),
# LT_PROFILE (cargo profile of the binaries, default release; CI's smoke run
# uses debug), LT_WRAP (a command the gateway or reference runs under, e.g.
# `valgrind --tool=callgrind` for instruction counts per request),
# LT_GATEWAY (another switchyard binary to run, e.g. a previous commit's
# build, for an A/B run), LT_REFERENCE_FLAGS (flags for switchyard-reference, e.g. --dedupe),
# LT_REDIS_STATS=1 (print Redis's per-command CPU figures at the end),
# LT_CONCURRENCY (the gateway's `delivery.concurrency`, default 256).
# Redis deployment: LT_REPLICAS=N gives each Redis primary N replicas and
# the gateway `ack_replicas = N` (the cost of replicated acks);
# LT_CLUSTER=M runs a Redis Cluster of M masters (the gateway on its default
# partitions) instead of one Redis. Redis figures are then per primary.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${1:?usage: loadtest/run.sh <scenario> [tool flags...]}
shift

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${LT_KEEP:-0} == 1 ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
# A cluster node's bus port is its port + 10000, so nodes take ports below 55535.
free_cluster_port() {
    python3 -c '
import random, socket
while True:
    port = random.randrange(20000, 45000)
    try:
        for p in (port, port + 10000):
            socket.socket().bind(("127.0.0.1", p))
        print(port)
        break
    except OSError:
        pass'
}

# Seconds in a humantime duration of whole seconds or minutes ("10s", "2m").
humantime_s() {
    case $1 in
    *m) echo $((${1%m} * 60)) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
    esac
}

profile=${LT_PROFILE:-release}
cargo build -q --profile "${profile/#debug/dev}" -p switchyard --bin switchyard
cargo build -q --profile "${profile/#debug/dev}" -p switchyard-loadtest
bin=target/$profile

listen_port=$(free_port)
admin_port=$(free_port)
sink_port=$(free_port)
dead_port=$(free_port) # nothing listens here: the dead destination

replicas=${LT_REPLICAS:-0}
masters=${LT_CLUSTER:-0}
ack=""
[[ $replicas -gt 0 ]] && ack="ack_replicas = $replicas"

# One redis-server on port $1 (more arguments are its settings), with
# default persistence (RDB snapshots), as the performance targets specify.
# Redis's latency monitor records its own stalls over 10 ms (printed at the end).
start_redis() {
    local port=$1
    shift
    mkdir -p "$work/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis-$port" \
        --latency-monitor-threshold 10 --daemonize no "$@" >"$work/redis-$port.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "redis-server on $port did not start" >&2
    exit 1
}
wait_synced() { # replica port
    for _ in $(seq 300); do
        redis-cli -p "$1" info replication | grep -q '^master_link_status:up' && return
        sleep 0.1
    done
    echo "replica on $1 did not sync" >&2
    exit 1
}

primaries=()
if [[ $masters -gt 0 ]]; then
    nodes=()
    for _ in $(seq $((masters * (1 + replicas)))); do
        port=$(free_cluster_port)
        start_redis "$port" --cluster-enabled yes --cluster-node-timeout 2000 \
            --cluster-config-file "$work/nodes-$port.conf"
        nodes+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas "$replicas" --cluster-yes >"$work/cluster-create.log"
    for _ in $(seq 300); do
        redis-cli -p "${nodes[0]#*:}" cluster info | grep -q '^cluster_state:ok' && break
        sleep 0.1
    done
    for node in "${nodes[@]}"; do
        port=${node#*:}
        if redis-cli -p "$port" role | head -1 | grep -q master; then
            primaries+=("$port")
        else
            wait_synced "$port"
        fi
    done
    redis_block="cluster = [$(printf '"redis://%s", ' "${nodes[@]}" | sed 's/, $//')]"
    reference_url="redis://${nodes[0]}/0"
else
    redis_port=$(free_port)
    start_redis "$redis_port"
    primaries=("$redis_port")
    for _ in $(seq "$replicas"); do
        port=$(free_port)
        start_redis "$port" --replicaof 127.0.0.1 "$redis_port"
        wait_synced "$port"
    done
    redis_block="url = \"redis://127.0.0.1:$redis_port/0\""
    reference_url="redis://127.0.0.1:$redis_port/0"
fi
redis_port=${primaries[0]}

read -r -a serve_flags <<<"${LT_SERVE_FLAGS:-}"
tool=(--duration "${LT_DURATION:-10s}")
sink=(--sink-listen "127.0.0.1:$sink_port")
route() { # name path-on-sink [destination-base] [more destination keys]
    cat <<TOML

[[routes]]
name = "$1"
source = "lt"
owner = "platform"
description = "Load test route $1"
on_failure = "The load test reports it missing"
destination = { url = "${3:-http://127.0.0.1:$sink_port}$2", timeout = "5s"${4:+, $4} }
TOML
}
concurrency=${LT_CONCURRENCY:-256}
routes=$(route lt /events)
source_extra=""
deliver_after_load=0
measured_route=""
drain=10s
retry='max_attempts = 8, initial_backoff = "100ms", max_backoff = "2s"'
breaker=""
sizing=0
case $scenario in
reference)
    sink=()
    ;;
ingest-max)
    # Ingest alone: no delivery workers, so no sink either.
    serve_flags+=(--no-workers)
    ;;
steady) ;;
fanout3) routes="$(route a /a)$(route b /b)$(route c /c)" ;;
slow-destination) routes="$(route fast /fast)$(route slow /slow)" ;;
failing-destination) drain=30s ;;
mixed-healthy-and-dead)
    routes="$(route healthy /healthy)$(route dead /dead "http://127.0.0.1:$dead_port")"
    ;;
rate-limited)
    routes="$(route limited /limited "" 'rate_limit = "50/s"')$(route free /free)"
    drain=60s
    ;;
free-solo)
    routes=$(route free /free)
    ;;
paused-then-resumed)
    routes=$(route paused /paused)
    drain=60s
    ;;
saturated)
    # 4 in flight at 100 ms each: 40/s, a tenth of the offered rate.
    routes=$(route saturated /saturated "" 'max_in_flight = 4')
    measured_route=saturated
    drain=300s
    ;;
ordered | unordered)
    source_extra='ordering_key = { json_pointer = "/lt_key" }'
    # As many in flight to the sink as the process delivers at once: a
    # process starting on a backlog parks what a destination it has not yet
    # heard from cannot take, and the drain's ramp would be measured instead.
    routes=$(route keyed /keyed "" "max_in_flight = $concurrency")
    [[ $scenario == ordered ]] && routes+=$'\nordered = true'
    serve_flags+=(--no-workers)
    deliver_after_load=1
    measured_route=keyed
    drain=300s
    ;;
sizing-dedupe | sizing-queued | sizing-dead)
    [[ $masters -gt 0 ]] && { echo "sizing runs on one Redis" >&2; exit 2; }
    sizing=1
    sink=()
    [[ $scenario == sizing-dedupe ]] && routes=""
    [[ $scenario == sizing-queued ]] && serve_flags+=(--no-workers)
    if [[ $scenario == sizing-dead ]]; then
        retry='max_attempts = 1'
        # Every answer fails: a breaker would hold the jobs back instead.
        breaker='breaker = { failure_threshold = 1000000000 }'
        sink=(--sink-listen "127.0.0.1:$sink_port" --sink-fail-ratio 1)
    fi
    ;;
*)
    echo "unknown scenario $scenario" >&2
    exit 2
    ;;
esac
if [[ $scenario == free-solo ]]; then
    tool+=(--scenario rate-limited --fanout 1)
elif [[ $scenario == unordered ]]; then
    tool+=(--scenario ordered)
elif [[ $scenario == reference ]]; then
    # The reference at a rate is the comparator of the open-loop target.
    tool+=(--scenario "$([[ -n ${LT_RATE:-} ]] && echo steady || echo ingest-max)")
elif [[ $sizing == 1 ]]; then
    tool+=(--scenario steady)
else
    tool+=(--scenario "$scenario")
fi
if [[ " ${serve_flags[*]} " == *" --no-workers "* && $deliver_after_load == 0 ]]; then
    sink=() # nothing is delivered
fi
if [[ ${#sink[@]} -gt 0 && $sizing == 0 ]]; then
    tool+=(--drain "$drain")
fi
if [[ -n ${LT_RATE:-} ]]; then
    tool+=(--rate "$LT_RATE")
fi

cat >"$work/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:$listen_port"
admin_listen = "127.0.0.1:$admin_port"

[redis]
$redis_block
prefix = "loadtest"
$ack

[admin]
tokens = [{ name = "loadtest", secret = "loadtest-admin-token" }]

[delivery]
concurrency = $concurrency
retry = { $retry }
$breaker

[owners.platform]
team = "Platform"
contact = "platform@example.com"

[sources.lt]
path = "/hooks/lt"
scheme = "github"
secrets = ["loadtest-secret"]
$source_extra
$routes
TOML

if [[ $scenario == reference ]]; then
    [[ $masters -gt 0 ]] && { echo "the reference runs on one Redis" >&2; exit 2; }
    ${LT_WRAP:-} "$bin/switchyard-reference" --listen "127.0.0.1:$listen_port" \
        --redis-url "$reference_url" --secret loadtest-secret \
        ${LT_REFERENCE_FLAGS:-} \
        >"$work/gateway.log" 2>&1 &
    gateway=$!
    pids+=("$gateway")
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$listen_port") 2>/dev/null && break
        sleep 0.1
    done
else
    env -u SWITCHYARD_REDIS_URL -u SWITCHYARD_LISTEN -u SWITCHYARD_ADMIN_LISTEN \
        RUST_LOG="${LT_LOG:-warn}" ${LT_WRAP:-} "${LT_GATEWAY:-$bin/switchyard}" serve --config "$work/switchyard.toml" \
        "${serve_flags[@]}" >"$work/gateway.log" 2>&1 &
    gateway=$!
    pids+=("$gateway")
    for _ in $(seq 600); do
        curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
        kill -0 "$gateway" 2>/dev/null || { cat "$work/gateway.log" >&2; exit 1; }
        sleep 0.1
    done
fi

used_memory() { redis-cli -p "$redis_port" info memory | grep '^used_memory:' | tr -dc '0-9'; }
memory_before=$(used_memory)
echo "== $scenario: gateway pid $gateway, redis :$redis_port, sink :$sink_port" >&2
# Redis's command counts from here on (the saturated scenario reports them).
for port in "${primaries[@]}"; do redis-cli -p "$port" config resetstat >/dev/null; done
admin_api() { # method path [json body]
    curl -fsS -X "$1" -H 'Authorization: Bearer loadtest-admin-token' \
        ${3:+-H 'Content-Type: application/json' -d "$3"} "http://127.0.0.1:$admin_port$2"
}
if [[ $scenario == paused-then-resumed ]]; then
    echo "== pause: $(admin_api POST /admin/routes/paused/pause '{"reason":"load test: paused then resumed"}')" >&2
    sleep 1 # every process obeys a pause within a second
    # Resumed a second after the load ends, while the tool drains.
    resume_after=$(($(humantime_s "${LT_DURATION:-10s}") + 1))
    (
        sleep "$resume_after"
        echo "== resume: $(admin_api POST /admin/routes/paused/resume "{\"rate\":\"${LT_RESUME_RATE:-50/s}\"}")" >&2
    ) &
    pids+=($!)
fi
loadtest=("$bin/switchyard-loadtest" --url "http://127.0.0.1:$listen_port/hooks/lt"
    --secret loadtest-secret --gateway-pid "$gateway" "${tool[@]}" "${sink[@]}" "$@")
if [[ $deliver_after_load == 1 ]]; then
    "${loadtest[@]}" &
    tool_pid=$!
    pids+=("$tool_pid")
    sleep $(($(humantime_s "${LT_DURATION:-10s}") + 1))
    # The delivery process: the same config on ports of its own.
    sed -e "s/127.0.0.1:$listen_port\"/127.0.0.1:$(free_port)\"/" \
        -e "s/127.0.0.1:$admin_port\"/127.0.0.1:$(free_port)\"/" \
        "$work/switchyard.toml" >"$work/deliver.toml"
    env -u SWITCHYARD_REDIS_URL -u SWITCHYARD_LISTEN -u SWITCHYARD_ADMIN_LISTEN \
        RUST_LOG="${LT_LOG:-warn}" ${LT_WRAP:-} "${LT_GATEWAY:-$bin/switchyard}" serve --config "$work/deliver.toml" \
        --no-ingest >"$work/deliver.log" 2>&1 &
    pids+=($!)
    echo "== delivery process $! started on the backlog" >&2
    wait "$tool_pid"
else
    "${loadtest[@]}"
fi
for port in "${primaries[@]}"; do
    echo "== redis :$port CPU: $(redis-cli -p "$port" info cpu | grep -E '^used_cpu_(sys|user):' | tr -d '\r' | paste -sd' ')" >&2
done
if [[ $sizing == 1 ]]; then
    # Settled: every job delivered to its end (dead letters) or left queued.
    for _ in $(seq 300); do
        [[ $scenario != sizing-dead ]] && break
        [[ $(redis-cli -p "$redis_port" xlen '{loadtest}:jobs') == 0 &&
            $(redis-cli -p "$redis_port" zcard '{loadtest}:retry') == 0 ]] && break
        sleep 0.1
    done
    events=$(redis-cli -p "$redis_port" --scan --pattern '{loadtest}:seen:*' | wc -l)
    memory_after=$(used_memory)
    echo "== redis memory: before $memory_before, after $memory_after bytes; $events events" \
        "(dedupe records), $(redis-cli -p "$redis_port" xlen '{loadtest}:jobs') queued jobs," \
        "$(redis-cli -p "$redis_port" zcard '{loadtest}:dead') dead letters;" \
        "$(((memory_after - memory_before) / (events > 0 ? events : 1))) bytes per event" >&2
fi
if [[ -n $measured_route ]]; then
    # Every Redis command of the run (ingest, delivery and the scripts' own
    # commands), per job delivered.
    calls=0
    for port in "${primaries[@]}"; do
        calls=$((calls + $(redis-cli -p "$port" info commandstats | grep -o 'calls=[0-9]*' | tr -dc '0-9\n' | paste -sd+ | bc)))
    done
    delivered=$(redis-cli -c -p "$redis_port" hget '{loadtest}:stats:delivered' "$measured_route")
    echo "== redis commands: $calls for ${delivered:-0} delivered jobs: $(echo "scale=1; $calls / ${delivered:-1}" | bc) per job" >&2
fi
if [[ ${LT_REDIS_STATS:-0} == 1 ]]; then
    for port in "${primaries[@]}"; do
        echo "== redis :$port commandstats" >&2
        redis-cli -p "$port" info commandstats | grep calls >&2
    done
fi
if [[ $scenario != reference ]]; then
    echo "== gateway deferrals: $(curl -fs "http://127.0.0.1:$admin_port/metrics" | grep '^switchyard_deliveries_deferred_total' | paste -sd' ')" >&2
fi
for port in "${primaries[@]}"; do
    echo "== redis :$port used_memory: $(redis-cli -p "$port" info memory | grep -m1 '^used_memory_human' | tr -d '\r')" >&2
    echo "== redis :$port stalls over 10 ms (event, last, last ms, max ms): $(redis-cli -p "$port" latency latest | paste -sd' ')" >&2
done
# Partition 0's dead letters (all of them on one Redis with one partition).
echo "== dead letters: $(redis-cli -c -p "$redis_port" zcard '{loadtest}:dead')" >&2
