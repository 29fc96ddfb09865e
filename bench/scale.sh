#!/usr/bin/env bash
# How cost grows with work (issue 16, point 4): three measurements, one table each.
#
#   sessions   RSS of the gateway (and Redis) and the cost of a request (wrk -t1 -c4 / -c32 on
#              GET /mashup/small.bin with one session's cookie: req/s, p99, gateway CPU per
#              request) with SESSIONS live gateway sessions, for the memory and the Redis store.
#              The sessions are made by logins (bench-loadgen logins), each followed by a proxied
#              GET that makes the gateway create its Qlik session through qlik-sim's QPS, as in
#              production (QLIK_SESSIONS=0: logins only).
#   logins     logins/s (each with its Qlik session) from an empty store: memory store, one
#              replica on Redis, two replicas sharing that Redis (login on one, its first
#              request on the other).
#   ws         engine websocket echo (200 B text, closed loop) with SOCKETS sockets, through the
#              gateway, through nginx, and direct to qlik-sim.
#
#   bench/scale.sh                                   # full sizes: 0/10,000/100,000 sessions, 1/32/1,000 sockets
#   SMOKE=1 bench/scale.sh                           # tiny: 0/100/1,000 sessions, 1 s per figure, 1/4/32 sockets
#   SESSIONS="0 10000" SOCKETS="1 32 1000" DUR=3 bench/scale.sh
#
# Environment: CARGO_TARGET_DIR (default /tmp/bench-target; release binaries, SKIP_BUILD=1 reuses
# them), LOADGEN (a bench-loadgen binary to use instead of $CARGO_TARGET_DIR/release's), SESSIONS
# (live-session counts, ascending), SOCKETS, DUR (seconds per figure), LOGINS (logins per logins
# row), LOGIN_CONNS (concurrent login loops, 16), USERS (1: every session belongs to the static
# user alice, as in run.sh; N > 1: the trusted_header provider and N users bench0…, the sessions
# spread over them), QLIK_SESSIONS (1), ONLY (a subset of sessions,logins,ws), BASE_PORT (19600),
# OUT (/tmp/qlik-gateway-scale).
#
# Time: on a 2-CPU VM the full run takes about 5 minutes; making the 100,000 sessions takes about
# 20 s (memory store) and a minute (Redis). A login costs the same however many sessions exist
# (3772d44; BENCHMARKS.md, Scaling).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  DUR=${DUR:-1}; SESSIONS=${SESSIONS:-0 100 1000}; SOCKETS=${SOCKETS:-1 4 32}; LOGINS=${LOGINS:-500}
fi
DUR=${DUR:-10}
SESSIONS=${SESSIONS:-0 10000 100000}
SOCKETS=${SOCKETS:-1 32 1000}
LOGINS=${LOGINS:-10000}
LOGIN_CONNS=${LOGIN_CONNS:-16}
USERS=${USERS:-1}
QLIK_SESSIONS=${QLIK_SESSIONS:-1}
ONLY=${ONLY:-sessions,logins,ws}
BASE_PORT=${BASE_PORT:-19600}
OUT=${OUT:-/tmp/qlik-gateway-scale}
part() { [[ ",$ONLY," == *",$1,"* ]]; }

# shellcheck source=bench/common.sh
. bench/common.sh
need_apt nginx nginx
need_apt wrk wrk
need_apt curl curl
need_apt python3 python3
need_apt redis-server redis-server
NGINX=$(command -v nginx)
# Release binaries even with SMOKE=1: this is not the test command's run, whose debug binaries
# run.sh reuses.
build_all release

# Descriptors: the gateway holds two per proxied websocket, the load generator one per socket.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

W=$(mktemp -d /tmp/qlik-gateway-scale.XXXXXX)
chmod 755 "$W"   # nginx workers run as an unprivileged user when started as root
rm -rf "$OUT"; mkdir -p "$OUT"
cut -d" " -f1-3 /proc/loadavg > "$OUT/loadavg.before"
with_cleanup

