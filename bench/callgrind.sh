#!/usr/bin/env bash
# Instructions per proxied request (BENCHMARKS.md, "Instructions per request"): the gateway under
# callgrind on CPU 0 in front of a static nginx (CPU 1), with instrumentation on only during a
# 6 s `wrk -t1 -c8` after a 2 s warm-up, so start-up is not counted. For changes of a few percent,
# which wrk's run-to-run spread hides. MODE=ws: per engine websocket message instead (32 sockets
# to qlik-sim's engine, ~200 B JSON-RPC echo, bench-loadgen ws-echo), the relay's cost.
#
#   bench/callgrind.sh [GATEWAY_BINARY [NAME]]   # default: $CARGO_TARGET_DIR/release/qlik-gateway
#   MODE=ws bench/callgrind.sh
#
# Needs valgrind, nginx, wrk; the release qlik-sim in $CARGO_TARGET_DIR (bench/run.sh builds it).
# Leaves the profile in /tmp/callgrind-NAME.out.1 (callgrind_annotate reads it).
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
SMOKE=0
. bench/common.sh
need_apt valgrind valgrind; need_apt nginx nginx; need_apt wrk wrk
BIN=$CARGO_TARGET_DIR/release
GWB=${1:-$BIN/qlik-gateway}; NAME=${2:-gateway}
W=$(mktemp -d); PIDS=()
trap 'kill -INT ${PIDS[@]} 2>/dev/null; wait 2>/dev/null; rm -rf $W' EXIT
base=19700; P_UP=$((base+1)); P_GW=$((base+20))
mkdir -p $W/www/mashup $W/ngx-up; www_files $W/www; chmod -R a+rX $W
static_upstream_conf $W/ngx-up $W/www $P_UP 1
taskset -c 1 "$(command -v nginx)" -p $W/ngx-up -c $W/ngx-up/nginx.conf 2>/dev/null & PIDS+=($!)
SIM_DIR=$W/sim SIM_PREFIX="taskset -c 1" start_sim $((base+30)) --no-csrf; PIDS+=($SIM_PID)
MODE=${MODE:-http}
if [ "$MODE" = ws ]; then up=http://127.0.0.1:$((base+30)); else up=http://127.0.0.1:$P_UP; fi
gw_config $P_GW "$up" > $W/gw.toml
rm -f /tmp/callgrind-$NAME.out*
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/callgrind-$NAME.out \
  "$GWB" --config $W/gw.toml 2>$W/gw.log & GW=$!; PIDS+=($GW)
# Under valgrind the gateway takes a while to listen.
for _ in 1 2 3 4 5 6; do wait_port $P_GW && break; done
wait_port $P_UP
GC=$(gw_cookie $P_GW)
url=http://127.0.0.1:$P_GW/mashup/small.bin
ws=ws://127.0.0.1:$P_GW/mashup/app/$APP
load() { # load SECONDS: prints the count of requests / messages
  if [ "$MODE" = ws ]; then
    taskset -c 1 "$LOADGEN" ws-echo "$ws" "http://127.0.0.1:$P_GW" "$GC" 32 200 text "$1" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])'
  else
    taskset -c 1 wrk -t1 -c8 -d"$1"s -H "Cookie: $GC" $url | awk '/requests in/{print $1}'
  fi
}
LOADGEN=${LOADGEN:-$BIN/bench-loadgen}
load 2 > /dev/null
callgrind_control -i on $GW > /dev/null
n=$(load 6)
callgrind_control -i off $GW > /dev/null
callgrind_control -d $GW > /dev/null
ir=$(callgrind_annotate /tmp/callgrind-$NAME.out.1 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1; exit}')
echo "$NAME ($MODE): $n requests or messages, $ir instructions, $((ir / n)) per request or message"
