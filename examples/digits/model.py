"""A small BatchNorm CNN for scikit-learn's bundled 8x8 digits (no download needed).

Every BatchNorm sits where the seed article puts it: between the affine op (conv or linear) and its
activation; the head is the article's `Linear -> BatchNorm1d -> ReLU -> Linear`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

INPUT_SHAPE = (1, 1, 8, 8)


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_data(seed: int = 0):
    """(x_train, y_train, x_test, y_test): float32 NCHW in [0, 1], a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def train(epochs: int = 12, seed: int = 0) -> tuple[DigitsNet, dict]:
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_data(seed)
    model = DigitsNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=g).split(64):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    return model, {"float_top1": float(acc)}


def qat_finetune(model: nn.Module, x_train: np.ndarray, calib: np.ndarray, epochs: int = 4, lr: float = 3e-5,
                 freeze_bn_epoch: int = 0, keep_ranges: bool = True, seed: int = 0, batch: int = 64):
    """Quantization-aware fine-tuning with edgebn.qat (docs/QAT.md): returns the QAT module (eval mode).

    The int8-faithful forward (BN folded as edgebn folds it, per-channel int8 weights, activation
    ranges kept at edgebn's calibration) is distilled to the float model's logits (MSE) with Adam and a
    learning rate decaying linearly to 0. The BN running statistics train with batch statistics until
    `freeze_bn_epoch` and are frozen from then on (0: frozen from the start, right for a converged model).
    keep_ranges=False lets the observed ranges follow the batches' min/max (moving average) instead."""
    from edgebn import qat

    torch.manual_seed(seed)
    xt = torch.from_numpy(x_train)
    with torch.no_grad():
        teacher = model.eval()(xt)
    qm = qat.prepare(model, calib)
    if keep_ranges:
        qm.freeze_ranges()
    opt = torch.optim.Adam(qm.parameters(), lr=lr)
    steps = epochs * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        if epoch == freeze_bn_epoch:
            qm.freeze_bn()
        qm.train()
        for idx in torch.randperm(len(xt), generator=g).split(batch):
            loss = nn.functional.mse_loss(qm(xt[idx]), teacher[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return qm.eval()
