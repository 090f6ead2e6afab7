#!/usr/bin/env bash
# CPU and context switches per request (issue 15): `perf stat -e task-clock,context-switches` on
# each proxy alone during 8 s of wrk (bench/lua/chat.lua) after 2 s of warm-up, at c=1 and c=64,
# with a fresh simulator and proxy for every line: nginx (one worker, keep-alive, no buffering)
# first, then each gateway binary named on the command line, in turn, for ROUNDS rounds.
#
#   bench/perf-stat.sh head=target/release/router-one                 (from the repository root)
#   bench/perf-stat.sh base=/tmp/base/router-one head=target/release/router-one
#
# env: ROUNDS (default 2). Prints one line per run (req/s, CPU and context switches per request,
# VmHWM); appends nothing. Needs perf, wrk and nginx (nginx-light); a binary may be a wrapper
# script that sets environment variables and execs the real one.
set -uo pipefail
ROOT=$PWD
SIMBIN=$ROOT/target/release/router-one
[ -x "$SIMBIN" ] || cargo build --release -p router-one
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
measure() { # name kind bin conc
  local name=$1 kind=$2 bin=$3 c=$4 t=1; [ "$c" -gt 1 ] && t=2
  local D; D=$(mktemp -d); local SP GP PID SIM
  SP=$(free_port); GP=$(free_port)
  $SIMBIN simulate --listen 127.0.0.1:$SP --ttft-ms 0 --tpot-ms 0 >$D/sim.log 2>&1 & SIM=$!
  sleep 0.3
  local URL AUTH=sk-x
  if [ "$kind" = nginx ]; then
    mkdir -p $D/n; cat > $D/n/nginx.conf <<NG
worker_processes 1; daemon off; error_log $D/n/error.log; pid $D/n/nginx.pid;
events { worker_connections 4096; }
http { access_log off; upstream sim { server 127.0.0.1:$SP; keepalive 256; }
 server { listen 127.0.0.1:$GP; location / { proxy_pass http://sim; proxy_http_version 1.1;
  proxy_set_header Connection ""; proxy_buffering off; } } }
NG
    nginx -c $D/n/nginx.conf -p $D/n >/dev/null 2>&1 & sleep 0.5
    PID=$(pgrep -P $! | head -1); [ -z "$PID" ] && PID=$(pgrep -f "nginx: worker" | head -1)
    URL=http://127.0.0.1:$GP/v1/chat/completions
  else
    export BENCH_UPSTREAM_KEY=sk-x
    printf '[providers.openai]\napi = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\napi_key_env = "BENCH_UPSTREAM_KEY"\n' $SP > $D/c.toml
    RUST_LOG=warn $bin serve --config $D/c.toml --listen 127.0.0.1:$GP --data $D/data >$D/gw.log 2>&1 & PID=$!
    for i in $(seq 100); do curl -fs http://127.0.0.1:$GP/health >/dev/null && break; sleep 0.1; done
    ACCT=$($bin admin create-account --email m$RANDOM@e.com --credit 1000000 --data $D/data | tail -n1)
    MG=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["management_key"])' "$ACCT")
    AUTH=$(curl -fsS -X POST http://127.0.0.1:$GP/v1/keys -H "authorization: Bearer $MG" -H 'content-type: application/json' -d '{"name":"b"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
    URL=http://127.0.0.1:$GP/v1/chat/completions
  fi
  BENCH_AUTH=$AUTH BENCH_MODEL=gpt-6.2-astra wrk -t$t -c$c -d11s -s $ROOT/bench/lua/chat.lua $URL > $D/wrk.txt 2>&1 &
  local W=$!
  sleep 2
  perf stat -e task-clock,context-switches -x, -p $PID -o $D/perf.txt -- sleep 8 >/dev/null 2>&1
  wait $W
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' $D/wrk.txt)
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' /proc/$PID/status 2>/dev/null)
  python3 - "$name" "$c" "$rps" "$hwm" $D/perf.txt <<'PY'
import sys
name, c, rps, hwm, perf = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
vals = {}
for line in open(perf):
    parts = line.strip().split(",")
    if len(parts) > 3 and parts[0] and parts[0][0].isdigit():
        vals[parts[2]] = float(parts[0])
reqs = rps * 8
print(f"{name:8} c={c:<3} {rps:9.0f} req/s  CPU/req {vals.get('task-clock',0)*1000/reqs:6.1f} us  cs/req {vals.get('context-switches',0)/reqs:5.2f}  VmHWM {int(hwm or 0)/1024:.1f} MiB")
PY
  kill $PID $SIM 2>/dev/null; [ "$kind" = nginx ] && pkill -f "nginx -c $D" ; wait 2>/dev/null; rm -rf $D
}
for round in $(seq "${ROUNDS:-2}"); do
  for c in 1 64; do
    measure nginx nginx - $c
    for pair in "$@"; do measure "${pair%%=*}" gw "${pair#*=}" $c; done
  done
done
