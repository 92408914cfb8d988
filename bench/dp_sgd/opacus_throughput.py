"""Opacus' DP-SGD throughput beside plain SGD in PyTorch: PFLlib's FedAvgCNN on random
1x28x28 data (Fashion-MNIST's shape), expected batch 10, one CPU thread, noise multiplier 1,
per-sample bound 1, Poisson sampling: the same work as
crates/strata-torch/examples/dp_sgd_throughput.rs. Run by scripts/bench-dp-sgd.sh.
"""
import sys
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore")
from opacus import PrivacyEngine  # noqa: E402


def fedavg_cnn():
    # PFLlib's FedAvgCNN (system/flcore/trainmodel/models.py), in_features=1, dim=1024.
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(inplace=False), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(inplace=False), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1024, 512), nn.ReLU(inplace=False), nn.Linear(512, 10),
    )


def data(n):
    return TensorDataset(torch.rand(n, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (n,)))


def epoch(model, optimizer, loader):
    loss_fn = nn.CrossEntropyLoss()
    samples, steps = 0, 0
    for x, y in loader:
        optimizer.zero_grad()
        if len(x) > 0:
            loss_fn(model(x), y).backward()
        optimizer.step()
        samples += len(x)
        steps += 1
    return samples, steps


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch = 10
    for private in (False, True):
        model = fedavg_cnn()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.005)
        warm, timed = DataLoader(data(200), batch_size=batch), DataLoader(data(n), batch_size=batch)
        if private:
            engine = PrivacyEngine(accountant="rdp")
            model, optimizer, timed = engine.make_private(
                module=model, optimizer=optimizer, data_loader=timed,
                noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=True)
            warm = DataLoader(data(200), batch_size=batch)
        epoch(model, optimizer, warm)
        start = time.perf_counter()
        samples, steps = epoch(model, optimizer, timed)
        secs = time.perf_counter() - start
        what = "opacus dp-sgd" if private else "pytorch sgd"
        print(f"{what}: fedavgcnn 1x28x28 expected batch {batch}, {threads} thread(s): {samples} samples in "
              f"{steps} steps, {secs:.2f} s = {samples / secs:.0f} samples/s")


if __name__ == "__main__":
    main()
