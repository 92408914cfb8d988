#!/usr/bin/env bash
# Scale: simulated federations far larger than their cohorts, one run after the other, each
# measured for its seconds per round, its join time and the whole process's peak memory.
# Not a test: numbers vary with the machine; the table goes in the README.
#
#   scripts/bench-scale.sh [--only NAME] [--out DIR]
#
# Runs (FedProx's synthetic data with 10 features, 4 samples a client (3 train, 1 test), so
# that a million clients' data is 160 MB; the MLP 10 -> 200 -> 200 -> 10):
#   fedavg-1k     1,000 clients, 100 a round, FedAvg, 5 rounds (the yardstick for 100k)
#   fedavg-100k   100,000 clients, 100 a round, FedAvg, 5 rounds
#   fedavg-1m     1,000,000 clients, 100 a round, FedAvg, 3 rounds
#   fedper-10k, ditto-10k, fedcac-10k: 10,000 clients, 1% a round, 5 rounds, with 64 MiB of
#                 personal state in memory, so the rest spills to disk
# Output: DIR/results.md and each run's directory (rounds.jsonl, population.json, time.txt);
# default DIR bench/results/<date>-scale.
set -euo pipefail
cd "$(dirname "$0")/.."

only=""
out="bench/results/$(date -u +%Y-%m-%d)-scale"
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bin="${STRATA_BIN:-target/release/strata}"
if [ -z "${STRATA_BIN:-}" ]; then make build >/dev/null; fi
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
mkdir -p "$out"

# config FILE CLIENTS ROUNDS FRACTION METHOD MODEL
config() {
  cat > "$1" <<TOML
rounds = $3
clients = $2
min_clients = $2
fraction = $4
round_timeout_secs = 600
seed = 1
method = "$5"

[data]
dataset = "synthetic"
split = "iid"
train_fraction = 0.75

[data.synthetic]
samples = $(( $2 * 4 ))
dim = 10

[model]
name = "$6"

[train]
lr = 0.05
batch_size = 10
local_epochs = 1
TOML
}

# run NAME CLIENTS ROUNDS FRACTION METHOD [SIMULATE FLAGS...]
run() {
  local name="$1" clients="$2" rounds="$3" fraction="$4" method="$5"
  shift 5
  if [ -n "$only" ] && [ "$only" != "$name" ]; then return 0; fi
  local dir="$out/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  config "$dir/config.toml" "$clients" "$rounds" "$fraction" "$method" mlp
  echo "scale: $name ($clients clients, $method, $rounds rounds)" >&2
  MALLOC_ARENA_MAX=2 /usr/bin/time -f "%M %e" -o "$dir/time.txt" \
    "$bin" simulate --config "$dir/config.toml" --device cpu --out "$dir/run" "$@" > "$dir/stdout.txt" 2> "$dir/stderr.txt" \
    || { echo "scale: $name failed; see $dir/stderr.txt" >&2; tail -5 "$dir/stderr.txt" >&2; return 1; }
  slim "$dir"
}

# slim DIR: what is committed of a run: its tables and summaries, raw records compressed; not
# the --resume state (a million identities are 60 MB) nor the model.
slim() {
  rm -rf "$1/run/state" "$1/run/model.safetensors"
  gzip -nf "$1/run/metrics.jsonl" "$1/stderr.txt"
}

run fedavg-1k 1000 5 0.1 fedavg
run fedavg-100k 100000 5 0.001 fedavg
run fedavg-1m 1000000 3 0.0001 fedavg
for method in fedper ditto fedcac; do
  run "$method-10k" 10000 5 0.01 "$method" --personal-memory 64
done

python3 - "$out" <<'PY'
import json, os, statistics, sys
out = sys.argv[1]
rows = []
for name in sorted(os.listdir(out)):
    d = os.path.join(out, name)
    if not os.path.isfile(os.path.join(d, "time.txt")) or not os.path.isfile(os.path.join(d, "run", "summary.json")):
        continue
    peak_kb, wall = open(os.path.join(d, "time.txt")).read().split()[-2:]
    rounds = [json.loads(l) for l in open(os.path.join(d, "run", "rounds.jsonl"))]
    summary = json.load(open(os.path.join(d, "run", "summary.json")))
    pop = json.load(open(os.path.join(d, "run", "population.json")))
    training = [r["seconds"] for r in rounds if r["round"] < summary["rounds"]]
    p = pop["personal_state"]
    rows.append((name, summary["clients"], summary["method"], len(training),
                 statistics.median(training) if training else float("nan"),
                 pop["join_seconds"], float(wall), int(peak_kb) / 1024 / 1024,
                 int(peak_kb) * 1024 / summary["clients"],
                 p["peak_memory_bytes"] / 2**20, p["on_disk"], p["disk_bytes"] / 2**20,
                 summary["final"]["global_accuracy"] or summary["final"]["personalized_accuracy"] or 0.0))
with open(os.path.join(out, "results.md"), "w") as f:
    f.write("| run | clients | method | rounds | s/round (median) | join s | wall s | peak RSS GiB | "
            "bytes of peak RSS per client | personal state in memory (peak MiB) | clients on disk | disk MiB | final accuracy |\n")
    f.write("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    for r in rows:
        f.write("| %s | %d | %s | %d | %.2f | %.1f | %.1f | %.2f | %.0f | %.1f | %d | %.1f | %.1f %% |\n"
                % (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], 100 * r[12]))
print(open(os.path.join(out, "results.md")).read())
PY
