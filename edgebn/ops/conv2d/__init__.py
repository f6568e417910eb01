"""conv2d: every inference Conv2d/Conv1d (any kernel, stride, padding, dilation, groups, bias or not).

Weights are OHWI `[Cout, KH, KW, Cin/groups]`; depthwise is groups == Cin (channel multiplier
Cout/Cin). A BatchNorm kept as a per-channel affine op also becomes a 1x1 depthwise conv2d
(`affine_node`), on an image or on a feature vector (a 1 x 1 image).

Kernels (this folder): conv2d.c.j2 (reference), conv2d_1x1.c.j2, conv2d_kxk.c.j2, dwconv.c.j2 (fast);
their records are in kernels.py.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node, image_view
from ..base import apply_act, OpDef, bits_of, conv_accumulate, register, requantize, as_images
from .._affine import activation_types, quantize_weighted
from . import esp_nn, kernels


def _pair(v, n=2):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * n if len(v) == 1 else v))


def conv_out_size(size, k, s, p0, p1, d):
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def output_shape(node: Node, ins):
    h, w, _ = image_view(ins[0])
    cout, kh, kw, _ = node.params["weight"].shape
    sh, sw = node.attrs["stride"]
    pt, pl, pb, pr = node.attrs["padding"]
    dh, dw = node.attrs["dilation"]
    if len(ins[0]) == 1 and kh == kw == 1 and not any(node.attrs["padding"]):
        return (cout,)        # a per-feature affine (a BatchNorm1d kept on a vector) stays a vector
    if len(ins[0]) == 4:      # a per-channel affine (a BatchNorm3d kept) on a volume stays a volume
        if (kh, kw, sh, sw) != (1, 1, 1, 1) or any(node.attrs["padding"]):
            raise ValueError(f"{node.where()}: only a 1x1 per-channel conv2d runs on a volume")
        return tuple(ins[0][:3]) + (cout,)
    return (conv_out_size(h, kh, sh, pt, pb, dh), conv_out_size(w, kw, sw, pl, pr, dw), cout)


def run_float(node: Node, xs):
    a = node.attrs
    y = conv_accumulate(as_images(xs[0]).astype(np.float64), node.params["weight"], a["groups"], a["stride"],
                        a["padding"], a["dilation"]) + node.params["bias"]
    return apply_act(y, a.get("act"))


def quantize(node: Node, graph, qp):
    return quantize_weighted(node, qp[node.inputs[0]], qp[node.name])


# float32 holds every integer below 2^24 exactly: a conv whose every partial sum stays below that
# accumulates exactly in float32 (in any order, fused multiply-adds included), at half float64's cost
_F32_EXACT = 1 << 24


def emulate(node: Node, xs):
    a = node.attrs
    x, w = as_images(xs[0]), node.params["weight"]
    # |x - zp_in| <= 255 for an int8 input: no partial sum of a channel exceeds sum|w| * 255
    exact32 = x.dtype == np.int8 and int(np.abs(w.reshape(len(w), -1).astype(np.int32)).sum(axis=1).max()) \
        * 255 < _F32_EXACT
    ft = np.float32 if exact32 else np.float64
    x = x.astype(ft) - ft(a["zp_in"])     # padding taps are then exactly 0
    acc = conv_accumulate(x, w.astype(ft), a["groups"], a["stride"], a["padding"], a["dilation"])
    acc = acc.astype(np.int64) + node.params["bias"].astype(np.int64)
    return requantize(acc, node.params["m0"], node.params["shift"], a["zp_out"], a["act_min"], a["act_max"],
                      bits_of(node))


def int16(node: Node, graph) -> str | None:
    """Every conv2d has the int16x8 form (TFLite CONV_2D / DEPTHWISE_CONV_2D with int16 activations)."""
    return None


def macs(node, ins, out):
    cout, kh, kw, cg = node.params["weight"].shape
    oh, ow, _ = image_view(out)        # a kept BN affine on a feature vector is a 1 x 1 image
    return oh * ow * cout * kh * kw * cg


def from_aten(target, args, ctx):
    """conv2d / conv1d / convolution (input, weight, bias, stride, padding, dilation, groups)."""
    if args.get("transposed"):   # convolution.default(transposed=True) is a ConvTranspose
        from ..base import OPS
        return OPS["conv_transpose2d"].from_aten(target, args, ctx)
    x, w, b = args["input"], args["weight"], args["bias"]
    stride, padding, dilation, groups = args["stride"], args["padding"], args["dilation"], args["groups"]
    wt = ctx.const(w)
    if wt is None:
        raise UnsupportedOpError("convolution weights must be parameters, not computed tensors")
    if wt.ndim == 5:             # convolution.default with a 3-D kernel is a Conv3d
        from ..base import OPS
        return OPS["conv3d"].from_aten(target, args, ctx)
    one_d = wt.ndim == 3
    bias = np.zeros(wt.shape[0]) if b is None else ctx.const(b)
    if bias is None:
        raise UnsupportedOpError("convolution bias must be a parameter")
    if one_d:  # Conv1d over (N, C, L) is a 2-D conv over a 1 x L image
        wt = wt[:, :, None, :]
        stride, dilation = (1, _pair(stride, 1)[0]), (1, _pair(dilation, 1)[0])
    else:
        stride, dilation = _pair(stride), _pair(dilation)
    kh, kw = wt.shape[2], wt.shape[3]
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
            pads = (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        else:
            raise UnsupportedOpError(f"convolution padding {padding!r}")
    elif one_d:
        p = _pair(padding, 1)[0]
        pads = (0, p, 0, p)
    else:
        ph, pw = _pair(padding)
        pads = (ph, pw, ph, pw)
    return Node(ctx.name, "conv2d", [x.name],
                {"stride": stride, "padding": pads, "dilation": dilation, "groups": int(groups),
                 "act": None},
                {"weight": wt.transpose(0, 2, 3, 1).copy(), "bias": np.asarray(bias, np.float64)},
                ctx.source)


def affine_node(name: str, a: np.ndarray, c: np.ndarray, source: str = "") -> Node:
    """y = a * x + c per channel as a 1x1 depthwise conv2d (how a BatchNorm that cannot fold runs)."""
    return Node(name, "conv2d", [], {"stride": (1, 1), "padding": (0, 0, 0, 0), "dilation": (1, 1),
                                     "groups": len(a), "act": None, "from_bn": True},
                {"weight": np.asarray(a, np.float64).reshape(-1, 1, 1, 1).copy(),
                 "bias": np.asarray(c, np.float64).copy()}, source)


def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    h, w, cin = image_view(g.shapes[node.inputs[0]])
    oh, ow, cout = image_view(g.shapes[node.name])
    _, kh, kw, cg = node.params["weight"].shape
    groups = a["groups"]
    act = a.get("act")
    return {
        "c": dict(H=h, W=w, CIN=cin, OH=oh, OW=ow, COUT=cout, KH=kh, KW=kw, SH=a["stride"][0],
                  SW=a["stride"][1], PT=a["padding"][0], PL=a["padding"][1], DH=a["dilation"][0],
                  DW=a["dilation"][1], GROUPS=groups, CG=cg, OG=cout // groups, INPUT_OFFSET=-a["zp_in"],
                  ZP_OUT=a["zp_out"], ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]),
        "weight": node.params["weight"], "bias": node.params["bias"], "m0": node.params["m0"],
        "shift": node.params["shift"], "acc_bound": a["acc_bound"], "act": act.get("name") if act else None,
        **activation_types(bits_of(node)),
    }


def label(node: Node) -> str:
    cout, kh, kw, cg = node.params["weight"].shape
    if node.attrs["groups"] == 1:
        return f"conv{kh}x{kw}"
    return f"dwconv{kh}x{kw}" if cg == 1 else f"gconv{kh}x{kw}/g{node.attrs['groups']}"


def onnx(b, n: Node) -> None:
    a, t = n.attrs, n.name
    w, bias = b.weights(n, n.params["weight"].transpose(0, 3, 1, 2), n.inputs[0])
    kh, kw = n.params["weight"].shape[1:3]
    pt, pl, pb, pr = a["padding"]
    if len(b.g.shapes[t]) == 4:          # the 1x1 per-channel affine on a volume: a 1x1x1 Conv in ONNX
        y = b.op("Conv", [b.real[n.inputs[0]], b.op("Unsqueeze", [w, b.const("ax", np.array([4], np.int64))], t),
                          bias], t, kernel_shape=[1, 1, 1], group=int(a["groups"]))
        b.quant(t, b.clamp(y, t, a["act_min"], a["act_max"]))
        return
    y = b.op("Conv", [b.as_image(n.inputs[0]), w, bias], t, kernel_shape=[kh, kw], strides=list(a["stride"]),
             pads=[pt, pl, pb, pr], dilations=list(a["dilation"]), group=int(a["groups"]))
    if len(b.g.shapes[t]) == 1:
        y = b.op("Reshape", [y, b.const("flat", np.array([0, -1], np.int64))], t)
    b.quant(t, b.clamp(y, t, a["act_min"], a["act_max"]))


register(OpDef(
    name="conv2d", run_float=run_float, output_shape=output_shape,
    quantize=quantize, emulate=emulate, macs=macs,
    aten=("aten.conv2d.default", "aten.conv2d.padding", "aten.conv1d.default", "aten.conv1d.padding",
          "aten.convolution.default"),
    from_aten=from_aten,
    doc="Conv2d / Conv1d, grouped and depthwise, any stride/padding/dilation; fused ReLU/ReLU6/clamp",
    layer_context=layer_context, kernels=(kernels.REFERENCE,), fast_kernels=kernels.FAST,
    external_kernels=esp_nn.EXTERNAL, onnx=onnx,
    weighted=True, fusable_activation=True, conv2d_form=True, label=label, int16=int16,
))
