#!/usr/bin/env bash
# FedAvg in Flower 1.42 and in Strata, side by side on the same machine, one run after the
# other (never at once), on two workloads; writes a table. A benchmark, not part of `make test`.
#
#   scripts/bench-flower.sh [--rounds-w1 N] [--rounds-w2 N] [--only w1|w2] [--out DIR] [--workers K]
#
#   W1  20 clients, PFLlib's Dirichlet(0.1) split (bench/fmnist-dir0.1-20clients-pfllib.json);
#       every client trains every round and evaluates the global model once a round. 5 rounds.
#   W2  1,000 IID clients of 70 samples, 52 train / 18 test (bench/fmnist-iid-1000clients.json,
#       from bench/flower/make_iid_split.py); 10% of the clients train each round, 10%
#       evaluate. 10 rounds.
#
# Both sides: PFLlib's FedAvgCNN, SGD lr 0.005, batch 10, one local epoch, FedAvg weighted by
# training samples, evaluation batches of 100, K clients at a time with one libtorch thread each
# (K = --workers, default nproc: Flower's Ray simulation gets K actors of one CPU, Strata
# `--parallel K`). Flower side: bench/flower (a ServerApp with flwr.serverapp.strategy.FedAvg and a
# ClientApp, run by flwr.simulation.run_simulation). Strata side: `strata simulate`.
#
# Every run goes under bench/flower/memwatch.py (peak PSS and RSS of the whole process tree,
# sampled every 0.5 s). Writes DIR/results.md (default DIR: bench/results/<date>-flower-comparison),
# DIR/raw/ (per-round JSON lines of both sides, memory samples and peaks, Strata's run
# directories) and DIR/logs/. Prints the table.
#
# Installs what it needs, once: PyPI's flwr[simulation]==1.42.0 (with Ray) and torch==2.13.0 in
# a virtualenv under ~/.cache/strata/flower-1.42.0 (about 1.5 minutes, 5 GB), Debian's
# dataset-fashion-mnist, and the strata binary (`make build`) unless STRATA_BIN names one.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh
# shellcheck source=scripts/lib/flower.sh
source scripts/lib/flower.sh

W1_SPLIT=bench/fmnist-dir0.1-20clients-pfllib.json
W2_SPLIT=bench/fmnist-iid-1000clients.json

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "bench-flower: $*" >&2; exit 1; }

rounds_w1=5
rounds_w2=10
only=""
out=""
workers="$(nproc)"
invocation="scripts/bench-flower.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds-w1) rounds_w1="${2:-}"; shift 2 || die "--rounds-w1 needs a value" ;;
    --rounds-w2) rounds_w2="${2:-}"; shift 2 || die "--rounds-w2 needs a value" ;;
    --only) only="${2:-}"; shift 2 || die "--only needs w1 or w2" ;;
    --out) out="${2:-}"; shift 2 || die "--out needs a directory" ;;
    --workers) workers="${2:-}"; shift 2 || die "--workers needs a number" ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
for n in "$rounds_w1" "$rounds_w2" "$workers"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "expected a whole number >= 1, got '$n'"
done
case "$only" in
  "") workloads=(w1 w2) ;;
  w1 | w2) workloads=("$only") ;;
  *) die "--only takes w1 or w2, not '$only'" ;;
esac
out="${out:-bench/results/$(date +%F)-flower-comparison}"

# --- what the runs need -----------------------------------------------------------------
if [ -z "${STRATA_BIN:-}" ]; then
  echo "bench-flower: make build" >&2
  make build
  STRATA_BIN=target/release/strata
fi
[ -x "$STRATA_BIN" ] || die "STRATA_BIN=$STRATA_BIN is not an executable"

flower_env bench-flower

if [ ! -f "$W2_SPLIT" ]; then
  python3 bench/flower/make_iid_split.py --check --out "$W2_SPLIT"
fi

mkdir -p "$out/raw" "$out/logs"
failed=()

