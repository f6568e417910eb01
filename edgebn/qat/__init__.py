"""Quantization-aware training with every BatchNorm folded the way edgebn folds it (training side:
imports torch, like the importer; the IR, the compiler's numerics and the emulator never do).

    from edgebn import qat
    qm = qat.prepare(model, calib)          # ranges start at edgebn's calibration, BN unfrozen
    ... train qm like any nn.Module; qm.freeze_bn() after a chosen epoch ...
    qm.eval(); y = qm(x)                    # integer-exact: every int8 equals the compiled emulator's
    edgebn.compile(qat.convert(qm), calib, "build/m", example_input=x[:1], ranges=qm.ranges())

`prepare` imports the model through edgebn's own importer and passes, so the trainable module has the
compiled graph's structure and tensor names. In training mode its forward is the fake-quantized one:
  - conv/linear + BN: w' = w * gamma/sqrt(running_var + eps) per output channel (fold_batchnorm's
    formula), fake-quantized per channel as edgebn quantizes weights (scale max|w'|/127, [-127, 127],
    round half away from zero, straight-through gradient). Until `freeze_bn()` the output is
    corrected to the batch statistics and the running statistics keep updating (torch.ao's
    ConvBn scheme: conv(x, fq(w')) / s + b, then BN with batch statistics); after it the running
    statistics are frozen and the forward is the deployed one, conv(x, fq(w')) + fq(b').
  - every tensor that the compiler gives its own (scale, zero_point) is fake-quantized with SPEC.md's
    formulas from a range that is observed (EMA of batch min/max, the default) or learned (`ranges=
    "learned"`: lo/hi are parameters, straight-through gradient). Pools and reshapes keep their input's.
In eval mode the forward is integer-exact: the float graph with the folded float64 weights is
quantized by edgebn's own quantize stage from the current ranges, then run with int64 accumulation,
MultiplyByQuantizedMultiplier requantisation, TFLite's ADD and pool arithmetic, written in torch.

Each operator's part lives in its package: edgebn/ops/<op>/qat.py registers `QAT_OPS = {op: QatOp}`
(edgebn/qat/torchops.py) with its float map (`fake`, or `apply` + `device_weight` for the weighted
ops BN folds into) and its integer kernel (`integer`); an op without one is refused by `prepare`.
Which ops are weighted, and which fold a flatten into their columns, comes from OpDef traits.
`edgebn compile` of `convert(qm)` with `ranges=qm.ranges()` reproduces it bit for bit.

Supported: Conv1d/Conv2d (any stride, padding, dilation, groups), Linear, a BatchNorm right after
either, ReLU / ReLU6 / Hardtanh (fused, or a table), residual add, max/avg pools, flatten/reshape.
Anything else is refused with an EdgebnError naming the node.
"""
from __future__ import annotations

import copy
import functools
import importlib
import pkgutil
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..calibrate import calibrate, iter_batches
from ..errors import CalibrationError, UnsupportedOpError
from ..importer import export_module, import_program
from ..ir import Graph, Node
from ..numerics import choose_qparams
from ..ops import OPS
from ..passes import run_passes
from ..quantize import assign_qparams, quantize_graph
from ..ranges import required_tensors, save_ranges
from .torchops import QatOp, fake_quant_bias, fake_quant_weight, round_half_away, round_ste

__all__ = ["prepare", "convert", "QATModule", "ActRange", "op_hooks"]

RANGE_MODES = ("observed", "learned")


# ---------------------------------------------------------------------------------------------
# Activation ranges

