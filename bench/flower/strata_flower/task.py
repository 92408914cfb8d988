"""What both sides of the comparison compute, written for PyTorch the way Strata does it in Rust.

- Model: PFLlib's FedAvgCNN (crates/strata-torch/src/model/cnn.rs): conv 1→32 k5, ReLU,
  max-pool 2, conv 32→64 k5, ReLU, max-pool 2, flatten, fc 1024→512, ReLU, fc 512→10; no
  padding; PyTorch's default initialisation (Strata's layers.rs reproduces it).
- Data: Fashion-MNIST from Debian's IDX files, merged index space (official train set
  0..59999, then the official test set 60000..69999), as split files index it; pixels
  scaled as torchvision's ToTensor() then Normalize(0.5, 0.5): x/255, then (x - 0.5)/0.5, f32
  (crates/strata-torch/src/client_data.rs).
- Training (crates/strata-torch/src/train.rs): plain SGD (no momentum, no weight decay),
  cross-entropy, mini-batches of `batch_size` over a fresh shuffle each epoch, the last partial
  batch kept (drop_last=False).
- Evaluation (crates/strata-torch/src/eval.rs): eval mode, no gradients, batches of 100,
  accuracy = correct / test samples.
"""

import functools
import gzip
import json
import os

import numpy as np
import torch
from torch import nn

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
# Split files are named relative to the checkout (bench/flower/strata_flower/ is three levels
# down), so that records never carry one machine's absolute paths and Ray's workers, whatever
# their working directory, find the same file.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class FedAvgCNN(nn.Module):
    """PFLlib's FedAvgCNN for 1×28×28 inputs (in_features=1, num_classes=10, dim=1024)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, flat: int = 1024) -> None:
        super().__init__()
        # Construction order = initialisation order: conv1, conv2, fc1, fc (as PFLlib's).
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5, padding=0, stride=1, bias=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=0, stride=1, bias=True)
        self.fc1 = nn.Linear(flat, 512)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc(x)


def _read_idx(path: str, magic: int, header: int) -> np.ndarray:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the name says (as Strata's reader)
        raw = gzip.decompress(raw)
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise ValueError(f"{path}: IDX magic {got:#010x}, expected {magic:#010x}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


def _locate(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx", 1) + ".gz", stem.replace("-idx", ".idx", 1)):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{stem}(.gz) not in {data_dir} (apt-get install dataset-fashion-mnist)")


@functools.lru_cache(maxsize=2)
def load_fmnist(data_dir: str = DEFAULT_DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 samples as (uint8 images [70000, 28, 28], int64 labels [70000]); once per process."""
    parts = []
    for images, labels in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                           ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        x = _read_idx(_locate(data_dir, images), 0x0803, 16).reshape(-1, 28, 28)
        y = _read_idx(_locate(data_dir, labels), 0x0801, 8)
        if len(x) != len(y):
            raise ValueError(f"{data_dir}: {len(x)} images but {len(y)} labels")
        parts.append((x, y))
    return np.concatenate([parts[0][0], parts[1][0]]), np.concatenate([parts[0][1], parts[1][1]]).astype(np.int64)


@functools.lru_cache(maxsize=2)
def load_split(path: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The split file's clients as (train indices, test indices); once per process. A relative
    `path` is taken from the checkout's root."""
    with open(os.path.join(REPO_ROOT, path)) as f:
        split = json.load(f)
    return [(np.asarray(c["train"], dtype=np.int64), np.asarray(c["test"], dtype=np.int64)) for c in split["clients"]]


def _tensors(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images[idx]).unsqueeze(1).to(torch.float32) / 255.0
    return (x - 0.5) / 0.5, torch.from_numpy(labels[idx])


def client_data(split_file: str, client: int, data_dir: str = DEFAULT_DATA_DIR):
    """(train_x, train_y, test_x, test_y) of client `client`, built from the cached uint8 set."""
    images, labels = load_fmnist(data_dir)
    train, test = load_split(split_file)[client]
    return (*_tensors(images, labels, train), *_tensors(images, labels, test))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, batch_size: int, epochs: int,
          generator: torch.Generator) -> float:
    """Local SGD; returns the mean cross-entropy over every sample seen."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    loss_fn = nn.CrossEntropyLoss()
    n = len(y)
    total, seen = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for first in range(0, n, batch_size):
            idx = order[first:first + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
    return total / max(seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 100) -> tuple[float, float]:
    """(accuracy, mean loss) on (x, y); (0, 0) without samples."""
    model.eval()
    n = len(y)
    correct, loss = 0, 0.0
    for first in range(0, n, batch_size):
        logits = model(x[first:first + batch_size])
        target = y[first:first + batch_size]
        loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(1) == target).sum())
    return (correct / n, loss / n) if n else (0.0, 0.0)
