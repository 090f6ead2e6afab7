#!/usr/bin/env bash
# Router One overhead benchmark: the simulated upstream alone ("direct") versus the same simulator
# behind the gateway, at concurrency 1 (latency added) and 64 (throughput kept), plus a streaming
# variant at 64; then the same for translated requests (a Claude model through the Anthropic
# adapter, a Gemini model through the Gemini adapter) against the simulator's native endpoints.
# Appends rows to bench/RESULTS.md. See bench/README.md.
#
# env: DURATION (default 10s), WARMUP (2s), MODEL (default: first openai chat model of /v1/models),
#      SIM_TTFT_MS / SIM_TPOT_MS (simulator pacing, default 0 / 0), SKIP_BUILD=1, NO_APPEND=1,
#      TRANSLATED=0 (skip the translated runs), CLAUDE_MODEL, GEMINI_MODEL, UNMETERED=0 (skip the
#      metering-cost runs against a second gateway started with ROUTER_ONE_BENCH_UNMETERED=1, which
#      only a build with the `bench-unmetered` feature accepts: the script builds with it),
#      POSTGRES=0 (skip the runs against cluster nodes on PostgreSQL + Redis: a fresh database made
#      on BENCH_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test, dropped afterwards,
#      and BENCH_REDIS_URL, default redis://127.0.0.1:6379; one node, then three),
#      OBSERVE=0 (skip the runs against gateways with receipts, metrics and traces switched on;
#      OBSERVE_ROUNDS, default 3, rounds of the four in turn, each figure their median),
#      NGINX=0 (skip nginx: by default nginx, installed from the distribution's packages if missing,
#      runs as a plain keep-alive reverse proxy to the same simulator, one worker process, and the
#      main runs go direct, nginx, gateway in turn, so every row holds the floor of its own run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-10s}
OBSERVE_ROUNDS=${OBSERVE_ROUNDS:-3}
WARMUP=${WARMUP:-2s}
SIM_TTFT_MS=${SIM_TTFT_MS:-0}
SIM_TPOT_MS=${SIM_TPOT_MS:-0}
LUA=$ROOT/bench/lua/chat.lua
RESULTS=$ROOT/bench/RESULTS.md

say() { printf '\n==== %s ====\n' "$*" >&2; }

if ! command -v wrk >/dev/null; then
  say "installing wrk"
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi

if [ "${SKIP_BUILD:-}" != 1 ]; then
  # The feature only lets ROUTER_ONE_BENCH_UNMETERED=1 switch metering off in the second gateway
  # below; the metered gateway runs exactly the code of a normal build. A normal build refuses to
  # start with that variable.
  say "cargo build --release -p router-one --features bench-unmetered"
  cargo build --release -p router-one --features bench-unmetered
fi
BIN=$ROOT/target/release/router-one

# A data dir for a second gateway with the first one's accounts and keys: a copy of the seed
# taken while the first was idle (a copy of its live dir races its writer: journal segments
# rotate away mid-copy, the database changes under it), without journal segments (replayed,
# they would bill the first gateway's records again).
copy_data() { # dst
  mkdir -p "$1"
  tar -C "$OUT/data-seed" --exclude='usage-*.journal' -cf - . | tar -C "$1" -xf -
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port)
GW_PORT=$(free_port)
while [ "$GW_PORT" = "$SIM_PORT" ]; do GW_PORT=$(free_port); done

OUT=$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
PIDS=()
PG_SERVER=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_DB=""
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  if [ -n "$PG_DB" ]; then
    sleep 1
    psql "$PG_SERVER" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

wait_http() { # url, what
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not come up at $1; logs in $OUT" >&2
  exit 1
}
wait_port() { # port, what
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$2 is not listening on $1; logs in $OUT" >&2
  exit 1
}

say "simulator on 127.0.0.1:$SIM_PORT (ttft ${SIM_TTFT_MS} ms, tpot ${SIM_TPOT_MS} ms)"
"$BIN" simulate --listen "127.0.0.1:$SIM_PORT" --ttft-ms "$SIM_TTFT_MS" --tpot-ms "$SIM_TPOT_MS" \
  >"$OUT/simulator.log" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
wait_port "$SIM_PORT" simulator

cat >"$OUT/config.toml" <<EOF
[providers.openai]
api = "openai"
base_url = "http://127.0.0.1:$SIM_PORT/v1"
api_key_env = "BENCH_UPSTREAM_KEY"

