#!/usr/bin/env bash
# The release binaries as shipped (the Dockerfile and bench/run.sh build them this way): qlik-sim
# and bench-loadgen in plain release, the gateway with profile-guided optimisation on top of the
# release profile's LTO. PGO: an instrumented gateway runs bench/pgo-train.sh's load, LLVM merges
# what it counted, and the final build lays out and inlines the code by it. Worth about a quarter
# of the instructions of a proxied request (BENCHMARKS.md, "Build: LTO and PGO").
#
#   scripts/build-release.sh [CARGO FLAGS FOR THE GATEWAY...]   # e.g. --locked --features kerberos
#   PGO=0 scripts/build-release.sh ...                           # the plain release build
#
# Binaries in $CARGO_TARGET_DIR/release (default ./target/release); the instrumented build and
# its profile in $CARGO_TARGET_DIR/pgo. Needs rustup's llvm-tools component for llvm-profdata
# (added when missing), curl and python3 for the training. LOCKED=1 passes --locked to the
# qlik-sim and bench-loadgen builds too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
T=$CARGO_TARGET_DIR
log() { printf '==> %s\n' "$*" >&2; }
locked=""; [ "${LOCKED:-0}" = 1 ] && locked=--locked

log "release build of qlik-sim and bench-loadgen (the training's Qlik and load; bench/run.sh's too)"
cargo build --release $locked -p qlik-sim
(cd bench/loadgen && cargo build --release $locked)
if [ "${PGO:-1}" = 0 ]; then
  log "release build of the gateway, no PGO"
  # A PGO binary copied here before would otherwise stay: cargo links its own output anew.
  rm -f "$T/release/qlik-gateway"
  exec cargo build --release "$@" -p qlik-gateway
fi

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
  log "adding rustup's llvm-tools component (llvm-profdata, for PGO)"
  rustup component add llvm-tools >&2 ||
    { log "no llvm-profdata at $profdata and rustup could not add llvm-tools: install it, or build with PGO=0"; exit 1; }
fi

# Separate target directory: RUSTFLAGS differ, and sharing one would rebuild every crate each time.
P=$T/pgo
rm -rf "$P/profiles"
log "instrumented gateway build ($P)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$P/profiles" CARGO_TARGET_DIR=$P \
  cargo build --release "$@" -p qlik-gateway
log "training (bench/pgo-train.sh)"
LLVM_PROFILE_FILE="$P/profiles/gateway-%p-%m.profraw" \
  bench/pgo-train.sh "$P/release/qlik-gateway" "$T/release/qlik-sim" "$T/release/bench-loadgen"
"$profdata" merge -o "$P/gateway.profdata" "$P"/profiles/*.profraw

log "optimised gateway build"
# Functions the training never reached have no profile; that is expected, not worth a warning each.
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$P/gateway.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
  CARGO_TARGET_DIR=$P/use cargo build --release "$@" -p qlik-gateway
mkdir -p "$T/release"
cp "$P/use/release/qlik-gateway" "$T/release/qlik-gateway.tmp"
mv "$T/release/qlik-gateway.tmp" "$T/release/qlik-gateway"
log "built $T/release/qlik-gateway (PGO)"
