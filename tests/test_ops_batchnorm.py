"""BatchNorm in every position: after conv/linear (folded), after an activation, at the network input,
affine=False, conv without bias, feeding two consumers, in a residual branch, after a pool, as the
output, BatchNorm1d after Conv1d and Linear, BatchNorm1d kept on a feature vector after Linear -> ReLU. Each model runs with random BN statistics; the fold log
must say, per BN, what happened (SPEC.md section 1): "folded" into the conv/linear right before it,
"folded-forward" into the unpadded conv/linear that alone reads it, or "kept-affine" (a 1x1
depthwise conv) with the reason. torch float vs emulator (SQNR) and host C == emulator on every int8.

SQNR bound: 2-5 int8 layers measure 35-47 dB; >= 28 dB. A dropped BN, or a shift folded through
a zero-padded conv (the padded taps would not see it), costs far more than that.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from opcheck import check_model, count_batchnorms, randomize_bn

MIN_SQNR_DB = 28.0


class Residual(nn.Module):
    def __init__(self, c, shortcut):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.shortcut = shortcut

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class TwoReaders(nn.Module):
    """relu -> BN whose output two convs read."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.a = nn.Conv2d(4, 4, 1)
        self.b = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.bn(torch.relu(self.c0(x)))
        return self.a(y) + self.b(y)


