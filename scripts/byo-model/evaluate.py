"""Loads a model Strata trained into SmallCnn and measures it: on samples saved as safetensors
(`x` float32 [n, C, H, W], `y` labels [n]), or on an IDX dataset's official test set.
  python evaluate.py model.safetensors data.safetensors
  python evaluate.py model.safetensors --idx /usr/share/datasets/fashion-mnist"""
import argparse
import gzip
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from model import SmallCnn


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (gzipped or not) as a uint8 tensor of its dimensions."""
    opened = gzip.open if path.suffix == ".gz" else open
    with opened(path, "rb") as f:
        data = f.read()
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return torch.frombuffer(bytearray(data[4 + 4 * len(dims) :]), dtype=torch.uint8).reshape(dims)


def idx_test_set(root: Path):
    find = lambda stem: next(p for p in (root / stem, root / f"{stem}.gz") if p.exists())
    x = read_idx(find("t10k-images-idx3-ubyte")).float().unsqueeze(1) / 255.0
    # Strata's (and PFLlib's) transform: x/255, then (x - 0.5) / 0.5.
    return (x - 0.5) / 0.5, read_idx(find("t10k-labels-idx1-ubyte")).long()


parser = argparse.ArgumentParser()
parser.add_argument("state")
parser.add_argument("data", nargs="?")
parser.add_argument("--idx", type=Path, help="an IDX dataset's directory: its t10k files")
parser.add_argument("--channels", type=int, default=1)
parser.add_argument("--classes", type=int, default=10)
args = parser.parse_args()

model = SmallCnn(args.channels, args.classes)
model.load_state_dict(load_file(args.state))
model.eval()
if args.idx is not None:
    x, y = idx_test_set(args.idx)
else:
    data = load_file(args.data)
    x, y = data["x"], data["y"].long()
with torch.no_grad():
    predicted = torch.cat([model(batch).argmax(dim=1) for batch in x.split(1000)])
correct = int((predicted == y).sum())
print(json.dumps({"correct": correct, "samples": len(y), "accuracy": correct / len(y)}))
