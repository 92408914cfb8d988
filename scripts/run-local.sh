#!/usr/bin/env bash
# A server and three clients as separate processes on loopback.
#
#   scripts/run-local.sh             Fashion-MNIST, IID over 3 clients, 3 rounds
#   scripts/run-local.sh --quick     synthetic data and an MLP, 40 short rounds, with --kill-one
#                                    and --kill-server (about a minute; used by `make test`)
#   scripts/run-local.sh --kill-one  also kill client 2 with SIGKILL during the first round all
#                                    three are in: the run must still complete with the other two
#   scripts/run-local.sh --kill-server  also kill the server with SIGKILL during the round after
#                                    (round 2 without --kill-one) and
#                                    restart it with --resume: the clients wait for it, and
#                                    rounds.jsonl must hold every round exactly once
#
# STRATA_BIN picks the binary (default target/release/strata); STRATA_PORT the port.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${STRATA_BIN:-target/release/strata}"
port="${STRATA_PORT:-50$((RANDOM % 900 + 100))}"
kill_one=0
kill_server=0
data=(--dataset fmnist --split iid --model cnn)
rounds=3
for arg in "$@"; do
  case "$arg" in
    --kill-one) kill_one=1 ;;
    --kill-server) kill_server=1 ;;
    --quick) data=(--dataset synthetic --split iid --model mlp --lr 0.05 --batch-size 20); rounds=40; kill_one=1; kill_server=1 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "no binary at $bin: run 'make build' first" >&2; exit 1; }

out="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
echo "run-local: server on 127.0.0.1:$port, files in $out"
"$bin" server --listen "127.0.0.1:$port" --clients 3 --min-clients 2 --rounds "$rounds" \
  --round-timeout 20 "${data[@]}" --out "$out/run" >"$out/server.log" 2>&1 &
server=$!
pids=()
for i in 0 1 2; do
  "$bin" client --server "http://127.0.0.1:$port" --client-index "$i" --device cpu >"$out/client$i.log" 2>&1 &
  pids+=($!)
done

# wait_for PATTERN: until the server's log has a line matching it (two minutes at most).
wait_for() {
  for _ in $(seq 1 600); do
    grep -qE "$1" "$out/server.log" 2>/dev/null && return 0
    sleep 0.2
  done
}

kill_round=1
if [ "$kill_one" -eq 1 ]; then
  # Once all three have joined, wait for the next round to start (it picks all three, so the
  # other two's results are enough), then kill client 2 without warning. A client that joins
  # late misses the first rounds (they start at min-clients = 2), and killing client 2 in a
  # round of two would leave it one result short.
  wait_for "client joined client=0 " && wait_for "client joined client=1 " && wait_for "client joined client=2 "
  started=$(grep -oE "round started round=[0-9]+" "$out/server.log" | tail -1 | grep -oE "[0-9]+$" || echo -1)
  kill_round=$((started + 1))
  wait_for "round started round=$kill_round "
  { kill -9 "${pids[2]}" && wait "${pids[2]}"; } 2>/dev/null || true
  echo "run-local: killed client 2 (pid ${pids[2]}) with SIGKILL during round $kill_round"
fi

if [ "$kill_server" -eq 1 ]; then
  wait_for "round started round=$((kill_round + 1)) "
  { kill -9 "$server" && wait "$server"; } 2>/dev/null || true
  echo "run-local: killed the server (pid $server) with SIGKILL during round $((kill_round + 1)); resuming"
  "$bin" server --listen "127.0.0.1:$port" --resume "$out/run" >"$out/server-resumed.log" 2>&1 &
  server=$!
fi

if ! wait "$server"; then
  echo "run-local: the server failed; its log:" >&2
  tail -30 "$out/server.log" >&2
  exit 1
fi
completed=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rounds_completed'])" "$out/run/summary.json")
echo "run-local: $completed of $rounds rounds completed; report in $out/run/report.md"
[ "$completed" -eq "$rounds" ] || { echo "run-local: FAILED: expected $rounds completed rounds" >&2; exit 1; }
if [ "$kill_one" -eq 1 ]; then
  # The kill must have landed mid-run: some aggregated training round went on without
  # client 2's result (whether it was picked and missed, or no longer picked at all).
  short=$(python3 -c "
import json, sys
rounds = [json.loads(l) for l in open(sys.argv[1])][:-1]
trained = {(r['round'], r['client']) for r in map(json.loads, open(sys.argv[2])) if r['trained']}
print(sum(1 for r in rounds if r['aggregated'] and (r['round'], 2) not in trained))" \
    "$out/run/rounds.jsonl" "$out/run/metrics.jsonl")
  echo "run-local: $short round(s) completed without the killed client's result"
  [ "$short" -ge 1 ] || { echo "run-local: FAILED: no round ran short: the kill missed the run" >&2; exit 1; }
fi
if [ "$kill_server" -eq 1 ]; then
  python3 - "$out/run/rounds.jsonl" "$rounds" <<'PY' || { echo "run-local: FAILED: rounds.jsonl after --resume" >&2; exit 1; }
import json, sys
rounds = [json.loads(l)["round"] for l in open(sys.argv[1])]
expected = list(range(int(sys.argv[2]) + 1))
assert rounds == expected, f"rounds recorded {rounds}, expected each of {expected} once"
PY
  echo "run-local: after the server's SIGKILL and --resume, every round is recorded exactly once"
fi
for i in 0 1; do wait "${pids[$i]}" || { echo "run-local: client $i failed" >&2; tail -5 "$out/client$i.log" >&2; exit 1; }; done
echo "run-local: passed"
