#!/usr/bin/env bash
# The independent column of the accountant check: epsilon from Google's dp_accounting 0.6.0
# (the RDP accountant) over the grid in scripts/dp_accountant_reference.py, as CSV. Not part of
# `make test`: the test reads the committed table, bench/results/2026-12-02-dp-accountant/grid.csv.
#
#   scripts/dp-accountant-reference.sh [--out FILE]     (default: print the CSV on stdout)
#
# Installs PyPI's dp-accounting==0.6.0 once, into a virtualenv under
# ${STRATA_CACHE:-~/.cache/strata}/venv-dp-accounting (about 20 s, 250 MB with numpy and scipy).
# To put Strata's epsilon beside it (the committed table):
#
#   scripts/dp-accountant-reference.sh --out /tmp/reference.csv
#   cargo run -p strata-methods --example dp_accountant_grid -- /tmp/reference.csv \
#     bench/results/2026-12-02-dp-accountant/grid.csv
set -euo pipefail
cd "$(dirname "$0")/.."

DP_ACCOUNTING_VERSION=0.6.0
STRATA_CACHE="${STRATA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strata}"
VENV="$STRATA_CACHE/venv-dp-accounting"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "dp-accountant-reference: $*" >&2; exit 1; }

out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:-}"; [ -n "$out" ] || die "--out needs a file"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

command -v python3 >/dev/null || die "python3 is missing (Debian: apt-get install python3 python3-venv)"
installed() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '
import sys
from importlib.metadata import version
sys.exit(0 if version("dp-accounting") == sys.argv[1] else 1)' "$DP_ACCOUNTING_VERSION" 2>/dev/null
}
if ! installed; then
  # Debian ships venv's pip bootstrap (ensurepip) separately, in python3-venv.
  python3 -c 'import ensurepip, venv' 2>/dev/null \
    || die "python3 cannot make a virtualenv: python3-venv is missing (Debian: sudo apt-get install python3-venv)"
  echo "dp-accountant-reference: installing dp-accounting==$DP_ACCOUNTING_VERSION into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$STRATA_CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "dp-accounting==$DP_ACCOUNTING_VERSION"
  installed || die "$VENV does not hold dp-accounting $DP_ACCOUNTING_VERSION after the install"
fi

versions="$("$VENV/bin/python" -c '
import sys
from importlib.metadata import version
print(", ".join(f"{name} {version(name)}" for name in ("dp-accounting", "numpy", "scipy")), "Python", sys.version.split()[0])')"
echo "dp-accountant-reference: $versions" >&2

if [ -n "$out" ]; then
  mkdir -p "$(dirname "$out")"
  # Written beside the target first, so a failed run leaves no half table.
  "$VENV/bin/python" scripts/dp_accountant_reference.py >"$out.partial"
  mv "$out.partial" "$out"
  echo "dp-accountant-reference: wrote $(($(wc -l <"$out") - 1)) rows to $out" >&2
else
  "$VENV/bin/python" scripts/dp_accountant_reference.py
fi
