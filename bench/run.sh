#!/usr/bin/env bash
# Side-by-side benchmark: qlik-gateway vs nginx proxying the same upstreams vs a direct connection,
# in two placements, one after the other in the same run:
#
#   default  every process on the scheduler's defaults, nothing pinned: the gateway with the
#            runtime it picks by itself (a worker per CPU), nginx with `worker_processes auto`
#            (how operators run both);
#   pinned   the proxy under test on CPU 0 (the gateway then sees one CPU; nginx one worker),
#            load generators and upstreams on CPU 1 (a like-for-like core each).
#
#   bench/run.sh                      # everything, both placements, ~12 minutes
#   DUR=5 IDLE_MAX=1000 bench/run.sh  # shorter
#   ROUNDS=3 DUR=5 bench/run.sh       # the rate rows three times over, medians (~25 minutes)
#
# Environment: CARGO_TARGET_DIR (default /tmp/bench-target), DUR (seconds per measurement, 10),
# IDLE_MAX (largest idle-websocket count, 9000), ROUNDS (1; the HTTP and websocket rate rows
# measured this many times, gateway / nginx / direct in turn each round (each going first in
# turn), so that drift of the machine reaches all three alike; the tables then give medians and each round's ratio), PLACEMENTS ("default pinned"; PIN=1 is "pinned",
# PIN=0 "default"), C128 (1 = also HTTP at 128 connections), OUT (results directory; one
# subdirectory per placement), ONLY (a comma-separated subset of http,ws,login,memory; the tables
# then show what was measured), GREETINGS (the websocket upstream's greeting variants for the
# memory rows, "immediate first-frame never"), GW_WRAP (a command the websocket gateways run
# under, e.g. "heaptrack -o /tmp/gw"), SMOKE (1 = the test command's check that every figure is
# produced in both placements and every greeting variant; see below).
#
# Greeting variants (the engine socket's first frames; qlik-reference.md §4):
#   immediate    Qlik sends OnAuthenticationInformation right after the upgrade (qlik-sim's
#                default); the idle client reads it, so the gateway's socket is in its relay phase.
#   first-frame  Qlik sends it only after the client's first frame (Qlik's documented order); the
#                idle client sends one call and reads the greeting and the answer, as enigma.js
#                does when it opens a document.
#   never        Qlik sends no greeting and the client stays quiet: the gateway's socket stays in
#                its settle phase (waiting to learn who the user is) for as long as it is open.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then DUR=${DUR:-1}; IDLE_MAX=${IDLE_MAX:-50}; ROUNDS=${ROUNDS:-2}; fi
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-1}
IDLE_MAX=${IDLE_MAX:-9000}
case ${PIN:-} in 1) PLACEMENTS=${PLACEMENTS:-pinned} ;; 0) PLACEMENTS=${PLACEMENTS:-default} ;; esac
PLACEMENTS=${PLACEMENTS:-default pinned}
GREETINGS=${GREETINGS:-immediate first-frame never}
C128=${C128:-0}
OUT=${OUT:-/tmp/qlik-gateway-bench}
BASE_PORT=${BASE_PORT:-19100}
ONLY=${ONLY:-http,ws,login,memory}
part() { [[ ",$ONLY," == *",$1,"* ]]; }

# shellcheck source=bench/common.sh
. bench/common.sh
need_apt nginx nginx
need_apt wrk wrk
need_apt curl curl
need_apt ss iproute2
need_apt python3 python3
NGINX=$(command -v nginx)

# SMOKE=1: the test command's run. Debug binaries (the tests have just built them), a second per
# figure, 50 idle sockets; then every figure is checked to have been produced (never its value).
build_all

# Descriptors: the gateway holds two per proxied websocket; 9,000 sockets need ~18,100.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 19000 ] && [ "$IDLE_MAX" -gt 1000 ]; then
  log "ulimit -n is $(ulimit -n); limiting idle websockets to 1000"
  IDLE_MAX=1000
fi
if [ "$(nproc)" -lt 2 ]; then
  log "one CPU: the pinned placement needs two; measuring the default placement only"
  PLACEMENTS=default
fi

