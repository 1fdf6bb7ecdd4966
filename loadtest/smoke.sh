#!/usr/bin/env bash
# CI smoke check of the load tool: a private Redis, the gateway (debug build)
# with one github source routed to the tool's built-in receiver, then a
# 5-second `steady` run at 50/s. Fails unless every ingest answer was 202 and
# no acked event is missing after the drain. Everything it starts is killed
# on exit. Not a benchmark: the numbers are not checked.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

echo "== loadtest smoke: building the gateway and the tool"
cargo build -q -p switchyard --bin switchyard
cargo build -q -p switchyard-loadtest

redis_port=$(free_port)
listen_port=$(free_port)
admin_port=$(free_port)
sink_port=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)

cat >"$work/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:$listen_port"
admin_listen = "127.0.0.1:$admin_port"

[redis]
url = "redis://127.0.0.1:$redis_port/0"
prefix = "loadtest"

[admin]
tokens = [{ name = "smoke", secret = "smoke-admin-token" }]

[delivery]
concurrency = 256
retry = { max_attempts = 8, initial_backoff = "100ms", max_backoff = "1s" }

[owners.platform]
team = "Platform"
contact = "platform@example.com"

[sources.lt]
path = "/hooks/lt"
scheme = "github"
secrets = ["loadtest-smoke-secret"]

[[routes]]
name = "lt-to-sink"
source = "lt"
owner = "platform"
description = "Load test: every event to the tool's receiver"
on_failure = "The load test reports it missing"
destination = { url = "http://127.0.0.1:$sink_port/events", timeout = "5s" }
TOML

for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done

# Redis URL and listeners come from the file alone, whatever the environment says.
env -u SWITCHYARD_REDIS_URL -u SWITCHYARD_LISTEN -u SWITCHYARD_ADMIN_LISTEN \
    RUST_LOG=warn target/debug/switchyard serve --config "$work/switchyard.toml" \
    >"$work/gateway.log" 2>&1 &
gateway=$!
pids+=("$gateway")

ready=no
for _ in $(seq 300); do
    if curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; then
        ready=yes
        break
    fi
    kill -0 "$gateway" 2>/dev/null || break
    sleep 0.1
done
if [[ $ready != yes ]]; then
    echo "loadtest smoke: the gateway did not become ready" >&2
    cat "$work/gateway.log" >&2
    exit 1
fi

echo "== loadtest smoke: steady 50/s for 5s, drain 10s"
target/debug/switchyard-loadtest --scenario steady --rate 50 --duration 5s --drain 10s \
    --url "http://127.0.0.1:$listen_port/hooks/lt" --secret loadtest-smoke-secret \
    --sink-listen "127.0.0.1:$sink_port" --gateway-pid "$gateway" --quiet --json \
    >"$work/report.json"

python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
i, e = r["ingest"], r["end_to_end"]
print(f"sent {i['sent']}, status {i['status_counts']}, errors {i['errors']}, "
      f"acked {e['acked']}, delivered {e['delivered']}, duplicates {e['duplicates']}, missing {e['missing']}, "
      f"ingest p99 {i['latency']['p99_ms']} ms, e2e p99 {e['latency']['p99_ms']} ms")
problems = []
if i["sent"] == 0:
    problems.append("nothing was sent")
if i["errors"] or set(i["status_counts"]) != {"202"} or i["status_counts"]["202"] != i["sent"]:
    problems.append("not every ingest answer was 202")
if e["missing"] != 0:
    problems.append(f"{e['missing']} acked events missing")
if problems:
    print("loadtest smoke FAILED: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
print("loadtest smoke passed")
PY
