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


def make_split(seed: int = SEED) -> dict:
    indices = list(range(DATASET_LEN))
    random.Random(seed).shuffle(indices)
    clients = []
    for c in range(CLIENTS):
        share = indices[c * PER_CLIENT:(c + 1) * PER_CLIENT]
        clients.append({"train": share[:TRAIN], "test": share[TRAIN:]})
    return {
        "description": (
            f"Fashion-MNIST, {CLIENTS} IID clients of {PER_CLIENT} samples ({TRAIN} train, "
            f"{PER_CLIENT - TRAIN} test): all {DATASET_LEN} indices shuffled with Python's "
            f"random.Random({seed}).shuffle and dealt out {PER_CLIENT} per client in order, the first "
            f"{TRAIN} of each share for training (bench/flower/make_iid_split.py). Indices point into the "
            "official train set (0..59999) followed by the official test set (60000..69999)."
        ),
        "dataset": "fmnist",
        "num_clients": CLIENTS,
        "clients": clients,
    }


def check(split: dict) -> None:
    """What Strata's reader checks (every index in range, none twice, train non-empty), plus sizes."""
    clients = split["clients"]
    assert len(clients) == split["num_clients"] == CLIENTS, len(clients)
    seen = set()
    for i, share in enumerate(clients):
        assert len(share["train"]) == TRAIN and len(share["test"]) == PER_CLIENT - TRAIN, i
        for idx in share["train"] + share["test"]:
            assert 0 <= idx < DATASET_LEN and idx not in seen, (i, idx)
            seen.add(idx)
    assert len(seen) == DATASET_LEN


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--check", action="store_true", help="validate the split before writing it")
    args = ap.parse_args()
    split = make_split(args.seed)
    if args.check:
        check(split)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(split, f, separators=(",", ":"))
    os.replace(tmp, args.out)
    print(f"make_iid_split: wrote {os.path.normpath(args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