# measured NAME COMMAND...: runs COMMAND under memwatch; raw/NAME-memory.{json,jsonl},
# raw/NAME-run.json (command, load average before and after, exit status), logs/NAME.log.
measured() {
  local name="$1" rc=0 load_before load_after
  shift
  load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "bench-flower: [$name] $*" >&2
  python3 bench/flower/memwatch.py --samples "$out/raw/$name-memory.jsonl" --summary "$out/raw/$name-memory.json" \
    -- "$@" >"$out/logs/$name.log" 2>&1 || rc=$?
  load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
  python3 -c 'import json, sys; json.dump({"command": sys.argv[1], "exit_code": int(sys.argv[2]),
    "load_before": sys.argv[3], "load_after": sys.argv[4]}, open(sys.argv[5], "w"), indent=2)' \
    "$*" "$rc" "$load_before" "$load_after" "$out/raw/$name-run.json"
  grep '^memwatch:' "$out/logs/$name.log" | sed "s/^/bench-flower: [$name] /" >&2 || true
  if [ "$rc" -ne 0 ]; then
    echo "bench-flower: [$name] FAILED (exit $rc); the end of $out/logs/$name.log:" >&2
    tail -n 20 "$out/logs/$name.log" >&2
    failed+=("$name")
  fi
  return 0
}

# flower W SPLIT ROUNDS FRACTION: the Flower app on SPLIT, FRACTION of the clients training and
# as many evaluating each round.
flower() {
  local w="$1" split="$2" rounds="$3" fraction="$4"
  measured "$w-flower" "$py" bench/flower/run.py --split "$split" --rounds "$rounds" \
    --fraction-train "$fraction" --fraction-evaluate "$fraction" --actors "$workers" --data-dir "$DATA_DIR" \
    --rounds-out "$out/raw/$w-flower-rounds.jsonl" --summary-out "$out/raw/$w-flower-summary.json"
}

# strata W ARGS...: `strata simulate ARGS` into raw/W-strata/, its rounds.jsonl copied out.
strata() {
  local w="$1" dir="$out/raw/$1-strata"
  shift
  RUST_LOG="${RUST_LOG:-info}" measured "$w-strata" "$STRATA_BIN" simulate "$@" --parallel "$workers" --device cpu --out "$dir"
  if [ -f "$dir/rounds.jsonl" ]; then cp "$dir/rounds.jsonl" "$out/raw/$w-strata-rounds.jsonl"; fi
}

for w in "${workloads[@]}"; do
  # A workload's earlier files in DIR go (the other workload's stay, so --only can fill DIR in two goes).
  rm -rf "$out/raw/$w-"* "$out/logs/$w-"*
  case "$w" in
    w1)
      flower w1 "$W1_SPLIT" "$rounds_w1" 1.0
      strata w1 --dataset fmnist --clients 20 --split "file:$W1_SPLIT" --method fedavg --model cnn \
        --rounds "$rounds_w1" --seed 1 --eval-moment merged
      ;;
    w2)
      flower w2 "$W2_SPLIT" "$rounds_w2" 0.1
      strata w2 --dataset fmnist --clients 1000 --min-clients 1000 --split "file:$W2_SPLIT" --fraction 0.1 \
        --eval-clients cohort --eval-moment merged --method fedavg --model cnn --rounds "$rounds_w2" --seed 1
      ;;
  esac
done

# --- the table ----------------------------------------------------------------------------
strata_version="$("$STRATA_BIN" --version 2>/dev/null || echo strata)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit (working tree with changes)"; fi
machine="$(uname -m), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM"
python3 bench/flower/report.py --out "$out" \
  --fact "Date=$(date '+%F %T %Z')" --fact "Machine=$machine" --fact "Command=\`$invocation\`" \
  --fact "Strata=$strata_version, $STRATA_BIN, commit $commit" --fact "Flower=$versions" \
  --fact "Concurrency=$workers clients at a time, one libtorch thread each (Flower: $workers Ray actors of one CPU; Strata: --parallel $workers)" \
  || failed+=(report)
# What gets committed: tables and summaries; raw records and logs compressed; not Strata's
# --resume state or final model.
rm -rf "$out"/raw/*-strata/state "$out"/raw/*-strata/model.safetensors
gzip -nf "$out"/raw/*-strata/metrics.jsonl "$out"/raw/*memory.jsonl "$out"/logs/*.log 2>/dev/null || true
echo "bench-flower: wrote $out/results.md (raw files in $out/raw, logs in $out/logs)" >&2
if [ ${#failed[@]} -gt 0 ]; then die "failed: ${failed[*]}"; fi
