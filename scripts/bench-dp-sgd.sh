#!/usr/bin/env bash
# DP-SGD's training throughput, Strata against Opacus, one after the other on this machine:
# PFLlib's FedAvgCNN on random 1x28x28 data, expected batch 10 (Poisson sampling), noise
# multiplier 1, per-sample bound 1, one CPU thread each; plain SGD beside each for scale.
#
#   scripts/bench-dp-sgd.sh [SAMPLES [THREADS]]     # default 3000 samples (one epoch), 1 thread
#
# Installs once: torch==2.13.0 and opacus==1.6.0 from PyPI into a cached virtualenv
# (${STRATA_CACHE}/opacus-1.6.0, about 5 GB with torch's CUDA libraries). Outside `make test`.
# Prints both tools' lines; run it on a quiet machine (nothing else training).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh

samples="${1:-3000}"
threads="${2:-1}"
OPACUS_VERSION=1.6.0
venv="$STRATA_CACHE/opacus-$OPACUS_VERSION"
if [ ! -f "$venv/.strata-complete" ]; then
  echo "bench-dp-sgd: installing torch==$STRATA_TORCH_VERSION and opacus==$OPACUS_VERSION into $venv" >&2
fi
cached_venv "$venv" "torch==$STRATA_TORCH_VERSION" "opacus==$OPACUS_VERSION"

cargo build --release -q -p strata-torch --example dp_sgd_throughput
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "opacus $("$venv/bin/python" -c 'import opacus, torch; print(opacus.__version__, "torch", torch.__version__)')"
"$venv/bin/python" bench/dp_sgd/opacus_throughput.py "$samples" "$threads"
"$CARGO_TARGET_DIR/release/examples/dp_sgd_throughput" "$samples" "$threads"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
