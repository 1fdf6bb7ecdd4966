#!/usr/bin/env bash
# CI smoke check of the load tool: `loadtest/run.sh steady` on debug builds
# (a private Redis, the gateway with one github source routed to the tool's
# receiver), 50 events/s for 5 s with a 10 s drain. Fails unless every ingest
# answer was 202 and no acked event is missing. run.sh kills everything it
# starts on exit. Not a benchmark: the numbers are not checked.
set -euo pipefail
cd "$(dirname "$0")/.."

report=$(mktemp)
trap 'rm -f "$report"' EXIT

echo "== loadtest smoke: steady 50/s for 5s, drain 10s (debug build)"
LT_PROFILE=debug LT_RATE=50 LT_DURATION=5s loadtest/run.sh steady --quiet --json >"$report"

python3 - "$report" <<'PY'
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
