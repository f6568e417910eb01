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
MultiplyByQuantizedMultiplier requantisation, TFLite's ADD and pool arithmetic, written here in torch.
`edgebn compile` of `convert(qm)` with `ranges=qm.ranges()` reproduces it bit for bit.

Supported: Conv1d/Conv2d (any stride, padding, dilation, groups), Linear, a BatchNorm right after
either, ReLU / ReLU6 / Hardtanh (fused, or a table), residual add, max/avg pools, flatten/reshape.
Anything else is refused with an EdgebnError naming the node.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .calibrate import calibrate, iter_batches
from .errors import CalibrationError, UnsupportedOpError
from .importer import export_module, import_program
from .ir import Graph, Node
from .numerics import choose_qparams
from .ops.activation import clamp_bounds
from .ops.pool import avg_divisors
from .passes import run_passes
from .quantize import assign_qparams, quantize_graph
from .ranges import required_tensors, save_ranges

__all__ = ["prepare", "convert", "QATModule"]

SUPPORTED_OPS = ("conv2d", "linear", "add", "max_pool2d", "avg_pool2d", "reshape", "permute", "activation")
RANGE_MODES = ("observed", "learned")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ---------------------------------------------------------------------------------------------
# Straight-through rounding and fake quantization

def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (_round_half_away(x) - x).detach()


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantization (axis 0): scale max|w[c]|/127 as float32,
    q in [-127, 127] rounded half away from zero, straight-through gradient."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).float()
    s = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax)).to(w.dtype)
    s = s.reshape((-1,) + (1,) * (w.ndim - 1))
    return torch.clamp(_round_ste(w / s), -127, 127) * s


