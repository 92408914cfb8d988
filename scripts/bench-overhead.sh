#!/usr/bin/env bash
# The framework's overhead: a round's wall time in `strata simulate --parallel 1` against the
# same clients' local training without the framework (crates/strata-cli/examples/local_baseline.rs:
# same data, partition, model, seeds; no server, no gRPC).
#
#   scripts/bench-overhead.sh                      Fashion-MNIST, 20 clients, cnn, 2 rounds
#   ROUNDS=3 REPEATS=2 scripts/bench-overhead.sh   more rounds, two simulations
#
# Settings (environment): ROUNDS (2), REPEATS (simulations, 1), CLIENTS (20), DATASET (fmnist),
# SPLIT (file:bench/fmnist-dir0.1-20clients-pfllib.json), MODEL (cnn), SEED (1), DATA_PATH,
# BASELINE_THREADS (libtorch threads of the baseline runs; default "1" plus the count the
# simulation gives its one training client, nproc / parallel, when that differs),
# PIN_CPU (a CPU number: run everything under `taskset -c PIN_CPU`, so that the simulation
# also trains with one thread and the server shares that core; the results file then ends
# in -cpuN.md).
#
# The runs alternate on the same machine, baseline(s) / simulate / baseline(s) / ..., so that
# machine noise shows in the spread. Writes bench/results/overhead-<YYYY-MM-DD>.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

ROUNDS="${ROUNDS:-2}"
REPEATS="${REPEATS:-1}"
CLIENTS="${CLIENTS:-20}"
DATASET="${DATASET:-fmnist}"
SPLIT="${SPLIT:-file:bench/fmnist-dir0.1-20clients-pfllib.json}"
MODEL="${MODEL:-cnn}"
SEED="${SEED:-1}"
PARALLEL=1
pin=()
if [ -n "${PIN_CPU:-}" ]; then pin=(taskset -c "$PIN_CPU"); fi
# What `simulate` computes: available cores (nproc respects the affinity, as Rust's
# available_parallelism does) divided among the clients that train at once.
sim_threads=$(($("${pin[@]}" nproc) / PARALLEL))
[ "$sim_threads" -ge 1 ] || sim_threads=1
if [ -z "${BASELINE_THREADS:-}" ]; then
  BASELINE_THREADS=1
  if [ "$sim_threads" -ne 1 ]; then BASELINE_THREADS="1 $sim_threads"; fi
fi

echo "bench-overhead: building (release)" >&2
cargo build --release -p strata-cli --bins --examples
strata="$CARGO_TARGET_DIR/release/strata"
baseline="$CARGO_TARGET_DIR/release/examples/local_baseline"

settings=(--dataset "$DATASET" --clients "$CLIENTS" --split "$SPLIT" --model "$MODEL" --rounds "$ROUNDS" --seed "$SEED")
if [ -n "${DATA_PATH:-}" ]; then settings+=(--data-path "$DATA_PATH"); fi

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
tmp="$(mktemp -d)"
echo "bench-overhead: run files in $tmp" >&2
order=()
now() { date +%s.%N; }

