#!/usr/bin/env bash
# What secure aggregation adds to a round, in Strata and in Flower 1.42 (SecAgg+), side by side
# on the same machine, one run after the other (never at once). A benchmark, not part of
# `make test`.
#
#   scripts/bench-secagg.sh [--rounds N] [--only s20|s100] [--side flower|strata] [--out DIR] [--workers K]
#
#   S20   20 clients, PFLlib's Dirichlet(0.1) split (bench/fmnist-dir0.1-20clients-pfllib.json).
#   S100  100 IID clients of 700 samples, 520 train / 180 test (bench/fmnist-iid-100clients.json,
#         from bench/flower/make_iid_split.py).
# Every client trains every round and evaluates the model once a round (Strata: the model it
# received, in the same task; Flower: in its evaluate phase); N rounds (default 4), of which the first is left out of the means (Ray's actors start
# in it). Four runs a workload: Flower's legacy workflow without SecAgg+ (the baseline its
# SecAgg+ workflow runs on), Flower with SecAggPlusWorkflow and secaggplus_mod, Strata plain,
# Strata with --secure-aggregation. Both sides: FedAvgCNN, SGD lr 0.005, batch 10, one local
# epoch, K clients at a time with one libtorch thread each (K = --workers, default nproc), and
# SecAgg+ with k = 7, t = 5, clipping range 8, Q = 2^22, M = 2^32.
#
# --side runs one side only and keeps the other's records in DIR (to rerun one side after a
# change; the table then mixes sittings, and says so in its Sides line).
#
# Writes DIR/results.md (default DIR: bench/results/<date>-secagg-cost): seconds per round
# with and without, the seconds added, and the bytes each client uploads; raw per-round
# records in DIR/raw, logs in DIR/logs (compressed). Installs Flower as scripts/bench-flower.sh
# does (a virtualenv under ~/.cache/strata/flower-1.42.0) and builds strata unless STRATA_BIN
# names one.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh
# shellcheck source=scripts/lib/flower.sh
source scripts/lib/flower.sh

S20_SPLIT=bench/fmnist-dir0.1-20clients-pfllib.json
S100_SPLIT=bench/fmnist-iid-100clients.json

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "bench-secagg: $*" >&2; exit 1; }

rounds=4
only=""
side=""
out=""
workers="$(nproc)"
invocation="scripts/bench-secagg.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="${2:-}"; shift 2 || die "--rounds needs a value" ;;
    --only) only="${2:-}"; shift 2 || die "--only needs s20 or s100" ;;
    --side) side="${2:-}"; shift 2 || die "--side needs flower or strata" ;;
    --out) out="${2:-}"; shift 2 || die "--out needs a directory" ;;
    --workers) workers="${2:-}"; shift 2 || die "--workers needs a number" ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ "$rounds" =~ ^[0-9]+$ && "$rounds" -ge 2 ]] || die "--rounds must be at least 2 (the first is left out)"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive number"
case "$only" in
  "") workloads=(s20 s100) ;;
  s20 | s100) workloads=("$only") ;;
  *) die "--only takes s20 or s100" ;;
esac
case "$side" in
  "" | flower | strata) ;;
  *) die "--side takes flower or strata" ;;
esac
out="${out:-bench/results/$(date +%F)-secagg-cost}"

flower_env bench-secagg
if [ -z "${STRATA_BIN:-}" ]; then
  make build >&2
  STRATA_BIN=target/release/strata
fi
[ -x "$STRATA_BIN" ] || die "STRATA_BIN=$STRATA_BIN is not an executable"
if [ ! -f "$S100_SPLIT" ]; then
  python3 bench/flower/make_iid_split.py --clients 100 --per-client 700 --train 520 --check --out "$S100_SPLIT"
fi

mkdir -p "$out/raw" "$out/logs"
failed=()

# run NAME COMMAND...: one run, its log in logs/NAME.log.
run() {
  local name="$1" rc=0
  shift
  echo "bench-secagg: [$name] $*" >&2
  "$@" >"$out/logs/$name.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "bench-secagg: [$name] FAILED (exit $rc); the end of $out/logs/$name.log:" >&2
    tail -n 20 "$out/logs/$name.log" >&2
    failed+=("$name")
  fi
}

flower() {
  local name="$1" split="$2"
  shift 2
  run "$name" "$py" bench/flower/run.py --split "$split" --rounds "$rounds" --fraction-train 1.0 \
    --fraction-evaluate 1.0 --actors "$workers" --data-dir "$DATA_DIR" --num-shares 7 --reconstruction-threshold 5 \
    --rounds-out "$out/raw/$name-rounds.jsonl" --summary-out "$out/raw/$name-summary.json" "$@"
}

strata() {
  local name="$1" split="$2" clients="$3" dir="$out/raw/$1"
  shift 3
  RUST_LOG="${RUST_LOG:-info}" run "$name" "$STRATA_BIN" simulate --dataset fmnist --clients "$clients" \
    --min-clients "$clients" --split "file:$split" --method fedavg --model cnn --rounds "$rounds" --seed 1 \
    --eval-moment merged --parallel "$workers" --device cpu --out "$dir" "$@"
  if [ -f "$dir/rounds.jsonl" ]; then cp "$dir/rounds.jsonl" "$out/raw/$name-rounds.jsonl"; fi
  rm -rf "$dir/state" "$dir"/model*.safetensors
  gzip -nf "$dir/metrics.jsonl" 2>/dev/null || true
}

