#!/usr/bin/env bash
# Builds the container image from the Dockerfile and checks it the way an operator runs it:
#
#   ./scripts/container-test.sh            # about 20 minutes on 2 cores (the PGO release build)
#
# 1. Build `qlik-gateway:test` (target runtime) and `qlik-sim:test` (target qlik-sim).
# 2. Check that the gateway image refuses `demo` (it carries no simulator), then run it read-only,
#    every capability dropped, no new privileges, in front of the qlik-sim image (the compose
#    configuration): /_gateway/healthz and /readyz answer 200, a login gives a session
#    cookie that /_gateway/me accepts, the image's HEALTHCHECK reports healthy, the user is not
#    root, and SIGTERM ends it with exit status 0.
# 3. Bring deploy/compose up (gateway in front of qlik-sim), check healthz/readyz/login through the
#    published port, and bring it down again.
#
# Engine: Docker when a daemon answers (`docker info`), with the Dockerfile's public base images.
# Otherwise rootful podman (podman, buildah, runc, debootstrap are installed from Debian when
# missing); when the public base images cannot be pulled either (no registry), it makes them
# here: Debian bookworm with debootstrap, and a Rust builder from it with this machine's Rust
# toolchain and CA certificates. Set CONTAINER_ENGINE=docker|podman to choose, LOCAL_BASE=1 to
# make the base images locally even when a registry answers, KEEP=1 to leave the images.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/target/container-test
mkdir -p "$WORK"

log() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

HOST_PORT=${HOST_PORT:-18080}
GATEWAY_IMAGE=localhost/qlik-gateway:test
SIM_IMAGE=localhost/qlik-sim:test
LOCAL_DEBIAN=localhost/qlik-gateway-base/debian:bookworm-minbase
# "-llvm": with llvm-tools (llvm-profdata), which the Dockerfile's PGO build needs.
LOCAL_RUST=localhost/qlik-gateway-base/rust:$(rustc --version 2>/dev/null | awk '{print $2}')-bookworm-llvm

# --- engine --------------------------------------------------------------------------------
ENGINE=${CONTAINER_ENGINE:-}
if [ -z "$ENGINE" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
case $ENGINE in
  docker) ;;
  podman)
    [ "$(id -u)" = 0 ] || [ -n "$SUDO" ] || fail "podman runs rootful here: run as root or with sudo"
    missing=()
    for c in podman buildah runc debootstrap; do command -v "$c" >/dev/null || missing+=("$c"); done
    if [ ${#missing[@]} -gt 0 ]; then
      log "installing ${missing[*]}"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # runc rather than crun, and default ulimits no higher than this shell's hard limits:
    # podman's built-in defaults (nofile 1048576, nproc 4194304) fail to apply ("error setting
    # rlimit") where the hard limits are lower. nproc also stays at or below the kernel's
    # pid_max, which some sandboxes enforce as a ceiling.
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo "$nproc")
    [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ] && nproc=$pid_max
    [ "$nofile" = unlimited ] && nofile=1048576
    cat > "$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
CONF
    export CONTAINERS_CONF=$WORK/containers.conf
    ;;
  *) fail "CONTAINER_ENGINE must be docker or podman, not $ENGINE" ;;
esac
engine() { $SUDO "$ENGINE" "$@"; }
log "engine: $ENGINE ($(engine --version))"

# --- base images ---------------------------------------------------------------------------
BUILD_ARGS=()
need_local_base() {
  [ "${LOCAL_BASE:-}" = 1 ] && return 0
  [ "$ENGINE" = docker ] && return 1
  # The Dockerfile's defaults; when they can be pulled, build exactly what users build.
  local rust debian
  rust=$(sed -n 's/^ARG RUST_IMAGE=//p' Dockerfile)
  debian=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' Dockerfile)
  ! { timeout 120 "$ENGINE" pull -q "docker.io/library/$debian" >/dev/null 2>&1 &&
      timeout 600 "$ENGINE" pull -q "docker.io/library/$rust" >/dev/null 2>&1; }
}

