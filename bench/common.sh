# Helpers shared by bench/run.sh and bench/soak.sh (sourced, not run). Both set CARGO_TARGET_DIR,
# SMOKE and (for start_sim) W, the run's temporary directory, before using them.

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

# build_all: qlik-gateway, qlik-sim and bench-loadgen, release (debug with SMOKE=1: the tests
# have just built those), into $CARGO_TARGET_DIR; sets BIN and LOADGEN. SKIP_BUILD=1 reuses them.
build_all() {
  local profile=release release=--release
  if [ "$SMOKE" = 1 ]; then profile=debug; release=""; fi
  BIN=$CARGO_TARGET_DIR/$profile
  LOADGEN=$BIN/bench-loadgen
  if [ "${SKIP_BUILD:-0}" = 1 ] && [ -x "$BIN/qlik-gateway" ] && [ -x "$BIN/qlik-sim" ] && [ -x "$LOADGEN" ]; then
    log "SKIP_BUILD=1: using the binaries in $BIN"
    return 0
  fi
  log "$profile build (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  # BENCH_CARGO_FLAGS: e.g. the test command's --all-features, so its binaries are reused.
  cargo build $release -q -p qlik-gateway -p qlik-sim ${BENCH_CARGO_FLAGS:-}
  (cd bench/loadgen && { cargo build $release -q --offline 2>/dev/null || cargo build $release -q; })
}

# with_cleanup: on exit, stop the processes whose ids the caller adds to PIDS and remove $W.
with_cleanup() {
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"' EXIT
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
# certificates from start_sim), and [log] at warn.
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
level = "warn"
EOF
}

# The sales app of qlik-sim (fields Region, Product, …; chart sales-by-region).
APP=5a1e5000-5a1e-4000-8000-000000000001
