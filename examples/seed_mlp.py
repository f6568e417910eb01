"""The seed article's example, compiled: `nn.Linear -> nn.BatchNorm1d -> ReLU -> nn.Linear`.

The article explains BatchNorm: batch mean and variance while training, normalize, learnable gamma
and beta, running averages used at inference, and BN placed between the affine op and the
activation. Here its SimpleNN is trained on the 8x8 digits (flattened to 64 features), put in eval
mode (so BN uses its running averages), exported, and compiled: edgebn folds the BatchNorm1d into
the first Linear (see the fold log in the printed table) and emits int8 C.

    python examples/seed_mlp.py [--out build/seed_mlp]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch import nn

import edgebn


class SimpleNN(nn.Module):
    def __init__(self, input_size: int = 64, hidden_size: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.bn1 = nn.BatchNorm1d(hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.bn1(self.fc1(x))))


def digits_features(seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], d.target[order].astype(np.int64)
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def train_simple_nn(epochs: int = 30, seed: int = 0) -> SimpleNN:
    torch.manual_seed(seed)
    x, y, _, _ = digits_features(seed)
    model = SimpleNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        model.train()  # BN normalizes with batch statistics and updates its running averages
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()  # inference: BN uses the running averages, and only then can it be folded


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/seed_mlp")
    args = ap.parse_args(argv)
    model = train_simple_nn()
    x_train, _, x_test, y_test = digits_features()
    compiled = edgebn.compile(model, x_train[:500], args.out, example_input=torch.zeros(1, 64), force=True)
    from edgebn.report import format_table

    print(format_table(compiled.report))
    with torch.no_grad():
        f_acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    q_acc = (compiled.emulate(x_test).argmax(1) == y_test).mean()
    print(f"SimpleNN top-1: float {f_acc:.2%}, int8 {q_acc:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
