"""Loads a model Strata trained into SmallCnn and measures it on samples saved as safetensors
(`x` float32 [n, C, H, W], `y` int64 [n]): python evaluate.py model.safetensors data.safetensors"""
import argparse
import json

import torch
from safetensors.torch import load_file

from model import SmallCnn

parser = argparse.ArgumentParser()
parser.add_argument("state")
parser.add_argument("data")
parser.add_argument("--channels", type=int, default=1)
parser.add_argument("--classes", type=int, default=10)
args = parser.parse_args()
model = SmallCnn(args.channels, args.classes)
model.load_state_dict(load_file(args.state))
model.eval()
data = load_file(args.data)
with torch.no_grad():
    predicted = model(data["x"]).argmax(dim=1)
correct = int((predicted == data["y"]).sum())
print(json.dumps({"correct": correct, "samples": len(data["y"]), "accuracy": correct / len(data["y"])}))
