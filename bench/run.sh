#!/usr/bin/env bash
# Side-by-side benchmark: qlik-gateway vs nginx proxying the same upstream vs a direct connection.
#   bench/run.sh                      # everything, ~5 minutes
#   DUR=5 IDLE_MAX=1000 bench/run.sh  # shorter
# Environment: CARGO_TARGET_DIR (default /tmp/bench-target), DUR (seconds per measurement, 10),
# IDLE_MAX (largest idle-websocket count, 9000), PIN (1 = proxy on CPU 0, load and upstreams on
# CPU 1; 0 = no pinning), C128 (1 = also HTTP at 128 connections), OUT (results directory),
# ONLY (a comma-separated subset of http,ws,login,memory; the table then shows what was measured),
# GW_WRAP (a command the websocket gateway runs under, e.g. "heaptrack -o /tmp/gw"),
# SMOKE (1 = the test command's check that every figure is produced; see below).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then DUR=${DUR:-1}; IDLE_MAX=${IDLE_MAX:-50}; fi
DUR=${DUR:-10}
IDLE_MAX=${IDLE_MAX:-9000}
PIN=${PIN:-1}
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

if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  PROXY_CPU="taskset -c 0"; LOAD_CPU="taskset -c 1"
else
  PROXY_CPU=""; LOAD_CPU=""; PIN=0
fi

W=$(mktemp -d /tmp/qlik-gateway-bench.XXXXXX)
chmod 755 "$W"   # nginx workers run as an unprivileged user when started as root
rm -rf "$OUT"; mkdir -p "$OUT"
cut -d" " -f1-3 /proc/loadavg > "$OUT/loadavg.before"
with_cleanup

P_UP=$((BASE_PORT + 1))      # nginx static upstream (512 B and 1 MiB files)
P_SIM=$((BASE_PORT + 2))     # qlik-sim proxy (plain http), QPS +1, control +2
P_NGX=$((BASE_PORT + 10))    # nginx as the proxy under test
P_GWH=$((BASE_PORT + 20))    # gateway, qlik.proxy_url = the static upstream (HTTP runs, logins)
P_GWW=$((BASE_PORT + 21))    # gateway, qlik.proxy_url = qlik-sim (websocket runs)

# --- upstreams -----------------------------------------------------------------------------------
mkdir -p "$W/www/mashup" "$W/ngx-up" "$W/ngx-px"
head -c 512 /dev/zero | tr '\0' 'a' > "$W/www/mashup/small.bin"
head -c 1048576 /dev/zero | tr '\0' 'b' > "$W/www/mashup/big.bin"

ngx_common() { # ngx_common DIR
  cat <<EOF
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 20000; multi_accept on; }
EOF
}
http_common() { # http_common DIR
  cat <<EOF
  access_log off;
  client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fcgi;
  uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  keepalive_requests 1000000; keepalive_timeout 300s;
  sendfile on; tcp_nodelay on;
EOF
}

{ ngx_common "$W/ngx-up"; echo "worker_processes 1;"; echo "http {"; http_common "$W/ngx-up"
  cat <<EOF
  server { listen 127.0.0.1:$P_UP; root $W/www; default_type application/octet-stream; }
}
EOF
} > "$W/ngx-up/nginx.conf"
$LOAD_CPU "$NGINX" -p "$W/ngx-up" -c "$W/ngx-up/nginx.conf" 2>"$W/ngx-up/stderr" &
PIDS+=($!)

SIM_PREFIX=$LOAD_CPU start_sim "$P_SIM" --no-csrf
PIDS+=("$SIM_PID")
wait_port "$P_UP"