[providers.anthropic]
api = "anthropic"
base_url = "http://127.0.0.1:$SIM_PORT/v1"
api_key_env = "BENCH_UPSTREAM_KEY"

[providers.gemini]
api = "gemini"
base_url = "http://127.0.0.1:$SIM_PORT/v1beta"
api_key_env = "BENCH_UPSTREAM_KEY"
EOF
export BENCH_UPSTREAM_KEY=sk-bench-upstream

say "gateway on 127.0.0.1:$GW_PORT"
RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$OUT/config.toml" --listen "127.0.0.1:$GW_PORT" \
  --data "$OUT/data" >"$OUT/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/health" gateway

say "account and key"
ACCT_JSON=$("$BIN" admin create-account --email "bench-$(date +%s)@example.com" --credit 1000000 --data "$OUT/data" \
  | tail -n1)
MGMT_KEY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["management_key"])' "$ACCT_JSON")
KEY_JSON=$(curl -fsS -X POST "http://127.0.0.1:$GW_PORT/v1/keys" -H "authorization: Bearer $MGMT_KEY" \
  -H 'content-type: application/json' -d '{"name":"bench"}')
API_KEY=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$KEY_JSON")
# Nothing has run yet: the seed of every other gateway's data dir (copy_data).
cp -r "$OUT/data" "$OUT/data-seed"

