"""Exports SmallCnn for Strata: python export.py model.pt [--channels 1 --classes 10 --seed 0]"""
import argparse

import torch

from model import SmallCnn

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--channels", type=int, default=1)
parser.add_argument("--classes", type=int, default=10)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.manual_seed(args.seed)
torch.jit.script(SmallCnn(args.channels, args.classes)).save(args.out)
