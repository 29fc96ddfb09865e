#!/usr/bin/env bash
# Spike (issue 16, point 5; BENCHMARKS.md, "Is it hyper?"): HTTP 512 B through nginx, the gateway,
# a second gateway binary (OLD_GW, for A/B), a minimal proxy on hyper (thread per core, per-thread
# pool; WRITEV=0 copy: hyper's flattened writes; "inline": the same with each upstream connection
# driven by the request using it instead of a task of its own), a hand-written GET-only
# forwarder, and a minimal pingora-proxy, all in front of one static nginx, in one placement.
# GW_ENV="QLIK_GATEWAY__SERVER__THREADS=1" runs the gateway (not gateway-old) with that setting.
#
#   SKIP_BUILD=1 PLACEMENT=default CONCS="1 4 32" ROUNDS=2 DUR=5 bench/floor/run.sh
#   TARGETS="gateway hyper" PERF=1 bench/floor/run.sh   # perf record into /tmp/perf-TARGET-cC.data
#   STRACE=1 ...                                        # strace -c into /tmp/strace-TARGET-cC.txt
#   PERFSTAT=1 ...                                      # context switches and migrations per request
#   NSTAT=1 ...                                         # TCP segments, ACKs, corking per request
#
# Release binaries of the gateway from $CARGO_TARGET_DIR (/tmp/bench-target; bench/run.sh builds
# them), the spikes built into $FLOOR_TARGET (/tmp/floor-target). pingora needs cmake.
set -uo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
SMOKE=0
. bench/common.sh
need_apt nginx nginx; need_apt wrk wrk; need_apt cmake cmake
PLACEMENT=${PLACEMENT:-default}; ROUNDS=${ROUNDS:-2}; DUR=${DUR:-5}
BIN=$CARGO_TARGET_DIR/release; SP=${FLOOR_TARGET:-/tmp/floor-target}/release
[ "${SKIP_BUILD:-0}" = 1 ] || build_all release
for c in hyper-raw pingora; do (cd bench/floor/$c && CARGO_TARGET_DIR=${SP%/release} cargo build --release -q); done
OLD_GW=${OLD_GW:-$BIN/qlik-gateway}
NGINX=$(command -v nginx); HZ=$(getconf CLK_TCK)
W=$(mktemp -d); PIDS=()
# SIGINT: pingora's fast shutdown (SIGTERM is its graceful one, which waits minutes).
# The spikes install no SIGINT handler, and background jobs of a script ignore SIGINT: KILL them.
trap 'kill -INT ${PIDS[@]} 2>/dev/null; kill -KILL ${HY:-} ${HYW:-} ${INL:-} ${RAW:-} 2>/dev/null; wait 2>/dev/null; rm -rf $W' EXIT
if [ "$PLACEMENT" = pinned ]; then PX="taskset -c 0"; LD="taskset -c 1"; workers=1; T=1; else PX=""; LD=""; workers=auto; T=2; fi
base=19500; P_UP=$((base+1)); P_NGX=$((base+10)); P_GW=$((base+20)); P_HY=$((base+40)); P_RAW=$((base+41)); P_PG=$((base+42)); P_HYW=$((base+43)); P_INL=$((base+44))
mkdir -p $W/www/mashup $W/ngx-up $W/ngx-px; www_files $W/www; chmod -R a+rX $W
static_upstream_conf $W/ngx-up $W/www $P_UP $workers
$LD $NGINX -p $W/ngx-up -c $W/ngx-up/nginx.conf 2>/dev/null & PIDS+=($!)
SIM_DIR=$W/sim SIM_PREFIX=$LD start_sim $((base+30)) --no-csrf; PIDS+=($SIM_PID)
QC="X-Qlik-Session-mashup=0123456789abcdef0123456789abcdef"
gw_config $P_GW "http://127.0.0.1:$P_UP" > $W/gw.toml
env ${GW_ENV:-X=1} $PX $BIN/qlik-gateway --config $W/gw.toml 2>$W/gw.log & GW=$!; PIDS+=($GW)
P_GWO=$((base+21)); gw_config $P_GWO "http://127.0.0.1:$P_UP" > $W/gwo.toml
$PX $OLD_GW --config $W/gwo.toml 2>$W/gwo.log & GWO=$!; PIDS+=($GWO)
{ ngx_common $W/ngx-px $workers; echo "http {"; http_common $W/ngx-px; echo "  upstream files { server 127.0.0.1:$P_UP; keepalive 256; }"; echo "  upstream qlik0 { server 127.0.0.1:$((base+30)); }"; echo "  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }"; ngx_proxy_server $P_NGX qlik0 files "$QC"; echo "}"; } > $W/ngx-px/nginx.conf
$PX $NGINX -p $W/ngx-px -c $W/ngx-px/nginx.conf 2>/dev/null & NGX=$!; PIDS+=($NGX)
$PX $SP/floor hyper 127.0.0.1:$P_HY 127.0.0.1:$P_UP $T & HY=$!; PIDS+=($HY)
WRITEV=0 $PX $SP/floor hyper 127.0.0.1:$P_HYW 127.0.0.1:$P_UP $T & HYW=$!; PIDS+=($HYW)
$PX $SP/floor inline 127.0.0.1:$P_INL 127.0.0.1:$P_UP $T & INL=$!; PIDS+=($INL)
$PX $SP/floor raw 127.0.0.1:$P_RAW 127.0.0.1:$P_UP $T & RAW=$!; PIDS+=($RAW)
$PX $SP/pingora-floor 127.0.0.1:$P_PG 127.0.0.1:$P_UP $T > $W/pg.log 2>&1 & PG=$!; PIDS+=($PG)
for p in $P_UP $P_NGX $P_GW $P_GWO $P_HY $P_HYW $P_INL $P_RAW $P_PG; do wait_port $p; done
GC=$(gw_cookie $P_GW); GCO=$(gw_cookie $P_GWO)
for u in $P_GW $P_NGX $P_HY $P_HYW $P_INL $P_RAW $P_PG; do curl -s -o /dev/null -w "$u %{http_code}\n" -H "Cookie: $GC" http://127.0.0.1:$u/mashup/small.bin; done
proc_ticks() { for p in $*; do awk '{printf "%s ", $14+$15}' /proc/$p/stat; done; }
thread_ticks() { for t in /proc/$1/task/*; do awk '{printf "%s ", $14+$15}' $t/stat; done; }
# Time the processes' threads spent runnable but waiting for a CPU (ns; schedstat's second field):
# where a latency tail comes from when the proxy has work and no core.
rq_wait() { local s=0 p t; for p in $*; do for t in /proc/$p/task/*/schedstat; do read -r _ w _ < $t && s=$((s+w)); done; done; echo $s; }
npids() { echo "$1 $(pgrep -P $1 | tr '\n' ' ')"; }
run() { # name port pids c
  local c0 c1 t0 t1 out
  st0=$(awk '/^cpu /{print $9}' /proc/stat)
  c0=$(cpu_ticks $3); q0=$(rq_wait $3); t0=$(date +%s.%N); case $1 in gateway*) th0=$(thread_ticks ${3%% *});; nginx) th0=$(proc_ticks $3);; esac
  [ -n "${STRACE:-}" ] && { timeout $((DUR-1)) strace -c -f $(printf -- " -p %s" $3) -o /tmp/strace-$1-c$4.txt 2>/dev/null & }
  [ -n "${PERFSTAT:-}" ] && { perf stat -x, -e context-switches,cpu-migrations -p $(echo $3 | tr ' ' ,) -o /tmp/perfstat-$1-c$4.txt -- sleep $((DUR-1)) 2>/dev/null & PSP=$!; }
  [ -n "${NSTAT:-}" ] && nstat -n
  [ -n "${PERF:-}" ] && { perf record -q -F 999 ${PERF_G:--g} -p $(echo $3 | tr " " ,) -o /tmp/perf-$1-c$4.data -- sleep $((DUR-1)) 2>/dev/null & }
  local ck=$GC; [ "$1" = gateway-old ] && ck=$GCO
  out=$($LD wrk -t1 -c$4 -d${DUR}s --latency -H "Cookie: $ck" http://127.0.0.1:$2/mashup/small.bin)
  t1=$(date +%s.%N); c1=$(cpu_ticks $3); q1=$(rq_wait $3); case $1 in gateway*) th1=$(thread_ticks ${3%% *}); echo "  $1 threads (ticks): $th0 -> $th1";; nginx) th1=$(proc_ticks $3); echo "  nginx processes (ticks): $th0 -> $th1";; esac
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  [ -n "${PERFSTAT:-}" ] && { wait $PSP; awk -F, -v r=$rps -v d=$((DUR-1)) '$3 ~ /context-switches|cpu-migrations/ {printf "  %s per request: %.2f\n", $3, $1/(r*d)}' /tmp/perfstat-$1-c$4.txt; }
  [ -n "${NSTAT:-}" ] && nstat -z TcpOutSegs TcpExtDelayedACKs TcpExtTCPPureAcks TcpExtTCPHPAcks TcpExtTCPAutoCorking TcpExtTCPOrigDataSent TcpExtTCPHPHits | awk -v r=$rps -v d=$DUR 'NR>1 {printf "  %s per request: %.2f\n", $1, $2/(r*d)}'
  p99=$(echo "$out" | awk '$1=="99%"{print $2}'); p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  cpu=$(python3 -c "print(round(100*($c1-$c0)/$HZ/($t1-$t0)))")
  us=$(python3 -c "print(round(1e6*($c1-$c0)/$HZ/($t1-$t0)/$rps,1))")
  st1=$(awk '/^cpu /{print $9}' /proc/stat)
  rq=$(python3 -c "print(round(($q1-$q0)/1e3/($t1-$t0)/$rps,1))")
  printf '%s\t%s\tc%s\t%s\t%s\t%s\t%s%%\t%sus/req\tsteal %s ticks\twaiting for a CPU %sus/req\n' "$PLACEMENT" "$1" "$4" "$rps" "$p50" "$p99" "$cpu" "$us" "$((st1-st0))" "$rq"
}
TARGETS=${TARGETS:-nginx gateway hyper hyper-nowritev raw pingora}  # and gateway-old
declare -A PORTOF=([gateway-old]=$P_GWO [nginx]=$P_NGX [gateway]=$P_GW [hyper]=$P_HY [hyper-nowritev]=$P_HYW [inline]=$P_INL [raw]=$P_RAW [pingora]=$P_PG)
declare -A PIDOF=([gateway-old]=$GWO [nginx]="$(npids $NGX)" [gateway]=$GW [hyper]=$HY [hyper-nowritev]=$HYW [inline]=$INL [raw]=$RAW [pingora]=$PG)
# Each round starts with the next target (round 2: the second of TARGETS first, ...), so the
# machine's drift over a run reaches them alike, as bench/run.sh's rounds do.
in_turn() { local a=($TARGETS) n i; n=${#a[@]}; for ((i = 0; i < n; i++)); do echo "${a[(i + $1 - 1) % n]}"; done; }
for r in $(seq 1 $ROUNDS); do
  for c in ${CONCS:-4 32}; do
    for t in $(in_turn $r); do run $t ${PORTOF[$t]} "${PIDOF[$t]}" $c; done
  done
done
