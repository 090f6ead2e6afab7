#!/usr/bin/env bash
# One interleaved run beside nginx: the simulator alone (direct), nginx 1.22 as a plain keep-alive
# proxy in front of it, and the gateway with full metering, at c=1 (p50 added) and c=64 (throughput
# kept), two rounds, with the wrk script of bench/run.sh. Needs a release build (bench/run.sh makes
# one; or BIN=…). Prints one BENCH line per run and the gateway's peak RSS; appends nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD; BIN=${BIN:-$ROOT/target/release/router-one}; LUA=$ROOT/bench/lua/chat.lua
command -v nginx >/dev/null || apt-get install -y nginx-light >/dev/null
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
OUT=$ROOT/bench/out/nginx-$(date -u +%Y%m%dT%H%M%SZ); mkdir -p $OUT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM=$(port); NGX=$(port); GW=$(port)
$BIN simulate --listen 127.0.0.1:$SIM --ttft-ms 0 --tpot-ms 0 >$OUT/sim.log 2>&1 & P1=$!
cat >$OUT/nginx.conf <<NG
worker_processes 1; daemon off; error_log $OUT/nginx.err; pid $OUT/nginx.pid;
events { worker_connections 4096; }
http { access_log off; upstream sim { server 127.0.0.1:$SIM; keepalive 128; }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://sim; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_buffering off; } } }
NG
nginx -c $OUT/nginx.conf -p $OUT & P2=$!
cat >$OUT/config.toml <<CF
[providers.openai]
api = "openai"
base_url = "http://127.0.0.1:$SIM/v1"
api_key_env = "BENCH_UPSTREAM_KEY"
CF
BENCH_UPSTREAM_KEY=sk RUST_LOG=warn $BIN serve --config $OUT/config.toml --listen 127.0.0.1:$GW --data $OUT/data >$OUT/gw.log 2>&1 & P3=$!
trap "kill $P1 $P2 $P3 2>/dev/null" EXIT
for _ in $(seq 100); do curl -fs http://127.0.0.1:$GW/health >/dev/null && break; sleep 0.1; done
ACCT=$($BIN admin create-account --email b$RANDOM@x.com --credit 1000000 --data $OUT/data | tail -n1)
MK=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["management_key"])' "$ACCT")
KEY=$(curl -fsS -X POST http://127.0.0.1:$GW/v1/keys -H "authorization: Bearer $MK" -H 'content-type: application/json' -d '{"name":"b"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
export BENCH_MODEL=${MODEL:-gpt-6.2-sol}
r() { BENCH_AUTH=$3 wrk $4 -d ${D:-10s} --latency -s $LUA $2 2>&1 | grep '^BENCH' | sed "s/^BENCH/$1/"; }
for round in 1 2; do
  r direct_c1 http://127.0.0.1:$SIM/v1/chat/completions sk "-t1 -c1"
  r nginx_c1 http://127.0.0.1:$NGX/v1/chat/completions sk "-t1 -c1"
  r gateway_c1 http://127.0.0.1:$GW/v1/chat/completions $KEY "-t1 -c1"
  r direct_c64 http://127.0.0.1:$SIM/v1/chat/completions sk "-t2 -c64"
  r nginx_c64 http://127.0.0.1:$NGX/v1/chat/completions sk "-t2 -c64"
  r gateway_c64 http://127.0.0.1:$GW/v1/chat/completions $KEY "-t2 -c64"
done
grep VmHWM /proc/$P3/status
