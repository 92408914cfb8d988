# shellcheck shell=bash
# Flower's side of the peer benchmarks (scripts/bench-flower.sh, scripts/bench-secagg.sh):
# Debian's Fashion-MNIST and a cached virtualenv with flwr[simulation] beside the project's
# torch, checked for the versions the comparisons name. Source after scripts/env.sh and
# scripts/lib/install.sh.

FLOWER_VERSION=1.42.0
FLOWER_VENV="$STRATA_CACHE/flower-$FLOWER_VERSION"
DATA_DIR=/usr/share/datasets/fashion-mnist

# flower_env NAME: installs what is missing (NAME starts the messages), then sets `py` to the
# virtualenv's python and `versions` to what it holds; exits naming the problem otherwise.
flower_env() {
  local name="$1"
  if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
    echo "$name: installing Debian's dataset-fashion-mnist" >&2
    apt_install dataset-fashion-mnist
  fi
  if [ ! -f "$FLOWER_VENV/.strata-complete" ]; then
    echo "$name: installing flwr[simulation]==$FLOWER_VERSION and torch==$STRATA_TORCH_VERSION into $FLOWER_VENV (about 1.5 minutes, 5 GB)" >&2
    cached_venv "$FLOWER_VENV" "flwr[simulation]==$FLOWER_VERSION" "torch==$STRATA_TORCH_VERSION"
  fi
  py="$FLOWER_VENV/bin/python"
  # shellcheck disable=SC2034 # read by the scripts that source this
  versions="$("$py" -c '
import flwr, ray, torch, sys
print(f"flwr {flwr.__version__}, ray {ray.__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}")
if flwr.__version__ != sys.argv[1] or not torch.__version__.startswith(sys.argv[2]):
    sys.exit(1)
' "$FLOWER_VERSION" "$STRATA_TORCH_VERSION")" || {
    rm -f "$FLOWER_VENV/.strata-complete"
    echo "$name: $FLOWER_VENV does not hold flwr $FLOWER_VERSION and torch $STRATA_TORCH_VERSION; run again to reinstall" >&2
    exit 1
  }
}