run_baseline() { # THREADS
  local n=${#order[@]} t0
  echo "bench-overhead: [$n] baseline, $1 thread(s)" >&2
  t0=$(now)
  "${pin[@]}" "$baseline" "${settings[@]}" --threads "$1" --device cpu >"$tmp/run$n.baseline.jsonl" 2>"$tmp/run$n.baseline.log"
  awk -v a="$(now)" -v b="$t0" 'BEGIN { print a - b }' >"$tmp/run$n.wall"
  order+=("baseline:$1")
}

run_simulate() {
  local n=${#order[@]} t0
  echo "bench-overhead: [$n] simulate --parallel $PARALLEL" >&2
  t0=$(now)
  RUST_LOG=info "${pin[@]}" "$strata" simulate "${settings[@]}" --eval-clients all --eval-moment both --parallel "$PARALLEL" --device cpu --out "$tmp/run$n.simulate" \
    >"$tmp/run$n.simulate.out" 2>"$tmp/run$n.simulate.log"
  awk -v a="$(now)" -v b="$t0" 'BEGIN { print a - b }' >"$tmp/run$n.wall"
  order+=("simulate")
}

read -r -a threads_list <<<"$BASELINE_THREADS"
reversed=()
for ((i = ${#threads_list[@]} - 1; i >= 0; i--)); do reversed+=("${threads_list[i]}"); done
for t in "${threads_list[@]}"; do run_baseline "$t"; done
for ((rep = 0; rep < REPEATS; rep++)); do
  run_simulate
  if ((rep % 2 == 0)); then list=("${reversed[@]}"); else list=("${threads_list[@]}"); fi
  for t in "${list[@]}"; do run_baseline "$t"; done
done

date_iso="$(date +%F)"
out="bench/results/overhead-$date_iso${PIN_CPU:+-cpu$PIN_CPU}.md"
mkdir -p bench/results
command_line="${PIN_CPU:+PIN_CPU=$PIN_CPU }ROUNDS=$ROUNDS REPEATS=$REPEATS CLIENTS=$CLIENTS SPLIT=$SPLIT MODEL=$MODEL SEED=$SEED scripts/bench-overhead.sh"
BENCH_LOAD="before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg)" BENCH_TMP="$tmp" BENCH_ORDER="${order[*]}" BENCH_DATE="$(date '+%F %T %Z')" BENCH_ARCH="$(uname -m)" \
  BENCH_NPROC="$(nproc)${PIN_CPU:+ (runs pinned to CPU $PIN_CPU)}" BENCH_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  BENCH_COMMAND="$command_line" BENCH_SETTINGS="${settings[*]}" BENCH_PARALLEL="$PARALLEL" BENCH_ROUNDS="$ROUNDS" \
  python3 - >"$out" <<'PY'
import json, os, re, statistics as st

env = os.environ
tmp, rounds = env["BENCH_TMP"], int(env["BENCH_ROUNDS"])
order = env["BENCH_ORDER"].split()

def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]

runs = []  # (index, kind, threads, data)
for i, kind in enumerate(order):
    wall = float(open(f"{tmp}/run{i}.wall").read())
    if kind.startswith("baseline:"):
        m = {o["measure"]: o for o in lines(f"{tmp}/run{i}.baseline.jsonl")}
        runs.append((i, "baseline", int(kind.split(":")[1]), {"m": m, "wall": wall}))
    else:
        d = f"{tmp}/run{i}.simulate"
        rr = sorted(lines(f"{d}/rounds.jsonl"), key=lambda r: r["round"])
        metrics = lines(f"{d}/metrics.jsonl")
        train_s = [sum(r["train_seconds"] for r in metrics if r["round"] == k and r.get("trained")) for k in range(rounds)]
        log = re.sub(r"\x1b\[[0-9;]*m", "", open(f"{tmp}/run{i}.simulate.log").read())
        t = re.search(r"simulation starting.*?threads=(\d+)", log)
        runs.append((i, "simulate", int(t.group(1)) if t else None,
                     {"rounds": rr, "train_s": train_s, "wall": wall}))

sims = [r for r in runs if r[1] == "simulate"]
bases = {}
for r in runs:
    if r[1] == "baseline":
        bases.setdefault(r[2], []).append(r)

def agg(xs):
    return st.mean(xs), min(xs), max(xs)

def fmt(xs, digits=2):
    m, lo, hi = agg(xs)
    return f"{m:.{digits}f}" if len(xs) == 1 else f"{m:.{digits}f} [{lo:.{digits}f}–{hi:.{digits}f}]"

def pct(x):
    return f"{100 * x:+.1f} %"

def overhead(sim, base):
    m = st.mean(sim) / st.mean(base) - 1
    lo, hi = min(sim) / max(base) - 1, max(sim) / min(base) - 1
    return pct(m) if (len(sim), len(base)) == (1, 1) else f"{pct(m)} [{pct(lo)} … {pct(hi)}]"

sim_round = [[s[3]["rounds"][k]["seconds"] for s in sims] for k in range(rounds)]
sim_train = [[s[3]["train_s"][k] for s in sims] for k in range(rounds)]
sim_eval_round = [s[3]["rounds"][rounds]["seconds"] for s in sims if len(s[3]["rounds"]) > rounds]
sim_threads = sorted({s[2] for s in sims if s[2] is not None})

o = []
o.append(f"# Framework overhead — {env['BENCH_DATE']}\n")
o.append(f"- Machine: `{env['BENCH_ARCH']}`, nproc {env['BENCH_NPROC']}, CPU: {env['BENCH_CPU']}")
o.append(f"- Load average (1, 5, 15 min): {env['BENCH_LOAD']} — other work on the machine shows here")
o.append(f"- Command: `{env['BENCH_COMMAND']}`")
o.append(f"- Settings (both sides): `{env['BENCH_SETTINGS']}`, device cpu")
o.append(f"- Simulation: `strata simulate ... --parallel {env['BENCH_PARALLEL']}`; libtorch threads of its training client "
         f"(from its log): {', '.join(map(str, sim_threads)) or 'unknown'}")
o.append("- Baseline: `local_baseline` (crates/strata-cli/examples) — the same clients trained one after another in one "
         "thread, no server, no gRPC")
o.append(f"- Run order: {', '.join(order)}\n")
o.append("Seconds per training round; mean [min–max] over runs. Overhead = simulate round ÷ baseline − 1. "
         "(a) training alone, (b) training plus the client's two evaluations (merged model before, trained model after), "
         "FedAvg = (b) plus importing, exporting and averaging the parameters in process.\n")
for threads, bl in sorted(bases.items()):
    a = [[b[3]["m"]["train"]["seconds"][k] for b in bl] for k in range(rounds)]
    b_ = [[b[3]["m"]["train_eval"]["seconds"][k] for b in bl] for k in range(rounds)]
    f = [[b[3]["m"]["fedavg"]["seconds"][k] for b in bl] for k in range(rounds)]
    o.append(f"## Baseline with {threads} libtorch thread(s) ({len(bl)} runs)\n")
    o.append("| round | baseline (a) train | baseline (b) train+eval | baseline FedAvg | simulate round "
             "| simulate Σ client train | overhead vs (b) | overhead vs (a) |")
    o.append("|---|---|---|---|---|---|---|---|")
    for k in range(rounds):
        o.append(f"| {k} | {fmt(a[k])} | {fmt(b_[k])} | {fmt(f[k])} | {fmt(sim_round[k])} | {fmt(sim_train[k])} "
                 f"| {overhead(sim_round[k], b_[k])} | {overhead(sim_round[k], a[k])} |")
    tot = lambda rows: [sum(col) for col in zip(*rows)]
    o.append(f"| all | {fmt(tot(a))} | {fmt(tot(b_))} | {fmt(tot(f))} | {fmt(tot(sim_round))} | {fmt(tot(sim_train))} "
             f"| {overhead(tot(sim_round), tot(b_))} | {overhead(tot(sim_round), tot(a))} |")
    if rounds > 1:
        later = lambda rows: tot(rows[1:])
        o.append(f"| 1..{rounds - 1} | {fmt(later(a))} | {fmt(later(b_))} | {fmt(later(f))} | {fmt(later(sim_round))} "
                 f"| {fmt(later(sim_train))} | {overhead(later(sim_round), later(b_))} "
                 f"| {overhead(later(sim_round), later(a))} |")
    setup = [b[3]["m"]["setup"]["seconds"] for b in bl]
    o.append(f"\nBaseline setup (load data, partition, build {len(bl) and bl[0][3]['m']['setup']['clients']} clients; "
             f"not in any round): {fmt(setup)} s; process wall {fmt([b[3]['wall'] for b in bl])} s.\n")

o.append("## Simulation runs\n")
o.append(f"- Evaluation-only last round: {fmt(sim_eval_round) if sim_eval_round else 'n/a'} s; "
         f"process wall (start to exit): {fmt([s[3]['wall'] for s in sims])} s.")
o.append("- Round 0 of the simulation starts when every client has joined; clients load the data and build their "
         "tensors after joining, so round 0 includes that loading (compare the baseline's setup). Rounds ≥ 1 are the "
         "steady state.")
o.append("- 'Σ client train' is the sum of the clients' own `train_seconds` (metrics.jsonl): time inside `train_local` "
         "within the framework, so round − Σ train is what the framework adds around training (evaluations included).\n")

o.append("## Accuracy check (personalized accuracy, weighted by test samples)\n")
o.append("| round | " + " | ".join(f"run {r[0]} {r[1]}" + (f" ({r[2]} t)" if r[1] == "baseline" else "") for r in runs) + " |")
o.append("|---|" + "---|" * len(runs))
for k in range(rounds):
    cells = []
    for r in runs:
        if r[1] == "baseline":
            cells.append(f"{r[3]['m']['accuracy']['personalized'][k]:.4f}")
        else:
            v = r[3]["rounds"][k].get("personalized_accuracy")
            cells.append(f"{v:.4f}" if v is not None else "—")
    o.append(f"| {k} | " + " | ".join(cells) + " |")

o.append("\n## Raw per-round seconds\n")
for r in runs:
    if r[1] == "baseline":
        m = r[3]["m"]
        o.append(f"- run {r[0]} baseline {r[2]} thread(s): train {m['train']['seconds']}, "
                 f"train+eval {m['train_eval']['seconds']}, fedavg {m['fedavg']['seconds']}")
    else:
        o.append(f"- run {r[0]} simulate: rounds {[round(x['seconds'], 3) for x in r[3]['rounds']]}, "
                 f"Σ client train {[round(x, 3) for x in r[3]['train_s']]}")
print("\n".join(o))
PY
cat "$out"
echo "bench-overhead: wrote $out (run files in $tmp)" >&2