class ConvTwoReaders(nn.Module):
    """conv whose output a BN and a pool both read: the BN cannot fold back into it."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c1 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.c0(x)
        return self.c1(self.bn(y)) + y


CASES = {
    # name: (model factory, input shape, expected fold-log actions in graph order)
    "after_conv": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
                   (1, 3, 6, 6), ["folded"]),
    "after_conv_without_bias": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)),
                                (1, 3, 6, 6), ["folded"]),
    "affine_false": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU6()),
                     (1, 3, 6, 6), ["folded"]),
    "after_depthwise_and_grouped": (lambda: nn.Sequential(
        nn.Conv2d(4, 8, 3, groups=4, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 3, groups=2), nn.BatchNorm2d(4)), (1, 4, 6, 6), ["folded", "folded"]),
    "two_in_a_row": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4)),
                     (1, 3, 6, 6), ["folded", "folded"]),
    "after_linear": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                           nn.Linear(8, 3)), (1, 12), ["folded"]),
    "after_activation_before_unpadded_conv": (lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 3)),
        (1, 3, 7, 7), ["folded-forward"]),
    "after_activation_before_padded_conv": (lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 3, padding=1)),
        (1, 3, 7, 7), ["kept-affine"]),
    "after_activation_before_grouped_conv": (lambda: nn.Sequential(
        nn.Conv2d(3, 6, 1), nn.Hardswish(), nn.BatchNorm2d(6), nn.Conv2d(6, 6, 3, groups=3)),
        (1, 3, 7, 7), ["folded-forward"]),
    "at_input_before_unpadded_conv": (lambda: nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)),
                                      (1, 3, 6, 6), ["folded-forward"]),
    "at_input_before_padded_conv": (lambda: nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, padding=1),
                                                          nn.BatchNorm2d(4), nn.ReLU()),
                                    (1, 3, 6, 6), ["kept-affine", "folded"]),
    "at_input_before_linear": (lambda: nn.Sequential(nn.BatchNorm1d(10), nn.Linear(10, 4)), (1, 10),
                               ["folded-forward"]),
    # issue 10: a BatchNorm1d kept on a feature vector (rank 2), as the last layer and in the middle
    "linear_relu_bn1d_as_output": (lambda: nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.BatchNorm1d(8)),
                                   (1, 12), ["kept-affine"]),
    "linear_relu_bn1d_before_relu6": (lambda: nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.BatchNorm1d(8),
                                                            nn.ReLU6(), nn.Linear(8, 3)),
                                      (1, 12), ["kept-affine"]),
    "after_pool": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(4),
                                         nn.Conv2d(4, 4, 1)), (1, 3, 8, 8), ["folded-forward"]),
    "after_pool_then_pool": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AvgPool2d(2),
                                                   nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1)),
                             (1, 3, 8, 8), ["kept-affine"]),
    "as_output": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)),
                  (1, 3, 6, 6), ["kept-affine"]),
    "feeding_two_consumers": (TwoReaders, (1, 3, 7, 7), ["kept-affine"]),
    "conv_output_with_two_readers": (ConvTwoReaders, (1, 3, 6, 6), ["folded-forward"]),
    "residual_branch_and_conv_shortcut": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Residual(
        4, nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)))), (1, 3, 6, 6),
        ["merged-branch", "merged-branch"]),      # one 3x3 conv: passes/merge_branches.py
    "residual_bn_on_identity_shortcut": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                                               Residual(4, nn.BatchNorm2d(4))),
                                         (1, 3, 6, 6), ["merged-branch", "merged-branch"]),
    "conv1d_batchnorm1d": (lambda: nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(),
                                                 nn.BatchNorm1d(4), nn.Conv1d(4, 2, 1)),
                           (1, 3, 12), ["folded", "folded-forward"]),
    "before_flatten_linear": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),
                                                    nn.Flatten(), nn.Linear(64, 3)),
                              (1, 3, 6, 6), ["folded-forward"]),
    "before_pool_flatten_linear": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                                         nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3)),
                                   (1, 3, 6, 6), ["folded-forward"]),
    "before_flatten_two_linears": (lambda: FlattenTwoReaders(), (1, 3, 6, 6), ["kept-affine"]),
}


class FlattenTwoReaders(nn.Module):
    """BN -> flatten read by two linears: folding forward would need both, so the BN is kept."""
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.a, self.b = nn.Linear(64, 3), nn.Linear(64, 3)

    def forward(self, x):
        f = torch.flatten(self.bn(torch.relu(self.conv(x))), 1)
        return self.a(f) + self.b(f)


@pytest.mark.parametrize("name", sorted(CASES))
def test_batchnorm_position(name, tmp_path):
    factory, shape, actions = CASES[name]
    torch.manual_seed(11)
    model = randomize_bn(factory(), seed=11)
    r = check_model(model, shape, tmp_path, min_sqnr_db=MIN_SQNR_DB, calibrate_on_test=True)
    log = r.fold_log
    assert len(log) == count_batchnorms(model), log
    assert len({f["bn"] for f in log}) == len(log)
    assert [f["action"] for f in log] == actions, log
    layer_names = {n.name for n in r.compiled.emulator.graph.nodes}
    for f in log:
        assert f["reason"], f
        if f["action"] == "kept-affine":
            assert f["into"] == f["bn"] and f["bn"] in layer_names           # it runs, as a layer
            assert "kept as a per-channel affine (1x1 depthwise conv)" in f["reason"]
        else:
            assert f["into"] in layer_names and f["bn"] not in layer_names   # it is gone, into a layer
    assert all(n.op != "batch_norm" for n in r.compiled.emulator.graph.nodes)


def test_kept_affine_reason_names_the_blocker(tmp_path):
    torch.manual_seed(12)
    factory, shape, _ = CASES["after_activation_before_padded_conv"]
    r = check_model(randomize_bn(factory(), 12), shape, tmp_path, min_sqnr_db=MIN_SQNR_DB,
                    calibrate_on_test=True)
    (f,) = r.fold_log
    assert "zero-pads its input, so folding forward would not be exact" in f["reason"], f
    factory, shape, _ = CASES["feeding_two_consumers"]
    r = check_model(randomize_bn(factory(), 12), shape, tmp_path, min_sqnr_db=MIN_SQNR_DB,
                    calibrate_on_test=True)
    (f,) = r.fold_log
    assert "several readers" in f["reason"], f
