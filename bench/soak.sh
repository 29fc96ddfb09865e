#!/usr/bin/env bash
# Soak: USERS simulated users log in, open engine websockets, make selections and log out, for
# MINUTES, while qlik-sim ends random Qlik sessions. Reports the gateway's RSS and open file
# descriptors over time, and what the clients saw; exits 1 when a client saw an error,
# mustAuthenticate: true or a lost message, or when Qlik sessions outlive their users (full run).
#   bench/soak.sh                     # 200 users, 5 minutes, release build
#   MINUTES=30 USERS=500 bench/soak.sh
#   SMOKE=1 bench/soak.sh             # the test command's run: 20 users, 15 s, debug build
# Environment: CARGO_TARGET_DIR (default /tmp/bench-target), MINUTES (5) or SECS, USERS (200),
# SAMPLE (seconds between RSS/fd samples, 5), EXPIRE_EVERY_MS (1000) and EXPIRE_FRACTION (0.02):
# every EXPIRE_EVERY_MS each Qlik session ends with probability EXPIRE_FRACTION (its open
# websockets get OnSessionTimedOut); OUT (results directory), BASE_PORT (19300; uses +0..+10),
# SKIP_BUILD (1 = use the binaries already built).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/common.sh
. bench/common.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  USERS=${USERS:-20}; SECS=${SECS:-15}; SAMPLE=${SAMPLE:-1}
  EXPIRE_EVERY_MS=${EXPIRE_EVERY_MS:-500}; EXPIRE_FRACTION=${EXPIRE_FRACTION:-0.05}
fi
USERS=${USERS:-200}
SECS=${SECS:-$(( ${MINUTES:-5} * 60 ))}
SAMPLE=${SAMPLE:-5}
EXPIRE_EVERY_MS=${EXPIRE_EVERY_MS:-1000}
EXPIRE_FRACTION=${EXPIRE_FRACTION:-0.02}
OUT=${OUT:-/tmp/qlik-gateway-soak}
BASE_PORT=${BASE_PORT:-19300}

need_apt curl curl
need_apt python3 python3
need_apt ss iproute2
build_all
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

W=$(mktemp -d /tmp/qlik-gateway-soak.XXXXXX)
rm -rf "$OUT"; mkdir -p "$OUT"
with_cleanup

P_SIM=$((BASE_PORT + 2))   # qlik-sim proxy (plain http), QPS +1, control +2
P_GW=$((BASE_PORT + 10))
start_sim "$P_SIM" --expire-random-every-ms "$EXPIRE_EVERY_MS" --expire-random-fraction "$EXPIRE_FRACTION"
PIDS+=("$SIM_PID")
CONTROL=http://127.0.0.1:$((P_SIM + 2))

# trusted_header: one Qlik user per simulated user (soak0, soak1, …), named by the load generator.
{ cat <<EOF
[server]
listen = "127.0.0.1:$P_GW"
public_url = "http://127.0.0.1:$P_GW"
[session]
store = "memory"
[auth]
provider = "trusted_header"
[auth.trusted_header]
header = "X-Remote-User"
trusted_proxies = ["127.0.0.1/32"]
user_directory = "SOAK"
EOF
  gw_qlik_config "http://127.0.0.1:$P_SIM"
} > "$W/gw.toml"
"$BIN/qlik-gateway" --config "$W/gw.toml" 2>"$OUT/gateway.log" &
GW=$!; PIDS+=("$GW")
wait_port "$P_GW"

# Qlik sessions alive at qlik-sim: at most one per logged-in user; after the last logout, none.
live_qlik() {
  curl -fsS "$CONTROL/control/counters" | python3 -c 'import json,sys; c=json.load(sys.stdin)
print(c["sessions_created"] - c["sessions_expired"] - c["sessions_deleted"])'
}
sample() { # sample LABEL: one line "seconds label rss_kib fds live_qlik_sessions"
  local rss fds
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$GW/status" 2>/dev/null || echo 0)
  fds=$(find "/proc/$GW/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  echo "$(( $(date +%s) - T0 )) $1 $rss $fds $(live_qlik)"
}
T0=$(date +%s)
sample idle-before > "$OUT/samples.txt"
log "soak: $USERS users for ${SECS}s against the gateway ($BIN); sessions expire every ${EXPIRE_EVERY_MS} ms with p=$EXPIRE_FRACTION"
"$LOADGEN" soak "http://127.0.0.1:$P_GW" "$APP" "$USERS" "$SECS" > "$OUT/clients.json" 2>"$OUT/loadgen.log" &
LG=$!; PIDS+=("$LG")
while kill -0 "$LG" 2>/dev/null; do
  sleep "$SAMPLE"
  kill -0 "$LG" 2>/dev/null && sample load >> "$OUT/samples.txt"
done
wait "$LG" || log "load generator exited with $?"
# The clients are gone: what the gateway still holds after a few seconds is what it kept.
for _ in 1 2 3; do sleep "$SAMPLE"; sample idle-after >> "$OUT/samples.txt"; done
# Of those, the keep-alive connections the gateway pools to Qlik's proxy and QPS API (qlik-sim's
# ports have no other client): "proxy qps".
pooled() { ss -Htn state established "( dport = :$1 )" | wc -l; }
echo "$(pooled "$P_SIM") $(pooled $((P_SIM + 1)))" > "$OUT/pooled.txt"
curl -fsS "$CONTROL/control/counters" > "$OUT/sim-counters.json"
curl -fsS "http://127.0.0.1:$P_GW/_gateway/metrics" > "$OUT/metrics.txt" || true

rc=0
python3 "$ROOT/bench/soak_report.py" "$OUT" "$SMOKE" > "$OUT/report.md" || rc=$?
cat "$OUT/report.md"
if [ "$rc" != 0 ]; then
  [ -t 1 ] || cat "$OUT/report.md" >&2
  log "soak failed; outputs in $OUT"
fi
exit "$rc"