# A Qlik session made through the QPS API, for nginx and the direct runs to present.
QSID="bench-$(date +%s)-$$"
XRF=0123456789abcdef
QPS_BASE=${QPS%/}
case "$QPS_BASE" in */qps/*) ;; *) QPS_BASE="$QPS_BASE/qps/mashup" ;; esac
curl -fsS --cacert "$CA" --cert "$CERT" --key "$KEY" -H "X-Qlik-Xrfkey: $XRF" \
  -H 'Content-Type: application/json' -X POST "$QPS_BASE/session?xrfkey=$XRF" \
  -d "{\"UserDirectory\":\"DEV\",\"UserId\":\"alice\",\"Attributes\":[],\"SessionId\":\"$QSID\"}" >/dev/null
QCOOKIE="X-Qlik-Session-mashup=$QSID"

# --- the proxies under test ----------------------------------------------------------------------
{ ngx_common "$W/ngx-px"; echo "worker_processes 1;"; echo "http {"; http_common "$W/ngx-px"
  cat <<EOF
  upstream files { server 127.0.0.1:$P_UP; keepalive 256; }
  upstream qlik { server 127.0.0.1:$P_SIM; keepalive 256; }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:$P_NGX backlog=4096;
    proxy_http_version 1.1;
    # proxy_set_header is inherited only by locations that set none: repeat Cookie in each.
    location /mashup/app/ {
      proxy_pass http://qlik;
      proxy_set_header Cookie "$QCOOKIE";
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 3600s; proxy_send_timeout 3600s;
    }
    location /mashup/ {
      proxy_pass http://files;
      proxy_set_header Cookie "$QCOOKIE";
      proxy_set_header Connection "";
    }
  }
}
EOF
} > "$W/ngx-px/nginx.conf"
$PROXY_CPU "$NGINX" -p "$W/ngx-px" -c "$W/ngx-px/nginx.conf" 2>"$W/ngx-px/stderr" &
NGX_MASTER=$!; PIDS+=($NGX_MASTER)

gw_config() { # gw_config PORT PROXY_URL
  cat <<EOF
[server]
listen = "127.0.0.1:$1"
public_url = "http://127.0.0.1:$1"
[session]
store = "memory"
[auth]
provider = "static"
[auth.static]
user_directory = "DEV"
user_id = "alice"
EOF
  gw_qlik_config "$2"
}
gw_config "$P_GWH" "http://127.0.0.1:$P_UP" > "$W/gw-http.toml"
gw_config "$P_GWW" "http://127.0.0.1:$P_SIM" > "$W/gw-ws.toml"
$PROXY_CPU "$BIN/qlik-gateway" --config "$W/gw-http.toml" 2>"$W/gw-http.log" &
GWH=$!; PIDS+=($GWH)
$PROXY_CPU ${GW_WRAP:-} "$BIN/qlik-gateway" --config "$W/gw-ws.toml" 2>"$W/gw-ws.log" &
GWW=$!; PIDS+=($GWW)
wait_port "$P_NGX"; wait_port "$P_GWH"; wait_port "$P_GWW"

gw_cookie() { # gw_cookie PORT: logs in (static user) and returns the gateway cookie
  curl -fsS -o /dev/null -D - "http://127.0.0.1:$1/_gateway/login" |
    tr -d '\r' | awk -F'[:;] *' 'tolower($1)=="set-cookie"{print $2; exit}'
}
GWH_COOKIE=$(gw_cookie "$P_GWH"); GWW_COOKIE=$(gw_cookie "$P_GWW")
# First proxied request creates the gateway's Qlik session; check every path answers.
for u in "http://127.0.0.1:$P_GWH/mashup/small.bin|$GWH_COOKIE" "http://127.0.0.1:$P_NGX/mashup/small.bin|" \
         "http://127.0.0.1:$P_UP/mashup/small.bin|"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: ${u#*|}" "${u%|*}")
  [ "$code" = 200 ] || { log "${u%|*} answered $code"; cat "$W"/gw-http.log >&2; exit 1; }
done

nginx_workers() { pgrep -P "$NGX_MASTER" | tr '\n' ' '; }
cpu_ticks() { # cpu_ticks PID...: utime+stime of the processes (and their threads), in ticks
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
rss_kib() { # rss_kib PID...
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '/^VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done
  echo "$t"
}
proxy_pids() { # proxy_pids gw-http|gw-ws|nginx|direct
  case $1 in gw-http) echo "$GWH" ;; gw-ws) echo "$GWW" ;; nginx) echo "$NGX_MASTER $(nginx_workers)" ;; *) echo "" ;; esac
}
HZ=$(getconf CLK_TCK)
measure() { # measure NAME PIDS -- COMMAND...: runs COMMAND, saves its stdout and the proxy's CPU use
  local name=$1 pids=$2; shift 3
  local c0 c1 t0 t1
  c0=$(cpu_ticks $pids); t0=$(date +%s.%N)
  "$@" > "$OUT/$name.out" 2>"$OUT/$name.err" || log "$name: exit $?"
  t1=$(date +%s.%N); c1=$(cpu_ticks $pids)
  python3 -c "print(round(100*($c1-$c0)/$HZ/($t1-$t0)))" > "$OUT/$name.cpu"
  log "$name: $(tr '\n' ' ' < "$OUT/$name.out" | grep -oE 'Requests/sec: *[0-9.]+|"rate":[0-9.]+|"open":[0-9]+' | head -1) proxy CPU $(cat "$OUT/$name.cpu")%"
}

# --- HTTP ----------------------------------------------------------------------------------------
CONCS="4 32"; [ "$C128" = 1 ] && CONCS="4 32 128"
part http || CONCS=""
for size in small big; do
  for c in $CONCS; do
    if [ "${PROFILE:-0}" = 1 ] && [ "$size" = small ] && command -v perf >/dev/null; then
      # A software-clock profile of the gateway during this run (no hardware counters in VMs).
      perf record -q -F 999 -e cpu-clock --call-graph dwarf,16384 -p "$GWH" -o "$OUT/gateway-http-small.perf" -- sleep "$DUR" 2>/dev/null &
      PERF_PID=$!
    fi
    measure "http-$size-c$c-gateway" "$GWH" -- $LOAD_CPU wrk -t1 -c"$c" -d"${DUR}s" --latency \
      -H "Cookie: $GWH_COOKIE" "http://127.0.0.1:$P_GWH/mashup/$size.bin"
    if [ -n "${PERF_PID:-}" ]; then wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""; fi
    measure "http-$size-c$c-nginx" "$(proxy_pids nginx)" -- $LOAD_CPU wrk -t1 -c"$c" -d"${DUR}s" --latency \
      "http://127.0.0.1:$P_NGX/mashup/$size.bin"
    measure "http-$size-c$c-direct" "" -- $LOAD_CPU wrk -t1 -c"$c" -d"${DUR}s" --latency \
      "http://127.0.0.1:$P_UP/mashup/$size.bin"
  done
done

# --- websocket echo through the engine path ------------------------------------------------------
ws_run() { # ws_run NAME CONNS SIZE KIND
  measure "$1-gateway" "$GWW" -- $LOAD_CPU "$LOADGEN" ws-echo "ws://127.0.0.1:$P_GWW/mashup/app/$APP" \
    "http://127.0.0.1:$P_GWW" "$GWW_COOKIE" "$2" "$3" "$4" "$DUR"
  measure "$1-nginx" "$(proxy_pids nginx)" -- $LOAD_CPU "$LOADGEN" ws-echo "ws://127.0.0.1:$P_NGX/mashup/app/$APP" \
    "http://127.0.0.1:$P_NGX" "" "$2" "$3" "$4" "$DUR"
  measure "$1-direct" "" -- $LOAD_CPU "$LOADGEN" ws-echo "ws://127.0.0.1:$P_SIM/mashup/app/$APP" \
    "http://127.0.0.1:$P_SIM" "$QCOOKIE" "$2" "$3" "$4" "$DUR"
}
if part ws; then
  ws_run ws-small 32 200 text
  ws_run ws-big 4 1048576 binary
fi

# --- logins + Qlik session creations -------------------------------------------------------------
part login && measure "login-gateway" "$GWH" -- $LOAD_CPU "$LOADGEN" login "http://127.0.0.1:$P_GWH" /mashup/small.bin 16 "$DUR"

# --- memory with idle proxied websockets ---------------------------------------------------------
idle() { # idle TARGET N: RSS of the proxy with N idle websockets open through it
  local target=$1 n=$2 url origin cookie pids fifo
  case $target in
    gateway) url="ws://127.0.0.1:$P_GWW/mashup/app/$APP"; origin="http://127.0.0.1:$P_GWW"; cookie=$GWW_COOKIE ;;
    nginx) url="ws://127.0.0.1:$P_NGX/mashup/app/$APP"; origin="http://127.0.0.1:$P_NGX"; cookie="" ;;
  esac
  fifo="$W/idle.fifo"; rm -f "$fifo"; mkfifo "$fifo"
  $LOAD_CPU "$LOADGEN" ws-idle "$url" "$origin" "$cookie" "$n" < "$fifo" > "$OUT/idle-$target-$n.out" 2>"$OUT/idle-$target-$n.err" &
  local lg=$!
  exec 7>"$fifo"
  for _ in $(seq 1 1200); do [ -s "$OUT/idle-$target-$n.out" ] && break; sleep 0.1; done
  sleep 1
  pids=$(proxy_pids "$([ "$target" = gateway ] && echo gw-ws || echo nginx)")
  rss_kib $pids > "$OUT/idle-$target-$n.rss"
  log "idle $target $n: $(cat "$OUT/idle-$target-$n.out") RSS $(cat "$OUT/idle-$target-$n.rss") KiB"
  exec 7>&-
  wait "$lg" 2>/dev/null || true
  sleep 2   # let both sides tear the sockets down
}
IDLE_COUNTS="0 1000"; [ "$IDLE_MAX" -gt 1000 ] && IDLE_COUNTS="0 1000 $IDLE_MAX"
[ "$IDLE_MAX" -lt 1000 ] && IDLE_COUNTS="0 $IDLE_MAX"
for n in $(part memory && echo "$IDLE_COUNTS"); do
  if [ "$n" = 0 ]; then
    rss_kib "$GWW" > "$OUT/idle-gateway-0.rss"; rss_kib $(proxy_pids nginx) > "$OUT/idle-nginx-0.rss"
    echo '{"open":0,"errors":0}' | tee "$OUT/idle-gateway-0.out" > "$OUT/idle-nginx-0.out"
  else
    idle gateway "$n"; idle nginx "$n"
  fi
done

# --- the table -----------------------------------------------------------------------------------
{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r)"
  echo "load average before/after: $(cat "$OUT/loadavg.before" 2>/dev/null || echo '?') / $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "pinning: $([ "$PIN" = 1 ] && echo 'proxy (gateway / nginx, 1 worker) on CPU 0; wrk, load generator, upstreams on CPU 1' || echo none)"
  echo "nginx $($NGINX -v 2>&1 | cut -d/ -f2), wrk -t1, ${DUR}s per figure; gateway $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
  python3 "$ROOT/bench/table.py" "$OUT" "$(part memory && echo "$IDLE_COUNTS")"
} | tee "$OUT/table.md"
log "raw outputs in $OUT"
if [ "$SMOKE" = 1 ]; then
  python3 "$ROOT/bench/table.py" "$OUT" "$(part memory && echo "$IDLE_COUNTS")" --check "$ONLY" >&2
fi
