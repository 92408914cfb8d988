#!/usr/bin/env bash
# Your own model, end to end: a PyTorch model (scripts/byo-model/model.py) exported as
# TorchScript, trained federated by `strata simulate` (20 clients on PFLlib's Dirichlet(0.1)
# split of Fashion-MNIST, FedAvg), and loaded back into the same Python class to be measured
# on Fashion-MNIST's official test set.
#
#   scripts/byo-model.sh [--rounds N] [--out DIR]   # defaults: 5 rounds, runs/byo-model
#
# Uses the project's Python (scripts/setup.sh's virtualenv, with torch and safetensors) and the
# strata binary `make build` makes, unless STRATA_BIN names one.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
rounds=5
out=runs/byo-model
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--out DIR]" >&2; exit 2 ;;
  esac
done
scripts/setup.sh >/dev/null
if [ -z "${STRATA_BIN:-}" ]; then
  make build >/dev/null
  STRATA_BIN="$PWD/target/release/strata"
fi
mkdir -p "$out"
out="$(realpath "$out")"
py() { "$STRATA_VENV/bin/python" -W ignore "$@"; }
py scripts/byo-model/export.py "$out/model.pt"
"$STRATA_BIN" simulate --model "torchscript:$out/model.pt" --rounds "$rounds" \
  --split file:bench/fmnist-dir0.1-20clients-pfllib.json --out "$out/run"
echo "PyTorch, on Fashion-MNIST's 10,000 test images:"
(cd scripts/byo-model && py evaluate.py "$out/run/model.safetensors" --idx /usr/share/datasets/fashion-mnist)