P_UP=$((BASE_PORT + 1))     # nginx: the static upstream (/mashup/small.bin)
P_NGX=$((BASE_PORT + 2))    # nginx: the proxy under test for the ws rows
P_REDIS=$((BASE_PORT + 5))
P_SIM=$((BASE_PORT + 10))   # qlik-sim: proxy (QPS +1, control +2)
P_GW=$((BASE_PORT + 20))    # gateway replica a (+1: replica b)
P_GWWS=$((BASE_PORT + 22))  # gateway for the ws rows, qlik.proxy_url = qlik-sim

stop_pid() { # stop_pid PID: stops one process this script started and waits until it is gone
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# --- upstreams: static nginx, qlik-sim, Redis ------------------------------------------------------
www_files "$W/www"
mkdir -p "$W/ngx-up" "$W/ngx-px" "$W/redis"
chmod -R a+rX "$W/www"
static_upstream_conf "$W/ngx-up" "$W/www" "$P_UP" auto
"$NGINX" -p "$W/ngx-up" -c "$W/ngx-up/nginx.conf" 2>"$W/ngx-up/stderr" &
PIDS+=($!)
SIM_DIR="$W/sim" start_sim "$P_SIM" --no-csrf
PIDS+=("$SIM_PID")
wait_port "$P_UP"

redis_cli() { redis-cli -h 127.0.0.1 -p "$P_REDIS" "$@"; }
REDIS_PID=""
if part sessions || part logins; then
  # No persistence: the figures are the store's, not the disk's.
  redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no --dir "$W/redis" \
    --protected-mode no > "$W/redis/log" 2>&1 &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  wait_port "$P_REDIS"
  python3 -c "import base64,os; print(base64.b64encode(os.urandom(32)).decode())" > "$W/session-key"
  chmod 600 "$W/session-key"
fi
redis_field() { redis_cli info memory | tr -d '\r' | awk -F: -v k="$1" '$1==k{print $2}'; }

store_config() { # store_config memory|redis
  if [ "$1" = redis ]; then
    printf 'store = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\nencryption_key_file = "%s"\n' "$P_REDIS" "$W/session-key"
  else
    echo 'store = "memory"'
  fi
  # Long enough that no session made at the start of a long run expires before its end.
  printf 'idle_timeout = "6h"\nabsolute_timeout = "12h"\n'
}
auth_config() {
  if [ "$USERS" -gt 1 ]; then
    printf '[auth]\nprovider = "trusted_header"\n[auth.trusted_header]\nheader = "X-Remote-User"\ntrusted_proxies = ["127.0.0.1/32"]\nuser_directory = "BENCH"\n'
  else
    gw_auth_static
  fi
}
USERS_ARG=0; [ "$USERS" -gt 1 ] && USERS_ARG=$USERS
# One login's cookie, for the wrk rows (trusted_header: user bench0, like the loadgen's first).
login_cookie() { # login_cookie PORT
  curl -fsS -o /dev/null -D - -H "X-Remote-User: bench0" "http://127.0.0.1:$1/_gateway/login" |
    tr -d '\r' | awk -F'[:;] *' 'tolower($1)=="set-cookie"{print $2; exit}'
}

start_gw() { # start_gw NAME PORT STORE PROXY_URL: sets GWPID
  gw_config "$2" "$4" "$(store_config "$3")" "$(auth_config)" > "$W/gw-$1.toml"
  "$BIN/qlik-gateway" --config "$W/gw-$1.toml" 2>"$W/gw-$1.log" &
  GWPID=$!; PIDS+=("$GWPID")
  wait_port "$2"
}

PATH_ARG=/mashup/small.bin; [ "$QLIK_SESSIONS" = 1 ] || PATH_ARG=-
logins() { # logins NAME N BASES: N logins into $OUT/NAME.out
  "$LOADGEN" logins "$3" "$2" "$LOGIN_CONNS" "$PATH_ARG" "$USERS_ARG" > "$OUT/$1.out" 2>"$OUT/$1.err" ||
    log "$1: exit $?"
  log "$1: $(cat "$OUT/$1.out")"
}
measure() { # measure NAME PIDS -- COMMAND...: COMMAND's stdout, wall time and PIDS' CPU ticks
  local name=$1 pids=$2; shift 3
  local c0 c1 t0 t1
  c0=$(cpu_ticks $pids); t0=$(date +%s.%N)
  "$@" > "$OUT/$name.out" 2>"$OUT/$name.err" || log "$name: exit $?"
  t1=$(date +%s.%N); c1=$(cpu_ticks $pids)
  python3 -c "print($c1 - $c0, $HZ, $t1 - $t0)" > "$OUT/$name.cpu"
}

# --- 1. live sessions: RSS and request cost --------------------------------------------------------
if part sessions; then
  for store in memory redis; do
    [ "$store" = redis ] && redis_cli flushall >/dev/null
    start_gw "sess-$store" "$P_GW" "$store" "http://127.0.0.1:$P_UP"
    gw=$GWPID
    cookie=$(login_cookie "$P_GW")
    # Its first proxied request creates this session's Qlik session, so wrk measures the rest.
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "http://127.0.0.1:$P_GW/mashup/small.bin")
    [ "$code" = 200 ] || { log "gateway ($store) answered $code"; cat "$W/gw-sess-$store.log" >&2; exit 1; }
    have=0
    for n in $SESSIONS; do
      name="sess-$store-$n"
      if [ "$n" -gt "$have" ]; then
        logins "$name.logins" $((n - have)) "http://127.0.0.1:$P_GW"
        have=$n
      fi
      rss_kib "$gw" > "$OUT/$name.rss"
      if [ "$store" = redis ]; then
        { echo "used_memory $(redis_field used_memory)"; echo "rss $(rss_kib "$REDIS_PID")"; echo "keys $(redis_cli dbsize)"; } > "$OUT/$name.redis"
      fi
      for c in 4 32; do
        measure "$name-c$c" "$gw" -- wrk -t1 -c"$c" -d"${DUR}s" --latency -H "Cookie: $cookie" \
          "http://127.0.0.1:$P_GW/mashup/small.bin"
      done
      log "$store $n sessions: RSS $(cat "$OUT/$name.rss") KiB, c4 $(grep -h Requests/sec "$OUT/$name-c4.out" | tr -s ' '), c32 $(grep -h Requests/sec "$OUT/$name-c32.out" | tr -s ' ')"
    done
    stop_pid "$gw"
  done
