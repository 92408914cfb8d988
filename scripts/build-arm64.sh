#!/usr/bin/env bash
# Cross-compiles the `strata` binary for arm64 edge clients (aarch64-unknown-linux-gnu) on an
# x86-64 Debian machine: `make build-arm64`. Leaves target/aarch64-unknown-linux-gnu/release/strata.
#
# It installs what it needs on its own, once:
#   - Debian's cross toolchain (gcc/g++-aarch64-linux-gnu: the linker, and the C++ compiler for
#     torch-sys's bindings and strata-torch's TorchScript shim) and rustup's aarch64 target;
#   - libtorch from PyPI's aarch64 torch wheel (the same version as the x86-64 build), plus
#     NVIDIA's CUDA runtime and CUPTI wheels, because the wheel's libtorch_cpu.so itself names
#     libcudart.so.13 and libcupti.so.13 (both load without a GPU or a driver). Hash-pinned,
#     unpacked under ~/.cache/strata/torch-aarch64-<version>/site; the wheels are not kept.
#
# The binary is linked against a CPU-only view of the wheel's torch/lib (torch-cpu/lib: none
# of the libraries that need cuDNN, cuBLAS, NCCL..., which are not installed, and a libtorch.so
# that does not name libtorch_cuda.so) and carries that directory as its rpath, as the x86-64
# binary carries the venv's torch/lib. So it runs, CPU only, on an arm64 Linux with glibc >= 2.34
# and GCC >= 11's libstdc++ (it is linked against Debian 12's: GLIBC_2.34, GLIBCXX_3.4.29 at
# most) where that directory exists at the same path (or LD_LIBRARY_PATH names a copy of it,
# with ../../torch/lib and ../../nvidia/cu13/lib beside it as here). On a Jetson, build on the
# device against JetPack's own libtorch instead: see the README's arm64 section.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
# shellcheck source=scripts/lib/install.sh
source scripts/lib/install.sh
# shellcheck source=scripts/lib/arm64.sh
source scripts/lib/arm64.sh

# The wheels, pinned by hash (pip checks them): torch, and the versions of the CUDA runtime and
# CUPTI that torch's own cuda-toolkit==13.0.3 dependency pins. cp311: any Python's wheel holds
# the same libtorch; the tag only has to be fixed for the hash to be.
WHEELS=(
  "torch==$STRATA_TORCH_VERSION --hash=sha256:092790c696a760c729fd5722835f50b9d81fd7c8f141571f3f3cf4081a8f664c"
  "nvidia-cuda-runtime==13.0.96 --hash=sha256:ef9bcbe90493a2b9d810e43d249adb3d02e98dd30200d86607d8d02687c43f55"
  "nvidia-cuda-cupti==13.0.85 --hash=sha256:796bd679890ee55fb14a94629b698b6db54bcfd833d391d5e94017dd9d7d3151"
)
if [ "$STRATA_TORCH_VERSION" != 2.13.0 ]; then
  echo "build-arm64: the pinned wheels are torch 2.13.0's; update WHEELS for $STRATA_TORCH_VERSION" >&2
  exit 1
fi

# --- toolchain ----------------------------------------------------------------------------
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  echo "build-arm64: installing Debian's arm64 cross toolchain"
  apt_install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
fi
if ! rustup target list --installed | grep -qx "$STRATA_ARM64_TRIPLE"; then
  echo "build-arm64: adding rustup's $STRATA_ARM64_TRIPLE target"
  rustup target add "$STRATA_ARM64_TRIPLE"
fi

# --- libtorch -----------------------------------------------------------------------------
if [ ! -f "$STRATA_ARM64_ROOT/.strata-complete" ]; then
  echo "build-arm64: fetching PyPI's aarch64 torch==$STRATA_TORCH_VERSION wheel into $STRATA_ARM64_ROOT (430 MB)"
  python3 -c "import ensurepip, venv" >/dev/null 2>&1 || apt_install python3-venv
  # Built in a scratch directory beside the final one and moved in place when complete, so an
  # interrupted run leaves nothing that looks finished.
  work="$STRATA_ARM64_ROOT.partial"
  rm -rf "$work" "$STRATA_ARM64_ROOT"
  mkdir -p "$work/wheels"
  # Only for pip: Debian's python3 has no pip of its own.
  python3 -m venv "$work/pip"
  printf '%s\n' "${WHEELS[@]}" >"$work/requirements.txt"
  "$work/pip/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$work/requirements.txt" -d "$work/wheels" \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_25_aarch64 \
    --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64
  # Only what a C++ build and a CPU run use: torch's headers, version and libraries but those
  # of CUDA kernels and Python's bindings (libtorch_cuda.so alone is 420 MB; none is linked or
  # loaded), and the CUDA runtime's shared libraries (not its headers or static archives).
  python3 - "$work/wheels" "$work/site" <<'PY'
