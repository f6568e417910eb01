"""conv3d: inference Conv3d over volumes (N, C, D, H, W), NDHWC on the device (any kernel, stride,
padding int/tuple/'same'/'valid', dilation, groups: dense, grouped, depthwise; bias or not).

Weights are ODHWI `[Cout, KD, KH, KW, Cin/groups]`. The numerics are conv2d's, with one more
spatial axis (TFLite has CONV_3D only in its full runtime; docs/OPERATORS.md writes them down):
per-output-channel symmetric int8 weights, int32 bias at `s_in * s_w`,
`acc = bias + sum w * (x - Z_in)` over the in-volume taps (a padded tap holds the real value 0, so it
adds nothing), then `Z_out + MultiplyByQuantizedMultiplier(acc, M, S)` per channel and the fused clamp.
A BatchNorm3d after it folds into it (passes/fold_batchnorm.py, the 2-D rules); a ReLU fuses.

Kernel (this folder): conv3d.c.j2, the reference loop nest (no fast variant).
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node
from ..base import apply_act, KernelRecord, OpDef, register, requantize
from .._affine import quantize_weighted


def _triple(v) -> tuple[int, int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * 3 if len(v) == 1 else v))


def out_size(size, k, s, p0, p1, d):
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def output_shape(node: Node, ins):
    d, h, w, _ = ins[0]
    cout, kd, kh, kw, _ = node.params["weight"].shape
    (sd, sh, sw), (dd, dh, dw) = node.attrs["stride"], node.attrs["dilation"]
    pf, pt, pl, pk, pb, pr = node.attrs["padding"]       # front, top, left, back, bottom, right
    return (out_size(d, kd, sd, pf, pk, dd), out_size(h, kh, sh, pt, pb, dh), out_size(w, kw, sw, pl, pr, dw), cout)


def volume_patches(x: np.ndarray, kernel, stride, padding, dilation) -> np.ndarray:
    """[N, D, H, W, C] -> [N, OD, OH, OW, KD, KH, KW, C] with explicit zero padding (front, top, left,
    back, bottom, right)."""
    pf, pt, pl, pk, pb, pr = padding
    if any(padding):
        x = np.pad(x, ((0, 0), (pf, pk), (pt, pb), (pl, pr), (0, 0)))
    eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    win = np.lib.stride_tricks.sliding_window_view(x, eff, axis=(1, 2, 3))   # [N, D', H', W', C, ed, eh, ew]
    (sd, sh, sw), (dd, dh, dw) = stride, dilation
    win = win[:, ::sd, ::sh, ::sw, :, ::dd, ::dh, ::dw]
    return win.transpose(0, 1, 2, 3, 5, 6, 7, 4)


def accumulate(x: np.ndarray, w: np.ndarray, groups: int, stride, padding, dilation) -> np.ndarray:
    """Grouped conv3d of [N, D, H, W, Cin] with ODHWI weight: [N, OD, OH, OW, Cout]. Float in, or
    integer-valued float64 in (exact: every partial sum of int8 x int8 products is far below 2^53)."""
    cout, kd, kh, kw, cg = w.shape
    p = volume_patches(x, (kd, kh, kw), stride, padding, dilation)
    n, od, oh, ow = p.shape[:4]
    if groups == 1:
        cols = p.reshape(n * od * oh * ow, kd * kh * kw * cg)
        return (cols @ w.reshape(cout, -1).T).reshape(n, od, oh, ow, cout)
    p = p.reshape(n, od, oh, ow, kd, kh, kw, groups, cg)
    wg = w.reshape(groups, cout // groups, kd, kh, kw, cg)
    out = np.einsum("ndhwabcgi,goabci->ndhwgo", p, wg, optimize=True)
    return out.reshape(n, od, oh, ow, cout)


def run_float(node: Node, xs):
    a = node.attrs
    y = accumulate(xs[0].astype(np.float64), node.params["weight"], a["groups"], a["stride"], a["padding"],
                   a["dilation"]) + node.params["bias"]
    return apply_act(y, a.get("act"))


def quantize(node: Node, graph, qp):
    return quantize_weighted(node, qp[node.inputs[0]], qp[node.name])


def emulate(node: Node, xs):
    a = node.attrs
    x = xs[0].astype(np.float64) - a["zp_in"]            # x - Z_in: a padded tap is then exactly 0
    acc = accumulate(x, node.params["weight"].astype(np.float64), a["groups"], a["stride"], a["padding"],
                     a["dilation"])
    acc = acc.astype(np.int64) + node.params["bias"].astype(np.int64)
    return requantize(acc, node.params["m0"], node.params["shift"], a["zp_out"], a["act_min"], a["act_max"])


def macs(node, ins, out):
    cout, kd, kh, kw, cg = node.params["weight"].shape
    od, oh, ow, _ = out
    return od * oh * ow * cout * kd * kh * kw * cg


def from_aten(target, args, ctx):
    """conv3d.default / conv3d.padding / convolution.default with a 3-D kernel."""
    x, w, b = args["input"], args["weight"], args["bias"]
    wt = ctx.const(w)
    if wt is None:
        raise UnsupportedOpError("convolution weights must be parameters, not computed tensors")
    bias = np.zeros(wt.shape[0]) if b is None else ctx.const(b)
    if bias is None:
        raise UnsupportedOpError("convolution bias must be a parameter")
    stride, dilation, padding = _triple(args["stride"]), _triple(args["dilation"]), args["padding"]
    kernel = wt.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0,) * 6
        elif padding == "same":
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            pads = tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)   # extra at the back/bottom/right
        else:
            raise UnsupportedOpError(f"convolution padding {padding!r}")
    else:
        pads = _triple(padding) * 2
    if any(int(p) for p in (args.get("output_padding") or [0])):
        raise UnsupportedOpError("conv3d with output_padding")
    return Node(ctx.name, "conv3d", [x.name],
                {"stride": stride, "padding": pads, "dilation": dilation, "groups": int(args["groups"]), "act": None},
                {"weight": wt.transpose(0, 2, 3, 4, 1).copy(), "bias": np.asarray(bias, np.float64)}, ctx.source)


def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    d, h, w, cin = g.shapes[node.inputs[0]]
    od, oh, ow, cout = g.shapes[node.name]
    _, kd, kh, kw, cg = node.params["weight"].shape
    act = a.get("act")
    return {
        "c": dict(D=d, H=h, W=w, CIN=cin, OD=od, OH=oh, OW=ow, COUT=cout, KD=kd, KH=kh, KW=kw,
                  SD=a["stride"][0], SH=a["stride"][1], SW=a["stride"][2], PF=a["padding"][0], PT=a["padding"][1],
                  PL=a["padding"][2], DD=a["dilation"][0], DH=a["dilation"][1], DW=a["dilation"][2],
                  GROUPS=a["groups"], CG=cg, OG=cout // a["groups"], INPUT_OFFSET=-a["zp_in"], ZP_OUT=a["zp_out"],
                  ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]),
        "weight": node.params["weight"], "bias": node.params["bias"], "m0": node.params["m0"],
        "shift": node.params["shift"], "acc_bound": a["acc_bound"], "act": act.get("name") if act else None,
    }


def label(node: Node) -> str:
    cout, kd, kh, kw, cg = node.params["weight"].shape
    k = f"{kd}x{kh}x{kw}"
    if node.attrs["groups"] == 1:
        return f"conv{k}"
    return f"dwconv{k}" if cg == 1 else f"gconv{k}/g{node.attrs['groups']}"


def onnx(b, n: Node) -> None:
    a, t = n.attrs, n.name
    w, bias = b.weights(n, n.params["weight"].transpose(0, 4, 1, 2, 3), n.inputs[0])
    y = b.op("Conv", [b.real[n.inputs[0]], w, bias], t, kernel_shape=list(n.params["weight"].shape[1:4]),
             strides=list(a["stride"]), pads=list(a["padding"]), dilations=list(a["dilation"]), group=int(a["groups"]))
    b.quant(t, b.clamp(y, t, a["act_min"], a["act_max"]))


register(OpDef(
    name="conv3d", run_float=run_float, output_shape=output_shape, quantize=quantize, emulate=emulate, macs=macs,
    aten=("aten.conv3d.default", "aten.conv3d.padding"), from_aten=from_aten,
    doc="Conv3d (NDHWC), grouped and depthwise, any stride/padding/dilation; fused ReLU/ReLU6/clamp",
    layer_context=layer_context, onnx=onnx, label=label,
    kernels=(KernelRecord("conv3d", "conv3d/conv3d.c.j2", lambda node, g: "reference kernel set",
                          constants=("weight", "bias", "m0", "shift")),),
    weighted=True, fusable_activation=True, volumetric=True,
))
