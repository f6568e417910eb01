"""conv_transpose2d: ConvTranspose2d (groups 1, dilation 1; any kernel, stride, padding, output_padding).

Weights are stored [Cout, KH, KW, Cin] (PyTorch's [Cin, Cout, KH, KW] transposed) so that axis 0 is
the output channel: per-channel int8 quantization, the BatchNorm fold after it and ReLU fusion are
those of conv2d. Numerics are TFLite's per-channel TRANSPOSE_CONV: acc = bias + sum w * (x - Z_in)
over the taps that reach an output pixel, requantized per output channel (SPEC.md).

The output is PyTorch's: the full (H-1)*s + k + output_padding map, cropped by `padding` on each
side. The kernel (conv_transpose2d.c.j2) gathers per output pixel: tap (ky, kx) reads input row
iy = (oy + pad - ky) / stride where that divides exactly and lands inside the input.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node, image_view
from ..base import apply_act, KernelRecord, OpDef, as_images, register, requantize
from .._affine import quantize_weighted


def _pair(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * 2 if len(v) == 1 else v))


def out_size(size, k, s, p, op):
    return (size - 1) * s - 2 * p + k + op


def output_shape(node: Node, ins):
    h, w, _ = image_view(ins[0])
    cout, kh, kw, _ = node.params["weight"].shape
    a = node.attrs
    return (out_size(h, kh, a["stride"][0], a["padding"][0], a["output_padding"][0]),
            out_size(w, kw, a["stride"][1], a["padding"][1], a["output_padding"][1]), cout)


def transpose_accumulate(x: np.ndarray, w: np.ndarray, stride, padding, output_padding) -> np.ndarray:
    """[N, H, W, Cin] scattered through w [Cout, KH, KW, Cin]: [N, OH, OW, Cout] (float64; exact for
    integer-valued inputs, every partial sum stays far below 2^53)."""
    n, h, wd, _ = x.shape
    cout, kh, kw, _ = w.shape
    (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
    fh, fw = (h - 1) * sh + kh + oph, (wd - 1) * sw + kw + opw
    full = np.zeros((n, fh, fw, cout), np.float64)
    for ky in range(kh):
        for kx in range(kw):
            full[:, ky:ky + (h - 1) * sh + 1:sh, kx:kx + (wd - 1) * sw + 1:sw, :] += x @ w[:, ky, kx, :].T
    return full[:, ph:fh - ph, pw:fw - pw, :]


def run_float(node: Node, xs):
    a = node.attrs
    y = transpose_accumulate(as_images(xs[0]).astype(np.float64), node.params["weight"], a["stride"],
                             a["padding"], a["output_padding"]) + node.params["bias"]
    return apply_act(y, a.get("act"))


def quantize(node: Node, graph, qp):
    return quantize_weighted(node, qp[node.inputs[0]], qp[node.name])


def emulate(node: Node, xs):
    a = node.attrs
    x = as_images(xs[0]).astype(np.float64) - a["zp_in"]
    acc = transpose_accumulate(x, node.params["weight"].astype(np.float64), a["stride"], a["padding"],
                               a["output_padding"])
    acc = acc.astype(np.int64) + node.params["bias"].astype(np.int64)
    return requantize(acc, node.params["m0"], node.params["shift"], a["zp_out"], a["act_min"], a["act_max"])


def macs(node, ins, out):
    h, w, cin = image_view(ins[0])
    cout, kh, kw, _ = node.params["weight"].shape
    return h * w * cin * cout * kh * kw       # every input pixel x every tap (cropped taps included)


def from_aten(target, args, ctx):
    """conv_transpose2d.input (input, weight, bias, stride, padding, output_padding, groups, dilation),
    or convolution.default with transposed=True (conv2d's rule hands it here)."""
    x, w, b = args["input"], args["weight"], args["bias"]
    wt = ctx.const(w)
    if wt is None:
        raise UnsupportedOpError("transposed convolution weights must be parameters, not computed tensors")
    groups, dilation = int(args["groups"]), _pair(args["dilation"])
    if wt.ndim != 4 or groups != 1 or dilation != (1, 1):
        raise UnsupportedOpError(
            f"conv_transpose2d with groups={groups}, dilation={dilation} on a {wt.ndim - 2}-D kernel: only "
            f"2-D ConvTranspose2d with groups=1 and dilation=1 is supported; use groups=1 or an "
            f"Upsample followed by a Conv2d")
    stride, padding, output_padding = _pair(args["stride"]), _pair(args["padding"]), _pair(args["output_padding"])
    bias = np.zeros(wt.shape[1]) if b is None else ctx.const(b)
    if bias is None:
        raise UnsupportedOpError("transposed convolution bias must be a parameter")
    return Node(ctx.name, "conv_transpose2d", [x.name],
                {"stride": stride, "padding": padding, "output_padding": output_padding, "act": None},
                {"weight": wt.transpose(1, 2, 3, 0).copy(), "bias": np.asarray(bias, np.float64)},
                ctx.source)


def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    h, w, cin = image_view(g.shapes[node.inputs[0]])
    oh, ow, cout = image_view(g.shapes[node.name])
    _, kh, kw, _ = node.params["weight"].shape
    act = a.get("act")
    return {
        "c": dict(H=h, W=w, CIN=cin, OH=oh, OW=ow, COUT=cout, KH=kh, KW=kw, SH=a["stride"][0],
                  SW=a["stride"][1], PT=a["padding"][0], PL=a["padding"][1], OPH=a["output_padding"][0],
                  OPW=a["output_padding"][1], INPUT_OFFSET=-a["zp_in"], ZP_OUT=a["zp_out"],
                  ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]),
        "weight": node.params["weight"], "bias": node.params["bias"], "m0": node.params["m0"],
        "shift": node.params["shift"], "acc_bound": a["acc_bound"], "act": act.get("name") if act else None,
    }


