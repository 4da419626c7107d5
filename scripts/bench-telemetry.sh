#!/usr/bin/env bash
# Telemetry into PostgreSQL: wrk (keep-alive) posting batches of 50 events
# (POST /api/v1/telemetry/batch, a game server's API key, every eventId
# unique) to a release hub on a fresh PostgreSQL database. An answer comes
# once its events are committed, so wrk's latency is accepted-to-stored.
# Prints wrk's figures, events per second, the rows counted in the store,
# and the CPU time per 1,000 events of the hub and of PostgreSQL.
#
#   scripts/bench-telemetry.sh [HUB_BINARY] [SECONDS] [CONNECTIONS] [POSTGRES_URL_BASE]
#
# Defaults: target/release/hotswap, 30 s, 32 connections, 1 wrk thread,
# postgres://postgres@127.0.0.1:5432 (a database bench_<time> is created
# and dropped).
set -euo pipefail
cd "$(dirname "$0")/.."

HUB=${1:-target/release/hotswap}
SECONDS_=${2:-30}
CONNECTIONS=${3:-32}
PG=${4:-postgres://postgres@127.0.0.1:5432}
[[ -x $HUB ]] || { echo "no hub binary at $HUB (cargo build --release first)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
command -v psql >/dev/null || { echo "psql is not installed" >&2; exit 2; }

DB=bench_$(date +%s)
psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
export HOTSWAP_BIND=127.0.0.1:$PORT HOTSWAP_DATA_DIR=$WORK HOTSWAP_DATABASE__URL=$PG/$DB \
  HOTSWAP_RATE_LIMIT__PRINCIPAL_PER_MINUTE=1000000000 HOTSWAP_RATE_LIMIT__PRINCIPAL_BURST=100000000 \
  HOTSWAP_RATE_LIMIT__ADDRESS_PER_MINUTE=1000000000 HOTSWAP_RATE_LIMIT__ADDRESS_BURST=100000000 \
  HOTSWAP_LOG__LEVEL=warn
"$HUB" >"$WORK/hub.log" 2>&1 &
HUB_PID=$!
stop() {
  kill "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null || true
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap stop EXIT
for _ in $(seq 1 150); do
  curl -sf "$BASE/health" >/dev/null && break
  sleep 0.2
done

TOKEN=$("$HUB" token --role admin --sub bench --ttl 2h)
KEY=$(curl -sfS -X POST "$BASE/api/v1/api-keys" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d '{"name":"bench fleet"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() {
  local total=0
  for pid in $(pgrep -x postgres || true); do total=$((total + $(ticks "$pid"))); done
  echo "$total"
}
HZ=$(getconf CLK_TCK)
hub_before=$(ticks "$HUB_PID"); pg_before=$(pg_ticks)
wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_}s" --timeout 10s --latency -s scripts/telemetry.lua \
  -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$BASE" | tee "$WORK/wrk.txt"
hub_after=$(ticks "$HUB_PID"); pg_after=$(pg_ticks)
stored=$(psql "$PG/$DB" -Atc "SELECT COUNT(*) FROM telemetry_events")
partitions=$(psql "$PG/$DB" -Atc "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'telemetry_events'::regclass")
python3 - "$WORK/wrk.txt" "$stored" "$partitions" "$HZ" "$hub_before" "$hub_after" "$pg_before" "$pg_after" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
stored, partitions, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
hub = (int(sys.argv[6]) - int(sys.argv[5])) / hz
pg = (int(sys.argv[8]) - int(sys.argv[7])) / hz
requests = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", text).group(1))
secs = float(re.search(r"requests in ([\d.]+)s", text).group(1))
non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
accepted = (requests - non2xx) * 50
print(f"\nbatches: {requests} ({non2xx} refused: 503 full queue or errors)")
print(f"events accepted: {accepted}  stored (rows in telemetry_events): {stored}  partitions: {partitions}")
print(f"events/s accepted: {accepted / secs:,.0f}")
if accepted:
    print(f"CPU per 1,000 events: hub {1000 * hub / accepted * 1000:.1f} ms, PostgreSQL {1000 * pg / accepted * 1000:.1f} ms")
if stored < accepted:
    print("MISMATCH: fewer rows than events accepted", file=sys.stderr)
    sys.exit(1)
PY
