#!/usr/bin/env bash
# Checks the layering ARCHITECTURE.md promises: each crate depends only on the Strata crates
# listed above it there, the pure crates link no tch, tonic or tokio, strata-server links no
# libtorch (not even for its tests), and no module of a crate imports one that imports it back.
# Run by `make test`; needs cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

order=(strata-core strata-security strata-telemetry strata-secagg strata-data strata-methods strata-report
       strata-proto strata-torch strata-server strata-client strata-cli)
failed=0
fail() { echo "check-layers: $*" >&2; failed=1; }

# What a crate's own manifest names (its direct Strata dependencies, any kind but dev).
direct() { sed -n '/^\[\(build-\)\?dependencies\]/,/^\[/p' "crates/$1/Cargo.toml" | grep -o '^strata-[a-z]*' || true; }
# Every package in a crate's tree, for the given edge kinds.
tree() { cargo tree -q -p "$1" -e "$2" --prefix none --format '{p}' | awk '{print $1}' | sort -u; }

for i in "${!order[@]}"; do
  crate=${order[$i]}
  for dep in $(direct "$crate"); do
    above=0
    for j in $(seq 0 $((i - 1))); do [ "${order[$j]}" = "$dep" ] && above=1; done
    [ "$above" = 1 ] || fail "$crate depends on $dep, which is not listed above it"
  done
done

for crate in strata-core strata-data strata-methods strata-report strata-security strata-secagg; do
  bad=$(tree "$crate" normal | grep -xE 'tch|torch-sys|tonic|tokio' || true)
  [ -z "$bad" ] || fail "$crate pulls in ${bad//$'\n'/ }"
done
bad=$(tree strata-server normal,dev,build | grep -xE 'tch|torch-sys|strata-torch' || true)
[ -z "$bad" ] || fail "strata-server pulls in ${bad//$'\n'/ }"

python3 - <<'PY' || failed=1
import os, re, sys
found = False
for crate in sorted(os.listdir("crates")):
    src = f"crates/{crate}/src"
    graph = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            top = os.path.relpath(path, src).split("/")[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue
            text = re.split(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod tests", open(path).read())[0]
            graph.setdefault(top, set()).update(d for d in re.findall(r"crate::([a-z_0-9]+)", text) if d != top)
    cycles = set()
    def visit(node, stack):
        for dep in graph.get(node, ()):
            if dep in stack:
                cycle = stack[stack.index(dep):]
                first = cycle.index(min(cycle))
                cycles.add(tuple(cycle[first:] + cycle[:first]))
            elif len(stack) < len(graph):
                visit(dep, stack + [dep])
    for node in graph:
        visit(node, [node])
    for cycle in sorted(cycles):
        print(f"check-layers: {crate}: modules import each other: {' -> '.join(cycle + (cycle[0],))}", file=sys.stderr)
        found = True
sys.exit(1 if found else 0)
PY

[ "$failed" = 0 ] && echo "check-layers: crates and modules layered as ARCHITECTURE.md says"
exit "$failed"
