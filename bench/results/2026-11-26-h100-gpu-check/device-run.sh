#!/bin/bash
# Device check: the CUDA path of `strata` (built here against PyPI's torch 2.11.0+cu130, the
# device image's libtorch, with tch 0.26's 15 bindings that 2.11 lacks stubbed out).
set -uo pipefail
TL=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
export LD_LIBRARY_PATH=$TL
echo "== machine"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
ldd .gpu/strata | grep -E "torch|c10|not found"
echo "== gpu-check (synthetic, MLP, 4 clients, 2 rounds, CUDA then CPU)"
STRATA_BIN=.gpu/strata STRATA_GPU_CHECK_OUT=/tmp/gc timeout 180 scripts/gpu-check.sh --with-cpu; echo "gpu-check exit $?"
cp /tmp/gc/summary.json $OUT/gc-summary.json 2>/dev/null; cp /tmp/gc/metrics.jsonl $OUT/gc-metrics.jsonl 2>/dev/null
echo "== Fashion-MNIST, PFLlib's split, FedCAC, 20 clients, 2 rounds, CUDA"
for dev in cuda; do
  timeout 200 .gpu/strata simulate --config bench/fedcac-fidelity.toml --rounds 2 --seed 0 --device $dev \
    --data-path .gpu/fmnist --out /tmp/fm-$dev > /tmp/fm-$dev.log 2>&1; echo "fmnist $dev exit $?"
  grep -E "round finished|ERROR|error" /tmp/fm-$dev.log | tail -5
  cp /tmp/fm-$dev/rounds.jsonl $OUT/fm-$dev-rounds.jsonl 2>/dev/null; cp /tmp/fm-$dev/metrics.jsonl $OUT/fm-$dev-metrics.jsonl 2>/dev/null
  tail -30 /tmp/fm-$dev.log > $OUT/fm-$dev-log.txt
done
