"""Every construct edgebn does not compile is refused at import with an EdgebnError whose one-line
message names the op (or the model-level cause) and, for an op, the user's source line (file:line and
the code), never with a traceback from deep inside, a wrong result or a silent fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgebn.errors import EdgebnError, ImportError_, UnsupportedOpError
from opcheck import compile_model

HERE = "test_unsupported.py:"


class Fn(nn.Module):
    def __init__(self, fn, conv_in=3):
        super().__init__()
        self.conv = nn.Conv2d(conv_in, 4, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.conv(x))


FN_LINE = Fn.forward.__code__.co_firstlineno + 1

CASES = {
    # name: (model factory, expected error type, words the message must hold, the offending code; None
    # where the op comes from inside a torch module, whose caller's line is then named)
    "grouped_transposed_conv": (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.ConvTranspose2d(4, 2, 2, stride=2,
                                                                                             groups=2)),
                                UnsupportedOpError, ["conv_transpose2d", "groups=2", "groups=1"], None),
    "pad_nonzero_value": (lambda: Fn(lambda y: F.pad(y, (1, 1, 1, 1), value=1.0)), UnsupportedOpError,
                          ["pad with value 1.0", "only zeros"], "F.pad(y, (1, 1, 1, 1), value=1.0)"),
    "pad_reflect": (lambda: Fn(lambda y: F.pad(y, (1, 1, 1, 1), mode="reflect")), UnsupportedOpError,
                    ["reflect"], 'F.pad(y, (1, 1, 1, 1), mode="reflect")'),
    "conv_padding_mode_circular": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"),
                                   UnsupportedOpError, ["circular"], None),
    "pad_channels": (lambda: Fn(lambda y: F.pad(y, (0, 0, 0, 0, 1, 1))), UnsupportedOpError,
                     ["pad [0, 0, 0, 0, 1, 1]"], "F.pad(y, (0, 0, 0, 0, 1, 1))"),
    "pad_negative_crop": (lambda: Fn(lambda y: F.pad(y, (-1, 0, 0, 0))), UnsupportedOpError,
                          ["non-negative"], "F.pad(y, (-1, 0, 0, 0))"),
    "cat_along_h": (lambda: Fn(lambda y: torch.cat([y, y], dim=2)), UnsupportedOpError,
                    ["cat along dim 2", "channels"], "torch.cat([y, y], dim=2)"),
    "add_broadcast": (lambda: Fn(lambda y: y + y.mean((2, 3), keepdim=True)), UnsupportedOpError,
                      ["add with broadcasting", "(1, 4, 6, 6) + (1, 4, 1, 1)"], "y + y.mean((2, 3), keepdim=True)"),
    "softmax_over_h": (lambda: Fn(lambda y: torch.softmax(y, 2)), UnsupportedOpError,
                       ["softmax over dim 2", "not contiguous"], "torch.softmax(y, 2)"),
    "div_by_tensor": (lambda: Fn(lambda y: y / torch.sigmoid(y)), UnsupportedOpError,
                      ["div of two computed tensors"], "y / torch.sigmoid(y)"),
    "avgpool_divisor_override": (lambda: Fn(lambda y: F.avg_pool2d(y, 2, divisor_override=3)),
                                 UnsupportedOpError, ["divisor_override"], "F.avg_pool2d(y, 2, divisor_override=3)"),
    "maxpool_dilation": (lambda: Fn(lambda y: F.max_pool2d(y, 2, dilation=2)), UnsupportedOpError,
                         ["pooling with dilation (2, 2)"], "F.max_pool2d(y, 2, dilation=2)"),
    "adaptive_pool_uneven": (lambda: Fn(lambda y: F.adaptive_avg_pool2d(y, 4)), UnsupportedOpError,
                             ["adaptive_avg_pool to (4, 4) from 6x6", "even splits"],
                             "F.adaptive_avg_pool2d(y, 4)"),
    "mean_over_channels": (lambda: Fn(lambda y: y.mean(1, keepdim=True)), UnsupportedOpError,
                           ["mean over dims [1]", "only over H,W"], "y.mean(1, keepdim=True)"),
    "cat_of_volumes": (lambda: Fn(lambda y: torch.cat([y.unsqueeze(2), y.unsqueeze(2)], 1)), UnsupportedOpError,
                       ["aten.cat", "rank-5 tensor", "(1, 4, 1, 6, 6)", "Conv3d"], "torch.cat"),
    "elu": (lambda: Fn(lambda y: F.elu(y)), UnsupportedOpError,
            ["unsupported op aten.elu", "what to do: use ReLU, LeakyReLU"], "F.elu(y)"),
    "bicubic_upsample": (lambda: Fn(lambda y: F.interpolate(y, scale_factor=2, mode="bicubic")), UnsupportedOpError,
                         ["unsupported op aten.upsample_bicubic2d", "what to do: use mode='bilinear' or 'nearest'"],
                         'F.interpolate(y, scale_factor=2, mode="bicubic")'),
    "trilinear_upsample": (lambda: Fn(lambda y: F.interpolate(y.unsqueeze(2), scale_factor=2, mode="trilinear")),
                           UnsupportedOpError, ["unsupported op aten.upsample_trilinear3d", "no 3-D resize"],
                           'F.interpolate(y.unsqueeze(2), scale_factor=2, mode="trilinear")'),
    "matmul_of_activations": (lambda: Fn(lambda y: y @ y), UnsupportedOpError,
                              ["unsupported op aten.matmul", "product of two computed tensors"], "y @ y"),
    "any_other_op": (lambda: Fn(lambda y: torch.cumsum(y, 1)), UnsupportedOpError,
                     ["unsupported op aten.cumsum", "what to do: rewrite that part with the ops docs/OPERATORS.md lists"],
                     "torch.cumsum(y, 1)"),
    "batchnorm_without_running_stats": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3),
                                                              nn.BatchNorm2d(4, track_running_stats=False)),
                                        ImportError_, ["no running statistics", "track_running_stats=False"], None),
}


def _inputs():
    return np.random.default_rng(0).standard_normal((8, 3, 6, 6)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_with_op_and_source_line(name, tmp_path):
    factory, error, words, code = CASES[name]
    with pytest.raises(error) as info:
        compile_model(factory().eval(), _inputs(), tmp_path / "out")
    msg = str(info.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    assert HERE in msg or "torch/nn/modules" not in msg, msg
    if code is not None:   # torch.export records module forward frames: here Fn.forward's line
        assert f"{HERE}{FN_LINE}: return self.fn(self.conv(x))" in msg, msg
    assert not (tmp_path / "out").exists()               # nothing half-written


def test_batchnorm_exported_in_training_mode_is_refused():
    from edgebn.importer import import_program

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    with pytest.raises(EdgebnError) as info:
        import_program(torch.export.export(model, (torch.zeros(2, 3, 6, 6),)))
    assert "training mode" in str(info.value) and "eval()" in str(info.value), str(info.value)


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y, torch.relu(y)


class DataDependentBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:                  # dynamic control flow: torch.export cannot trace it
            return torch.relu(y)
        return y


def test_two_inputs_refused(tmp_path):
    from edgebn.importer import import_program

    ep = torch.export.export(TwoInputs(), (torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)))
    with pytest.raises(UnsupportedOpError, match="takes 2 tensor inputs; edgebn compiles single-input models"):
        import_program(ep)


def test_two_outputs_compile_in_order(tmp_path):
    """Several outputs are compiled (tests/test_multi_output.py holds them to the emulator)."""
    c = compile_model(TwoOutputs(), _inputs(), tmp_path / "out")
    assert [o.shape for o in c.emulator.outputs] == [(4, 4, 4), (4, 4, 4)]
    assert c.emulator.graph.outputs[0] != c.emulator.graph.outputs[1]


def test_data_dependent_control_flow_refused(tmp_path):
    with pytest.raises(ImportError_) as info:
        compile_model(DataDependentBranch(), _inputs(), tmp_path / "out")
    msg = str(info.value)
    assert msg.startswith("torch.export failed on the model:"), msg
    assert "\n" not in msg


def test_torch_cond_refused_with_its_source_line(tmp_path):
    """Control flow written with torch.cond exports, and is refused as the op it is."""
    class Cond(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return torch.cond(y.sum() > 0, lambda t: torch.relu(t), lambda t: t.clone(), (y,))

    with pytest.raises(UnsupportedOpError) as info:
        compile_model(Cond(), _inputs(), tmp_path / "out")
    msg = str(info.value)
    assert "unsupported op" in msg and HERE in msg, msg


def test_source_line_is_the_innermost_user_frame(tmp_path):
    """In nested modules the error names the line that made the call, not the top-level forward."""
    class Head(nn.Module):
        def forward(self, y):
            return F.elu(y)                      # <- this line

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = Head()

        def forward(self, x):
            return self.head(self.conv(x))

    with pytest.raises(UnsupportedOpError) as info:
        compile_model(Net(), _inputs(), tmp_path / "out")
    line = Head.forward.__code__.co_firstlineno + 1
    assert f"{HERE}{line}: return F.elu(y)" in str(info.value), str(info.value)
