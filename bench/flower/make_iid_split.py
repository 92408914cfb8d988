#!/usr/bin/env python3
"""Writes bench/fmnist-iid-1000clients.json: 1,000 IID clients of Fashion-MNIST, 70 samples
each (52 train, 18 test), in the split-file format Strata's `--split file:PATH` reads
(crates/strata-core/src/partition.rs) and bench/flower's Flower app reads too.

All 70,000 indices of the merged index space (the official train set 0..59999, then the
official test set 60000..69999) are shuffled with Python's `random.Random(1)` and dealt out
70 at a time; each client's first 52 are its train split, the other 18 its test split.
Standard library only, deterministic: the same file on every machine and Python 3 release.

    python3 bench/flower/make_iid_split.py                 # writes the file above
    python3 bench/flower/make_iid_split.py --out PATH --check

Other sizes (the same shuffle, dealt out `--per-client` at a time, the first `--train` of each
share for training; clients x per-client at most 70,000), e.g. 100 IID clients of 700 samples
(520 train, 180 test), the whole dataset, for the SecAgg+ comparison (bench/flower/README.md):

    python3 bench/flower/make_iid_split.py --clients 100 --per-client 700 --train 520 \\
        --check --out bench/fmnist-iid-100clients.json
"""

import argparse
import json
import os
import random
import sys

DATASET_LEN = 70_000
CLIENTS = 1_000
PER_CLIENT = 70
TRAIN = 52
SEED = 1

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fmnist-iid-1000clients.json")


def make_split(seed: int = SEED, clients_n: int = CLIENTS, per_client: int = PER_CLIENT, train: int = TRAIN) -> dict:
    if not (clients_n >= 1 and 1 <= train <= per_client and clients_n * per_client <= DATASET_LEN):
        raise ValueError(f"{clients_n} clients x {per_client} samples ({train} train) do not fit {DATASET_LEN}")
    indices = list(range(DATASET_LEN))
    random.Random(seed).shuffle(indices)
    clients = []
    for c in range(clients_n):
        share = indices[c * per_client:(c + 1) * per_client]
        clients.append({"train": share[:train], "test": share[train:]})
    used = "all" if clients_n * per_client == DATASET_LEN else f"the first {clients_n * per_client} of"
    return {
        "description": (
            f"Fashion-MNIST, {clients_n} IID clients of {per_client} samples ({train} train, "
            f"{per_client - train} test): {used} {DATASET_LEN} indices shuffled with Python's "
            f"random.Random({seed}).shuffle and dealt out {per_client} per client in order, the first "
            f"{train} of each share for training (bench/flower/make_iid_split.py). Indices point into the "
            "official train set (0..59999) followed by the official test set (60000..69999)."
        ),
        "dataset": "fmnist",
        "num_clients": clients_n,
        "clients": clients,
    }


def check(split: dict, clients_n: int = CLIENTS, per_client: int = PER_CLIENT, train: int = TRAIN) -> None:
    """What Strata's reader checks (every index in range, none twice, train non-empty), plus sizes."""
    clients = split["clients"]
    assert len(clients) == split["num_clients"] == clients_n, len(clients)
    seen = set()
    for i, share in enumerate(clients):
        assert len(share["train"]) == train and len(share["test"]) == per_client - train, i
        for idx in share["train"] + share["test"]:
            assert 0 <= idx < DATASET_LEN and idx not in seen, (i, idx)
            seen.add(idx)
    assert len(seen) == clients_n * per_client


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--clients", type=int, default=CLIENTS, help=f"number of clients ({CLIENTS})")
    ap.add_argument("--per-client", type=int, default=PER_CLIENT, help=f"samples per client ({PER_CLIENT})")
    ap.add_argument("--train", type=int, default=TRAIN, help=f"of which training samples ({TRAIN})")
    ap.add_argument("--check", action="store_true", help="validate the split before writing it")
    args = ap.parse_args()
    split = make_split(args.seed, args.clients, args.per_client, args.train)
    if args.check:
        check(split, args.clients, args.per_client, args.train)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(split, f, separators=(",", ":"))
    os.replace(tmp, args.out)
    print(f"make_iid_split: wrote {os.path.normpath(args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
