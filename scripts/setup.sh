#!/usr/bin/env bash
# Installs what Strata needs, idempotently: Debian's Fashion-MNIST package and PyPI's
# torch (libtorch for tch) in a virtualenv cached outside the checkout, keyed by version.
# A second run finds both and returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "setup: installing Debian's dataset-fashion-mnist"
  apt_install dataset-fashion-mnist
fi

marker="$STRATA_VENV/.strata-complete"
if [ ! -f "$marker" ]; then
  echo "setup: installing torch==$STRATA_TORCH_VERSION into $STRATA_VENV (about 2 minutes, 4.7 GB)"
  # Debian splits venv support (ensurepip) into python3-venv.
  python3 -c "import ensurepip, venv" >/dev/null 2>&1 || apt_install python3-venv
  rm -rf "$STRATA_VENV"
  mkdir -p "$STRATA_CACHE"
  python3 -m venv "$STRATA_VENV"
  "$STRATA_VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$STRATA_TORCH_VERSION"
  "$STRATA_VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$STRATA_TORCH_VERSION') else 1)"
  touch "$marker"
fi
echo "setup: libtorch from $("$STRATA_VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)"
