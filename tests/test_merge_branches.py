"""passes/merge_branches.py: RepVGG/MobileOne parallel conv+BN branches summed by adds become one conv,
exactly in float64; what does not match is left alone; the compiled model's C equals the emulator."""
import numpy as np
import torch
from torch import nn

import edgebn
from edgebn.execute import execute, run_float
from edgebn.importer import import_module
from edgebn.ops.reshape import device_to_torch, torch_to_device
from edgebn.passes import PIPELINE, merge_branches

from helpers import assert_host_equals_emulator
from test_fold import randomize_bn


def cbn(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class RepBlock(nn.Module):
    """RepVGG/MobileOne training form: kxk conv+BN, 1x1 conv+BN, identity BN, summed, then ReLU."""

    def __init__(self, c, groups=1, k=3, identity=True, extra_reader=False, stride=(1, 1)):
        super().__init__()
        self.kxk, self.scale = cbn(c, c, k, stride[0], groups), cbn(c, c, 1, stride[1], groups)
        self.kxk2 = cbn(c, c, k, stride[0], groups)
        self.identity = nn.BatchNorm2d(c) if identity else None
        self.extra_reader = extra_reader

    def forward(self, x):
        s = self.scale(x)
        y = self.kxk(x) + self.kxk2(x) + s
        if self.identity is not None:
            y = y + self.identity(x)
        y = torch.relu(y)
        return y + s if self.extra_reader else y


def net(**kw):
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(cbn(3, 8, 3), nn.ReLU(), RepBlock(8, **kw), RepBlock(8, groups=8, k=5, **kw),
                                       nn.Conv2d(8, 4, 1)))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.num_batches_tracked.fill_(100)      # "trained": no never-updated-statistics warning
    return model


def graphs(model, x):
    g = import_module(model.float(), torch.zeros((1,) + tuple(x.shape[1:])))
    i = PIPELINE.index(merge_branches)
    for p in PIPELINE[:i]:
        g = p(g)
    return g, merge_branches(g)


def run(g, x):
    out = execute(g, torch_to_device(x.numpy().astype(np.float64)), run_float)[g.outputs[0]]
    return device_to_torch(out, g.torch_layouts[g.outputs[0]])


def test_rep_blocks_merge_to_one_conv_exactly():
    model, x = net(), torch.randn(3, 3, 12, 12)
    before, after = graphs(model, x)
    convs = [n for n in after.nodes if n.op == "conv2d"]
    assert len(convs) == 4 and not [n for n in after.nodes if n.op == "add"]     # stem, 2 merged blocks, head
    dense, dw = convs[1], convs[2]
    assert dense.params["weight"].shape == (8, 3, 3, 8) and dense.attrs["groups"] == 1
    assert dw.params["weight"].shape == (8, 5, 5, 1) and dw.attrs["groups"] == 8
    assert dw.attrs["padding"] == (2, 2, 2, 2)
    assert sum("merged 4 parallel branches" in s for s in after.notes) == 2
    ref = model.double()(x.double()).detach().numpy()
    got_before, got_after = run(before, x), run(after, x)
    assert np.abs(got_before - ref).max() < 1e-10
    assert np.abs(got_after - got_before).max() < 1e-10 * max(1.0, np.abs(ref).max())
    # every BN of a merged block keeps its record, naming the merged conv
    names = {n.name for n in after.nodes}
    assert all(r.into in names for r in after.fold_log)
    assert sum(r.action == "merged-branch" for r in after.fold_log) == 8     # 2 blocks x (3 convs + identity)


def test_branch_with_another_reader_is_left_alone():
    model, x = net(identity=False, extra_reader=True), torch.randn(2, 3, 12, 12)
    before, after = graphs(model, x)
    # per block: the 1x1 branch is also read after the ReLU, so only the two kxk branches merge
    count = lambda g, op: sum(n.op == op for n in g.nodes)          # noqa: E731
    assert count(after, "add") == count(before, "add") - 2
    assert count(after, "conv2d") == count(before, "conv2d") - 2
    assert np.abs(run(after, x) - run(before, x)).max() < 1e-10


class Two(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_misaligned_or_different_dilation_left_alone():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 8, 8)
    for m in (Two(nn.Conv2d(4, 4, 3, 1, 1), nn.Conv2d(4, 4, 3, 1, 2, dilation=2)),     # dilation 1 vs 2
              Two(nn.Conv2d(4, 4, 3, 1, 1), nn.Conv2d(4, 4, 2, 1, "same")),            # even kernel, off-centre
              Two(nn.Conv2d(4, 4, 3, 1, 1), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1)))):  # another input
        before, after = graphs(m.eval(), x)
        assert [n.op for n in after.nodes] == [n.op for n in before.nodes]
    ok = Two(nn.Conv2d(4, 4, 3, 2, 1), nn.Conv2d(4, 4, 1, 2, 0))                       # stride 2, centred
    before, after = graphs(ok.eval(), x)
    assert [n.op for n in after.nodes] == ["conv2d"]
    assert np.abs(run(after, x) - run(before, x)).max() < 1e-12


def test_compiled_rep_net_host_c_equals_emulator(tmp_path):
    model = net()
    calib = torch.randn(16, 3, 12, 12).numpy()
    compiled = edgebn.compile(model, calib, tmp_path / "m", example_input=torch.zeros(1, 3, 12, 12), force=True)
    assert "add" not in [n.op for n in compiled.emulator.graph.nodes]
    assert_host_equals_emulator(compiled, tmp_path / "run", 8, calib[:4])
