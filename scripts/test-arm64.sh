#!/usr/bin/env bash
# The arm64 binary as a real client: `make test-arm64` (not part of `make test`: minutes of
# emulation). An x86-64 `strata server` on loopback, one x86-64 client (partition 0) and the
# arm64 binary under qemu-user (partition 1), synthetic data and the MLP, two rounds. Passes
# only if the run completes and the server's records show partition 1 training in both rounds
# and evaluating the final model, joined under the UUID given to the arm64 process.
#
# The server records no client architecture (capabilities carry device and version only), so
# the arm64 client is told apart by its partition index and client id.
#
# Needs `make build` (target/release/strata) and `make build-arm64`; installs Debian's
# qemu-user if qemu-aarch64 is missing. STRATA_BIN / STRATA_ARM64_BIN override the binaries,
# STRATA_ARM64_TEST_OUT the run's directory (default runs/test-arm64, replaced each time).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh
# shellcheck source=scripts/lib/arm64.sh
source scripts/lib/arm64.sh

x86_bin="${STRATA_BIN:-target/release/strata}"
arm64_bin="${STRATA_ARM64_BIN:-$STRATA_ARM64_BIN}"
out="$(realpath -m "${STRATA_ARM64_TEST_OUT:-runs/test-arm64}")"
# Emulated training was about 100x slower than native here, after loading 260 MB of libtorch:
# a generous bound, so that a hang fails the test instead of blocking it forever.
limit="${STRATA_ARM64_TEST_TIMEOUT:-1800}"
rounds=2

fail() {
  echo "test-arm64: FAILED: $*" >&2
  for log in "$out"/server.log "$out"/client-x86_64.log "$out"/client-arm64.log; do
    [ -f "$log" ] && { echo "--- last lines of $log" >&2; tail -15 "$log" >&2; }
  done
  exit 1
}

[ -x "$x86_bin" ] || fail "no x86-64 binary at $x86_bin: run 'make build' first"
[ -x "$arm64_bin" ] || fail "no arm64 binary at $arm64_bin: run 'make build-arm64' first"
readelf -h "$arm64_bin" | grep -q 'Machine:.*AArch64' || fail "$arm64_bin is not an AArch64 binary"
readelf -h "$x86_bin" | grep -q 'Machine:.*X86-64' || fail "$x86_bin is not an x86-64 binary"
if ! command -v qemu-aarch64 >/dev/null; then
  echo "test-arm64: installing Debian's qemu-user"
  apt_install qemu-user
fi
[ -f "$STRATA_ARM64_SYSROOT/lib/ld-linux-aarch64.so.1" ] \
  || fail "no arm64 loader in $STRATA_ARM64_SYSROOT: run 'make build-arm64' (it installs the cross toolchain)"
started=$SECONDS
rm -rf "$out"
mkdir -p "$out"

# qemu-aarch64 -L ROOT reads every absolute path from ROOT first and falls back to this
# machine's. ROOT here: the arm64 loader, libc and libstdc++ from Debian's cross sysroot, and
# an arm64 /proc/cpuinfo. Debian 12's qemu-user (7.2) passes the host's x86 /proc/cpuinfo
# through, and libtorch's CPU probe (pytorch/cpuinfo, cpuinfo_arm_linux_init) segfaults on it
# at the first tensor op; on real arm64 hardware the kernel's own file is there. The emulated
# CPU is a Cortex-A76 (a Raspberry Pi 5's), and the file describes that one, once per CPU.
qemu_cpu="${STRATA_ARM64_QEMU_CPU:-cortex-a76}"
root="$out/qemu-root"
mkdir -p "$root/proc"
ln -s "$STRATA_ARM64_SYSROOT/lib" "$root/lib"
for ((cpu = 0; cpu < $(nproc --all); cpu++)); do
  printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$cpu"
done >"$root/proc/cpuinfo"
qemu=(qemu-aarch64 -cpu "$qemu_cpu" -L "$root")
pids=()
# Whatever happens, no process of this test outlives it.
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# The emulated binary loads libtorch and answers at all. (Under qemu, oneDNN's CPU probe says
# on stderr that it cannot read MIDR_EL1 from sysfs: harmless, and kept out of the summary.)
arm64_version="$(timeout 600 "${qemu[@]}" "$arm64_bin" --version 2>"$out/arm64-version.err")" \
  || fail "the arm64 binary under qemu: $(cat "$out/arm64-version.err")"
