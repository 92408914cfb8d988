#!/usr/bin/env bash
# Stress: a few hundred lightweight clients against one server on loopback, for a bounded
# number of rounds. Reports rounds completed, client and server errors, and the server's peak
# memory (VmHWM). Not a test: numbers vary with the machine; they go in the README by hand.
#
#   scripts/stress.sh [CLIENTS] [PROCESSES] [ROUNDS] [daemons|population]
#                                    default 300 clients in 2 processes, 3 rounds, daemons
#
# The clients are `strata client --virtual N` processes (MLP on synthetic data, 100 samples
# each), N daemons each or, with `population`, one host of N virtual clients each
# (`--population`); the server is a separate process, so its memory is its own.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/loopback-run.sh
source scripts/lib/loopback-run.sh

clients="${1:-300}"; processes="${2:-2}"; rounds="${3:-3}"; mode="${4:-daemons}"
case "$mode" in
  daemons) LOOPBACK_POPULATION=0 ;;
  population) LOOPBACK_POPULATION=1 ;;
  *) echo "MODE must be daemons or population, not $mode" >&2; exit 2 ;;
esac
export LOOPBACK_POPULATION
bin="${STRATA_BIN:-target/release/strata}"
port="${STRATA_PORT:-51$((RANDOM % 900 + 100))}"
[ -x "$bin" ] || { echo "no binary at $bin: run 'make build' first" >&2; exit 1; }
[ $((clients % processes)) -eq 0 ] || { echo "CLIENTS must be a multiple of PROCESSES" >&2; exit 2; }

out="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
loopback_config "$out/stress.toml" "$rounds" "$clients" $((clients * 100)) mlp 0.05

started=$(date +%s)
loopback_run "$bin" "$port" "$out/stress.toml" "$out" "$processes" $((clients / processes)) \
  || { echo "stress: the server failed; its log:" >&2; tail -20 "$out/server.log" >&2; exit 1; }
wait || true
elapsed=$(( $(date +%s) - started ))

completed=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rounds_completed'])" "$out/run/summary.json")
refused=$(grep -c "refused result" "$out/server.log" || true)
server_warnings=$(grep -c " WARN " "$out/server.log" || true)
client_errors=$(cat "$out"/clients*.log | grep -c -E " (WARN|ERROR) " || true)
echo "stress: $clients clients ($mode) in $processes processes, $completed of $rounds rounds completed in ${elapsed}s"
echo "stress: server peak memory (VmHWM) $((peak_kb / 1024)) MiB; $refused results refused, $server_warnings server warnings, $client_errors client warnings/errors"
echo "stress: files in $out"
