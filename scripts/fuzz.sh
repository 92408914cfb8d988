#!/usr/bin/env bash
# Fuzzes what the server does with a result stream (prost decoding, assembly, validation) for a
# bounded time per target, and says what it found. Not part of `cargo test`: it needs a nightly
# toolchain and cargo-fuzz (installed with `cargo install cargo-fuzz --locked` if missing).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#   FUZZ_SANITIZER=none   build without AddressSanitizer (faster; for toolchains where it fails)
#   STRATA_FUZZ_TARGET_DIR=DIR   where the fuzz build goes (default ~/.cache/strata/fuzz-target)
#
# The corpus grows in fuzz/corpus/<target> across runs; a crash is written to
# fuzz/artifacts/<target>/ and makes the script fail; each run's full log is fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(result_bytes result_edits)
fi
sanitizer="${FUZZ_SANITIZER:-address}"
export CARGO_TARGET_DIR="${STRATA_FUZZ_TARGET_DIR:-${STRATA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strata}/fuzz-target}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# A few valid streams to start the raw-bytes target from (the structured one builds its own).
seeds=fuzz/corpus/result_bytes
if [ -z "$(ls -A "$seeds" 2>/dev/null)" ]; then
  echo "fuzz.sh: writing seeds to $seeds" >&2
  cargo +nightly run --quiet --manifest-path fuzz/Cargo.toml --example seeds -- "$seeds"
fi

mkdir -p fuzz/logs
failed=()
for target in "${targets[@]}"; do
  log="fuzz/logs/$target.log"
  echo "== $target: ${seconds} s, sanitizer $sanitizer"
  mkdir -p "fuzz/corpus/$target"
  status=0
  cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  # libFuzzer's last status line: runs, coverage, corpus, speed, memory.
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed 's/^/   /' || true
  grep -E '^Done [0-9]+ runs' "$log" | tail -1 | sed 's/^/   /' || true
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "   FAILED (exit $status); the input that failed and how to reproduce it:"
    grep -A1 -E 'panicked at' "$log" | head -2 | sed 's/^/   /' || true
    grep -E 'ERROR: AddressSanitizer|ERROR: libFuzzer|Test unit written to' "$log" | head -4 | sed 's/^/   /' || true
    grep -A2 -E '^Reproduce with:' "$log" | sed 's/^/   /' || true
    echo "   full log: $log"
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: no crash in ${#targets[@]} target(s)"
