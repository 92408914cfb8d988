#!/usr/bin/env bash
# Fidelity of a model brought from PyTorch: exports PFLlib's FedAvgCNN as TorchScript with the
# project's torch (scripts/byo-model/fedavg_cnn.py) into bench/models/, then runs
# bench/fmnist-torchscript.toml (FedAvg with it and with the built-in `cnn`, seeds 1-3).
# A benchmark, not part of `make test`; resumable like any `strata bench`.
#
#   scripts/bench-torchscript.sh [--out DIR]     # default DIR: bench/runs/fmnist-torchscript
#
# Uses the strata binary `make build` makes, unless STRATA_BIN names one.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
scripts/setup.sh >/dev/null
mkdir -p bench/models
if [ ! -f bench/models/fedavg-cnn-seed1.pt ]; then
  "$STRATA_VENV/bin/python" -W ignore scripts/byo-model/fedavg_cnn.py bench/models/fedavg-cnn-seed1.pt --seed 1
fi
if [ -z "${STRATA_BIN:-}" ]; then
  make build >/dev/null
  STRATA_BIN="$CARGO_TARGET_DIR/release/strata"
fi
"$STRATA_BIN" bench bench/fmnist-torchscript.toml "$@"
