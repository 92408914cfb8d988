"""PFLlib's FedAvgCNN (system/flcore/trainmodel/models.py), as a PyTorch user has it: the
model Strata's built-in `cnn` reimplements, here to be exported and trained as TorchScript.
python fedavg_cnn.py OUT.pt [--seed 1]   (Fashion-MNIST: 1 channel, 28x28, 10 classes)"""
import argparse

import torch
from torch import nn


class FedAvgCNN(nn.Module):
    def __init__(self, in_features: int = 1, num_classes: int = 10, dim: int = 1024):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_features, 32, kernel_size=5, padding=0, stride=1, bias=True),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(2, 2)),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(32, 64, kernel_size=5, padding=0, stride=1, bias=True),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(2, 2)),
        )
        self.fc1 = nn.Sequential(nn.Linear(dim, 512), nn.ReLU(inplace=True))
        self.fc = nn.Linear(512, num_classes)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return self.fc1(torch.flatten(out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.jit.script(FedAvgCNN()).save(args.out)