echo "test-arm64: under $(qemu-aarch64 --version | head -1), -cpu $qemu_cpu: $arm64_version ($(( SECONDS - started )) s)"

# A free loopback port, asked of the kernel rather than guessed.
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
server="http://127.0.0.1:$port"
arm64_id="$(python3 -c 'import uuid; print(uuid.uuid4())')"

echo "test-arm64: x86-64 server on 127.0.0.1:$port, $rounds rounds; files in $out"
timeout "$limit" "$x86_bin" server --listen "127.0.0.1:$port" --clients 2 --rounds "$rounds" \
  --dataset synthetic --split iid --model mlp --lr 0.05 --batch-size 20 --seed 1 \
  --start-deadline "$limit" --round-timeout "$limit" --out "$out/run" >"$out/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
timeout "$limit" "$x86_bin" client --server "$server" --client-index 0 --device cpu \
  >"$out/client-x86_64.log" 2>&1 &
x86_pid=$!
pids+=("$x86_pid")
timeout "$limit" "${qemu[@]}" "$arm64_bin" client --server "$server" --client-index 1 \
  --client-id "$arm64_id" --device cpu >"$out/client-arm64.log" 2>&1 &
arm64_pid=$!
pids+=("$arm64_pid")

wait "$server_pid" || fail "the server exited with status $? (124: timed out after $limit s)"
wait "$x86_pid" || fail "the x86-64 client exited with status $?"
wait "$arm64_pid" || fail "the arm64 client exited with status $?"
pids=()
seconds=$(( SECONDS - started ))

# --- the server's records -----------------------------------------------------------------
grep -qE "client joined client=1 id=$arm64_id( |$)" "$out/server.log" \
  || fail "the server's log shows no join of partition 1 by the arm64 client ($arm64_id)"
python3 - "$out/run" "$rounds" "$seconds" <<'PY' || fail "the run's records"
import json, sys
from pathlib import Path

run, rounds, seconds = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
summary = json.loads((run / "summary.json").read_text())
records = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
problems = []
if summary["rounds_completed"] != rounds:
    problems.append(f"summary.json: {summary['rounds_completed']} rounds completed, not {rounds}")
# Rounds 0..rounds-1 train; round `rounds` is the final evaluation.
for r in range(rounds):
    row = next((x for x in records if x["round"] == r), None)
    if not row or not row["aggregated"] or row["reported"] != 2:
        problems.append(f"rounds.jsonl: round {r} was not aggregated from both clients: {row}")
by = {(m["round"], m["client"]): m for m in metrics}
for client, name in ((0, "x86-64"), (1, "arm64")):
    for r in range(rounds):
        m = by.get((r, client))
        if not m or not m["trained"] or m.get("train_loss") is None or m["device"] != "Cpu":
            problems.append(f"metrics.jsonl: no training on the CPU by the {name} client (partition {client}) in round {r}: {m}")
    final = by.get((rounds, client))
    if not final or final.get("accuracy") is None:
        problems.append(f"metrics.jsonl: no final evaluation by the {name} client (partition {client}): {final}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)

print(f"test-arm64: passed in {seconds} s: {rounds} rounds aggregated from 2 clients; partition 1 is the arm64 binary under qemu")
print("  round  client            loss   accuracy  train s  device")
for (r, client), m in sorted(by.items()):
    name = "1 (arm64, qemu)" if client == 1 else "0 (x86-64)"
    loss = f"{m['train_loss']:.4f}" if m.get("train_loss") is not None else "-"
    acc = f"{100 * m['accuracy']:.2f}%" if m.get("accuracy") is not None else "-"
    print(f"  {r:>5}  {name:<16} {loss:>6}  {acc:>9}  {m['train_seconds']:>7.2f}  {m['device']}")
final = summary["final"]
print(f"  final: global {100 * final['global_accuracy']:.2f}% over {final['clients_evaluated']} clients; records in {run}")
PY
