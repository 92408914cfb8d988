#!/usr/bin/env bash
# Large model: a FedAvg round of `mlp-wide` (1.07 GB of f32 parameters) through a real server
# and real clients on loopback, reporting the server's peak memory (VmHWM) as a multiple of one
# model. The server folds each update into running sums as it arrives and bounds the uploads it
# holds (--upload-budget-mib), so its peak should not grow with the number of clients.
# Not a test (minutes, and several GB per client); its numbers go in the README by hand.
#
#   scripts/large-model.sh [CLIENTS] [ROUNDS]      default 3 clients (one process), 1 round
#
# Each client holds its model, gradients and copies (about 4-5 GB for this model): mind the
# machine's memory. The clients are `strata client --virtual N` on synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/loopback-run.sh
source scripts/lib/loopback-run.sh

clients="${1:-3}"; rounds="${2:-1}"
bin="${STRATA_BIN:-target/release/strata}"
port="${STRATA_PORT:-52$((RANDOM % 900 + 100))}"
[ -x "$bin" ] || { echo "no binary at $bin: run 'make build' first" >&2; exit 1; }

out="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
loopback_config "$out/large.toml" "$rounds" "$clients" $((clients * 40)) mlp-wide 0.01

started=$(date +%s)
# shellcheck disable=SC2086 # STRATA_SERVER_ARGS holds several flags
loopback_run "$bin" "$port" "$out/large.toml" "$out" 1 "$clients" ${STRATA_SERVER_ARGS:-} \
  || { echo "large-model: the server failed; its log:" >&2; tail -20 "$out/server.log" >&2; exit 1; }
wait || true
elapsed=$(( $(date +%s) - started ))

completed=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rounds_completed'])" "$out/run/summary.json")
model_bytes=$(stat -c %s "$out/run/model.safetensors")
python3 - "$peak_kb" "$model_bytes" "$clients" "$completed" "$rounds" "$elapsed" <<'PY'
import sys
peak_kb, model, clients, done, rounds, secs = (int(a) for a in sys.argv[1:])
peak = peak_kb * 1024
print(f"large-model: {clients} clients, {done} of {rounds} rounds in {secs} s; model {model / 2**30:.2f} GiB")
print(f"large-model: server peak memory (VmHWM) {peak / 2**30:.2f} GiB = {peak / model:.1f} models")
PY
echo "large-model: files in $out"
