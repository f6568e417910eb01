"""Reference BN-CNN architectures (MLPerf Tiny style) as PyTorch modules with BatchNorm.

Each module has `INPUT_SHAPE` (with batch 1, PyTorch layout) and `build(seed=0)`: an eval-mode model
with random weights and randomized BatchNorm statistics and affine parameters (see `randomize`),
deterministic for a given seed. They exist to show that whole networks compile and stay bit-exact;
they are not trained.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize", "MODELS"]

MODELS = ("resnet8", "dscnn", "mobilenet_v1")


@torch.no_grad()
def randomize(model: nn.Module, input_shape, seed: int = 0) -> nn.Module:
    """Random weights (PyTorch's default init, seeded), random BN gamma/beta, and running statistics
    that are realistic but not exact: measured on standard normal inputs (train mode, cumulative
    average), then perturbed per channel (mean shifted by up to 0.2 std, variance scaled by 0.7-1.4).
    Realistic statistics keep activations at a sane scale through the depth, as in a trained net."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        c = bn.num_features
        bn.reset_running_stats()
        bn.momentum = None                     # cumulative average over the batches below
        bn.weight.copy_(0.5 + torch.rand(c, generator=g))
        bn.bias.copy_(0.2 * torch.randn(c, generator=g))
    model.train()
    for _ in range(2):
        model(torch.randn((16,) + tuple(input_shape[1:]), generator=g))
    for bn in bns:
        c = bn.num_features
        std = bn.running_var.sqrt()
        bn.running_mean.add_(0.2 * std * (2 * torch.rand(c, generator=g) - 1))
        bn.running_var.mul_(0.7 + 0.7 * torch.rand(c, generator=g))
        bn.momentum = 0.1
    return model.eval()