W=$(mktemp -d /tmp/qlik-gateway-bench.XXXXXX)
chmod 755 "$W"   # nginx workers run as an unprivileged user when started as root
rm -rf "$OUT"; mkdir -p "$OUT"
cut -d" " -f1-3 /proc/loadavg > "$OUT/loadavg.before"
with_cleanup

IDLE_COUNTS="0 1000"; [ "$IDLE_MAX" -gt 1000 ] && IDLE_COUNTS="0 1000 $IDLE_MAX"
[ "$IDLE_MAX" -lt 1000 ] && IDLE_COUNTS="0 $IDLE_MAX"
part memory || IDLE_COUNTS=""




# greeting_flag VARIANT: qlik-sim's option for it; idle_mode VARIANT: what the idle client does.
greeting_flag() { case $1 in immediate) echo "" ;; first-frame) echo --auth-info-after-first-frame ;; never) echo --no-auth-info ;; esac; }
idle_mode() { case $1 in immediate) echo greeting ;; first-frame) echo call ;; never) echo quiet ;; esac; }

# run_placement NAME OFFSET: starts upstreams and proxies placed as NAME on ports BASE_PORT+OFFSET…,
# measures everything into $OUT/NAME, and stops them again.
run_placement() {
  local placement=$1 base=$((BASE_PORT + $2)) D="$W/$1" R="$OUT/$1" workers
  mkdir -p "$D" "$R"
  if [ "$placement" = pinned ]; then
    PROXY_CPU="taskset -c 0"; LOAD_CPU="taskset -c 1"; workers=1
  else
    PROXY_CPU=""; LOAD_CPU=""; workers=auto
  fi
  local started=${#PIDS[@]}
  local P_UP=$((base + 1))      # nginx static upstream (512 B and 1 MiB files)
  local P_NGX=$((base + 10))    # nginx as the proxy under test (+1, +2: the other greeting variants)
  local P_GWH=$((base + 20))    # gateway, qlik.proxy_url = the static upstream (HTTP runs, logins)
  # Per greeting variant i (0, 1, 2): qlik-sim at base+30+3i (QPS +1, control +2), and the
  # websocket gateway at base+21+i, with qlik.proxy_url = that qlik-sim.

  # --- upstreams ---------------------------------------------------------------------------------
  mkdir -p "$D/www/mashup" "$D/ngx-up" "$D/ngx-px"
  www_files "$D/www"
  chmod -R a+rX "$D"
  static_upstream_conf "$D/ngx-up" "$D/www" "$P_UP" "$([ "$placement" = pinned ] && echo 1 || echo auto)"
  $LOAD_CPU "$NGINX" -p "$D/ngx-up" -c "$D/ngx-up/nginx.conf" 2>"$D/ngx-up/stderr" &
  PIDS+=($!)

  local i=0 g sim_port
  declare -gA SIM_PORT=() QCOOKIE=() GW_PORT=() GW_PID=() GW_COOKIE=()
  for g in immediate first-frame never; do
    sim_port=$((base + 30 + 3 * i))
    # shellcheck disable=SC2046
    SIM_DIR="$D/sim-$g" SIM_PREFIX=$LOAD_CPU start_sim "$sim_port" --no-csrf $(greeting_flag "$g")
    PIDS+=("$SIM_PID")
    SIM_PORT[$g]=$sim_port
    QCOOKIE[$g]=$(qps_session)
    GW_PORT[$g]=$((base + 21 + i))
    gw_config "${GW_PORT[$g]}" "http://127.0.0.1:$sim_port" > "$D/gw-ws-$g.toml"
    $PROXY_CPU ${GW_WRAP:-} "$BIN/qlik-gateway" --config "$D/gw-ws-$g.toml" 2>"$D/gw-ws-$g.log" &
    GW_PID[$g]=$!; PIDS+=($!)
    i=$((i + 1))
  done
  # The HTTP gateway's [qlik] is the immediate variant's QPS (the last start_sim set the never one's).
  SIM_DIR="$D/sim-immediate"
  QPS=$(sim_field "$SIM_DIR" qps_api_url); CA=$(sim_field "$SIM_DIR" ca_cert)
  CERT=$(sim_field "$SIM_DIR" client_cert); KEY=$(sim_field "$SIM_DIR" client_key)
  gw_config "$P_GWH" "http://127.0.0.1:$P_UP" > "$D/gw-http.toml"
  $PROXY_CPU "$BIN/qlik-gateway" --config "$D/gw-http.toml" 2>"$D/gw-http.log" &
  local GWH=$!; PIDS+=($GWH)
  wait_port "$P_UP"

  # --- nginx, the proxy under test -----------------------------------------------------------------
  { ngx_common "$D/ngx-px" "$workers"; echo "http {"; http_common "$D/ngx-px"
    echo "  upstream files { server 127.0.0.1:$P_UP; keepalive 256; }"
    i=0
    for g in immediate first-frame never; do
      echo "  upstream qlik$i { server 127.0.0.1:${SIM_PORT[$g]}; keepalive 256; }"
      i=$((i + 1))
    done
    echo "  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }"
    i=0
    for g in immediate first-frame never; do
      ngx_proxy_server $((P_NGX + i)) "qlik$i" files "${QCOOKIE[$g]}"
      i=$((i + 1))
    done
    echo "}"
  } > "$D/ngx-px/nginx.conf"
  $PROXY_CPU "$NGINX" -p "$D/ngx-px" -c "$D/ngx-px/nginx.conf" 2>"$D/ngx-px/stderr" &
  local NGX_MASTER=$!; PIDS+=($NGX_MASTER)
  wait_port "$P_NGX"; wait_port "$P_GWH"
  for g in immediate first-frame never; do wait_port "${GW_PORT[$g]}"; done

  local GWH_COOKIE
  GWH_COOKIE=$(gw_cookie "$P_GWH")
  for g in immediate first-frame never; do GW_COOKIE[$g]=$(gw_cookie "${GW_PORT[$g]}"); done
  # First proxied request creates the gateway's Qlik session; check every path answers.
  local u code
  for u in "http://127.0.0.1:$P_GWH/mashup/small.bin|$GWH_COOKIE" "http://127.0.0.1:$P_NGX/mashup/small.bin|" \
           "http://127.0.0.1:$P_UP/mashup/small.bin|"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: ${u#*|}" "${u%|*}")
    [ "$code" = 200 ] || { log "${u%|*} answered $code"; cat "$D"/gw-http.log >&2; exit 1; }
  done

  nginx_pids() { echo "$NGX_MASTER $(pgrep -P "$NGX_MASTER" | tr '\n' ' ')"; }
  measure() { # measure NAME PIDS -- COMMAND...: runs COMMAND, saves its stdout and the proxy's CPU use
    local name=$1 pids=$2; shift 3
    local c0 c1 t0 t1
    c0=$(cpu_ticks $pids); t0=$(date +%s.%N)
    "$@" > "$R/$name.out" 2>"$R/$name.err" || log "$placement $name: exit $?"
    t1=$(date +%s.%N); c1=$(cpu_ticks $pids)
    python3 -c "print(round(100*($c1-$c0)/$HZ/($t1-$t0)))" > "$R/$name.cpu"
    log "$placement $name: $(tr '\n' ' ' < "$R/$name.out" | grep -oE 'Requests/sec: *[0-9.]+|"rate":[0-9.]+|"open":[0-9]+' | head -1) proxy CPU $(cat "$R/$name.cpu")%"
  }

  # --- HTTP and websocket rates, ROUNDS times ------------------------------------------------------
  # Round 1's outputs are NAME.out, round r's NAME-rR.out (bench/table.py takes the medians). The
  # three targets take turns going first (round 1 gateway, nginx, direct; round 2 nginx, direct,
  # gateway; …): whatever the run before leaves behind (a proxy still freeing 1 MiB buffers, the
  # kernel's socket memory) does not fall on one target every round.
  in_turn() { case $(( (r - 1) % 3 )) in 0) echo gateway nginx direct ;; 1) echo nginx direct gateway ;; *) echo direct gateway nginx ;; esac; }
  ws_run() { # ws_run NAME CONNS SIZE KIND
    local g=immediate t
    for t in $(in_turn); do
      case $t in
        gateway) measure "$1-gateway$sfx" "${GW_PID[$g]}" -- $LOAD_CPU "$LOADGEN" ws-echo "ws://127.0.0.1:${GW_PORT[$g]}/mashup/app/$APP" \
                   "http://127.0.0.1:${GW_PORT[$g]}" "${GW_COOKIE[$g]}" "$2" "$3" "$4" "$DUR" ;;
        nginx) measure "$1-nginx$sfx" "$(nginx_pids)" -- $LOAD_CPU "$LOADGEN" ws-echo "ws://127.0.0.1:$P_NGX/mashup/app/$APP" \
                 "http://127.0.0.1:$P_NGX" "" "$2" "$3" "$4" "$DUR" ;;
        direct) measure "$1-direct$sfx" "" -- $LOAD_CPU "$LOADGEN" ws-echo "ws://127.0.0.1:${SIM_PORT[$g]}/mashup/app/$APP" \
                  "http://127.0.0.1:${SIM_PORT[$g]}" "${QCOOKIE[$g]}" "$2" "$3" "$4" "$DUR" ;;
      esac
    done
  }
  http_run() { # http_run SIZE CONNS TARGET
    case $3 in
      gateway)
        if [ "$r" = 1 ] && [ "${PROFILE:-0}" = 1 ] && [ "$1" = small ] && command -v perf >/dev/null; then
          # A software-clock profile of the gateway during this run (no hardware counters in VMs).
          perf record -q -F 999 -e cpu-clock --call-graph dwarf,16384 -p "$GWH" -o "$R/gateway-http-small-c$2.perf" -- sleep "$DUR" 2>/dev/null &
          PERF_PID=$!
        fi
        # The gateway's own histograms around the run: where its time per request went.
        [ "$r" = 1 ] && { curl -s "http://127.0.0.1:$P_GWH/_gateway/metrics" > "$R/http-$1-c$2-gateway.metrics.before" || true; }
        measure "http-$1-c$2-gateway$sfx" "$GWH" -- $LOAD_CPU wrk -t1 -c"$2" -d"${DUR}s" --latency \
          -H "Cookie: $GWH_COOKIE" "http://127.0.0.1:$P_GWH/mashup/$1.bin"
        [ "$r" = 1 ] && { curl -s "http://127.0.0.1:$P_GWH/_gateway/metrics" > "$R/http-$1-c$2-gateway.metrics.after" || true; }
        if [ -n "${PERF_PID:-}" ]; then wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""; fi ;;
      nginx) measure "http-$1-c$2-nginx$sfx" "$(nginx_pids)" -- $LOAD_CPU wrk -t1 -c"$2" -d"${DUR}s" --latency \
               "http://127.0.0.1:$P_NGX/mashup/$1.bin" ;;
      direct) measure "http-$1-c$2-direct$sfx" "" -- $LOAD_CPU wrk -t1 -c"$2" -d"${DUR}s" --latency \
                "http://127.0.0.1:$P_UP/mashup/$1.bin" ;;
    esac
  }
  local CONCS="4 32" size c r sfx t
  [ "$C128" = 1 ] && CONCS="4 32 128"
  part http || CONCS=""
  for r in $(seq 1 "$ROUNDS"); do
    sfx=""; [ "$r" -gt 1 ] && sfx="-r$r"
    for size in small big; do
      for c in $CONCS; do
        for t in $(in_turn); do http_run "$size" "$c" "$t"; done
      done
    done
    if part ws; then
      ws_run ws-small 32 200 text
      ws_run ws-big 4 1048576 binary
    fi
  done

  # --- logins + Qlik session creations -------------------------------------------------------------
  part login && measure "login-gateway" "$GWH" -- $LOAD_CPU "$LOADGEN" login "http://127.0.0.1:$P_GWH" /mashup/small.bin 16 "$DUR"

  # --- memory with idle proxied websockets, per greeting variant -----------------------------------
  idle() { # idle TARGET VARIANT N: RSS of the proxy with N idle websockets open through it
    local target=$1 g=$2 n=$3 url origin cookie pids fifo name lg port
    name="idle-$g-$target-$n"
    case $target in
      gateway) port=${GW_PORT[$g]}; url="ws://127.0.0.1:$port/mashup/app/$APP"; origin="http://127.0.0.1:${GW_PORT[$g]}"
               cookie=${GW_COOKIE[$g]}; pids=${GW_PID[$g]} ;;
      nginx) local off=0; [ "$g" = first-frame ] && off=1; [ "$g" = never ] && off=2
             port=$((P_NGX + off)); url="ws://127.0.0.1:$port/mashup/app/$APP"; origin="http://127.0.0.1:$((P_NGX + off))"
             cookie=""; pids=$(nginx_pids) ;;
    esac
    if [ "$n" = 0 ]; then
      rss_kib $pids > "$R/$name.rss"
      echo '{"open":0,"errors":0}' > "$R/$name.out"
      return 0
    fi
    fifo="$D/idle.fifo"; rm -f "$fifo"; mkfifo "$fifo"
    $LOAD_CPU "$LOADGEN" ws-idle "$url" "$origin" "$cookie" "$n" "$(idle_mode "$g")" < "$fifo" > "$R/$name.out" 2>"$R/$name.err" &
    lg=$!
    exec 7>"$fifo"
    for _ in $(seq 1 1200); do [ -s "$R/$name.out" ] && break; sleep 0.1; done
    # Every socket is open and has done what its variant does; the proxy may still be handing
    # sockets from one phase to the next.
    wait_rss_steady $pids
    rss_kib $pids > "$R/$name.rss"
    log "$placement idle $g $target $n: $(cat "$R/$name.out") RSS $(cat "$R/$name.rss") KiB"
    exec 7>&-
    wait "$lg" 2>/dev/null || true
    # The next step starts from a proxy that holds none of these sockets any more.
    wait_no_connections "$port"
  }
  local n
  for g in $GREETINGS; do
    for n in $IDLE_COUNTS; do idle gateway "$g" "$n"; idle nginx "$g" "$n"; done
  done

  # --- stop this placement's processes -------------------------------------------------------------
  local p
  for p in "${PIDS[@]:$started}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:$started}"; do wait "$p" 2>/dev/null || true; done
  PIDS=("${PIDS[@]:0:$started}")
  # The proxies' own logs go with the raw outputs: $W is removed on exit.
  cp "$D"/gw-*.log "$D/ngx-px/stderr" "$R/" 2>/dev/null || true
  {
    echo "nginx $($NGINX -v 2>&1 | cut -d/ -f2), wrk -t1, ${DUR}s per figure, $ROUNDS round(s); gateway $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
    if [ "$placement" = pinned ]; then
      echo "placement: pinned: proxy (gateway, its runtime then on 1 CPU / nginx, 1 worker) on CPU 0; wrk, load generator, upstreams on CPU 1"
    else
      echo "placement: default: nothing pinned; the gateway's runtime picks its workers ($(nproc)), nginx worker_processes auto"
    fi
  } > "$R/about"
}

