#!/usr/bin/env bash
# An interleaved A/B of two gateway builds against one simulator: the direct path, build A and
# build B in turn at concurrency 1 (three rounds), then A and B at 64 (two rounds), so a change
# is measured against its parent in one run rather than against a number from another day.
#
#   bench/ab.sh BASE_BINARY HEAD_BINARY     (release builds of router-one; D=10s per measurement)
#
# Prints wrk's p50 and requests/s per measurement; appends nothing. Needs wrk.
set -euo pipefail
if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
BASE=${1:?usage: bench/ab.sh BASE_BINARY HEAD_BINARY}
HEAD=${2:?usage: bench/ab.sh BASE_BINARY HEAD_BINARY}
D=${D:-10s}
LUA="$(cd "$(dirname "$0")" && pwd)/lua/chat.lua"
OUT=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM=$(port); A=$(port); B=$(port)
"$HEAD" simulate --listen "127.0.0.1:$SIM" --ttft-ms 0 --tpot-ms 0 >"$OUT/sim.log" 2>&1 & PIDS+=($!)
export BENCH_UPSTREAM_KEY=sk-bench-upstream
printf '[providers.openai]\napi = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\napi_key_env = "BENCH_UPSTREAM_KEY"\n' "$SIM" >"$OUT/config.toml"
serve() { RUST_LOG=warn "$1" serve --config "$OUT/config.toml" --listen "127.0.0.1:$2" --data "$OUT/$3" >"$OUT/$3.log" 2>&1 & PIDS+=($!); }
serve "$BASE" "$A" a; serve "$HEAD" "$B" b
for p in "$A" "$B"; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$p/health" >/dev/null 2>&1 && break; sleep 0.1; done
done
key() {
  local acct mgmt
  acct=$("$1" admin create-account --email "ab-$2@example.com" --credit 1000000 --data "$OUT/$3" | tail -n1)
  mgmt=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["management_key"])' "$acct")
  curl -fsS -X POST "http://127.0.0.1:$2/v1/keys" -H "authorization: Bearer $mgmt" \
    -H 'content-type: application/json' -d '{"name":"ab"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
KA=$(key "$BASE" "$A" a); KB=$(key "$HEAD" "$B" b)
export BENCH_MODEL=${MODEL:-gpt-6.2-sol}
run() { BENCH_AUTH=$2 wrk -t1 -c"$3" -d"$D" --latency -s "$LUA" "http://127.0.0.1:$1/v1/chat/completions" 2>&1 \
  | awk -v l="$4" '/^ +50%/{p=$2} /Requests\/sec/{r=$2} END{printf "%-16s p50 %-9s %s req/s\n", l, p, r}'; }
for i in 1 2 3; do
  run "$SIM" x 1 "direct c1"; run "$A" "$KA" 1 "base c1"; run "$B" "$KB" 1 "head c1"
done
for i in 1 2; do
  run "$A" "$KA" 64 "base c64"; run "$B" "$KB" 64 "head c64"
done
