#!/usr/bin/env bash
# Installs what Strata needs, idempotently: Debian's Fashion-MNIST package and PyPI's
# torch (libtorch for tch) in a virtualenv cached outside the checkout, keyed by version.
# A second run finds both and returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "setup: installing Debian's dataset-fashion-mnist"
  apt_install dataset-fashion-mnist
fi

if [ ! -f "$STRATA_VENV/.strata-complete" ]; then
  echo "setup: installing torch==$STRATA_TORCH_VERSION into $STRATA_VENV (about 2 minutes, 4.7 GB)"
  cached_venv "$STRATA_VENV" "torch==$STRATA_TORCH_VERSION"
  "$STRATA_VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$STRATA_TORCH_VERSION') else 1)" \
    || { rm -f "$STRATA_VENV/.strata-complete"; echo "setup: $STRATA_VENV does not hold torch $STRATA_TORCH_VERSION" >&2; exit 1; }
fi
# The TorchScript example and its test load Strata's safetensors back into PyTorch.
if ! "$STRATA_VENV/bin/python" -c "import safetensors.torch" >/dev/null 2>&1; then
  echo "setup: installing safetensors into $STRATA_VENV"
  "$STRATA_VENV/bin/pip" install --quiet --disable-pip-version-check safetensors==0.7.0 packaging==25.0
fi
echo "setup: libtorch from $("$STRATA_VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)"
