#!/usr/bin/env bash
# Fuzz the REST API with schemathesis against the hub's own OpenAPI document:
# no 5xx, and every response's status code, content type and body as documented.
#
#   scripts/schemathesis.sh [HUB_BINARY] [MAX_EXAMPLES]
#
# HUB_BINARY defaults to target/debug/hotswap; MAX_EXAMPLES (per operation and
# phase) to $SCHEMATHESIS_MAX_EXAMPLES or 25; SCHEMATHESIS_SEED (default 1)
# makes a run repeatable. Starts a throwaway hub (SQLite, temp data dir, rate
# limits out of the way) on a free port, seeds a little data, runs every route
# but the game-server socket, stops the hub. Exits non-zero on any failure;
# the reports (NDJSON with every request, JUnit) and the hub's log are left in
# target/schemathesis-report/. Needs python3 and, the first time, PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

HUB=${1:-target/debug/hotswap}
MAX_EXAMPLES=${2:-${SCHEMATHESIS_MAX_EXAMPLES:-25}}
SEED=${SCHEMATHESIS_SEED:-1}
VERSION=4.32.5
VENV=target/schemathesis-venv
REPORT=target/schemathesis-report

[[ -x $HUB ]] || { echo "no hub binary at $HUB (cargo build first)" >&2; exit 2; }
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q " $VERSION\$"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$VERSION"
fi

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
export HOTSWAP_BIND=127.0.0.1:$PORT HOTSWAP_DATA_DIR=$WORK HOTSWAP_DATABASE__URL=sqlite://$WORK/hub.db \
  HOTSWAP_RATE_LIMIT__PRINCIPAL_PER_MINUTE=1000000 HOTSWAP_RATE_LIMIT__PRINCIPAL_BURST=100000 \
  HOTSWAP_RATE_LIMIT__ADDRESS_PER_MINUTE=1000000 HOTSWAP_RATE_LIMIT__ADDRESS_BURST=100000 \
  HOTSWAP_LOG__FORMAT=json HYPOTHESIS_STORAGE_DIRECTORY=$WORK/hypothesis

rm -rf "$REPORT" && mkdir -p "$REPORT"
"$HUB" >"$REPORT/hub.log" 2>&1 &
HUB_PID=$!
stop_hub() { kill "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null; rm -rf "$WORK"; }
trap stop_hub EXIT

for _ in $(seq 1 100); do
  curl -sf "$BASE/health" >/dev/null && break
  kill -0 "$HUB_PID" 2>/dev/null || { cat "$REPORT/hub.log" >&2; exit 2; }
  sleep 0.2
done
curl -sf "$BASE/health" >/dev/null || { echo "hub did not answer /health" >&2; exit 2; }

TOKEN=$("$HUB" token --role admin --sub schemathesis --ttl 2h)
post() {
  curl -sfS -X POST "$BASE/api/v1$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$2"
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
# Seed data; generated path parameters and bodies name it half of the time
# (schemathesis also reuses values it sees in responses).
post /configs '{"name":"weapon-balance","configType":"GameBalance","environment":"staging"}' >/dev/null
post /configs/weapon-balance/versions \
  '{"version":"1.0.0","content":{"weapons":{"rifle":{"damage":45,"fireRate":600,"reloadTime":2.5}}}}' >/dev/null
post /configs/weapon-balance/versions \
  '{"version":"1.1.0","content":{"weapons":{"rifle":{"damage":50,"fireRate":650,"reloadTime":2.5}}}}' >/dev/null
post /schemas '{"id":"loot-table","version":"1.0.0","schema":{"type":"object","properties":{"drops":{"type":"integer"}}}}' >/dev/null
DEPLOYMENT=$(post /deployments '{"config":"weapon-balance","version":"1.1.0","strategy":"Direct"}' | field id)
KEY_ID=$(post /api-keys '{"name":"fuzzed","environments":["staging"]}' | field id)
KEY=$(post /api-keys '{"name":"whoami","environments":["staging"]}' | field key)
curl -sfS "$BASE/api/v1/openapi.json" -H "Authorization: Bearer $TOKEN" -o "$WORK/openapi.json"

# Admin JWT everywhere but on whoami, the game servers' call, which takes an API key;
# the crash cache (for `st replay`) goes with the reports, not into the work tree.
cat >"$WORK/schemathesis.toml" <<EOF
headers = { Authorization = "Bearer $TOKEN" }
cache = { directory = "$PWD/$REPORT/cache" }

[dictionaries]
names = { values = ["weapon-balance"] }
versions = { values = ["1.0.0", "1.1.0"] }
ids = { values = ["$DEPLOYMENT", "$KEY_ID", "loot-table", "game-balance"] }

[parameters]
"path.name" = { dictionary = "names", probability = 0.5 }
"path.version" = { dictionary = "versions", probability = 0.5 }
"path.from" = { dictionary = "versions", probability = 0.5 }
"path.to" = { dictionary = "versions", probability = 0.5 }
"path.id" = { dictionary = "ids", probability = 0.5 }
"body.config" = { dictionary = "names", probability = 0.5 }
"body.version" = { dictionary = "versions", probability = 0.5 }
"body.toVersion" = { dictionary = "versions", probability = 0.5 }

[[operations]]
include-name = "GET /api/v1/server/whoami"
headers = { Authorization = "Bearer $KEY" }
EOF

fuzz() {
  "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$WORK/openapi.json" \
    --url "$BASE" --exclude-path /ws/v1/servers \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases "${SCHEMATHESIS_PHASES:-examples,coverage,fuzzing}" --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" --generation-database none --workers 1 --request-timeout 10 --continue-on-failure \
    --report ndjson,junit --report-dir "$REPORT" "$@"
}
# DELETEs last, so the seeded resources live through the other operations.
status=0
fuzz --exclude-method DELETE || status=$?
fuzz --include-method DELETE || status=$?

if ((status == 0)); then
  echo "schemathesis: no failures (max $MAX_EXAMPLES examples per operation, seed $SEED)"
else
  echo "schemathesis: FAILED (exit $status); requests and responses in $REPORT/" >&2
fi
exit "$status"