if [ -z "${MODEL:-}" ]; then
  MODEL=$(curl -fsS "http://127.0.0.1:$GW_PORT/v1/models" -H "authorization: Bearer $API_KEY" | python3 -c '
import json, sys
models = json.load(sys.stdin)["data"]
def chat(m):
    if "kind" in m:
        return m["kind"] == "chat"
    return "embed" not in m["id"] and m.get("pricing", {}).get("output_per_mtok", "1") not in ("0", "0.0", "0.00")
def openai(m):
    routes = m.get("routes") or m.get("providers") or []
    provs = [r.get("provider") if isinstance(r, dict) else r for r in routes]
    return m.get("owned_by") == "openai" or m.get("provider") == "openai" or "openai" in provs
pick = [m for m in models if chat(m) and openai(m)] or [m for m in models if chat(m) and m["id"].startswith("gpt-")]
print(pick[0]["id"])')
fi
export BENCH_MODEL=$MODEL
echo "model: $MODEL" >&2

say "smoke request through the gateway"
code=$(curl -sS -o "$OUT/smoke.json" -w '%{http_code}' "http://127.0.0.1:$GW_PORT/v1/chat/completions" \
  -H "authorization: Bearer $API_KEY" -H 'content-type: application/json' \
  -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")
if [ "$code" != 200 ]; then
  echo "smoke request failed with $code: $(cat "$OUT/smoke.json")" >&2
  exit 1
fi

DIRECT_URL="http://127.0.0.1:$SIM_PORT/v1/chat/completions"
GW_URL="http://127.0.0.1:$GW_PORT/v1/chat/completions"

# nginx as a plain reverse proxy to the same simulator: the floor a proxy that meters nothing
# reaches on this machine in this run (issue 15). One worker process, keep-alive to the upstream,
# no buffering, no access log.
NGX_URL=""
if [ "${NGINX:-1}" != 0 ]; then
  if ! command -v nginx >/dev/null; then
    say "installing nginx"
    apt-get install -y nginx-light >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nginx-light >/dev/null; }
  fi
  NGX_PORT=$(free_port)
  mkdir -p "$OUT/nginx"
  cat >"$OUT/nginx/nginx.conf" <<EOF
worker_processes 1; daemon off; error_log $OUT/nginx/error.log; pid $OUT/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream sim { server 127.0.0.1:$SIM_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / { proxy_pass http://sim; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
EOF
  say "nginx $(nginx -v 2>&1 | sed 's|.*/||') on 127.0.0.1:$NGX_PORT"
  nginx -c "$OUT/nginx/nginx.conf" -p "$OUT/nginx" >"$OUT/nginx/stdout.log" 2>&1 &
  NGX_PID=$!
  PIDS+=("$NGX_PID")
  wait_port "$NGX_PORT" nginx
  NGX_URL="http://127.0.0.1:$NGX_PORT/v1/chat/completions"
fi
# Runs nginx like `run`, when it is on.
run_nginx() {
  [ -n "$NGX_URL" ] || return 0
  local name=$1 stream=$2
  shift 2
  run "$name" "$NGX_URL" sk-bench "$stream" "$@"
}

# run NAME URL AUTH STREAM WRK-ARGS... → prints the BENCH json line, keeps full output in $OUT/NAME.txt
# (BENCH_FORMAT and BENCH_MODEL from the environment choose the body; see bench/lua/chat.lua).
run() {
  local name=$1 url=$2 auth=$3 stream=$4
  shift 4
  BENCH_AUTH=$auth BENCH_STREAM=$stream wrk "$@" -d "$WARMUP" -s "$LUA" "$url" >"$OUT/$name.warmup.txt" 2>&1 || true
  say "$name: wrk $* -d $DURATION (${BENCH_FORMAT:-openai}, $BENCH_MODEL)"
  BENCH_AUTH=$auth BENCH_STREAM=$stream wrk "$@" -d "$DURATION" --latency -s "$LUA" "$url" >"$OUT/$name.txt" 2>&1
  grep -v '^BENCH ' "$OUT/$name.txt" >&2 || true
  local line
  line=$(grep '^BENCH ' "$OUT/$name.txt" | tail -n1 | cut -d' ' -f2-)
  [ -n "$line" ] || { echo "wrk printed no result for $name" >&2; exit 1; }
  echo "$line" >"$OUT/$name.json"
}

run direct_c1 "$DIRECT_URL" sk-bench 0 -t1 -c1
run_nginx nginx_c1 0 -t1 -c1
run gateway_c1 "$GW_URL" "$API_KEY" 0 -t1 -c1
run direct_c64 "$DIRECT_URL" sk-bench 0 -t2 -c64
run_nginx nginx_c64 0 -t2 -c64
run gateway_c64 "$GW_URL" "$API_KEY" 0 -t2 -c64
run direct_stream_c64 "$DIRECT_URL" sk-bench 1 -t2 -c64
run_nginx nginx_stream_c64 1 -t2 -c64
run gateway_stream_c64 "$GW_URL" "$API_KEY" 1 -t2 -c64
NGX_HWM_KB=0
if [ -n "$NGX_URL" ]; then
  # The worker's peak (the master only forks it): what nginx held at c=64.
  for pid in $(pgrep -P "$NGX_PID" || true) "$NGX_PID"; do
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    if [ "${kb:-0}" -gt "$NGX_HWM_KB" ]; then NGX_HWM_KB=$kb; fi
  done
fi

# Translated requests: the same conversation in the vendor's own format straight to the
# simulator's native endpoint (direct), and in OpenAI format through the gateway's adapter.
CLAUDE_MODEL=${CLAUDE_MODEL:-claude-sonnet-5-5}
GEMINI_MODEL=${GEMINI_MODEL:-gemini-4-hydrogen}
TRANSLATED_FAMILIES=()
if [ "${TRANSLATED:-1}" != 0 ]; then
  TRANSLATED_FAMILIES=(anthropic gemini)
fi
for family in "${TRANSLATED_FAMILIES[@]}"; do
  if [ "$family" = anthropic ]; then
    model=$CLAUDE_MODEL
    direct="http://127.0.0.1:$SIM_PORT/v1/messages"; direct_stream=$direct
  else
    model=$GEMINI_MODEL
    direct="http://127.0.0.1:$SIM_PORT/v1beta/models/$model:generateContent"
    direct_stream="http://127.0.0.1:$SIM_PORT/v1beta/models/$model:streamGenerateContent?alt=sse"
  fi
  export BENCH_MODEL=$model
  BENCH_FORMAT=$family run "${family}_direct_c1" "$direct" sk-bench 0 -t1 -c1
  run "${family}_gateway_c1" "$GW_URL" "$API_KEY" 0 -t1 -c1
  BENCH_FORMAT=$family run "${family}_direct_c64" "$direct" sk-bench 0 -t2 -c64
  run "${family}_gateway_c64" "$GW_URL" "$API_KEY" 0 -t2 -c64
  BENCH_FORMAT=$family run "${family}_direct_stream_c64" "$direct_stream" sk-bench 1 -t2 -c64
  run "${family}_gateway_stream_c64" "$GW_URL" "$API_KEY" 1 -t2 -c64
done
export BENCH_MODEL=$MODEL

# What metering costs: the same runs against a second gateway with metering switched off (no
# estimate, limits, reservation or usage record), same config, its own data dir.
if [ "${UNMETERED:-1}" != 0 ]; then
  UM_PORT=$(free_port)
  while [ "$UM_PORT" = "$SIM_PORT" ] || [ "$UM_PORT" = "$GW_PORT" ]; do UM_PORT=$(free_port); done
  say "unmetered gateway on 127.0.0.1:$UM_PORT"
  copy_data "$OUT/data-unmetered"
  ROUTER_ONE_BENCH_UNMETERED=1 RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$OUT/config.toml" \
    --listen "127.0.0.1:$UM_PORT" --data "$OUT/data-unmetered" >"$OUT/unmetered.log" 2>&1 &
  UM_PID=$!
  PIDS+=("$UM_PID")
  wait_http "http://127.0.0.1:$UM_PORT/health" "unmetered gateway"
  UM_URL="http://127.0.0.1:$UM_PORT/v1/chat/completions"
  run unmetered_c1 "$UM_URL" "$API_KEY" 0 -t1 -c1
  run unmetered_c64 "$UM_URL" "$API_KEY" 0 -t2 -c64
  run unmetered_stream_c64 "$UM_URL" "$API_KEY" 1 -t2 -c64
  kill "$UM_PID" 2>/dev/null || true
fi

# The same gateway as a cluster node on PostgreSQL + Redis instead of SQLite (budgets leased from
# the database, rate limits sliced by Redis): its own database, account and key, measured
# interleaved with the SQLite gateway at c=1 (ABAB), since the question is whether the cluster
# changes the hot path at all (it must not: no database or Redis round trip per request). Then
# two more nodes join and the three share the load at c=64 (three wrk, one per node).
if [ "${POSTGRES:-1}" != 0 ]; then
  REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
  PG_PORT=$(free_port)
  PG_DB=ro_bench_$(date +%s)_$$
  psql "$PG_SERVER" -qc "CREATE DATABASE $PG_DB" >/dev/null
  PG_URL="${PG_SERVER%/*}/$PG_DB"
  say "cluster node n1 on PostgreSQL ($PG_DB) + Redis on 127.0.0.1:$PG_PORT"
  RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$OUT/config.toml" --listen "127.0.0.1:$PG_PORT" \
    --data "$OUT/data-pg" --database "$PG_URL" --redis "$REDIS_URL" --node-id "bench-$$-1" \
    >"$OUT/gateway-pg.log" 2>&1 &
  PG_PID=$!
  PIDS+=("$PG_PID")
  wait_http "http://127.0.0.1:$PG_PORT/health" "cluster node on PostgreSQL"
  PG_ACCT=$("$BIN" admin create-account --email "bench-pg@example.com" --credit 1000000 --database "$PG_URL" \
    | tail -n1)
  PG_MGMT=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["management_key"])' "$PG_ACCT")
  PG_KEY=$(curl -fsS -X POST "http://127.0.0.1:$PG_PORT/v1/keys" -H "authorization: Bearer $PG_MGMT" \
    -H 'content-type: application/json' -d '{"name":"bench"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  PG_GW_URL="http://127.0.0.1:$PG_PORT/v1/chat/completions"
  run pg_c1 "$PG_GW_URL" "$PG_KEY" 0 -t1 -c1
  run sqlite_again_c1 "$GW_URL" "$API_KEY" 0 -t1 -c1
  run pg_again_c1 "$PG_GW_URL" "$PG_KEY" 0 -t1 -c1
  run pg_c64 "$PG_GW_URL" "$PG_KEY" 0 -t2 -c64
  run pg_stream_c64 "$PG_GW_URL" "$PG_KEY" 1 -t2 -c64
  # Two more nodes, then the same key through all three at once: 3 × 22 connections.
  NODE_URLS=("$PG_GW_URL")
  for n in 2 3; do
    port=$(free_port)
    RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$OUT/config.toml" --listen "127.0.0.1:$port" \
      --data "$OUT/data-pg-$n" --database "$PG_URL" --redis "$REDIS_URL" --node-id "bench-$$-$n" \
      >"$OUT/gateway-pg-$n.log" 2>&1 &
    PIDS+=("$!")
    wait_http "http://127.0.0.1:$port/health" "cluster node $n"
    NODE_URLS+=("http://127.0.0.1:$port/v1/chat/completions")
  done
  say "three nodes, one key: wrk -t1 -c22 against each node at once"
  WRK_PIDS=()
  for n in 0 1 2; do
    BENCH_AUTH=$PG_KEY BENCH_STREAM=0 wrk -t1 -c22 -d "$WARMUP" -s "$LUA" "${NODE_URLS[$n]}" >/dev/null 2>&1 &
    WRK_PIDS+=("$!")
  done
  for p in "${WRK_PIDS[@]}"; do wait "$p" || true; done
  WRK_PIDS=()
  for n in 0 1 2; do
    BENCH_AUTH=$PG_KEY BENCH_STREAM=0 wrk -t1 -c22 -d "$DURATION" --latency -s "$LUA" "${NODE_URLS[$n]}" \
      >"$OUT/three_nodes_$n.txt" 2>&1 &
    WRK_PIDS+=("$!")
  done
  for p in "${WRK_PIDS[@]}"; do wait "$p"; done
  for n in 0 1 2; do
    grep '^BENCH ' "$OUT/three_nodes_$n.txt" | tail -n1 | cut -d' ' -f2- >"$OUT/three_nodes_$n.json"
  done
  PG_RECORDS=$(curl -fsS "http://127.0.0.1:$PG_PORT/v1/usage/summary?group_by=key" -H "authorization: Bearer $PG_MGMT" \
    | python3 -c 'import json,sys; print(sum(int(r["requests"]) for r in json.load(sys.stdin)["data"]))')
  echo "usage records on PostgreSQL so far: $PG_RECORDS" >&2
  kill "$PG_PID" 2>/dev/null || true
fi

# What receipts, metrics and traces cost: four more gateways on copies of the data, a plain one
# and one with each switched on alone (receipts signed on every answer; a metrics listener, scraped once a second as Prometheus would; every request's spans
# exported to an OTLP sink), measured interleaved at c=1 and at c=64.
if [ "${OBSERVE:-1}" != 0 ]; then
  SINK_PORT=$(free_port)
  python3 - "$SINK_PORT" >"$OUT/otlp-sink.log" 2>&1 <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
  PIDS+=("$!")
  wait_port "$SINK_PORT" "OTLP sink"
  METRICS_PORT=$(free_port)
  declare -A OBS_URL
  for variant in plain receipts metrics otel; do
    port=$(free_port)
    case $variant in
      plain) flags=(--receipts false) ;;
      receipts) flags=(--receipts true) ;;
      metrics) flags=(--receipts false --metrics-listen "127.0.0.1:$METRICS_PORT") ;;
      otel) flags=(--receipts false --otlp-endpoint "http://127.0.0.1:$SINK_PORT") ;;
    esac
    copy_data "$OUT/data-$variant"
    RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --config "$OUT/config.toml" --listen "127.0.0.1:$port" \
      --data "$OUT/data-$variant" "${flags[@]}" >"$OUT/gateway-$variant.log" 2>&1 &
    PIDS+=("$!")
    wait_http "http://127.0.0.1:$port/health" "gateway with $variant"
    OBS_URL[$variant]="http://127.0.0.1:$port/v1/chat/completions"
  done
  ( while sleep 1; do curl -fsS -o /dev/null "http://127.0.0.1:$METRICS_PORT/metrics" || true; done ) &
  SCRAPER=$!
  PIDS+=("$SCRAPER")
  # Rounds of the four in turn, each figure the median of its rounds: one run each put a
  # switch that costs nothing by construction (metrics) at -19 % on a noisy VM.
  for conc in c1 c64; do
    if [ $conc = c1 ]; then wrk_args=(-t1 -c1); else wrk_args=(-t2 -c64); fi
    for round in $(seq 1 "$OBSERVE_ROUNDS"); do
      for variant in plain receipts metrics otel; do
        run "observe_${variant}_${conc}_$round" "${OBS_URL[$variant]}" "$API_KEY" 0 "${wrk_args[@]}"
      done
    done
  done
  kill "$SCRAPER" 2>/dev/null || true
