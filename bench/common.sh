# Helpers shared by bench/run.sh, bench/soak.sh and bench/scale.sh (sourced, not run). They set
# CARGO_TARGET_DIR, SMOKE and (for start_sim) W, the run's temporary directory, before using them.

log() { printf '==> %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_updated=""
need_apt() { # need_apt COMMAND PACKAGE...
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# build_all: qlik-gateway, qlik-sim and bench-loadgen, release as shipped (debug with SMOKE=1: the tests
# have just built those), into $CARGO_TARGET_DIR; sets BIN and LOADGEN. SKIP_BUILD=1 reuses them.
# build_all release|debug forces that profile. A LOADGEN set beforehand (a load generator built
# elsewhere, e.g. from a work tree) is used instead of $BIN/bench-loadgen.
build_all() {
  local profile=release release=--release
  if [ "${1:-}" = debug ] || { [ -z "${1:-}" ] && [ "$SMOKE" = 1 ]; }; then profile=debug; release=""; fi
  BIN=$CARGO_TARGET_DIR/$profile
  LOADGEN=${LOADGEN:-$BIN/bench-loadgen}
  if [ "${SKIP_BUILD:-0}" = 1 ] && [ -x "$BIN/qlik-gateway" ] && [ -x "$BIN/qlik-sim" ] && [ -x "$LOADGEN" ]; then
    log "SKIP_BUILD=1: using the binaries in $BIN"
    return 0
  fi
  log "$profile build (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  if [ "$profile" = release ]; then
    # As shipped: the gateway trained by PGO (scripts/build-release.sh; PGO=0 for plain release).
    scripts/build-release.sh -q ${BENCH_CARGO_FLAGS:-}
    return 0
  fi
  # BENCH_CARGO_FLAGS: e.g. the test command's --all-features, so its binaries are reused.
  cargo build $release -q -p qlik-gateway -p qlik-sim ${BENCH_CARGO_FLAGS:-}
  (cd bench/loadgen && { cargo build $release -q --offline 2>/dev/null || cargo build $release -q; })
}

# with_cleanup: on exit, stop the processes whose ids the caller adds to PIDS and remove $W.
with_cleanup() {
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"' EXIT
}

wait_rss_steady() { # wait_rss_steady PID...: until two readings 0.2 s apart agree within 1 % (at most 5 s)
  local a b
  a=$(rss_kib "$@")
  for _ in $(seq 1 25); do
    sleep 0.2
    b=$(rss_kib "$@")
    [ $(( (b > a ? b - a : a - b) * 100 )) -le "$a" ] && return 0
    a=$b
  done
}
wait_no_connections() { # wait_no_connections PORT: until nothing is connected to the local PORT (at most 20 s)
  for _ in $(seq 1 200); do
    [ -z "$(ss -Htn state established "( sport = :$1 )" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  log "connections to port $1 still open after 20 s"
}

wait_port() { # wait_port PORT
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  log "port $1 never opened"; return 1
}

# start_sim PORT [QLIK-SIM OPTION...]: qlik-sim with a plain-http proxy on PORT, QPS on PORT+1,
# control on PORT+2, PEM files in $W/pki; waits for its ready line and sets QPS, CA, CERT, KEY
# and SIM_PID. The caller runs it under its CPU pinning with $SIM_PREFIX (may be empty).
# SIM_DIR (default $W) holds its pki/, sim.json and sim.log, so that several can run side by side.
start_sim() {
  local port=$1 dir=${SIM_DIR:-$W}; shift
  mkdir -p "$dir"
  ${SIM_PREFIX:-} "$BIN/qlik-sim" --cert-dir "$dir/pki" --no-proxy-tls \
    --proxy-port "$port" --qps-port $((port + 1)) --control-port $((port + 2)) "$@" \
    > "$dir/sim.json" 2>"$dir/sim.log" &
  SIM_PID=$!
  wait_port "$port"
  for _ in $(seq 1 100); do [ -s "$dir/sim.json" ] && break; sleep 0.05; done
  QPS=$(sim_field "$dir" qps_api_url); CA=$(sim_field "$dir" ca_cert)
  CERT=$(sim_field "$dir" client_cert); KEY=$(sim_field "$dir" client_key)
}
sim_field() { python3 -c "import json,sys; print(json.load(open('$1/sim.json'))['$2'])"; }

# gw_qlik_config PROXY_URL: the gateway's [qlik] section for qlik-sim at PROXY_URL (QPS and
# certificates from start_sim), and [log]: the gateway's default level (info, what users run:
# its request spans cost ~5k instructions a request), or GW_LOG_LEVEL; GW_LOG_FORMAT=json for JSON lines.
gw_qlik_config() {
  cat <<EOF
[qlik]
proxy_url = "$1"
qps_api_url = "$QPS"
virtual_proxy = "mashup"
session_cookie = "X-Qlik-Session-mashup"
client_cert = "$CERT"
client_key = "$KEY"
ca_cert = "$CA"
[log]
level = "${GW_LOG_LEVEL:-info}"
format = "${GW_LOG_FORMAT:-text}"
EOF
}

# The sales app of qlik-sim (fields Region, Product, …; chart sales-by-region).
APP=5a1e5000-5a1e-4000-8000-000000000001

ngx_common() { # ngx_common DIR WORKERS
  cat <<EOF
daemon off;
master_process on;
worker_processes $2;
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
# ngx_proxy_server PORT QLIK_UPSTREAM FILES_UPSTREAM COOKIE: nginx as the proxy under test, a
# server block: the engine path /mashup/app/ (websocket upgrade) to upstream QLIK_UPSTREAM, the
# rest of /mashup/ to FILES_UPSTREAM, both with the fixed Qlik session cookie COOKIE. The http
# block around it defines both upstreams and the $connection_upgrade map.
ngx_proxy_server() {
  cat <<EOF
  server {
    listen 127.0.0.1:$1 backlog=4096;
    proxy_http_version 1.1;
    # proxy_set_header is inherited only by locations that set none: repeat Cookie in each.
    location /mashup/app/ {
      proxy_pass http://$2;
      proxy_set_header Cookie "$4";
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_read_timeout 3600s; proxy_send_timeout 3600s;
    }
    location /mashup/ {
      proxy_pass http://$3;
      proxy_set_header Cookie "$4";
      proxy_set_header Connection "";
    }
  }
EOF
}
static_upstream_conf() { # static_upstream_conf DIR ROOT PORT WORKERS: the static upstream nginx's config, to DIR/nginx.conf
  { ngx_common "$1" "$4"; echo "http {"; http_common "$1"
    echo "  server { listen 127.0.0.1:$3; root $2; default_type application/octet-stream; }"
    echo "}"
  } > "$1/nginx.conf"
}
www_files() { # www_files ROOT: the static upstream's files, ROOT/mashup/small.bin (512 B) and big.bin (1 MiB)
  mkdir -p "$1/mashup"
  head -c 512 /dev/zero | tr '\0' 'a' > "$1/mashup/small.bin"
  head -c 1048576 /dev/zero | tr '\0' 'b' > "$1/mashup/big.bin"
}
gw_config() { # gw_config PORT PROXY_URL [SESSION_STORE [AUTH]]: a gateway config; QPS and
  # certificates from the last start_sim. SESSION_STORE: the [session] store keys (default the
  # memory store); AUTH: the [auth] section (default the static user alice).
  # (The default is a variable: quotes inside ${3:-…} in a here-document would be removed.)
  local store='store = "memory"'
  cat <<EOF
[server]
listen = "127.0.0.1:$1"
public_url = "http://127.0.0.1:$1"
[session]
${3:-$store}
# One static user logs in thousands of times a second in the login run.
max_sessions_per_user = 10000000
[security]
# The idle rows open thousands of sockets with one gateway session.
max_websockets_per_session = 100000
${4:-$(gw_auth_static)}
EOF
  gw_qlik_config "$2"
}
gw_auth_static() {
  cat <<EOF
[auth]
provider = "static"
[auth.static]
user_directory = "DEV"
user_id = "alice"
EOF
}
gw_cookie() { # gw_cookie PORT: logs in (static user) and returns the gateway cookie
  curl -fsS -o /dev/null -D - "http://127.0.0.1:$1/_gateway/login" |
    tr -d '\r' | awk -F'[:;] *' 'tolower($1)=="set-cookie"{print $2; exit}'
}
qps_session() { # qps_session: a Qlik session made through the last started sim's QPS API; prints its cookie
  local qsid qps_base xrf=0123456789abcdef
  qsid="bench-$(date +%s%N)-$$"
  qps_base=${QPS%/}
  case "$qps_base" in */qps/*) ;; *) qps_base="$qps_base/qps/mashup" ;; esac
  curl -fsS --cacert "$CA" --cert "$CERT" --key "$KEY" -H "X-Qlik-Xrfkey: $xrf" \
    -H 'Content-Type: application/json' -X POST "$qps_base/session?xrfkey=$xrf" \
    -d "{\"UserDirectory\":\"DEV\",\"UserId\":\"alice\",\"Attributes\":[],\"SessionId\":\"$qsid\"}" >/dev/null
  echo "X-Qlik-Session-mashup=$qsid"
}
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
HZ=$(getconf CLK_TCK)
