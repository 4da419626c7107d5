#!/usr/bin/env bash
# Three HotSwap nodes on this machine, on one PostgreSQL database and one
# Redis, from a release build: ports 8081, 8082, 8083. Stops them all on
# Ctrl-C. What the compose file does, without containers.
#
#   deploy/cluster/run-local.sh [postgres://postgres@127.0.0.1:5432/hotswap] [redis://127.0.0.1:6379/0]
#
# The nodes share one key folder (deploy/cluster/.keys): the first node
# generates the keys and prints an admin token; the others read them.
set -euo pipefail
cd "$(dirname "$0")/../.."
database=${1:-postgres://postgres@127.0.0.1:5432/hotswap}
redis=${2:-redis://127.0.0.1:6379/0}
binary=target/release/hotswap
[[ -x $binary ]] || cargo build --release --bin hotswap
keys=deploy/cluster/.keys
mkdir -p "$keys"
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for node in 1 2 3; do
  HOTSWAP_BIND=127.0.0.1:808$node \
  HOTSWAP_DATA_DIR=$keys \
  HOTSWAP_DATABASE__URL=$database \
  HOTSWAP_REDIS__URL=$redis \
  HOTSWAP_CLUSTER__NODE_ID=node-$node \
    "$binary" serve &
  pids+=($!)
  # One at a time: the first creates the schema and the keys.
  until curl -fsS "http://127.0.0.1:808$node/ready" >/dev/null 2>&1; do
    kill -0 "${pids[-1]}" || exit 1
    sleep 0.2
  done
  echo "node-$node ready on http://127.0.0.1:808$node"
done
echo "an admin token: $(HOTSWAP_DATA_DIR=$keys HOTSWAP_DATABASE__URL=$database "$binary" token --role admin --sub operator --ttl 8h)"
wait