def label(node: Node) -> str:
    _, kh, kw, _ = node.params["weight"].shape
    return f"convT{kh}x{kw}/s{node.attrs['stride'][0]}"


def onnx(b, n: Node) -> None:
    a, t = n.attrs, n.name
    # quantized per output channel (axis 0 of [Cout, Cin, KH, KW]), then ONNX's [Cin, Cout, KH, KW]
    w, bias = b.weights(n, n.params["weight"].transpose(0, 3, 1, 2), n.inputs[0])
    w = b.op("Transpose", [w], f"{t}_wT", perm=[1, 0, 2, 3])
    kh, kw = n.params["weight"].shape[1:3]
    ph, pw = a["padding"]
    y = b.op("ConvTranspose", [b.as_image(n.inputs[0]), w, bias], t, kernel_shape=[kh, kw],
             strides=list(a["stride"]), pads=[ph, pw, ph, pw], output_padding=list(a["output_padding"]))
    b.quant(t, b.clamp(y, t, a["act_min"], a["act_max"]))


REFERENCE = KernelRecord("conv_transpose2d", "conv_transpose2d/conv_transpose2d.c.j2",
                         lambda node, g: "transposed conv: per output pixel, gather the taps whose input "
                                         "position divides by the stride",
                         constants=("weight", "bias", "m0", "shift"))

register(OpDef(
    name="conv_transpose2d", run_float=run_float, output_shape=output_shape,
    quantize=quantize, emulate=emulate, macs=macs,
    aten=("aten.conv_transpose2d.input",), from_aten=from_aten,
    doc="ConvTranspose2d (groups 1, dilation 1), any kernel/stride/padding/output_padding; fused ReLU/clamp",
    layer_context=layer_context, kernels=(REFERENCE,), onnx=onnx,
    weighted=True, fusable_activation=True, folds_forward=False, label=label,
))