fi

# --- 2. logins/s: memory, one Redis replica, two Redis replicas -------------------------------------
if part logins; then
  for row in memory-1 redis-1 redis-2; do
    store=${row%-*}; replicas=${row#*-}
    [ "$store" = redis ] && redis_cli flushall >/dev/null
    pids="" bases=""
    for r in $(seq 0 $((replicas - 1))); do
      start_gw "login-$row-$r" $((P_GW + r)) "$store" "http://127.0.0.1:$P_UP"
      pids="$pids $GWPID"; bases="$bases,http://127.0.0.1:$((P_GW + r))"
    done
    c0=$(cpu_ticks $pids); t0=$(date +%s.%N)
    logins "logins-$row" "$LOGINS" "${bases#,}"
    t1=$(date +%s.%N); c1=$(cpu_ticks $pids)
    python3 -c "print($c1 - $c0, $HZ, $t1 - $t0)" > "$OUT/logins-$row.cpu"
    if [ "$store" = redis ]; then
      { echo "used_memory $(redis_field used_memory)"; echo "keys $(redis_cli dbsize)"; } > "$OUT/logins-$row.redis"
    fi
    for p in $pids; do stop_pid "$p"; done
  done
fi
if [ -n "$REDIS_PID" ]; then stop_pid "$REDIS_PID"; fi

# --- 3. websocket echo with 1 … SOCKETS sockets ----------------------------------------------------
if part ws; then
  QCOOKIE=$(qps_session)
  { ngx_common "$W/ngx-px" auto; echo "http {"; http_common "$W/ngx-px"
    echo "  upstream files { server 127.0.0.1:$P_UP; keepalive 256; }"
    echo "  upstream qlik { server 127.0.0.1:$P_SIM; keepalive 256; }"
    echo "  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }"
    ngx_proxy_server "$P_NGX" qlik files "$QCOOKIE"
    echo "}"
  } > "$W/ngx-px/nginx.conf"
  "$NGINX" -p "$W/ngx-px" -c "$W/ngx-px/nginx.conf" 2>"$W/ngx-px/stderr" &
  NGX_MASTER=$!; PIDS+=("$NGX_MASTER")
  start_gw ws "$P_GWWS" memory "http://127.0.0.1:$P_SIM"
  gw=$GWPID
  wait_port "$P_NGX"
  cookie=$(login_cookie "$P_GWWS")
  for s in $SOCKETS; do
    ngx_pids="$NGX_MASTER $(pgrep -P "$NGX_MASTER" | tr '\n' ' ')"
    measure "ws-$s-gateway" "$gw" -- "$LOADGEN" ws-echo "ws://127.0.0.1:$P_GWWS/mashup/app/$APP" \
      "http://127.0.0.1:$P_GWWS" "$cookie" "$s" 200 text "$DUR"
    measure "ws-$s-nginx" "$ngx_pids" -- "$LOADGEN" ws-echo "ws://127.0.0.1:$P_NGX/mashup/app/$APP" \
      "http://127.0.0.1:$P_NGX" "" "$s" 200 text "$DUR"
    measure "ws-$s-direct" "" -- "$LOADGEN" ws-echo "ws://127.0.0.1:$P_SIM/mashup/app/$APP" \
      "http://127.0.0.1:$P_SIM" "$QCOOKIE" "$s" 200 text "$DUR"
    log "ws $s sockets: $(cat "$OUT/ws-$s-gateway.out") / $(cat "$OUT/ws-$s-nginx.out") / $(cat "$OUT/ws-$s-direct.out")"
  done
fi

# --- the tables ----------------------------------------------------------------------------------
{
  echo "# Scaling (bench/scale.sh)"
  echo
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty') (this script's tree)"
  # With SKIP_BUILD=1 the binaries may come from another tree: name them and when they were built.
  echo "binaries: $(for b in "$BIN/qlik-gateway" "$BIN/qlik-sim" "$LOADGEN"; do printf '%s (%s) ' "$b" "$(date -r "$b" '+%Y-%m-%d %H:%M')"; done)"
  echo "command: $(for v in SMOKE SESSIONS SOCKETS DUR LOGINS LOGIN_CONNS USERS QLIK_SESSIONS ONLY; do printf '%s="%s" ' "$v" "${!v}"; done)bench/scale.sh"
  echo "nginx $($NGINX -v 2>&1 | cut -d/ -f2), $(redis-server --version | grep -oE 'v=[0-9.]+' | sed 's/v=/Redis /'), wrk -t1, ${DUR}s per figure; load average before/after: $(cat "$OUT/loadavg.before") / $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 "$ROOT/bench/scale_table.py" "$OUT" "$SESSIONS" "$SOCKETS" "$ONLY" "$USERS" "$QLIK_SESSIONS" "$LOGIN_CONNS"
} | tee "$OUT/scale.md"
log "raw outputs in $OUT"
if [ "$SMOKE" = 1 ]; then
  python3 "$ROOT/bench/scale_table.py" "$OUT" "$SESSIONS" "$SOCKETS" "$ONLY" "$USERS" "$QLIK_SESSIONS" "$LOGIN_CONNS" --check >&2 ||
    { log "figures missing"; exit 1; }
fi