class ActRange(nn.Module):
    """One tensor's real range [lo, hi] and its fake quantization (SPEC.md: widen to hold 0,
    scale = (hi - lo) / 255, zero_point = round(-128 - lo / scale) clamped, q clamped to int8).

    mode "observed": lo/hi are buffers updated in training by an exponential moving average of the
    batch min/max (weight `momentum`); "learned": lo/hi are parameters trained through the STE."""

    def __init__(self, lo: float, hi: float, mode: str = "observed", momentum: float = 0.01):
        super().__init__()
        self.mode, self.momentum, self.frozen = mode, float(momentum), False
        if mode == "learned":
            self.lo = nn.Parameter(torch.tensor(float(lo), dtype=torch.float64))
            self.hi = nn.Parameter(torch.tensor(float(hi), dtype=torch.float64))
        else:
            self.register_buffer("lo", torch.tensor(float(lo), dtype=torch.float64))
            self.register_buffer("hi", torch.tensor(float(hi), dtype=torch.float64))

    def range(self) -> tuple[float, float]:
        return float(self.lo.detach()), float(self.hi.detach())

    def qparams(self) -> tuple[float, int]:
        """Exactly the compiler's (scale, zero_point) for this range."""
        return choose_qparams(*self.range())

    def scale(self) -> torch.Tensor:
        return torch.clamp((torch.clamp(self.hi, min=0.0) - torch.clamp(self.lo, max=0.0)) / 255.0, min=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe x (training, observed mode), then fake-quantize it."""
        if self.training and self.mode == "observed" and not self.frozen:
            with torch.no_grad():
                self.lo += self.momentum * (float(x.min()) - self.lo)
                self.hi += self.momentum * (float(x.max()) - self.hi)
        return self.fake_quant(x)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale()
        zp = torch.clamp(round_ste(-128.0 - torch.clamp(self.lo, max=0.0) / scale), -128, 127).to(x.dtype)
        scale = scale.to(x.dtype)
        q = torch.clamp(round_ste(x / scale) + zp, -128, 127)
        return (q - zp) * scale


# ---------------------------------------------------------------------------------------------
# The operators' QAT hooks

@functools.lru_cache(maxsize=None)
def op_hooks() -> dict[str, QatOp]:
    """Every operator package's QAT hooks (edgebn/ops/<op>/qat.py: QAT_OPS), by IR op name."""
    from .. import ops

    found: dict[str, QatOp] = {}
    for info in pkgutil.iter_modules(ops.__path__):
        if not info.ispkg:
            continue
        name = f"{ops.__name__}.{info.name}.qat"
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        found.update(mod.QAT_OPS)
    return found


# ---------------------------------------------------------------------------------------------
# Binding IR nodes to the user's parameters

@dataclass
class _Weighted:
    """A weighted node (conv/linear) of the compiled graph and where its float values live in the model."""
    node: str
    weight: str                 # FQN in the model
    bias: str | None
    bn: str | None              # FQN of the BatchNorm module folded into it
    bn_eps: float = 0.0
    col_index: np.ndarray | None = None   # after a folded flatten: IR column k = model column col_index[k]


def _input_fqns(ep) -> dict[str, str]:
    return {spec.arg.name: spec.target for spec in ep.graph_signature.input_specs
            if spec.kind.name in ("PARAMETER", "BUFFER") and spec.target is not None}


def _fqn(fqns: dict, arg, what: str, where: str) -> str | None:
    if arg is None:
        return None
    name = getattr(arg, "name", None)
    if name not in fqns:
        raise UnsupportedOpError(f"edgebn.qat: {what} of {where} is not a parameter or buffer of the model")
    return fqns[name]


def _bind(ep, g0: Graph, gf: Graph, model: nn.Module) -> dict[str, _Weighted]:
    """For each weighted node of `gf`, the model tensors behind it (from the exported program's
    signature: IR node names are the aten call names) and the BatchNorm folded into it."""
    fx = {n.name: n for n in ep.graph.nodes}
    fqns = _input_fqns(ep)
    folded = {}
    for rec in gf.fold_log:
        if rec.action != "folded":
            raise UnsupportedOpError(
                f"edgebn.qat: BatchNorm {rec.bn!r} is {rec.action} ({rec.reason}); QAT supports a BatchNorm "
                "only right after the conv/linear it folds into")
        folded[rec.into] = rec.bn
    out = {}
    for node in gf.nodes:
        if not OPS[node.op].weighted:
            continue
        where = node.where()
        args = fx[node.name].args     # aten conv/linear: (input, weight, bias, ...)
        b = _Weighted(node.name, _fqn(fqns, args[1], "the weight", where),
                      _fqn(fqns, args[2] if len(args) > 2 else None, "the bias", where), None)
        if node.name in folded:
            bn_args = fx[folded[node.name]].args   # (input, weight, bias, running_mean, running_var, ...)
            rm = _fqn(fqns, bn_args[3], "the running mean", where)
            mod_name = rm.rsplit(".", 1)[0] if "." in rm else ""
            bn_mod = model.get_submodule(mod_name)
            if not isinstance(bn_mod, nn.modules.batchnorm._BatchNorm):
                raise UnsupportedOpError(f"edgebn.qat: the BatchNorm folded into {where} is not an nn.BatchNorm "
                                         f"module ({type(bn_mod).__name__})")
            b.bn, b.bn_eps = mod_name, float(g0.node(folded[node.name]).attrs["eps"])
        src = g0.producer(g0.node(node.name).inputs[0])
        if src is not None and OPS[src.op].gather_index is not None and gf.node(node.name).inputs[0] != src.name:
            index = OPS[src.op].gather_index(src)          # a flatten folded into this node's columns
            if index is not None:
                b.col_index = np.argsort(np.asarray(index))
        out[node.name] = b
    return out


def _tensor(model: nn.Module, fqn: str) -> torch.Tensor:
    mod_name, _, attr = fqn.rpartition(".")
    return getattr(model.get_submodule(mod_name), attr)


def _check_supported(gf: Graph) -> None:
    hooks = op_hooks()
    volumes = [t for t in gf.inputs if len(gf.shapes[t]) == 4]
    if volumes:
        raise UnsupportedOpError(f"edgebn.qat: the model input {volumes[0]!r} is a volume (N, C, D, H, W); QAT "
                                 "trains images, sequences and feature vectors only (compile it with PTQ)")
    for node in gf.nodes:
        h = hooks.get(node.op)
        weighted = OPS[node.op].weighted
        if h is None or (h.apply is None or h.device_weight is None if weighted else h.fake is None):
            why = f"op {node.op!r} has no QAT form"
        else:
            why = h.refuse(node)
        if why:
            raise UnsupportedOpError(
                f"edgebn.qat: {node.where()} cannot be trained integer-exactly: {why}; QAT supports "
                "Conv/Linear (+ BatchNorm right after), ReLU/ReLU6/Hardtanh, add, max/avg pools and flatten")


# ---------------------------------------------------------------------------------------------
# The trainable module

class QATModule(nn.Module):
    """A trainable copy of `model` whose forward is fake-quantized (training) or integer-exact (eval).

    Parameters are the model's own (in `self.model`, a deep copy) plus, with learned ranges, each
    range's lo/hi. See the module docstring for the arithmetic."""

    def __init__(self, model: nn.Module, graph: Graph, bindings: dict[str, _Weighted],
                 ranges: dict[str, tuple[float, float]], mode: str, momentum: float):
        super().__init__()
        self.model = model
        self.graph = graph
        self.bindings = bindings
        self.ranges_ = nn.ModuleDict({t: ActRange(lo, hi, mode, momentum) for t, (lo, hi) in ranges.items()})
        self.bn_frozen = False
        self._cache = None

    # -- schedule -------------------------------------------------------------------------------
    def freeze_bn(self) -> "QATModule":
        """Stop updating the BatchNorm running statistics; from now on training uses the folded,
        deployed form conv(x, fq(w')) + fq(b') (call after a chosen epoch)."""
        self.bn_frozen = True
        return self

    def freeze_ranges(self) -> "QATModule":
        """Stop the observed ranges' moving average (learned ranges keep training unless their
        parameters are left out of the optimizer)."""
        for r in self.ranges_.values():
            r.frozen = True
        return self

    def ranges(self) -> dict[str, tuple[float, float]]:
        """{tensor: (lo, hi)}: pass as `edgebn.compile(..., ranges=...)`."""
        return {t: r.range() for t, r in self.ranges_.items()}

    def save_ranges(self, path):
        """Write the ranges file for `edgebn compile ... --ranges FILE`."""
        return save_ranges(path, self.ranges(), weight_method="max", source="edgebn.qat")

    # -- float views of the parameters -----------------------------------------------------------
    def _p(self, fqn):
        return _tensor(self.model, fqn)

    def _bn(self, b: _Weighted):
        return self.model.get_submodule(b.bn)

    def folded_float64(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(w', b') of weighted node `name` in float64, IR layout, exactly as fold_batchnorm folds them."""
        b = self.bindings[name]
        node = self.graph.node(name)
        w = op_hooks()[node.op].device_weight(node, self._p(b.weight).detach().to(torch.float64).cpu().numpy())
        bias = np.zeros(w.shape[0]) if b.bias is None else self._p(b.bias).detach().to(torch.float64).numpy()
        if b.bn is not None:
            bn = self._bn(b)
            f64 = lambda t, d: d if t is None else t.detach().to(torch.float64).numpy()  # noqa: E731
            c = w.shape[0]
            gamma, beta = f64(bn.weight, np.ones(c)), f64(bn.bias, np.zeros(c))
            a = gamma / np.sqrt(f64(bn.running_var, None) + b.bn_eps)
            shift = beta - f64(bn.running_mean, None) * a
            w = w * a.reshape((-1,) + (1,) * (w.ndim - 1))
            bias = bias * a + shift
        if b.col_index is not None:
            w = w[:, b.col_index]
        return w, bias

    # -- the quantized graph (eval) ---------------------------------------------------------------
    def quantized_graph(self) -> Graph:
        """edgebn's quantized graph for the current parameters and ranges (cached until they change)."""
        key = tuple(t._version for t in list(self.parameters()) + list(self.buffers())) + \
            tuple(id(t) for t in self.parameters())
        if self._cache is not None and self._cache[0] == key and self._cache[1] == self.ranges():
            return self._cache[2]
        g = self.graph.copy()
        for name in self.bindings:
            node = g.node(name)
            node.params["weight"], node.params["bias"] = self.folded_float64(name)
        qg = quantize_graph(g, assign_qparams(g, self.ranges()), "max")
        self._cache = (key, self.ranges(), qg)
        return qg

    def forward_int8(self, x):
        """int8 outputs in device layout (as `edgebn emulate` without --dequantize, before the layout
        change), computed in integers from the float input: a tensor, or a tuple of them (in the
        model's order) for a model with several outputs."""
        qg = self.quantized_graph()
        x = torch.as_tensor(x)
        dev = _to_device(x.detach().to(torch.float64))
        q = qg.qparams[qg.inputs[0]]
        vals = {qg.inputs[0]: torch.clamp(round_half_away(dev / q.scale) + q.zero_point, -128, 127).long()}
        hooks = op_hooks()
        for node in qg.nodes:
            h = hooks.get(node.op)
            if h is None or h.integer is None:
                raise UnsupportedOpError(f"edgebn.qat: {node.where()} has no integer form under QAT")
            y = h.integer(node, [vals[t] for t in node.inputs])
            vals[node.name] = y.reshape((dev.shape[0],) + tuple(qg.shapes[node.name]))
        return _one_or_tuple(vals[t].to(torch.int8) for t in qg.outputs)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        """The model's output(s) in its layout: integer-exact in eval mode, fake-quantized in training;
        a tuple for a model with several outputs, as the wrapped model returns them."""
        if not self.training:
            with torch.no_grad():
                ys = self.forward_int8(x)
                qg = self.quantized_graph()
                ys = ys if isinstance(ys, tuple) else (ys,)
                outs = []
                for t, y in zip(qg.outputs, ys):
                    q = qg.qparams[t]
                    yf = ((y.to(torch.float64) - q.zero_point) * q.scale).to(torch.float32)
                    outs.append(_to_torch(yf, qg.torch_layouts[t]))
                return _one_or_tuple(outs)
        return self.forward_fake(x)

    def forward_fake(self, x: torch.Tensor) -> torch.Tensor:
        """The fake-quantized float forward (the training graph), in the model's layout."""
        g = self.graph
        vals = {g.inputs[0]: self.ranges_[g.inputs[0]](_to_device(x))}
        for node in g.nodes:
            xs = [vals[t] for t in node.inputs]
            y = self._fake_node(node, xs)
            vals[node.name] = y.reshape((y.shape[0],) + tuple(g.shapes[node.name]))
        return _one_or_tuple(_to_torch(vals[t], g.torch_layouts[t]) for t in g.outputs)

    def _range_of(self, tensor: str) -> ActRange:
        """A tensor's range: its own, or (pools, reshapes) the one of the input it keeps."""
        while tensor not in self.ranges_:
            tensor = self.graph.node(tensor).inputs[0]
        return self.ranges_[tensor]

    def _fake_node(self, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
        h = op_hooks()[node.op]
        y = self._weighted(node, xs[0], h) if OPS[node.op].weighted else h.fake(node, xs)
        act = node.attrs.get("act")
        if act is not None:                                # a fused clamp: the requantisation's clamp
            y = torch.clamp(y, act.get("lo"), act.get("hi"))
        if node.name in self.ranges_:
            return self.ranges_[node.name](y)
        return self._range_of(node.inputs[0]).fake_quant(y)   # keeps its input's quantization

    def _weighted(self, node: Node, x: torch.Tensor, h: QatOp) -> torch.Tensor:
        b = self.bindings[node.name]
        w = self._p(b.weight)
        cout = w.shape[0]
        bias = torch.zeros(cout, dtype=w.dtype) if b.bias is None else self._p(b.bias)
        if b.col_index is not None:
            w = w[:, torch.from_numpy(b.col_index)]
        s_in = self._range_of(node.inputs[0]).scale()
        if b.bn is None:
            return h.apply(node, x, fake_quant_weight(w)) + fake_quant_bias(bias, s_in, w)
        bn = self._bn(b)
        gamma = bn.weight if bn.weight is not None else torch.ones(cout)
        beta = bn.bias if bn.bias is not None else torch.zeros(cout)
        sf = gamma / torch.sqrt(bn.running_var + b.bn_eps)
        wf = w * sf.reshape((-1,) + (1,) * (w.ndim - 1))
        if self.bn_frozen or not self.training:
            bf = bias * sf + (beta - bn.running_mean * sf)
            return h.apply(node, x, fake_quant_weight(wf)) + fake_quant_bias(bf, s_in, wf)
        # torch.ao's ConvBn scheme: weights quantized with the running-statistics fold, output
        # corrected to the batch statistics; the running statistics are updated as nn.BatchNorm does.
        y0 = h.apply(node, x, fake_quant_weight(wf)) / sf + bias
        dims = tuple(range(y0.ndim - 1))
        mean = y0.mean(dim=dims)
        var = y0.var(dim=dims, unbiased=False)
        n = y0.numel() // cout
        with torch.no_grad():
            bn.num_batches_tracked += 1
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(m * mean.detach())
            bn.running_var.mul_(1 - m).add_(m * var.detach() * n / max(n - 1, 1))
        return (y0 - mean) / torch.sqrt(var + b.bn_eps) * gamma + beta


def _to_device(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 4:
        return x.permute(0, 2, 3, 1)
    if x.ndim == 3:
        return x.permute(0, 2, 1)[:, None]
    return x


def _to_torch(y: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "NCHW":
        return y.permute(0, 3, 1, 2)
    if layout == "NCL":
        return y[:, 0].permute(0, 2, 1)
    return y


# ---------------------------------------------------------------------------------------------
# Public API

def prepare(model: nn.Module, calib, example_input=None, *, ranges: str = "observed",
            calibration: str = "minmax", momentum: float = 0.01) -> QATModule:
    """A trainable, fake-quantized copy of `model` (eval mode, BN with running statistics).

    calib: calibration inputs (array, tensor or iterable of batches, model layout) for the initial
    ranges, chosen as `edgebn compile --calibration` would. example_input defaults to calib's first
    sample. ranges: "observed" (EMA min/max) or "learned". The returned module starts in eval mode
    (integer-exact); call .train() to train it."""
    if ranges not in RANGE_MODES:
        raise CalibrationError(f"edgebn.qat: unknown ranges mode {ranges!r}; choose one of {', '.join(RANGE_MODES)}")
    if not isinstance(model, nn.Module):
        raise UnsupportedOpError(f"edgebn.qat.prepare needs an nn.Module, got {type(model).__name__}")
    if example_input is None:
        first = next(iter(iter_batches(calib, 1)), None)
        if first is None:
            raise CalibrationError("edgebn.qat: calibration data is empty")
        example_input = torch.as_tensor(np.asarray(first)[:1], dtype=torch.float32)
    model = copy.deepcopy(model).eval()
    ep = export_module(model, example_input)
    g0 = import_program(ep)
    gf = run_passes(g0, merge_branch_convs=False)
    _check_supported(gf)
    bindings = _bind(ep, g0, gf, model)
    tshape = tuple(example_input.shape)
    found = calibrate(gf, calib, tshape, method=calibration)
    init = {t: found[t] for t in required_tensors(gf)}
    qm = QATModule(model, gf, bindings, init, ranges, momentum)
    return qm.eval()


def convert(qm: QATModule) -> nn.Module:
    """The trained float model (the user's own module class, eval mode, BN running statistics as
    trained): compile it with `ranges=qm.ranges()` to get qm's integer forward bit for bit."""
    if not isinstance(qm, QATModule):
        raise UnsupportedOpError(f"edgebn.qat.convert needs the module prepare() returned, got {type(qm).__name__}")
    return copy.deepcopy(qm.model).eval()


def _one_or_tuple(values):
    """One output as itself, several as a tuple (what the wrapped PyTorch model returns)."""
    values = tuple(values)
    return values[0] if len(values) == 1 else values
