#!/usr/bin/env bash
# Proves the client's `--device cuda` path on a machine with an NVIDIA GPU: builds the release
# binary (`make build`: PyPI's torch wheel, which carries CUDA), runs `strata simulate` on
# synthetic data for two rounds with every client on CUDA, and prints the device each client
# trained on and its training samples per second. Exits non-zero with the reason where CUDA
# is not usable (no driver, no GPU, or a binary that does not load libtorch's CUDA library).
#
#   scripts/gpu-check.sh              4 clients on cuda:0, files in runs/gpu-check
#   scripts/gpu-check.sh --with-cpu   the same run on the CPU too, for comparison
#
# STRATA_GPU_CHECK_OUT picks the output directory; STRATA_BIN a binary to use instead of
# building one.
set -euo pipefail
cd "$(dirname "$0")/.."

with_cpu=0
for arg in "$@"; do
  case "$arg" in
    --with-cpu) with_cpu=1 ;;
    *) echo "usage: scripts/gpu-check.sh [--with-cpu]" >&2; exit 2 ;;
  esac
done
out="${STRATA_GPU_CHECK_OUT:-runs/gpu-check}"
fail() { echo "gpu-check: FAILED: $*" >&2; exit 1; }

echo "== GPU"
command -v nvidia-smi >/dev/null || fail "no nvidia-smi: no NVIDIA driver on this machine"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader \
  || fail "nvidia-smi sees no GPU"

echo "== build"
if [ -n "${STRATA_BIN:-}" ]; then
  bin="$STRATA_BIN"
else
  # Link libtorch_cuda into the binary (crates/strata-cli/build.rs): without it libtorch sees no GPU.
  STRATA_LINK_CUDA=1 make build
  bin=target/release/strata
fi
# shellcheck source=scripts/env.sh
source scripts/env.sh
[ -x "$bin" ] || fail "no binary at $bin"

echo "== CUDA as libtorch sees it"
if [ -x "$STRATA_VENV/bin/python" ]; then
  "$STRATA_VENV/bin/python" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available:', torch.cuda.is_available(), 'devices:', torch.cuda.device_count())" \
    || fail "PyTorch in $STRATA_VENV does not load"
fi
# libtorch registers its CUDA backend only if libtorch_cuda.so is loaded; a binary linked
# with --as-needed (rustc's default) and no direct use of it drops it, and then reports no
# CUDA device even on a GPU machine.
if command -v readelf >/dev/null && ! readelf -d "$bin" | grep -q 'libtorch_cuda\.so'; then
  fail "$bin does not link libtorch_cuda.so, so libtorch cannot see the GPU: build it with
  STRATA_LINK_CUDA=1 make build (see crates/strata-cli/build.rs)"
fi

run() {
  local device="$1" dir="$2"
  rm -rf "$dir"
  echo "== strata simulate --device $device (2 rounds, 4 clients, synthetic data, MLP)"
  "$bin" simulate --dataset synthetic --split iid --model mlp --clients 4 --rounds 2 \
    --batch-size 64 --seed 1 --device "$device" --out "$dir" >"$dir.log" 2>&1 \
    || { tail -20 "$dir.log" >&2; fail "strata simulate --device $device failed (log: $dir.log)"; }
}

# The device and samples/s of every client that trained, from the run's metrics.jsonl:
# samples/s = training samples × local epochs / training seconds.
report() {
  python3 - "$1" "$2" <<'PY'
import json, sys, tomllib
run, requested = sys.argv[1], sys.argv[2]
config = tomllib.load(open(f"{run}/config.toml", "rb"))
train = config.get("train", {})
steps, epochs = train.get("local_steps"), train.get("local_epochs", 1)
rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
trained = [r for r in rows if r.get("trained")]
if not trained:
    sys.exit(f"gpu-check: FAILED: no client trained in {run}")
# Each row carries the device the client reported (libtorch's name: Cpu, Cuda(0)).
if requested.startswith("cuda"):
    off = sorted({str(r.get("device")) for r in trained if not str(r.get("device", "")).startswith("Cuda")})
    if off:
        sys.exit(f"gpu-check: FAILED: asked for --device {requested}, but clients trained on {', '.join(off)}")
print(f"{'round':>5} {'client':>6} {'device':>8} {'samples':>8} {'seconds':>8} {'samples/s':>10}")
for r in trained:
    samples = steps * train.get("batch_size", 1) if steps else r["train_samples"] * epochs
    rate = samples / r["train_seconds"] if r["train_seconds"] > 0 else float("inf")
    print(f"{r['round']:>5} {r['client']:>6} {r.get('device', '?'):>8} {samples:>8} {r['train_seconds']:>8.3f} {rate:>10.0f}")
summary = json.load(open(f"{run}/summary.json"))
print(f"rounds completed: {summary['rounds_completed']}, final global accuracy: {summary['final'].get('global_accuracy')}")
if summary["rounds_completed"] < 2:
    sys.exit("gpu-check: FAILED: fewer than 2 rounds completed")
PY
}

mkdir -p "$(dirname "$out")"
run cuda "$out"
report "$out" cuda
if [ "$with_cpu" -eq 1 ]; then
  run cpu "$out-cpu"
  report "$out-cpu" cpu
fi
echo "gpu-check: passed: clients trained on CUDA ($out)"
