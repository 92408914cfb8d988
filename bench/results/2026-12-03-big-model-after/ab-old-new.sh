#!/usr/bin/env bash
# A/B of big-model rounds: two builds alternated, `scripts/large-model.sh 2 2` each, round 1's
# phases and both processes' peaks. As run on 2026-12-03 (OLD_BIN: 048adaf, NEW_BIN: ad0127a):
#   OLD_BIN=/path/to/old/strata NEW_BIN=/path/to/new/strata bench/results/2026-12-03-big-model-after/ab-old-new.sh
set -uo pipefail
cd "$(dirname "$0")/../../.." || exit 1
tmp=$(mktemp -d)
res="$tmp/ab-results.txt"
: > "$res"
for pass in 1 2; do
  for variant in old new new+thp; do
    case $variant in
      old) bin=$OLD_BIN; env=();;
      new) bin=$NEW_BIN; env=();;
      new+thp) bin=$NEW_BIN; env=(THP_MEM_ALLOC_ENABLE=1);;
    esac
    # The clients' peak memory, sampled while they run.
    ( peak=0; sleep 3; while pgrep -f "$bin client" >/dev/null; do
        for p in $(pgrep -f "$bin client"); do h=$(awk '/VmHWM/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0); [ "${h:-0}" -gt "$peak" ] && peak=$h; done
        sleep 0.5; done; echo "$peak" > "$tmp/client-peak" ) &
    sampler=$!
    started=$(date +%s.%N)
    env "${env[@]}" STRATA_BIN="$bin" scripts/large-model.sh 2 2 > "$tmp/large.txt" 2>&1
    ended=$(date +%s.%N)
    wait $sampler
    files=$(sed -n 's/^large-model: files in //p' "$tmp/large.txt")
    python3 - "$variant" "$pass" "$files/run/rounds.jsonl" "$(cat "$tmp/client-peak")" "$(grep 'server peak' "$tmp/large.txt")" "$started" "$ended" >> "$res" <<'PY'
import json, sys
variant, p, path, cpeak, speak, t0, t1 = sys.argv[1:]
rounds = [json.loads(l) for l in open(path)]
r = next(r for r in rounds if r["round"] == 1)
ph = r["phases"]
print(f"{variant:8s} pass {p}: round 1 {r['seconds']:.2f} s; per client: download {ph['download']/2:.2f} s, train {ph['train']/2:.2f} s, upload {ph['upload']/2:.2f} s; aggregation {ph['aggregation']:.2f} s; client process peak {int(cpeak)/2**20:.2f} GiB; {speak.split('(VmHWM) ')[1]}; whole run {float(t1)-float(t0):.0f} s")
PY
    tail -1 "$res"
    [ -n "$files" ] && rm -rf "$files"
  done
done
