#!/usr/bin/env bash
# Memory per open stream (issue 15): the metered gateway holding thousands of streams open at
# once, each a slow answer from the simulator, and its resident memory before and during.
#
#   bench/many-streams.sh        (from the repository root; builds the release binary if missing)
#
# env: STREAMS (default 10000; lowered to what the open-files limit allows: the gateway holds two
#      sockets per stream, its client's and its upstream's), TPOT_MS (default 100) and WORDS
#      (default 200): each stream lasts about WORDS x TPOT_MS, longer than the measurement.
# Appends a row to the "Many open streams" table of bench/RESULTS.md. Needs wrk.
set -euo pipefail
ROOT=$PWD
BIN=$ROOT/target/release/router-one
[ -x "$BIN" ] || cargo build --release -p router-one
if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
STREAMS=${STREAMS:-10000}
TPOT_MS=${TPOT_MS:-100}
WORDS=${WORDS:-200}
# Raise the soft limit to the hard one; whatever the hard limit is, two sockets per stream and a
# little room for the rest must fit in it.
ulimit -n "$(ulimit -Hn)"
FIT=$((($(ulimit -n) - 300) / 2))
WANTED=$STREAMS
if [ "$STREAMS" -gt "$FIT" ]; then
  STREAMS=$FIT
  echo "open-files limit $(ulimit -n): $STREAMS streams instead of $WANTED" >&2
fi
OUT=$ROOT/bench/out/streams-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do curl -fsS "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$2/status"; }

SIM_PORT=$(free_port)
"$BIN" simulate --listen "127.0.0.1:$SIM_PORT" --ttft-ms 0 --tpot-ms "$TPOT_MS" >"$OUT/sim.log" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
export BENCH_UPSTREAM_KEY=sk-bench-upstream
printf '[providers.openai]\napi = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\napi_key_env = "BENCH_UPSTREAM_KEY"\n' \
  "$SIM_PORT" >"$OUT/config.toml"
GW_PORT=$(free_port)
RUST_LOG=warn "$BIN" serve --config "$OUT/config.toml" --listen "127.0.0.1:$GW_PORT" --data "$OUT/data" \
  >"$OUT/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/health"
ACCT=$("$BIN" admin create-account --email "streams-$(date +%s)@example.com" --credit 1000000 --data "$OUT/data" | tail -n1)
MGMT=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["management_key"])' "$ACCT")
KEY=$(curl -fsS -X POST "http://127.0.0.1:$GW_PORT/v1/keys" -H "authorization: Bearer $MGMT" \
  -H 'content-type: application/json' -d '{"name":"streams"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
MODEL=${MODEL:-gpt-6.2-sol}
# One streamed request to warm the path (and the tokenizer) before the memory at rest is read.
curl -fsS -o /dev/null "http://127.0.0.1:$GW_PORT/v1/chat/completions" -H "authorization: Bearer $KEY" \
  -H 'content-type: application/json' \
  -d "{\"model\":\"$MODEL\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"warm [[sim:words=3]]\"}]}"
sleep 1
REST_KIB=$(kib VmRSS "$GW_PID")
SIM_REST_KIB=$(kib VmRSS "$SIM_PID")

LASTS_S=$((WORDS * TPOT_MS / 1000))
HOLD_S=$((LASTS_S * 3 / 4))
cat >"$OUT/stream.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '{"model":"$MODEL","stream":true,"stream_options":{"include_usage":true},'
  .. '"messages":[{"role":"user","content":"hold [[sim:words=$WORDS]]"}]}'
LUA
echo "$STREAMS streams of ~${LASTS_S} s each; memory read after $((HOLD_S / 2)) s" >&2
wrk -t2 -c"$STREAMS" -d"${HOLD_S}s" --timeout "$((LASTS_S * 2))s" -s "$OUT/stream.lua" \
  "http://127.0.0.1:$GW_PORT/v1/chat/completions" >"$OUT/wrk.txt" 2>&1 &
WRK=$!
sleep $((HOLD_S / 2))
OPEN=$(ss -Htn state established "( sport = :$GW_PORT )" | wc -l)
OPEN_KIB=$(kib VmRSS "$GW_PID")
SIM_OPEN_KIB=$(kib VmRSS "$SIM_PID")
wait "$WRK" || true
PEAK_KIB=$(kib VmHWM "$GW_PID")
kill -0 "$GW_PID" || { echo "the gateway died during the run" >&2; exit 1; }

ROW=$(python3 - "$OPEN" "$REST_KIB" "$OPEN_KIB" "$PEAK_KIB" "$STREAMS" "$WANTED" "$SIM_REST_KIB" "$SIM_OPEN_KIB" <<'PY'
import subprocess, sys, datetime
open_, rest, during, peak, streams, wanted, sim_rest, sim_open = map(int, sys.argv[1:])
mib = lambda kib: f"{kib / 1024:.1f} MiB"
per = (during - rest) / max(open_, 1)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
cells = [at, commit + ("+dirty" if dirty else ""), f"{open_} of {streams}" + ("" if streams == wanted else f" (limit; {wanted} asked)"),
         mib(rest), mib(during), mib(peak), f"**{per:.1f} KiB**", f"**{mib(rest + per * 10_000)}**",
         f"{(sim_open - sim_rest) / max(open_, 1):.1f} KiB"]
print("| " + " | ".join(cells) + " |")
PY
)
echo "$ROW"
python3 - "$ROOT/bench/RESULTS.md" "$ROW" <<'PY'
import sys
path, row = sys.argv[1], sys.argv[2]
text = open(path).read()
marker = "<!-- streams-rows"
at = text.index(marker)
end = text.find("\n\n", at)
end = len(text) if end < 0 else end
open(path, "w").write(text[:end] + "\n" + row + text[end:])
PY
echo "appended to bench/RESULTS.md (raw output: $OUT)" >&2
