#!/usr/bin/env bash
# Big models at wire speed, in one sitting: the bare tonic stream (`wire_speed`, the same
# gigabyte with Strata's messages, parts and windows, one stream and two at once) and, right
# after, real Strata rounds of `mlp-wide` (1.07 GB) with 2 and 4 clients (`large-model.sh`).
# Writes each transfer's speed in the round (a round's download and upload phases, divided
# among its clients) beside the bare stream's, and the server's peak in models, to
# OUT/results.md; raw outputs beside it.
#
#   scripts/bench-big-model.sh [OUT]        default bench/runs/big-model-<date>
#
# About 5 minutes and up to ~14 GB of memory; run it on a quiet machine (one thing at a time).
# The 4-client run hosts its clients as a population (2 at work at once, as on 2 cores), since
# 4 client daemons of this model would need some 18 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh

out="${1:-bench/runs/big-model-$(date +%Y-%m-%d)}"
mkdir -p "$out"
cargo build --release -p strata-server --example wire_speed >/dev/null 2>&1 \
  || { echo "bench-big-model: cannot build the wire_speed example" >&2; exit 1; }
[ -x target/release/strata ] || { echo "bench-big-model: run 'make build' first" >&2; exit 1; }

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -m)"
} > "$out/machine.txt"

echo "bench-big-model: the bare stream (1 GiB, 3 passes, then 2 streams at once)" >&2
"$CARGO_TARGET_DIR/release/examples/wire_speed" 1024 3 2 > "$out/wire_speed.txt"

for clients in 2 4; do
  echo "bench-big-model: a Strata run with $clients clients, 2 rounds" >&2
  population=0
  [ "$clients" -gt 2 ] && population=1
  LOOPBACK_POPULATION=$population scripts/large-model.sh "$clients" 2 > "$out/large-$clients.txt"
  files="$(sed -n 's/^large-model: files in //p' "$out/large-$clients.txt")"
  [ -n "$files" ] && [ -d "$files/run" ] \
    || { echo "bench-big-model: large-model.sh named no run directory" >&2; exit 1; }
  run="$files/run"
  cp "$run/rounds.jsonl" "$out/rounds-$clients.jsonl"
  cp "$run/metrics.jsonl" "$out/metrics-$clients.jsonl"
  rm -rf "$files"
  sed -i '/^large-model: files in /d' "$out/large-$clients.txt"
done

python3 - "$out" <<'PY'
import json, re, statistics, sys
out = sys.argv[1]
wire = open(f"{out}/wire_speed.txt").read()
def best(pattern):
    return max(float(m) for m in re.findall(pattern, wire))
bare = {
    "download": best(r"download, bare \(pass \d+\): [\d.]+ s, (\d+) MB/s"),
    "upload": best(r"upload, bare \(pass \d+\): [\d.]+ s, (\d+) MB/s"),
}
pair = {
    "download": best(r"download, bare, 2 streams at once \(pass \d+\): .*?, (\d+) MB/s a stream"),
    "upload": best(r"upload, bare, 2 streams at once \(pass \d+\): .*?, (\d+) MB/s a stream"),
}
lines = [
    "| clients | transfer | bytes a client | seconds a client | MB/s a transfer | bare, 1 stream | share | bare, 2 at once | share | server peak |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
]
for clients in (2, 4):
    rounds = [json.loads(l) for l in open(f"{out}/rounds-{clients}.jsonl")]
    rows = [json.loads(l) for l in open(f"{out}/metrics-{clients}.jsonl")]
    peak = re.search(r"server peak memory .*", open(f"{out}/large-{clients}.txt").read())
    # Round 1: the first round's transfers also pay for starting up.
    record = next(r for r in rounds if r["round"] == 1)
    trained = [r for r in rows if r["round"] == 1 and r["trained"]]
    for what, key in (("download", "bytes_down"), ("upload", "bytes_up")):
        n = len(trained)
        each = statistics.mean(r[key] for r in trained)
        seconds = record["phases"][what] / n
        speed = each / seconds / 1e6
        lines.append(
            f"| {clients} | {what} | {each / 1e9:.2f} GB | {seconds:.2f} s | {speed:.0f} "
            f"| {bare[what]:.0f} | {speed / bare[what]:.0%} | {pair[what]:.0f} | {speed / pair[what]:.0%} "
            f"| {peak.group(0).split('(VmHWM) ')[1] if peak else '?'} |"
        )
open(f"{out}/results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "bench-big-model: results in $out/results.md" >&2
