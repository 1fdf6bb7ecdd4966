#!/usr/bin/env bash
# Runs the gateway on the shipped default config (config/switchyard.toml),
# starting a local Redis on 127.0.0.1:6379 first if none answers there.
set -euo pipefail
cd "$(dirname "$0")/.."

redis_answers() {
  # bash's /dev/tcp avoids needing redis-cli.
  exec 3<>/dev/tcp/127.0.0.1/6379 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  local reply
  read -r -t 2 reply <&3 || true
  exec 3>&-
  [[ "$reply" == +PONG* ]]
}

if ! redis_answers; then
  scripts/install-test-deps.sh
  mkdir -p target/redis
  echo "starting redis-server on 127.0.0.1:6379 (data in target/redis, AOF on)" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
    --dir "$PWD/target/redis" --appendonly yes --logfile "$PWD/target/redis/redis.log"
  for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
fi

exec cargo run --release --bin switchyard -- serve --config config/switchyard.toml "$@"
