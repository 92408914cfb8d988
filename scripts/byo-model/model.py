"""A model as a PyTorch user writes it: a small CNN with BatchNorm whose classifier is called
`classifier`. Strata trains it from its TorchScript export and hands back a state_dict."""
import torch
from torch import nn


class SmallCnn(nn.Module):
    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, 8, 5),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(64, classes)

    # Optional: the classifier's input, for CCVR and feature normalization.
    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