for w in "${workloads[@]}"; do
  rm -rf "$out/raw/$w-${side}"* "$out/logs/$w-${side}"*
  case "$w" in
    s20) split="$S20_SPLIT" clients=20 ;;
    s100) split="$S100_SPLIT" clients=100 ;;
  esac
  if [ "$side" != strata ]; then
    flower "$w-flower-plain" "$split" --legacy-workflow
    flower "$w-flower-secagg" "$split" --secagg
  fi
  if [ "$side" != flower ]; then
    strata "$w-strata-plain" "$split" "$clients"
    strata "$w-strata-secagg" "$split" "$clients" --secure-aggregation --secagg-num-shares 7 --secagg-threshold 5
  fi
done

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit (working tree with changes)"; fi
machine="$(uname -m), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
python3 - "$out" "$rounds" "$workers" "$(date '+%F %T %Z')" "$machine" "$invocation" "$commit" "$side" <<'PY' || failed+=(report)
import gzip, json, os, statistics, sys
out, rounds, workers, date, machine, invocation, commit, side = sys.argv[1:9]
other = "flower" if side == "strata" else "strata"
stamps = [os.path.getmtime(os.path.join(out, "raw", f)) for f in os.listdir(os.path.join(out, "raw")) if f.startswith(("s20-" + other, "s100-" + other)) and f.endswith("rounds.jsonl")]
import time
other_when = "finished " + time.strftime("%F %T", time.localtime(max(stamps))) if stamps else "missing"
workers = int(workers)

def rows(name):
    path = os.path.join(out, "raw", f"{name}-rounds.jsonl")
    if not os.path.exists(path):
        return None
    return [json.loads(l) for l in open(path) if l.strip()]

def client_rows(name):
    path = os.path.join(out, "raw", name, "metrics.jsonl.gz")
    return [json.loads(l) for l in gzip.open(path, "rt") if l.strip()] if os.path.exists(path) else []

mean = statistics.mean
lines = [
    "# What secure aggregation adds to a round: Strata and Flower 1.42 (SecAgg+)", "",
    f"- Date: {date}", f"- Machine: {machine}", f"- Command: `{invocation}`", f"- Strata commit: {commit}",
    f"- Sides: {'both in this sitting' if not side else side + ' rerun in this sitting; the other side from an earlier one (its runs ' + other_when + ')'}",
    f"- {rounds} rounds a run, {workers} clients training at a time; means over rounds 2-{rounds} "
    "(Flower's first round starts Ray's actors).",
    "- SecAgg+ on both sides: k = 7 neighbours, t = 5, clipping range 8, Q = 2^22, M = 2^32.", "",
    "**Protocol seconds a round**: what SecAgg+ adds outside training, measured inside each run: "
    "the server's wall time in the stages besides training (Flower: setup, share-keys, unmask; "
    "Strata: setup, share-keys, unmask and decoding), plus the clients' encoding and masking "
    f"time summed over the round's clients and divided by the {workers} that run at once. "
    "**Round seconds**: whole rounds with and without, from separate runs (their difference is "
    "within the rounds' own noise of about a second).", "",
    "| workload | side | protocol s/round: stages | masking (clients) | total added | round s plain | round s SecAgg+ | upload/client plain (B) | upload/client SecAgg+ (B) | stage messages/client (B) |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for w in ("s20", "s100"):
    fp, fs = rows(f"{w}-flower-plain"), rows(f"{w}-flower-secagg")
    sp, ss = rows(f"{w}-strata-plain"), rows(f"{w}-strata-secagg")
    if fp and fs:
        steady = lambda rs: [r for r in rs if r["round"] > 1]
        st = steady(fs)
        stages = mean(sum(v for k, v in r["secagg"]["stage_seconds"].items() if k != "collect_masked_vectors") for r in st)
        masking = mean(r["client_mask_seconds"] for r in st) / workers
        plain, secure = mean(r["seconds"] for r in steady(fp)), mean(r["seconds"] for r in st)
        model = 582026 * 4
        masked = mean(r["masked_bytes_per_client"] for r in st)
        lines.append(f"| {w} | Flower | {stages:.3f} | {masking:.3f} | **{stages + masking:.3f}** | {plain:.2f} | "
                     f"{secure:.2f} | {model:,} (f32 model) | {masked:,.0f} | not measured |")
    if sp and ss:
        steady = lambda rs: [r for r in rs if r["round"] >= 1 and r["picked"] > 0]
        st = steady(ss)
        stages = mean(r["secure_aggregation"]["protocol_seconds"] for r in st)
        clients = client_rows(f"{w}-strata-secagg")
        per_round = [sum(c.get("secagg_seconds") or 0 for c in clients if c["round"] == r["round"]) for r in st]
        masking = mean(per_round) / workers
        plain, secure = mean(r["seconds"] for r in steady(sp)), mean(r["seconds"] for r in st)
        up = lambda rs: mean(r["bytes_up"] / r["picked"] for r in steady(rs))
        messages = mean(r["secure_aggregation"]["protocol_bytes"] / r["picked"] for r in st)
        lines.append(f"| {w} | Strata | {stages:.3f} | {masking:.3f} | **{stages + masking:.3f}** | {plain:.2f} | "
                     f"{secure:.2f} | {up(sp):,.0f} | {up(ss):,.0f} | {messages:,.0f} |")
lines += ["", "Upload per client is the training result (Strata: the whole result stream as encoded on "
          "the wire, its masked u32 vector in place of the f32 tensors; Flower: the masked vector as "
          "its mod serializes it, int64 values). Stage messages: Strata's setup, share-keys and unmask "
          "messages and the shares sent with each training task, both ways."]
open(os.path.join(out, "results.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
gzip -nf "$out"/logs/*.log 2>/dev/null || true
echo "bench-secagg: wrote $out/results.md" >&2
if [ ${#failed[@]} -gt 0 ]; then die "failed: ${failed[*]}"; fi
