#!/usr/bin/env bash
# What a player sees, over HTTP: wrk (keep-alive) against
# GET /api/v1/players/{id}/config on a release hub with a deployed config,
# a rule segment, and two live events active (one for the segment, one
# server-wide). Prints wrk's figures and the hub's CPU time per request.
#
#   scripts/bench-players.sh [HUB_BINARY] [SECONDS] [CONNECTIONS]
#
# Defaults: target/release/hotswap, 20 s, 64 connections, 1 wrk thread
# (the load generator shares this machine's cores with the hub).
#
# Then the same wrk against the HTTP floor (`hotswap-loadtest http-floor`,
# next to the hub binary: a bare keep-alive responder answering every
# request with a body of the lookup's size), and the ratio of the two.
set -euo pipefail
cd "$(dirname "$0")/.."

HUB=${1:-target/release/hotswap}
SECONDS_=${2:-20}
CONNECTIONS=${3:-64}
[[ -x $HUB ]] || { echo "no hub binary at $HUB (cargo build --release first)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
export HOTSWAP_BIND=127.0.0.1:$PORT HOTSWAP_DATA_DIR=$WORK HOTSWAP_DATABASE__URL=sqlite://$WORK/hub.db \
  HOTSWAP_RATE_LIMIT__PRINCIPAL_PER_MINUTE=1000000000 HOTSWAP_RATE_LIMIT__PRINCIPAL_BURST=100000000 \
  HOTSWAP_RATE_LIMIT__ADDRESS_PER_MINUTE=1000000000 HOTSWAP_RATE_LIMIT__ADDRESS_BURST=100000000 \
  HOTSWAP_LOG__LEVEL=warn
"$HUB" >"$WORK/hub.log" 2>&1 &
HUB_PID=$!
stop_hub() { kill "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null; rm -rf "$WORK"; }
trap stop_hub EXIT
for _ in $(seq 1 100); do
  curl -sf "$BASE/health" >/dev/null && break
  sleep 0.2
done

TOKEN=$("$HUB" token --role admin --sub bench --ttl 2h)
post() {
  curl -sfS -X POST "$BASE/api/v1$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$2" >/dev/null
}
START=$(date -u -d '-1 min' +%Y-%m-%dT%H:%M:%SZ)
END=$(date -u -d '+2 hours' +%Y-%m-%dT%H:%M:%SZ)
post /configs '{"name":"weapon-balance","configType":"GameBalance","environment":"staging"}'
# A ~1 KB document.
post /configs/weapon-balance/versions '{"version":"1.0.0","content":{"weapons":{
  "rifle":{"damage":45,"fireRate":600,"reloadTime":2.5},"smg":{"damage":22,"fireRate":900,"reloadTime":1.8},
  "shotgun":{"damage":90,"fireRate":70,"reloadTime":3.1},"sniper":{"damage":150,"fireRate":40,"reloadTime":3.5},
  "pistol":{"damage":30,"fireRate":300,"reloadTime":1.2},"lmg":{"damage":35,"fireRate":750,"reloadTime":4.5}},
  "characters":{"tank":{"health":300,"armor":80,"abilities":{"shield":{"cooldown":12.0}}},
  "scout":{"health":150,"armor":20,"abilities":{"dash":{"cooldown":4.0}}},
  "medic":{"health":180,"armor":30,"abilities":{"heal":{"cooldown":8.0}}}}}}'
post /deployments '{"config":"weapon-balance","version":"1.0.0","strategy":"Direct"}'
post /segments '{"name":"veterans","rule":{"all":[{"attribute":"level","gte":10},{"attribute":"platform","in":["pc","ps5"]}]}}'
post /live-events "{\"name\":\"veteran-boost\",\"eventType\":\"Retention\",\"audience\":{\"segments\":[\"veterans\"]},
  \"overrides\":[{\"config\":\"weapon-balance\",\"patch\":{\"weapons\":{\"rifle\":{\"damage\":60}}}}],
  \"schedule\":{\"startTime\":\"$START\",\"endTime\":\"$END\"}}"
post /live-events "{\"name\":\"half-fire-rate\",\"eventType\":\"LimitedTimeOffer\",\"audience\":{\"percentage\":50},
  \"overrides\":[{\"config\":\"weapon-balance\",\"patch\":{\"weapons\":{\"smg\":{\"fireRate\":950}}}}],
  \"schedule\":{\"startTime\":\"$START\",\"endTime\":\"$END\"}}"
sleep 1
URL="$BASE/api/v1/players/p42/config?configs=weapon-balance&region=EU-WEST&level=12&platform=pc"
curl -sfS "$URL" -H "Authorization: Bearer $TOKEN" | head -c 300; echo
BODY_BYTES=$(curl -sfS "$URL" -H "Authorization: Bearer $TOKEN" | wc -c)
ticks() { awk '{print $14 + $15}' "/proc/$HUB_PID/stat"; }
HZ=$(getconf CLK_TCK)
before=$(ticks)
wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_}s" --latency -H "Authorization: Bearer $TOKEN" "$URL" | tee "$WORK/wrk.txt"
after=$(ticks)
if grep -q "Non-2xx" "$WORK/wrk.txt"; then
  echo "the hub refused some lookups (rate limits? a token?): the figures do not count" >&2
  exit 1
fi
requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
rate=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
python3 - "$before" "$after" "$HZ" "$requests" <<'PY'
import sys
before, after, hz, requests = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cpu_us = (after - before) * 1_000_000 / hz
print(f"hub CPU: {cpu_us / 1e6:.1f} s for {requests} requests = {cpu_us / max(requests, 1):.1f} µs per request")
PY

FLOOR_BIN=$(dirname "$HUB")/hotswap-loadtest
[[ -x $FLOOR_BIN ]] || { echo "no $FLOOR_BIN: no floor figure (cargo build --release --workspace)"; exit 0; }
stop_hub
trap - EXIT
FLOOR_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$FLOOR_BIN" http-floor --bind "127.0.0.1:$FLOOR_PORT" --body-bytes "$BODY_BYTES" >/dev/null &
FLOOR_PID=$!
trap 'kill $FLOOR_PID 2>/dev/null' EXIT
for _ in $(seq 1 50); do
  curl -sf -o /dev/null "http://127.0.0.1:$FLOOR_PORT/" && break
  sleep 0.1
done
echo "== the HTTP floor (a bare responder, $BODY_BYTES-byte body)"
FLOOR_OUT=$(mktemp)
floor_before=$(awk '{print $14 + $15}' "/proc/$FLOOR_PID/stat")
wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_}s" --latency -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$FLOOR_PORT/api/v1/players/p42/config" | tee "$FLOOR_OUT"
floor_after=$(awk '{print $14 + $15}' "/proc/$FLOOR_PID/stat")
python3 - "$(awk '/Requests\/sec/ {print $2}' "$FLOOR_OUT")" "$rate" "$SECONDS_" \
  "$floor_before" "$floor_after" "$HZ" "$(awk '/requests in/ {print $1}' "$FLOOR_OUT")" <<'PY'
import sys
floor_rate, hub_rate = float(sys.argv[1]), float(sys.argv[2])
before, after, hz, floor_requests = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
cpu_us = (after - before) * 1_000_000 / hz
print(f"floor CPU: {cpu_us / max(floor_requests, 1):.1f} µs per request")
print(f"player lookups / floor: {hub_rate / floor_rate:.2f}")
PY
rm -f "$FLOOR_OUT"