make_local_base() {
  if ! engine image exists "$LOCAL_DEBIAN"; then
    log "making $LOCAL_DEBIAN (debootstrap --variant=minbase bookworm)"
    local rootfs=$WORK/rootfs mirror
    mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    $SUDO rm -rf "$rootfs"
    $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
      fail "debootstrap failed, see $WORK/debootstrap.log"
    # apt in the image reaches the same mirrors as this machine's apt: its sources and its
    # Acquire:: settings (proxies, a snapshot mirror's Valid-Until), nothing else.
    $SUDO cp -a /etc/apt/sources.list.d/. "$rootfs/etc/apt/sources.list.d/" 2>/dev/null || true
    if [ -s /etc/apt/sources.list ] || [ -n "$(ls /etc/apt/sources.list.d 2>/dev/null)" ]; then
      $SUDO cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list" 2>/dev/null || $SUDO rm -f "$rootfs/etc/apt/sources.list"
    fi
    for f in /etc/apt/apt.conf.d/*; do
      if grep -q '^[[:space:]]*Acquire::' "$f" 2>/dev/null; then $SUDO cp "$f" "$rootfs/etc/apt/apt.conf.d/"; fi
    done
    $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    $SUDO tar -C "$rootfs" -c . | engine import --change 'CMD ["bash"]' - "$LOCAL_DEBIAN" >/dev/null
    $SUDO rm -rf "$rootfs"
  fi
  if ! engine image exists "$LOCAL_RUST"; then
    log "making $LOCAL_RUST (this machine's Rust toolchain and CA certificates)"
    local ctx=$WORK/rust-context sysroot
    sysroot=$(rustc --print sysroot)
    # llvm-profdata for the PGO build (scripts/build-release.sh): the image has no rustup.
    if [ ! -x "$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata" ]; then
      rustup component add llvm-tools || fail "llvm-tools missing and rustup could not add it"
    fi
    $SUDO rm -rf "$ctx"
    mkdir -p "$ctx/rust"
    # The toolchain without its documentation (share/ is 800 MB of HTML).
    cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/rust/"
    [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$ctx/rust/"
    # The package registries may sit behind this machine's own CA: cargo in the image trusts
    # what this machine trusts.
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca-certificates.crt"
    # Like the official rust image: CARGO_HOME=/usr/local/cargo (the Dockerfile's cache
    # mounts), gcc and libc6-dev for linking.
    cat > "$ctx/Containerfile" <<EOF
FROM $LOCAL_DEBIAN
RUN apt-get update \\
 && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
COPY host-ca-certificates.crt /etc/ssl/host-ca-certificates.crt
ENV CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    CARGO_HTTP_CAINFO=/etc/ssl/host-ca-certificates.crt \\
    SSL_CERT_FILE=/etc/ssl/host-ca-certificates.crt
EOF
    engine build --network host -q -t "$LOCAL_RUST" "$ctx" >/dev/null
    $SUDO rm -rf "$ctx"
  fi
  BUILD_ARGS=(--build-arg "RUST_IMAGE=$LOCAL_RUST" --build-arg "DEBIAN_IMAGE=$LOCAL_DEBIAN")
}

if need_local_base; then
  if [ "$ENGINE" = docker ]; then fail "LOCAL_BASE=1 is for podman"; fi
  make_local_base
fi

# --- build ---------------------------------------------------------------------------------
build() { # build TARGET TAG
  if [ "$ENGINE" = podman ]; then
    # Docker's image format: the OCI format has no HEALTHCHECK and podman drops it silently.
    engine build --format docker --network host "${BUILD_ARGS[@]}" --target "$1" -t "$2" .
  else
    DOCKER_BUILDKIT=1 engine build "${BUILD_ARGS[@]}" --target "$1" -t "$2" .
  fi
}
log "building $GATEWAY_IMAGE"
start=$(date +%s)
build runtime "$GATEWAY_IMAGE" >"$WORK/build-runtime.log" 2>&1 || { tail -40 "$WORK/build-runtime.log"; fail "image build failed, see $WORK/build-runtime.log"; }
echo "built in $(( $(date +%s) - start )) s"
log "building $SIM_IMAGE"
build qlik-sim "$SIM_IMAGE" >"$WORK/build-sim.log" 2>&1 || { tail -40 "$WORK/build-sim.log"; fail "image build failed, see $WORK/build-sim.log"; }

size=$(engine image inspect --format '{{.Size}}' "$GATEWAY_IMAGE")
bin_size=$(engine run --rm --entrypoint stat "$GATEWAY_IMAGE" -c %s /usr/local/bin/qlik-gateway)
echo "image $GATEWAY_IMAGE: $((size / 1000000)) MB; /usr/local/bin/qlik-gateway: $((bin_size / 1000000)) MB"
[ "$bin_size" -lt 40000000 ] || fail "the gateway binary in the image is $bin_size bytes: not stripped?"
engine image inspect --format '{{json .Config.Healthcheck}}' "$GATEWAY_IMAGE" | grep -q healthz ||
  fail "the image has no HEALTHCHECK (built in OCI format?)"

# --- the gateway image on its own ----------------------------------------------------------
NAME=qlik-gateway-test-$$
SIM_NAME=qlik-sim-test-$$
CERTS=qlik-gateway-test-certs-$$
COMPOSE_FILE=$WORK/compose.yaml
compose() {
  if [ "$ENGINE" = docker ]; then docker compose -f "$COMPOSE_FILE" "$@"
  else $SUDO env CONTAINERS_CONF="$CONTAINERS_CONF" podman-compose -f "$COMPOSE_FILE" "$@"
  fi
}
cleanup() {
  engine rm -f -t 0 "$NAME" "$SIM_NAME" >/dev/null 2>&1 || true
  engine volume rm -f "$CERTS" >/dev/null 2>&1 || true
  compose down -v >/dev/null 2>&1 || true
  if [ "${KEEP:-}" != 1 ]; then engine rmi "$GATEWAY_IMAGE" "$SIM_IMAGE" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }
wait_ready() { # wait_ready URL: until /_gateway/readyz answers 200 (or 120 s)
  for _ in $(seq 1 240); do
    [ "$(http_status "$1/_gateway/readyz")" = 200 ] && return 0
    sleep 0.5
  done
  return 1
}
check_login() { # check_login URL: a login gives a cookie that /_gateway/me accepts
  local jar=$WORK/cookies me
  rm -f "$jar"
  [ "$(http_status -c "$jar" "$1/_gateway/login?return_to=/")" = 302 ] || fail "login at $1 did not redirect"
  me=$(curl -sf -b "$jar" --max-time 5 "$1/_gateway/me") || fail "/_gateway/me at $1 refused the session"
  grep -q '"alice"' <<<"$me" || fail "/_gateway/me: $me"
  echo "login ok: $me"
}
check_health() { # check_health URL
  [ "$(http_status "$1/_gateway/healthz")" = 200 ] || fail "$1/_gateway/healthz"
  [ "$(http_status "$1/_gateway/readyz")" = 200 ] || fail "$1/_gateway/readyz"
  echo "healthz 200, readyz 200"
}

log "$GATEWAY_IMAGE carries no simulated Qlik: demo names where to find it"
if out=$(engine run --rm "$GATEWAY_IMAGE" demo 2>&1); then fail "the production image ran demo: $out"; fi
grep -q 'without the simulated Qlik' <<<"$out" || fail "demo in the production image: $out"
echo "demo refused: $out"

log "running $GATEWAY_IMAGE in front of $SIM_IMAGE: read-only, no capabilities, no new privileges"
# As deploy/compose runs them: the gateway in qlik-sim's network namespace (qlik-sim's certificate
# names localhost), its client certificate from qlik-sim's volume, the compose configuration.
engine volume create "$CERTS" >/dev/null
engine run -d --name "$SIM_NAME" -v "$CERTS:/var/lib/qlik-sim" -p "127.0.0.1:$HOST_PORT:8080" \
  "$SIM_IMAGE" --cert-dir=/var/lib/qlik-sim --bind=127.0.0.1 --proxy-port=4443 --qps-port=4243 \
  --control-port=4244 --virtual-proxy=mashup --session-cookie=X-Qlik-Session-mashup >/dev/null
for _ in $(seq 1 120); do
  engine exec "$SIM_NAME" test -s /var/lib/qlik-sim/client_key.pem 2>/dev/null && break
  sleep 0.5
done
engine exec "$SIM_NAME" test -s /var/lib/qlik-sim/client_key.pem || fail "qlik-sim made no certificates"
engine run -d --name "$NAME" --network "container:$SIM_NAME" --read-only --tmpfs /tmp \
  --tmpfs /var/lib/qlik-gateway:mode=1777 --cap-drop ALL --security-opt no-new-privileges \
  -v "$ROOT/deploy/compose/qlik-gateway.toml:/etc/qlik-gateway/qlik-gateway.toml:ro" \
  -v "$CERTS:/etc/qlik-gateway/qlik:ro" "$GATEWAY_IMAGE" >/dev/null
URL=http://127.0.0.1:$HOST_PORT
wait_ready "$URL" || { engine logs "$NAME" | tail -20; fail "the gateway did not become ready"; }
check_health "$URL"
check_login "$URL"
uid=$(engine exec "$NAME" id -u)
[ "$uid" != 0 ] || fail "the gateway runs as root"
echo "runs as uid $uid"
if engine exec "$NAME" touch /usr/local/bin/x 2>/dev/null; then fail "the root file system is writable"; fi
echo "root file system read-only"
if [ "$ENGINE" = podman ]; then
  engine healthcheck run "$NAME" || fail "podman healthcheck run: unhealthy"
  echo "healthcheck: $(engine inspect --format '{{.State.Health.Status}}' "$NAME")"
else
  for _ in $(seq 1 60); do
    status=$(engine inspect --format '{{.State.Health.Status}}' "$NAME")
    [ "$status" = healthy ] && break
    sleep 1
  done
  [ "$status" = healthy ] || fail "healthcheck: $status"
  echo "healthcheck: healthy"
fi
engine stop -t 30 "$NAME" >/dev/null
code=$(engine inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { engine logs "$NAME" | tail -20; fail "exit status after SIGTERM: $code"; }
echo "SIGTERM: exit status 0"
engine rm "$NAME" >/dev/null
engine rm -f -t 0 "$SIM_NAME" >/dev/null

# --- compose -------------------------------------------------------------------------------
if [ "$ENGINE" = podman ] && ! command -v podman-compose >/dev/null; then
  log "installing podman-compose (PyPI)"
  pip install -q podman-compose
fi
# The compose file as shipped, with the images just built instead of a second build, on a
# free port, and found relative to deploy/compose.
awk -v gw="$GATEWAY_IMAGE" -v sim="$SIM_IMAGE" '
    /^  [a-z-]+:$/ { svc = $1 }
    /^    build:/ { skip = 1; print "    image: " (svc == "qlik-sim:" ? sim : gw); next }
    skip && /^      / { next }
    { skip = 0; print }' deploy/compose/compose.yaml |
  sed -e "s|127.0.0.1:8080:8080|127.0.0.1:$HOST_PORT:8080|" \
      -e "s|\./qlik-gateway.toml|$ROOT/deploy/compose/qlik-gateway.toml|" > "$COMPOSE_FILE"
log "compose up ($COMPOSE_FILE, from deploy/compose/compose.yaml)"
compose up -d >"$WORK/compose.log" 2>&1 || { tail -30 "$WORK/compose.log"; fail "compose up"; }
wait_ready "$URL" || { compose logs 2>&1 | tail -30; fail "compose: the gateway did not become ready"; }
check_health "$URL"
check_login "$URL"
gw=$(engine ps -q --filter label=com.docker.compose.service=qlik-gateway)
[ -n "$gw" ] || fail "compose: no qlik-gateway container"
engine exec "$gw" touch /var/lib/qlik-gateway/.write-check ||
  fail "compose: /var/lib/qlik-gateway (the Kerberos replay cache) is not writable"
echo "state directory writable"
log "compose down"
compose down -v >>"$WORK/compose.log" 2>&1 || fail "compose down"
echo "compose down ok"

log "container test passed"
