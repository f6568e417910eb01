"""BatchNorm folding, checked against torch eval outputs in float64."""
import numpy as np
import pytest
import torch
from torch import nn

from edgebn.execute import execute, run_float
from edgebn.importer import import_module
from edgebn.ops.reshape import device_to_torch, torch_to_device
from edgebn.passes import fold_batchnorm, run_passes
from edgebn.passes.fold_batchnorm import fold_bn_forward_into_weights, fold_bn_into_weights


def randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            if m.affine:
                m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)
    return model.eval()


def float_graph_output(model, x):
    g = run_passes(import_module(model.float(), torch.zeros((1,) + tuple(x.shape[1:]))))
    out = execute(g, torch_to_device(x.numpy().astype(np.float64)), run_float)[g.outputs[0]]
    return g, device_to_torch(out, g.torch_layouts[g.outputs[0]])


def test_fold_core_equals_conv_then_bn_float64():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1).double()
    bn = randomize_bn(nn.BatchNorm2d(5)).double()
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    c = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    w, b = fold_bn_into_weights(conv.weight.detach().numpy(), conv.bias.detach().numpy(), a, c)
    ref = bn(conv(x))
    got = nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), padding=1)
    assert torch.allclose(ref, got, rtol=0, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_fold_forward_core_equals_bn_then_conv_float64(groups):
    torch.manual_seed(1)
    bn = randomize_bn(nn.BatchNorm2d(4), seed=3).double()
    conv = nn.Conv2d(4, 8, 3, groups=groups).double()          # no padding: forward fold is exact
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    c = (bn.bias - bn.running_mean * torch.from_numpy(a)).detach().numpy()
    w_ohwi = conv.weight.detach().numpy().transpose(0, 2, 3, 1)
    w, b = fold_bn_forward_into_weights(w_ohwi, conv.bias.detach().numpy(), a, c, groups)
    got = nn.functional.conv2d(x, torch.from_numpy(w.transpose(0, 3, 1, 2).copy()), torch.from_numpy(b),
                               groups=groups)
    assert torch.allclose(conv(bn(x)), got, rtol=0, atol=1e-12)


class SeedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn1, self.fc2 = nn.Linear(12, 16), nn.BatchNorm1d(16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn1(self.fc1(x))))


class BNPositions(nn.Module):
    """BN at the input, after conv (no bias), after the activation (before an unpadded conv and
    before a padded one), affine=False, and a BN read by two consumers."""
    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.c1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.bn_act = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.bn_na = nn.BatchNorm2d(8, affine=False)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_two = nn.BatchNorm2d(8)

    def forward(self, x):
        y = torch.relu(self.bn1(self.c1(self.bn_in(x))))
        y = self.c2(self.bn_act(y))
        y = self.c3(self.bn_na(torch.relu(y)))
        z = self.bn_two(y)
        return torch.relu(z) + z


@pytest.mark.parametrize("model_cls, shape", [(SeedMLP, (5, 12)), (BNPositions, (3, 3, 6, 6))])
def test_folded_float_graph_equals_torch_eval_float64(model_cls, shape):
    torch.manual_seed(0)
    model = randomize_bn(model_cls(), seed=7)
    x = torch.randn(*shape)
    g, got = float_graph_output(model, x)
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    assert np.allclose(got, ref, rtol=1e-9, atol=1e-9)
    assert not any(n.op == "batch_norm" for n in g.nodes)


def test_fold_log_accounts_for_every_bn_with_its_reason():
    model = randomize_bn(BNPositions())
    g = fold_batchnorm(import_module(model, torch.zeros(1, 3, 6, 6)))
    log = {r.bn: r for r in g.fold_log}
    assert len(log) == 5
    actions = sorted(r.action for r in log.values())
    assert actions.count("folded") == 2          # bn1 into c1; bn_two into c3 (its two readers don't matter)
    assert actions.count("folded-forward") == 1  # bn_act into the unpadded 1x1 c2
    assert actions.count("kept-affine") == 2     # bn_in, bn_na: the conv after each zero-pads
    kept = [r for r in log.values() if r.action == "kept-affine"]
    assert all("zero-pads" in r.reason for r in kept)


def test_seed_mlp_bn1d_folds_into_linear():
    g = fold_batchnorm(import_module(randomize_bn(SeedMLP()), torch.zeros(1, 12)))
    (rec,) = g.fold_log
    assert rec.action == "folded" and rec.into == "linear"


@pytest.mark.parametrize("pool", [False, True])
def test_bn_before_flatten_linear_folds_forward_exactly(pool):
    """BN2d -> Flatten -> Linear: the flatten is a permute (spatial map) or a free reshape (after a
    global pool); either way the BN folds into the linear's columns, exactly in float64."""
    torch.manual_seed(2)
    head = [nn.AdaptiveAvgPool2d(1)] if pool else []
    feats = 4 if pool else 4 * 16
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), *head, nn.BatchNorm2d(4), nn.Flatten(),
                                       nn.Linear(feats, 5)), seed=5)
    x = torch.randn(3, 3, 6, 6)
    g, got = float_graph_output(model, x)
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    assert np.allclose(got, ref, rtol=1e-9, atol=1e-9)
    (rec,) = g.fold_log
    assert rec.action == "folded-forward" and "through flatten" in rec.reason
    assert [n.op for n in g.nodes] == ["conv2d"] + (["avg_pool2d", "reshape"] if pool else []) + ["linear"]


def test_module_in_training_mode_is_refused_and_left_as_it_was():
    from edgebn.errors import ImportError_

    model = SeedMLP().train()
    with pytest.raises(ImportError_, match=r"training mode .*model\.eval\(\)"):
        import_module(model, torch.zeros(1, 12))
    assert model.training and model.bn1.training       # edgebn did not flip the caller's module


def test_node_source_names_the_user_line_and_the_module():
    """Inside nn.Sequential the user line is the Sequential's caller; the module path says which layer."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())

        def forward(self, x):
            return self.features(x)  # the line every node should name

    g = import_module(Net().eval(), torch.zeros(1, 1, 5, 5))
    conv = next(n for n in g.nodes if n.op == "conv2d")
    assert "test_fold.py:" in conv.source and "the line every node should name" in conv.source
    assert conv.source.endswith("(in features.0: Conv2d)")


def test_forward_fold_refused_where_dead_channels_would_swamp_the_weights():
    """A BN after a ReLU whose units never fired (running_var ~ 0: a = gamma / sqrt(eps) ~ 316) would
    scale those weight columns of the next linear far above the rest; it is kept as an affine. The
    same BN with live statistics still folds forward."""
    def net(dead: bool):
        m = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.BatchNorm1d(16), nn.Linear(16, 4))
        randomize_bn(m)
        if dead:
            with torch.no_grad():
                m[2].running_var[:5] = 0.0
                m[2].running_mean[:5] = 0.0
        return m.eval()

    live = fold_batchnorm(import_module(net(False), torch.zeros(1, 12)))
    assert [r.action for r in live.fold_log] == ["folded-forward"]
    dead = fold_batchnorm(import_module(net(True), torch.zeros(1, 12)))
    (rec,) = dead.fold_log
    assert rec.action == "kept-affine" and "weight-rounding noise" in rec.reason, rec
