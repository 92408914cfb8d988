# shellcheck shell=bash
# Sourced by the Makefile and by developers: where Strata's cached installs live.
# Usage: source scripts/env.sh   (after scripts/setup.sh has run once)
STRATA_TORCH_VERSION="${STRATA_TORCH_VERSION:-2.13.0}"
STRATA_CACHE="${STRATA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strata}"
STRATA_VENV="$STRATA_CACHE/torch-$STRATA_TORCH_VERSION"
# torch-sys reads LIBTORCH; the path is stable across clones, so a cached target dir stays valid.
LIBTORCH="$("$STRATA_VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)"
# Compiled dependencies (torch-sys takes minutes) are kept across fresh clones.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STRATA_CACHE/target-torch-$STRATA_TORCH_VERSION}"
export STRATA_TORCH_VERSION STRATA_CACHE STRATA_VENV LIBTORCH CARGO_TARGET_DIR