def fake_quant_bias(b: torch.Tensor, s_in: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """int32 bias at scale input_scale * weight_scale[c] (the weight scale recomputed from w)."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).float()
    s = (torch.where(amax > 0, amax / 127.0, torch.ones_like(amax)) * s_in.detach()).to(b.dtype)
    return _round_ste(b / s) * s


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe x (training, observed mode), then fake-quantize it."""
        if self.training and self.mode == "observed" and not self.frozen:
            with torch.no_grad():
                self.lo += self.momentum * (float(x.min()) - self.lo)
                self.hi += self.momentum * (float(x.max()) - self.hi)
        return self.fake_quant(x)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        lo = torch.clamp(self.lo, max=0.0)
        hi = torch.clamp(self.hi, min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-12)
        zp = torch.clamp(_round_ste(-128.0 - lo / scale), -128, 127).to(x.dtype)
        scale = scale.to(x.dtype)
        q = torch.clamp(_round_ste(x / scale) + zp, -128, 127)
        return (q - zp) * scale


# ---------------------------------------------------------------------------------------------
# Integer kernels in torch (int64), mirroring SPEC.md section 1

def _trunc_div_pow2_31(x):
    return torch.where(x >= 0, x >> 31, -((-x) >> 31))


def _wrap_int32(x):
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def mbqm(acc: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """MultiplyByQuantizedMultiplier (TFLite, double rounding) on int64 tensors; m0/shift broadcast."""
    left = torch.clamp(shift, min=0)
    right = torch.clamp(-shift, min=0)
    x = _wrap_int32(acc << left)
    ab = x * m0
    nudge = torch.where(ab >= 0, torch.full_like(ab, 1 << 30), torch.full_like(ab, 1 - (1 << 30)))
    high = _trunc_div_pow2_31(ab + nudge)
    high = torch.where((x == INT32_MIN) & (m0 == INT32_MIN), torch.full_like(high, INT32_MAX), high)
    mask = (torch.ones_like(right) << right) - 1
    threshold = (mask >> 1) + (high < 0).long()
    return (high >> right) + ((high & mask) > threshold).long()


def _images(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], 1, 1, x.shape[1]) if x.ndim == 2 else x


def _windows(x: torch.Tensor, kernel, stride, dilation=(1, 1)) -> torch.Tensor:
    """[N, H, W, C] (already padded) -> [N, OH, OW, KH, KW, C]."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    win = x.unfold(1, dh * (kh - 1) + 1, sh).unfold(2, dw * (kw - 1) + 1, sw)   # [N, OH, OW, C, eh, ew]
    return win[..., ::dh, ::dw].permute(0, 1, 2, 4, 5, 3)


def _pad_hw(x, top, left, bottom, right, value):
    return F.pad(x, (0, 0, left, right, top, bottom), value=value) if (top or left or bottom or right) else x


def _int_conv2d(node: Node, x: torch.Tensor) -> torch.Tensor:
    a, p = node.attrs, node.params
    w = torch.from_numpy(p["weight"].astype(np.int64))                    # OHWI [Cout, KH, KW, Cg]
    cout, kh, kw, cg = w.shape
    xi = _pad_hw(_images(x).long() - a["zp_in"], *a["padding"], value=0)   # padded taps are real zeros
    win = _windows(xi, (kh, kw), a["stride"], a["dilation"])              # [N, OH, OW, KH, KW, Cin]
    n, oh, ow = win.shape[:3]
    g = a["groups"]
    if g == 1:
        acc = win.reshape(n * oh * ow, -1) @ w.reshape(cout, -1).T
    else:
        win = win.reshape(n * oh * ow, kh, kw, g, cg)
        acc = torch.einsum("pyxgc,goyxc->pgo", win, w.reshape(g, cout // g, kh, kw, cg))
    acc = acc.reshape(n, oh, ow, cout) + torch.from_numpy(p["bias"].astype(np.int64))
    return _requantize(node, acc)


def _int_linear(node: Node, x: torch.Tensor) -> torch.Tensor:
    a, p = node.attrs, node.params
    xi = x.reshape(x.shape[0], -1).long() - a["zp_in"]
    acc = xi @ torch.from_numpy(p["weight"].astype(np.int64)).T + torch.from_numpy(p["bias"].astype(np.int64))
    return _requantize(node, acc)


def _requantize(node: Node, acc: torch.Tensor) -> torch.Tensor:
    a, p = node.attrs, node.params
    y = mbqm(acc, torch.from_numpy(p["m0"].astype(np.int64)), torch.from_numpy(p["shift"].astype(np.int64)))
    return torch.clamp(y + a["zp_out"], a["act_min"], a["act_max"])


def _int_add(node: Node, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    a = node.attrs
    t = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    s1 = mbqm((x1.long() - a["zp1"]) << a["left_shift"], t(a["m1"]), t(a["s1"]))
    s2 = mbqm((x2.long() - a["zp2"]) << a["left_shift"], t(a["m2"]), t(a["s2"]))
    y = mbqm(s1 + s2, t(a["mo"]), t(a["so"])) + a["zp_out"]
    return torch.clamp(y, a["act_min"], a["act_max"])


def _pool_windows(node: Node, x: torch.Tensor, pad_value, overhang_value) -> torch.Tensor:
    (kh, kw), (sh, sw), (pt, pl), (oh, ow) = (node.attrs[k] for k in ("kernel", "stride", "padding", "out_hw"))
    x = _pad_hw(x, pt, pl, pt, pl, pad_value)
    extra_h = max(0, (oh - 1) * sh + kh - x.shape[1])
    extra_w = max(0, (ow - 1) * sw + kw - x.shape[2])
    x = _pad_hw(x, 0, 0, extra_h, extra_w, overhang_value)
    return _windows(x, (kh, kw), (sh, sw))[:, :oh, :ow]


def _int_max_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    y = _pool_windows(node, _images(x).long(), -129, -129).amax(dim=(3, 4))
    return torch.clamp(y, node.attrs["act_min"], node.attrs["act_max"])


def _int_avg_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    x = _images(x).long()
    pad = node.attrs["zp"] if node.attrs["count_include_pad"] else 0
    s = _pool_windows(node, x, pad, 0).sum(dim=(3, 4))
    n = torch.from_numpy(avg_divisors(node, x.shape[1], x.shape[2]).astype(np.int64))[None, :, :, None]
    y = torch.where(s > 0, s + n // 2, s - n // 2)
    y = torch.sign(y) * torch.div(torch.abs(y), n, rounding_mode="floor")
    return torch.clamp(y, node.attrs["act_min"], node.attrs["act_max"])


def _int_node(node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    op = node.op
    if op == "conv2d":
        return _int_conv2d(node, xs[0])
    if op == "linear":
        return _int_linear(node, xs[0])
    if op == "add":
        return _int_add(node, xs[0], xs[1])
    if op == "max_pool2d":
        return _int_max_pool(node, xs[0])
    if op == "avg_pool2d":
        return _int_avg_pool(node, xs[0])
    if op == "lut":
        return torch.from_numpy(node.params["lut"].astype(np.int64))[xs[0].long() + 128]
    if op == "reshape":
        return xs[0]
    if op == "permute":
        return xs[0].reshape(xs[0].shape[0], -1)[:, torch.from_numpy(np.asarray(node.params["index"]))]
    raise UnsupportedOpError(f"edgebn.qat: {node.where()} has no integer form here")  # prepare refuses these


# ---------------------------------------------------------------------------------------------
# Binding IR nodes to the user's parameters

@dataclass
class _Weighted:
    """A conv2d/linear node of the compiled graph and where its float values live in the model."""
    node: str
    op: str                     # "conv2d" | "linear"
    weight: str                 # FQN in the model
    bias: str | None
    bn: str | None              # FQN of the BatchNorm module folded into it
    bn_eps: float = 0.0
    one_d: bool = False         # Conv1d: weight [O, I, L]
    col_index: np.ndarray | None = None   # linear after a folded flatten: device column k = torch column col_index[k]


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
        if node.op not in ("conv2d", "linear"):
            continue
        where = node.where()
        args = fx[node.name].args
        w_fqn = _fqn(fqns, args[1], "the weight", where)
        b_fqn = _fqn(fqns, args[2] if len(args) > 2 else None, "the bias", where)
        b = _Weighted(node.name, node.op, w_fqn, b_fqn, None,
                      one_d=node.op == "conv2d" and _tensor(model, w_fqn).ndim == 3)
        if node.name in folded:
            bn_args = fx[folded[node.name]].args
            rm = _fqn(fqns, bn_args[3], "the running mean", where)
            mod_name = rm.rsplit(".", 1)[0] if "." in rm else ""
            bn_mod = model.get_submodule(mod_name)
            if not isinstance(bn_mod, nn.modules.batchnorm._BatchNorm):
                raise UnsupportedOpError(f"edgebn.qat: the BatchNorm folded into {where} is not an nn.BatchNorm "
                                         f"module ({type(bn_mod).__name__})")
            b.bn, b.bn_eps = mod_name, float(g0.node(folded[node.name]).attrs["eps"])
        if node.op == "linear":
            src = g0.producer(g0.node(node.name).inputs[0])
            if src is not None and src.op == "permute" and gf.node(node.name).inputs[0] != src.name:
                b.col_index = np.argsort(np.asarray(src.params["index"]))
        out[node.name] = b
    return out


def _tensor(model: nn.Module, fqn: str) -> torch.Tensor:
    mod_name, _, attr = fqn.rpartition(".")
    return getattr(model.get_submodule(mod_name), attr)


def _check_supported(gf: Graph) -> None:
    for node in gf.nodes:
        ok = node.op in SUPPORTED_OPS and not node.attrs.get("from_bn")
        if node.op == "activation" and clamp_bounds(node) is None:
            ok = False
        if not ok:
            what = node.attrs.get("fn", node.op)
            raise UnsupportedOpError(
                f"edgebn.qat: {node.where()} ({what}) cannot be trained integer-exactly; QAT supports "
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

    def _torch_weight(self, b: _Weighted) -> torch.Tensor:
        w = self._p(b.weight)
        return w.unsqueeze(2) if b.one_d else w

    def _bn(self, b: _Weighted):
        return self.model.get_submodule(b.bn)

    def folded_float64(self, b: _Weighted) -> tuple[np.ndarray, np.ndarray]:
        """(w', b') of node `b` in float64, device layout, exactly as fold_batchnorm computes them."""
        w = self._torch_weight(b).detach().to(torch.float64).cpu().numpy()
        if b.op == "conv2d":
            w = w.transpose(0, 2, 3, 1)
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
        for name, b in self.bindings.items():
            node = g.node(name)
            node.params["weight"], node.params["bias"] = self.folded_float64(b)
        qg = quantize_graph(g, assign_qparams(g, self.ranges()), "max")
        self._cache = (key, self.ranges(), qg)
        return qg

    def forward_int8(self, x) -> torch.Tensor:
        """int8 outputs in device layout (as `edgebn emulate` without --dequantize, before the layout
        change), computed in integers from the float input."""
        qg = self.quantized_graph()
        x = torch.as_tensor(x)
        dev = _to_device(x.detach().to(torch.float64))
        q = qg.qparams[qg.inputs[0]]
        vals = {qg.inputs[0]: torch.clamp(_round_half_away(dev / q.scale) + q.zero_point, -128, 127).long()}
        for node in qg.nodes:
            y = _int_node(node, [vals[t] for t in node.inputs])
            vals[node.name] = y.reshape((dev.shape[0],) + tuple(qg.shapes[node.name]))
        return vals[qg.outputs[0]].to(torch.int8)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            with torch.no_grad():
                y = self.forward_int8(x)
                qg = self.quantized_graph()
                q = qg.qparams[qg.outputs[0]]
                yf = ((y.to(torch.float64) - q.zero_point) * q.scale).to(torch.float32)
                return _to_torch(yf, qg.torch_layouts[qg.outputs[0]])
        return self.forward_fake(x)

    def forward_fake(self, x: torch.Tensor) -> torch.Tensor:
        """The fake-quantized float forward (the training graph), in the model's layout."""
        g = self.graph
        vals = {g.inputs[0]: self.ranges_[g.inputs[0]](_to_device(x))}
        for node in g.nodes:
            xs = [vals[t] for t in node.inputs]
            y = self._fake_node(node, xs)
            vals[node.name] = y.reshape((y.shape[0],) + tuple(g.shapes[node.name]))
        return _to_torch(vals[g.outputs[0]], g.torch_layouts[g.outputs[0]])

    def _range_of(self, tensor: str) -> ActRange:
        """A tensor's range: its own, or (pools, reshapes) the one of the input it keeps."""
        while tensor not in self.ranges_:
            tensor = self.graph.node(tensor).inputs[0]
        return self.ranges_[tensor]

    def _scale_of(self, tensor: str) -> torch.Tensor:
        r = self._range_of(tensor)
        return (torch.clamp(r.hi, min=0.0) - torch.clamp(r.lo, max=0.0)).detach() / 255.0

    def _fake_node(self, node: Node, xs: list[torch.Tensor]) -> torch.Tensor:
        op, a = node.op, node.attrs
        if op in ("conv2d", "linear"):
            y = self._weighted(node, xs[0])
        elif op == "add":
            y = xs[0] + xs[1]
        elif op == "activation":
            b = clamp_bounds(node)
            y = torch.clamp(xs[0], b["lo"], b["hi"])
        elif op == "max_pool2d":
            return _pool_windows(node, _images(xs[0]), -torch.inf, -torch.inf).amax(dim=(3, 4))
        elif op == "avg_pool2d":
            x = _images(xs[0])
            s = _pool_windows(node, x, 0.0, 0.0).sum(dim=(3, 4))
            n = torch.from_numpy(avg_divisors(node, x.shape[1], x.shape[2]).astype(np.float32))[None, :, :, None]
            y = s / n.to(s.dtype)
            return self._range_of(node.inputs[0]).fake_quant(y)   # the integer average is on its input's grid
        elif op == "reshape":
            return xs[0]
        elif op == "permute":
            return xs[0].reshape(xs[0].shape[0], -1)[:, torch.from_numpy(np.asarray(node.params["index"]))]
        else:  # pragma: no cover - _check_supported refused it
            raise UnsupportedOpError(f"edgebn.qat: {node.where()} is not supported")
        act = a.get("act")
        if act is not None:
            y = torch.clamp(y, act.get("lo"), act.get("hi"))
        return self.ranges_[node.name](y)

    def _weighted(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        b = self.bindings[node.name]
        w = self._torch_weight(b)
        cout = w.shape[0]
        bias = torch.zeros(cout, dtype=w.dtype) if b.bias is None else self._p(b.bias)
        if b.col_index is not None:
            w = w[:, torch.from_numpy(b.col_index)]
        if b.op == "conv2d":
            a = node.attrs
            def apply(wq):
                xn = _pad_hw(_images(x), *a["padding"], value=0.0).permute(0, 3, 1, 2)
                return F.conv2d(xn, wq, None, a["stride"], 0, a["dilation"], a["groups"]).permute(0, 2, 3, 1)
        else:
            def apply(wq):
                return x.reshape(x.shape[0], -1) @ wq.T
        s_in = self._scale_of(node.inputs[0])
        if b.bn is None:
            return apply(fake_quant_weight(w)) + fake_quant_bias(bias, s_in, w)
        bn = self._bn(b)
        gamma = bn.weight if bn.weight is not None else torch.ones(cout)
        beta = bn.bias if bn.bias is not None else torch.zeros(cout)
        sf = gamma / torch.sqrt(bn.running_var + b.bn_eps)
        shape = (-1,) + (1,) * (w.ndim - 1)
        wf = w * sf.reshape(shape)
        if self.bn_frozen or not self.training:
            bf = bias * sf + (beta - bn.running_mean * sf)
            return apply(fake_quant_weight(wf)) + fake_quant_bias(bf, s_in, wf)
        # torch.ao's ConvBn scheme: weights quantized with the running-statistics fold, output
        # corrected to the batch statistics; the running statistics are updated as nn.BatchNorm does.
        y0 = apply(fake_quant_weight(wf)) / sf + bias
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
    gf = run_passes(g0)
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