fi

HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$GW_PID/status")
RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$GW_PID/status")
if ! kill -0 "$GW_PID" 2>/dev/null; then echo "the gateway died during the run" >&2; exit 1; fi

# Every gateway response must have been metered: usage records >= responses wrk saw (gateway_*.txt
# holds the measured runs and their warm-ups; +1 for the smoke request; requests cut at the end of
# a run may add records wrk did not count).
SEEN=$(cat "$OUT"/*gateway_*.txt | awk '/^BENCH / {sub(/^BENCH /, ""); print}' \
  | python3 -c 'import json,sys; print(1 + sum(json.loads(l)["requests"] for l in sys.stdin if l.strip()))')
count_records() {
  curl -fsS "http://127.0.0.1:$GW_PORT/v1/usage/summary?group_by=key" -H "authorization: Bearer $MGMT_KEY" \
    | python3 -c 'import json,sys; print(sum(int(r["requests"]) for r in json.load(sys.stdin)["data"]))'
}
# The DB insert is batched: wait until the count reaches what wrk saw or stops moving for 3 s.
RECORDS=0; STILL=0; T0=$SECONDS
while [ $((SECONDS - T0)) -lt 60 ]; do
  N=$(count_records)
  if [ "$N" -ge "$SEEN" ]; then RECORDS=$N; break; fi
  if [ "$N" = "$RECORDS" ]; then STILL=$((STILL + 1)); else STILL=0; fi
  RECORDS=$N
  [ "$STILL" -ge 3 ] && break
  sleep 1
done
echo "usage records: $RECORDS (after $((SECONDS - T0)) s); gateway responses seen by wrk: $SEEN" >&2
METERING=ok
if [ "$RECORDS" -lt "$SEEN" ]; then
  METERING="MISSING $((SEEN - RECORDS)) records"
  echo "WARNING: $METERING: some responses have no usage record" >&2
fi

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then COMMIT="$COMMIT+dirty"; fi
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo | sed 's/  */ /g')
MACHINE="$(nproc)× ${CPU:-unknown cpu}, $(uname -sr)"
DATE=$(date -u +%Y-%m-%dT%H:%MZ)

ROW=$(OUT=$OUT METERING=$METERING DATE=$DATE COMMIT=$COMMIT MACHINE=$MACHINE MODEL=$MODEL HWM_KB=$HWM_KB RSS_KB=$RSS_KB \
  DURATION=$DURATION SIM="${SIM_TTFT_MS}/${SIM_TPOT_MS}" python3 - <<'PY'
import json, os
out = os.environ["OUT"]
r = {n: json.load(open(f"{out}/{n}.json")) for n in
     ("direct_c1", "gateway_c1", "direct_c64", "gateway_c64", "direct_stream_c64", "gateway_stream_c64")}
ms = lambda us: f"{us / 1000:.3f}"
errors = sum(v["non2xx"] + v["socket_errors"] for v in r.values())
cells = [
    os.environ["DATE"], os.environ["COMMIT"], os.environ["MACHINE"], os.environ["MODEL"],
    f'{os.environ["DURATION"]}, sim {os.environ["SIM"]} ms',
    f'{ms(r["direct_c1"]["p50_us"])} / {ms(r["direct_c1"]["p99_us"])}',
    f'{ms(r["gateway_c1"]["p50_us"])} / {ms(r["gateway_c1"]["p99_us"])}',
    f'**{ms(r["gateway_c1"]["p50_us"] - r["direct_c1"]["p50_us"])} / {ms(r["gateway_c1"]["p99_us"] - r["direct_c1"]["p99_us"])}**',
    f'{r["direct_c64"]["rps"]:.0f}', f'{r["gateway_c64"]["rps"]:.0f}',
    f'**{r["gateway_c64"]["rps"] / r["direct_c64"]["rps"]:.2f}**',
    f'{r["direct_stream_c64"]["rps"]:.0f}', f'{r["gateway_stream_c64"]["rps"]:.0f}',
    f'**{r["gateway_stream_c64"]["rps"] / r["direct_stream_c64"]["rps"]:.2f}**',
    f'{int(os.environ["HWM_KB"]) / 1024:.1f} MiB',
    str(errors), os.environ["METERING"],
]
print("| " + " | ".join(cells) + " |")
PY
)

# What metering costs: metered gateway against the unmetered one, same run.
MROW=""
if [ "${UNMETERED:-1}" != 0 ]; then
  MROW=$(OUT=$OUT DATE=$DATE COMMIT=$COMMIT python3 - <<'PY'
import json, os
out = os.environ["OUT"]
load = lambda n: json.load(open(f"{out}/{n}.json"))
ms = lambda us: f"{us / 1000:.3f}"
g1, u1 = load("gateway_c1"), load("unmetered_c1")
cost = lambda kind: 1 - load(f"gateway_{kind}")["rps"] / load(f"unmetered_{kind}")["rps"]
print("| " + " | ".join([
    os.environ["DATE"], os.environ["COMMIT"],
    f'{ms(g1["p50_us"])} / {ms(u1["p50_us"])}', f'**{ms(g1["p50_us"] - u1["p50_us"])}**',
    f'{load("gateway_c64")["rps"]:.0f} / {load("unmetered_c64")["rps"]:.0f}', f'**{cost("c64"):.1%}**',
    f'{load("gateway_stream_c64")["rps"]:.0f} / {load("unmetered_stream_c64")["rps"]:.0f}',
    f'**{cost("stream_c64"):.1%}**',
    str(sum(load(f"unmetered_{k}")["non2xx"] + load(f"unmetered_{k}")["socket_errors"]
            for k in ("c1", "c64", "stream_c64")))]) + " |")
PY
)
fi

# SQLite against PostgreSQL: added p50 at c=1 (each the mean of its two interleaved runs) and
# the throughput ratios at c=64, all against the same direct runs.
PROW=""
if [ "${POSTGRES:-1}" != 0 ]; then
  PROW=$(OUT=$OUT DATE=$DATE COMMIT=$COMMIT python3 - <<'PY'
import json, os
out = os.environ["OUT"]
load = lambda n: json.load(open(f"{out}/{n}.json"))
ms = lambda us: f"{us / 1000:.3f}"
d1 = load("direct_c1")["p50_us"]
sqlite = (load("gateway_c1")["p50_us"] + load("sqlite_again_c1")["p50_us"]) / 2 - d1
pg = (load("pg_c1")["p50_us"] + load("pg_again_c1")["p50_us"]) / 2 - d1
ratio = lambda n, d: f'{load(n)["rps"] / load(d)["rps"]:.2f}'
three = [load(f"three_nodes_{n}") for n in range(3)]
errors = sum(load(n)["non2xx"] + load(n)["socket_errors"]
             for n in ("pg_c1", "pg_again_c1", "sqlite_again_c1", "pg_c64", "pg_stream_c64"))
errors += sum(t["non2xx"] + t["socket_errors"] for t in three)
three_rps = sum(t["rps"] for t in three)
print("| " + " | ".join([
    os.environ["DATE"], os.environ["COMMIT"], ms(sqlite), ms(pg), f"**{(pg - sqlite):+.0f} µs**",
    ratio("gateway_c64", "direct_c64"), ratio("pg_c64", "direct_c64"),
    f'{three_rps / load("direct_c64")["rps"]:.2f}',
    ratio("gateway_stream_c64", "direct_stream_c64"), ratio("pg_stream_c64", "direct_stream_c64"),
    str(errors)]) + " |")
PY
)
fi

# Receipts, metrics and traces against the plain gateway of the same interleaved runs.
OROW=""
if [ "${OBSERVE:-1}" != 0 ]; then
  OROW=$(OUT=$OUT DATE=$DATE COMMIT=$COMMIT OBSERVE_ROUNDS=$OBSERVE_ROUNDS python3 - <<'PY'
import json, os, statistics
out = os.environ["OUT"]
rounds = range(1, int(os.environ["OBSERVE_ROUNDS"]) + 1)
runs = lambda variant, conc: [json.load(open(f"{out}/observe_{variant}_{conc}_{r}.json")) for r in rounds]
# The median round of each: p50 at concurrency 1, requests/s at 64.
p50 = lambda variant: statistics.median(r["p50_us"] for r in runs(variant, "c1"))
rps = lambda variant: statistics.median(r["rps"] for r in runs(variant, "c64"))
cells = [os.environ["DATE"], os.environ["COMMIT"], f'{p50("plain"):.0f} µs', f'{rps("plain"):.0f}']
errors = 0
for variant in ("receipts", "metrics", "otel"):
    cells.append(f'**{p50(variant) - p50("plain"):+.0f} µs**, **{rps(variant) / rps("plain") - 1:+.1%}**')
    errors += sum(r["non2xx"] + r["socket_errors"] for conc in ("c1", "c64") for r in runs(variant, conc))
cells.append(str(errors))
print("| " + " | ".join(cells) + " |")
PY
)
fi

# One row per translated family, beside the pass-through figures of the same run.
TROWS=$(OUT=$OUT DATE=$DATE COMMIT=$COMMIT FAMILIES="${TRANSLATED_FAMILIES[*]}" CLAUDE=$CLAUDE_MODEL GEMINI=$GEMINI_MODEL \
  python3 - <<'PY'
import json, os
out = os.environ["OUT"]
load = lambda n: json.load(open(f"{out}/{n}.json"))
ms = lambda us: f"{us / 1000:.3f}"
def added(prefix):
    d, g = load(f"{prefix}direct_c1"), load(f"{prefix}gateway_c1")
    return f'{ms(g["p50_us"] - d["p50_us"])} / {ms(g["p99_us"] - d["p99_us"])}'
def ratio(prefix, kind):
    return f'{load(f"{prefix}gateway_{kind}")["rps"] / load(f"{prefix}direct_{kind}")["rps"]:.2f}'
for family in os.environ["FAMILIES"].split():
    p = f"{family}_"
    model = os.environ["CLAUDE" if family == "anthropic" else "GEMINI"]
    errors = sum(load(f"{p}{side}_{k}")["non2xx"] + load(f"{p}{side}_{k}")["socket_errors"]
                 for side in ("direct", "gateway") for k in ("c1", "c64", "stream_c64"))
    print("| " + " | ".join([
        os.environ["DATE"], os.environ["COMMIT"], f"{family} ({model})",
        f"**{added(p)}**", added(""),
        f"**{ratio(p, 'c64')}**", ratio("", "c64"),
        f"**{ratio(p, 'stream_c64')}**", ratio("", "stream_c64"),
        str(errors)]) + " |")
PY
)

# Router One beside nginx, both against the direct runs of the same run (issue 15's table).
NROW=""
if [ -n "$NGX_URL" ]; then
  NROW=$(OUT=$OUT DATE=$DATE COMMIT=$COMMIT HWM_KB=$HWM_KB NGX_HWM_KB=$NGX_HWM_KB python3 - <<'PY'
import json, os
out = os.environ["OUT"]
load = lambda n: json.load(open(f"{out}/{n}.json"))
d1, n1, g1 = load("direct_c1"), load("nginx_c1"), load("gateway_c1")
added = lambda r, q: r[q] - d1[q]
per = lambda kind, side: load(f"{side}_{kind}")["rps"] / load(f"direct_{kind}")["rps"]
errors = sum(load(f"nginx_{k}")["non2xx"] + load(f"nginx_{k}")["socket_errors"] for k in ("c1", "c64", "stream_c64"))
print("| " + " | ".join([
    os.environ["DATE"], os.environ["COMMIT"],
    f'{added(n1, "p50_us"):.0f} / {added(n1, "p99_us"):.0f} µs',
    f'{added(g1, "p50_us"):.0f} / {added(g1, "p99_us"):.0f} µs',
    f'**{added(g1, "p50_us") / max(added(n1, "p50_us"), 1):.2f}× / {added(g1, "p99_us") / max(added(n1, "p99_us"), 1):.2f}×**',
    f'{per("c64", "nginx"):.2f} / {per("c64", "gateway"):.2f}',
    f'**{load("gateway_c64")["rps"] / load("nginx_c64")["rps"]:.2f}×**',
    f'{per("stream_c64", "nginx"):.2f} / {per("stream_c64", "gateway"):.2f}',
    f'**{load("gateway_stream_c64")["rps"] / load("nginx_stream_c64")["rps"]:.2f}×**',
    f'{int(os.environ["NGX_HWM_KB"]) / 1024:.1f} / {int(os.environ["HWM_KB"]) / 1024:.1f} MiB',
    str(errors)]) + " |")
PY
)
fi

echo
echo "$ROW"
[ -n "$NROW" ] && echo "$NROW"
[ -n "$TROWS" ] && echo "$TROWS"
[ -n "$MROW" ] && echo "$MROW"
[ -n "$PROW" ] && echo "$PROW"
[ -n "$OROW" ] && echo "$OROW"
echo "(raw wrk output and logs: $OUT)"
# Rows of the smaller tables go at the end of their own table, found by its marker comment.
append_to() { # marker rows
  [ -n "$2" ] || return 0
  ROWS=$2 python3 - "$RESULTS" "$1" <<'PY'
import os, sys
path, marker = sys.argv[1], sys.argv[2]
lines = open(path).read().split("\n")
start = next(i for i, l in enumerate(lines) if l.startswith(marker))
end = start + 1
while end < len(lines) and lines[end].startswith("|"):
    end += 1
lines[end:end] = os.environ["ROWS"].split("\n")
open(path, "w").write("\n".join(lines))
PY
}
if [ "${NO_APPEND:-}" != 1 ]; then
  append_to "<!-- main-rows" "$ROW"
  append_to "<!-- nginx-rows" "$NROW"
  append_to "<!-- translated-rows" "$TROWS"
  append_to "<!-- metering-rows" "$MROW"
  append_to "<!-- postgres-rows" "$PROW"
  append_to "<!-- observe-rows" "$OROW"
  echo "appended to bench/RESULTS.md"
fi
ERRS=$(echo "$ROW" | awk -F'|' '{gsub(/ /, "", $(NF-2)); print $(NF-2)}')
if [ "$ERRS" != 0 ]; then
  echo "WARNING: $ERRS non-2xx responses or socket errors during the run; see $OUT/*.txt" >&2
fi
