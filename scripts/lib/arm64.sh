# shellcheck shell=bash
# Shared by scripts/build-arm64.sh and scripts/test-arm64.sh (sourced, not run): where the
# arm64 (aarch64-unknown-linux-gnu) build keeps its libtorch and its compiled dependencies.
# Needs scripts/env.sh sourced first (STRATA_CACHE, STRATA_TORCH_VERSION).
STRATA_ARM64_TRIPLE=aarch64-unknown-linux-gnu
# PyPI's aarch64 wheels, unpacked as a small site-packages: torch/{lib,include} without the
# CUDA kernels' libraries (libtorch_cuda.so and the like, which need cuDNN, cuBLAS, NCCL...),
# and the two CUDA runtime libraries that even libtorch_cpu.so names as NEEDED
# (nvidia/cu13/lib; both load without a GPU).
STRATA_ARM64_ROOT="$STRATA_CACHE/torch-aarch64-$STRATA_TORCH_VERSION"
STRATA_ARM64_SITE="$STRATA_ARM64_ROOT/site"
# The CPU-only view of torch/lib the binary is linked against and carries as its rpath:
# symlinks to torch/lib's libraries, with libtorch.so (the wheel's names libtorch_cuda.so) a
# linker script for libtorch_cpu.so. torch-sys's LIBTORCH_LIB; its lib/ is the rpath.
STRATA_ARM64_LIBTORCH_CPU="$STRATA_ARM64_SITE/torch-cpu"
# A target dir of its own: the x86-64 one (CARGO_TARGET_DIR of env.sh) stays untouched.
STRATA_ARM64_TARGET_DIR="${STRATA_ARM64_TARGET_DIR:-$STRATA_CACHE/target-aarch64-torch-$STRATA_TORCH_VERSION}"
# Where `make build-arm64` leaves the binary (cargo's own layout for a --target build).
STRATA_ARM64_BIN="target/$STRATA_ARM64_TRIPLE/release/strata"
# Debian's arm64 cross sysroot (libc, libstdc++, libgcc_s): qemu-aarch64 -L looks here first.
STRATA_ARM64_SYSROOT=/usr/aarch64-linux-gnu
export STRATA_ARM64_TRIPLE STRATA_ARM64_ROOT STRATA_ARM64_SITE STRATA_ARM64_LIBTORCH_CPU \
  STRATA_ARM64_TARGET_DIR STRATA_ARM64_BIN STRATA_ARM64_SYSROOT