offset=0
for placement in $PLACEMENTS; do
  run_placement "$placement" "$offset"
  offset=$((offset + 100))
done

# --- the tables ----------------------------------------------------------------------------------
{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r)"
  echo "load average before/after: $(cat "$OUT/loadavg.before" 2>/dev/null || echo '?') / $(cut -d' ' -f1-3 /proc/loadavg)"
  for placement in $PLACEMENTS; do
    echo
    echo "## $placement placement"
    echo
    cat "$OUT/$placement/about"
    python3 "$ROOT/bench/table.py" "$OUT/$placement" "$IDLE_COUNTS" "$GREETINGS"
    python3 "$ROOT/bench/phases.py" "$OUT/$placement"
  done
} | tee "$OUT/table.md"
log "raw outputs in $OUT"
if [ "$SMOKE" = 1 ]; then
  for placement in $PLACEMENTS; do
    { python3 "$ROOT/bench/table.py" "$OUT/$placement" "$IDLE_COUNTS" "$GREETINGS" --check "$ONLY" "$ROUNDS" >&2 &&
      { ! part http || python3 "$ROOT/bench/phases.py" "$OUT/$placement" --check; }; } ||
      { log "$placement placement: figures missing; the load generators' and the gateways' own words:"
        for f in "$OUT/$placement"/*.err "$OUT/$placement"/gw-*.log; do
          [ -s "$f" ] && { echo "--- $f (last 20 lines)"; tail -n 20 "$f"; } >&2
        done
        exit 1; }
  done
fi
