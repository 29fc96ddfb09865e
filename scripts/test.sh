#!/usr/bin/env bash
# Runs every check and test of qlik-gateway. Installs what the tests need when it is missing,
# so it works on a bare Debian machine with a Rust toolchain:
#   ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_updated=""
apt_install() { # apt_install PACKAGE...
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
need_apt() { # need_apt COMMAND PACKAGE...: install PACKAGEs when COMMAND is missing
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 || apt_install "$@"
}
need_pkg() { # need_pkg PACKAGE...: Debian packages without a command to probe for
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

need_apt node nodejs
need_apt npm npm
need_apt curl curl
# Headless Chromium for the browser login test (tests/it/kerberos_browser.rs).
need_apt chromium chromium
# Redis for the shared session store tests (tests/it/session_redis.rs start their own redis-server).
need_apt redis-server redis-server
need_apt redis-sentinel redis-sentinel
# nginx and wrk for the benchmark's smoke run (bench/run.sh compares the gateway with nginx).
need_apt nginx nginx
need_apt wrk wrk
# Kerberos: the KDC and client tools for the tests, headers and libclang to build the GSSAPI binding.
need_pkg krb5-kdc krb5-admin-server krb5-user libkrb5-dev libclang-dev

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  log "installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi

log "npm packages for the enigma.js tests"
if [ ! -f tests/js/node_modules/.package-lock.json ] || [ tests/js/package-lock.json -nt tests/js/node_modules ]; then
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi

log "npm packages for the browser tests (Playwright, driving the system Chromium)"
if [ ! -f tests/browser/node_modules/.package-lock.json ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi

log "npm packages for the OIDC tests (a local oidc-provider)"
if [ ! -f tests/oidc/node_modules/.package-lock.json ] || [ tests/oidc/package-lock.json -nt tests/oidc/node_modules ]; then
  npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
fi

log "the React example mashup: npm packages and build (served by the browser tests)"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "Node.js $(node --version 2>/dev/null) is too old for Vite 8 (needs 20.19+ or 22.12+); install a newer Node.js" >&2
  exit 1
fi
if [ ! -f examples/react-mashup/node_modules/.package-lock.json ] || [ examples/react-mashup/package-lock.json -nt examples/react-mashup/node_modules ]; then
  npm ci --prefix examples/react-mashup --no-audit --no-fund --loglevel=error
fi
npm --prefix examples/react-mashup run build --silent >/dev/null

log "deploy files: hadolint, kubectl kustomize + kubernetes-validate, systemd-analyze verify"
bash scripts/deploy-lint.sh

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --all-features -- -D warnings

log "the production build (the Dockerfile's features): lint-clean, and without the simulator"
cargo clippy -p qlik-gateway --lib --bins --locked --no-default-features --features kerberos -- -D warnings
if cargo tree -p qlik-gateway --locked --no-default-features --features kerberos -e normal,build --prefix none |
    grep -E '^(qlik-sim|rcgen) '; then
  echo "the production binary depends on the simulator (see above); keep it behind the demo feature" >&2
  exit 1
fi
grep -q -- 'scripts/build-release.sh --locked --no-default-features --features kerberos' Dockerfile ||
  { echo "the Dockerfile no longer builds the gateway with --no-default-features --features kerberos" >&2; exit 1; }

log "cargo deny: licences and duplicate versions (deny.toml)"
if ! cargo deny --version >/dev/null 2>&1; then
  log "installing cargo-deny (crates.io)"
  cargo install --locked cargo-deny@0.20.2
fi
cargo deny --locked check licenses bans

log "cargo test (all features: Kerberos against a real KDC)"
cargo test --workspace --locked --all-features

# The benchmark, CI-sized (seconds): it must keep producing every figure; values are not checked.
log "benchmark smoke run (bench/run.sh, SMOKE=1)"
SMOKE=1 CARGO_TARGET_DIR="$PWD/target" BENCH_CARGO_FLAGS="--locked --all-features" \
  OUT="$PWD/target/bench-smoke" BASE_PORT=19600 bench/run.sh >/dev/null

# The release build's PGO training load, on the debug binaries the smoke run built: it must run
# without errors, or scripts/build-release.sh (the Dockerfile's build) would fail.
log "PGO training load (bench/pgo-train.sh, debug binaries)"
PGO_SECS=2 BASE_PORT=19350 bench/pgo-train.sh target/debug/qlik-gateway target/debug/qlik-sim \
  target/debug/bench-loadgen 2>/dev/null

# The soak, CI-sized (20 users, ~15 s, Qlik sessions expiring at random): it must run, and no client
# may see mustAuthenticate: true or lose a message.
log "soak smoke run (bench/soak.sh, SMOKE=1)"
SMOKE=1 CARGO_TARGET_DIR="$PWD/target" BENCH_CARGO_FLAGS="--locked --all-features" \
  OUT="$PWD/target/soak-smoke" BASE_PORT=19900 bench/soak.sh >/dev/null