import pathlib, re, sys, zipfile
wheels, site = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wanted = re.compile(r"torch/(lib/|include/|version\.py$)|nvidia/cu13/lib/[^/]+\.so[.0-9]*$")
unused = re.compile(r"torch/lib/[^/]*(cuda|nvrtc|nvshmem|libtorch_python)")
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site, [m for m in z.namelist() if wanted.match(m) and not unused.match(m) and not m.endswith("/")])
PY
  # torch-sys checks LIBTORCH/build-version against the version tch was generated for.
  version="$(sed -n "s/^__version__ = '\([^']*\)'.*/\1/p" "$work/site/torch/version.py")"
  [ -n "$version" ] || { echo "build-arm64: no __version__ in the wheel's torch/version.py" >&2; exit 1; }
  echo "$version" >"$work/site/torch/build-version"
  # The CPU-only view: symlinks at the same depth as torch/lib, so that the libraries' own
  # rpath ($ORIGIN/../../nvidia/cu13/lib, $ORIGIN) resolves the same from either directory.
  cpu="$work/site/torch-cpu"
  mkdir -p "$cpu/lib"
  ln -s ../torch/include "$cpu/include"
  for path in "$work/site/torch/lib"/*.so*; do
    name="$(basename "$path")"
    # libtorch.so is only a wrapper that names libtorch_cpu.so and libtorch_cuda.so.
    [ "$name" = libtorch.so ] && continue
    ln -s "../../torch/lib/$name" "$cpu/lib/$name"
  done
  # torch-sys links -ltorch; in the view that is a linker script for libtorch_cpu.so alone.
  printf '/* CPU-only libtorch: libtorch_cpu.so without libtorch_cuda.so (scripts/build-arm64.sh) */\nINPUT(libtorch_cpu.so)\n' >"$cpu/lib/libtorch.so"
  rm -rf "$work/wheels" "$work/pip" "$work/requirements.txt"
  touch "$work/.strata-complete"
  mv "$work" "$STRATA_ARM64_ROOT"
fi

# --- build --------------------------------------------------------------------------------
# torch-sys: headers and build-version from the wheel's torch/, libraries from the CPU view.
# Unset what would make it look elsewhere (a Python's torch, a static libtorch).
unset LIBTORCH_USE_PYTORCH LIBTORCH_STATIC
export LIBTORCH="$STRATA_ARM64_SITE/torch" LIBTORCH_INCLUDE="$STRATA_ARM64_SITE/torch" \
  LIBTORCH_LIB="$STRATA_ARM64_LIBTORCH_CPU"
# PyPI's wheels use the C++11 ABI; strata-torch's build.rs reads this too.
export LIBTORCH_CXX11_ABI=1
# No libtorch_cuda.so in the view, so strata-cli's build.rs links no CUDA whatever the build
# machine has; said explicitly all the same.
export STRATA_LINK_CUDA=0
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
  AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# A cross linker does not follow the libraries' own rpaths to their dependencies (it would to
# check their symbols): name both directories.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,-rpath-link,$STRATA_ARM64_LIBTORCH_CPU/lib -C link-arg=-Wl,-rpath-link,$STRATA_ARM64_SITE/nvidia/cu13/lib"
export CARGO_TARGET_DIR="$STRATA_ARM64_TARGET_DIR"

echo "build-arm64: cargo build --release -p strata-cli --target $STRATA_ARM64_TRIPLE (into $CARGO_TARGET_DIR)"
# Dependencies without debuginfo: the target dir stays a few GB (the workspace's own crates
# keep the release profile's line tables, for backtraces).
cargo build --release -p strata-cli --target "$STRATA_ARM64_TRIPLE" \
  --config 'profile.release.package."*".debug = false'

built="$CARGO_TARGET_DIR/$STRATA_ARM64_TRIPLE/release/strata"
mkdir -p "$(dirname "$STRATA_ARM64_BIN")"
cp -f "$built" "$STRATA_ARM64_BIN"

# --- checks -------------------------------------------------------------------------------
fail() { echo "build-arm64: FAILED: $*" >&2; exit 1; }
readelf -h "$STRATA_ARM64_BIN" | grep -q 'Machine:.*AArch64' || fail "$STRATA_ARM64_BIN is not an AArch64 binary"
dynamic="$(readelf -d "$STRATA_ARM64_BIN")"
rpath="$(grep -E 'R(UN)?PATH' <<<"$dynamic" || true)"
grep -qF "$STRATA_ARM64_LIBTORCH_CPU/lib" <<<"$rpath" || fail "$STRATA_ARM64_BIN carries no rpath to $STRATA_ARM64_LIBTORCH_CPU/lib"
grep -qF 'libtorch_cpu.so' <<<"$dynamic" || fail "$STRATA_ARM64_BIN does not link libtorch_cpu.so"
if grep -qE 'libtorch_cuda|libcudnn|libcublas' <<<"$dynamic"; then fail "$STRATA_ARM64_BIN links CUDA libraries"; fi
echo "build-arm64: built $STRATA_ARM64_BIN ($(du -h "$STRATA_ARM64_BIN" | cut -f1), AArch64, torch $(cat "$STRATA_ARM64_SITE/torch/build-version"), CPU only)"
echo "build-arm64: libtorch: $STRATA_ARM64_LIBTORCH_CPU/lib (the binary's rpath)"
