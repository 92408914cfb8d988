#!/usr/bin/env bash
# A federation over a bad link, for real: the server in one network namespace, two clients
# (FedAvgCNN on Fashion-MNIST) in another, joined by a veth pair capped at 2 Mbit/s each way
# (tc tbf), losing 5 % of packets each way (nftables `numgen random`), and cut for 10 s in
# the middle of the first round's uploads (`ip link set … down`, the clients' connections
# reset with it, as when an edge box's interface drops). Checks that every round completes
# with both clients, and that the cut upload resumed from what the server held (the bytes
# re-sent are fewer than the whole update). Needs root (namespaces, tc, nft).
#
#   scripts/edge-link.sh [ROUNDS]      # default 3; writes its logs and the run under $OUT
#
# Env: OUT (default: a temporary directory, kept), STRATA (default target/release/strata,
# built with `make build` if missing), RATE (default 2mbit), LOSS (% per direction, default 5),
# CUT_SECS (default 10), PART_KIB (the clients' --upload-part-kib, default 1024).
set -euo pipefail

ROUNDS="${1:-3}"
RATE="${RATE:-2mbit}"
LOSS="${LOSS:-5}"
CUT_SECS="${CUT_SECS:-10}"
PART_KIB="${PART_KIB:-1024}"
cd "$(dirname "$0")/.."
STRATA="${STRATA:-target/release/strata}"
OUT="${OUT:-$(mktemp -d /tmp/strata-edge-link.XXXXXX)}"
mkdir -p "$OUT"

if [[ $EUID -ne 0 ]]; then
    echo "edge-link: needs root (network namespaces, tc, nftables)" >&2
    exit 2
fi
for tool in ip tc ss; do
    command -v "$tool" >/dev/null || { echo "edge-link: \`$tool\` is missing (iproute2)" >&2; exit 2; }
done
if ! command -v nft >/dev/null; then
    apt-get install -y -q nftables >/dev/null
fi
[[ -x $STRATA ]] || make build
[[ -d /usr/share/datasets/fashion-mnist || -n ${STRATA_DATA_PATH:-} ]] || scripts/setup.sh

SERVER_NS=strata-edge-srv
CLIENT_NS=strata-edge-cli
SERVER_IP=10.77.0.1
CLIENT_IP=10.77.0.2
PORT=50777
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    ip netns del "$SERVER_NS" 2>/dev/null || true
    ip netns del "$CLIENT_NS" 2>/dev/null || true
}
trap cleanup EXIT
cleanup

# Two namespaces and the link between them.
ip netns add "$SERVER_NS"
ip netns add "$CLIENT_NS"
ip link add veth-srv netns "$SERVER_NS" type veth peer name veth-cli netns "$CLIENT_NS"
ip -n "$SERVER_NS" addr add "$SERVER_IP/24" dev veth-srv
ip -n "$CLIENT_NS" addr add "$CLIENT_IP/24" dev veth-cli
for ns in "$SERVER_NS" "$CLIENT_NS"; do ip -n "$ns" link set lo up; done
ip -n "$SERVER_NS" link set veth-srv up
ip -n "$CLIENT_NS" link set veth-cli up
# The cap, each way: tbf on both ends' egress.
ip netns exec "$SERVER_NS" tc qdisc add dev veth-srv root tbf rate "$RATE" burst 32kb latency 400ms
ip netns exec "$CLIENT_NS" tc qdisc add dev veth-cli root tbf rate "$RATE" burst 32kb latency 400ms
# The loss, each way, on the client's end.
ip netns exec "$CLIENT_NS" nft -f - <<EOF
table inet strata_loss {
    chain out { type filter hook output priority 0; policy accept; oifname "veth-cli" numgen random mod 100 < $LOSS drop; }
    chain in { type filter hook input priority 0; policy accept; iifname "veth-cli" numgen random mod 100 < $LOSS drop; }
}
EOF

echo "edge-link: $RATE each way, $LOSS % loss each way, a ${CUT_SECS} s cut; logs and the run in $OUT"
ip netns exec "$SERVER_NS" env RUST_LOG=info "$STRATA" server --listen "$SERVER_IP:$PORT" \
    --out "$OUT/run" --rounds "$ROUNDS" --clients 2 --min-clients 2 --dataset fmnist --split iid \
    --model cnn --local-steps 20 --round-timeout 600 >"$OUT/server.log" 2>&1 &
PIDS+=($!)
sleep 2
ip netns exec "$CLIENT_NS" env RUST_LOG=info "$STRATA" client --server "http://$SERVER_IP:$PORT" \
    --virtual 2 --threads 1 --upload-part-kib "$PART_KIB" >"$OUT/clients.log" 2>&1 &
PIDS+=($!)
CLIENTS=$!

# The cut: once the clients have sent 2 MB (inside round 0's uploads of about 2.3 MB each).
tx() { ip netns exec "$CLIENT_NS" cat /sys/class/net/veth-cli/statistics/tx_bytes; }
start=$(tx)
started=$SECONDS
until (( $(tx) - start > 2000000 )); do
    if (( SECONDS - started > 600 )); then echo "edge-link: the uploads never started" >&2; exit 1; fi
    sleep 0.2
done
echo "edge-link: cutting the link for ${CUT_SECS} s at $(( $(tx) - start )) bytes sent"
ip -n "$CLIENT_NS" link set veth-cli down
# (ss prints "RTNETLINK answers: Invalid argument" for sockets it cannot kill; the rest go.)
ip netns exec "$CLIENT_NS" ss -K dst "$SERVER_IP" >/dev/null 2>&1 || true
sleep "$CUT_SECS"
ip -n "$CLIENT_NS" link set veth-cli up
echo "edge-link: link up again"

wait "$CLIENTS"
wait "${PIDS[0]}"

# The verdict: every round aggregated with both clients, and the cut upload resumed.
python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, re, sys
out, rounds = sys.argv[1], int(sys.argv[2])
records = [json.loads(l) for l in open(f"{out}/run/rounds.jsonl")]
training = [r for r in records if r["round"] < rounds]
for r in training:
    print(f"round {r['round']}: {r['reported']} results, aggregated {r['aggregated']}, "
          f"{r['seconds']:.1f} s, {r['bytes_up'] / 1e6:.2f} MB up, {r['bytes_down'] / 1e6:.2f} MB down")
assert len(training) == rounds and all(r["aggregated"] and r["reported"] == 2 for r in training), "a round fell short"
client_log = open(f"{out}/clients.log").read()
server_log = open(f"{out}/server.log").read()
strip = lambda s: re.sub(r"\x1b\[[0-9;]*m", "", s)
resumes = [dict(re.findall(r"(\w+)=(\d+)", line)) for line in strip(client_log).splitlines() if "upload cut" in line]
resumed = [line for line in strip(server_log).splitlines() if "upload resumed" in line]
for r in resumes:
    print(f"upload resumed from part {r['resume_from_part']}: the server held {r['server_holds_bytes']} bytes "
          f"of a {r['update_bytes']}-byte update; {r['resent_bytes']} bytes re-sent")
assert resumes and resumed, "no upload was cut and resumed"
assert all(int(r["resent_bytes"]) < int(r["update_bytes"]) for r in resumes), "an upload started over"
print(f"edge-link: {rounds} rounds complete over the link; {len(resumed)} upload(s) resumed")
EOF
