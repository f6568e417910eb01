"""max_pool2d and avg_pool2d (also global average pooling, `mean` over H,W, and 1-D pools as 1 x L), and
their volume forms max_pool3d and avg_pool3d (MaxPool3d, AvgPool3d, AdaptiveAvgPool3d with even splits,
`mean` over D,H,W) on NDHWC volumes, with the same rules along one more axis.

Both keep the input's (scale, zero_point), as TFLite does. Window bookkeeping follows PyTorch:
symmetric padding (pt, pl), explicit output size (ceil_mode resolved at import), and for the average
the divisor PyTorch uses: with count_include_pad the taps inside the padded border count (a padded
tap holds the real value 0, i.e. q = zero_point), taps past it (ceil_mode overhang) never do.

Registers `max_pool2d`, `avg_pool2d`, `max_pool3d`, `avg_pool3d`; kernels (this folder): max_pool2d.c.j2,
avg_pool2d.c.j2, max_pool3d.c.j2, avg_pool3d.c.j2.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node, image_view
from .._affine import activation_types
from ..base import KernelRecord, OpDef, bits_of, patches, register, as_images


def pool_out_size(size, k, s, p, ceil_mode, d=1):
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _windows(node: Node, x: np.ndarray, pad_value, overhang_value):
    """[N, H, W, C] -> [N, OH, OW, KH, KW, C] with the explicit pad and the ceil_mode overhang filled."""
    kh, kw = node.attrs["kernel"]
    sh, sw = node.attrs["stride"]
    pt, pl = node.attrs["padding"]
    oh, ow = node.attrs["out_hw"]
    x = np.pad(x, ((0, 0), (pt, pt), (pl, pl), (0, 0)), constant_values=pad_value)
    extra_h = max(0, (oh - 1) * sh + kh - x.shape[1])
    extra_w = max(0, (ow - 1) * sw + kw - x.shape[2])
    if extra_h or extra_w:
        x = np.pad(x, ((0, 0), (0, extra_h), (0, extra_w), (0, 0)), constant_values=overhang_value)
    return patches(x, (kh, kw), (sh, sw), (0, 0, 0, 0), (1, 1))[:, :oh, :ow]


def avg_divisors(node: Node, h: int, w: int) -> np.ndarray:
    """Per output position [OH, OW] divisor, exactly PyTorch's avg_pool2d rule."""
    def counts(size, k, s, p, out):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)
        full = end - start
        valid = np.minimum(end, size) - np.maximum(start, 0)
        return full, valid

    (kh, kw), (sh, sw), (pt, pl), (oh, ow) = (node.attrs[k] for k in ("kernel", "stride", "padding", "out_hw"))
    fh, vh = counts(h, kh, sh, pt, oh)
    fw, vw = counts(w, kw, sw, pl, ow)
    if node.attrs["count_include_pad"]:
        return np.outer(fh, fw)
    return np.outer(vh, vw)


def output_shape(node, ins):
    h, w, c = ins[0]
    oh, ow = node.attrs["out_hw"]
    return (c,) if node.attrs.get("flat") else (oh, ow, c)


def maxpool_float(node, xs):
    return _windows(node, as_images(xs[0]).astype(np.float64), -np.inf, -np.inf).max(axis=(3, 4))


def _out_dtype(node):
    return np.int16 if bits_of(node) == 16 else np.int8


def maxpool_emulate(node, xs):
    x = as_images(xs[0]).astype(np.int32)
    y = _windows(node, x, -32769, -32769).max(axis=(3, 4))
    return np.clip(y, node.attrs["act_min"], node.attrs["act_max"]).astype(_out_dtype(node))


def avgpool_float(node, xs):
    x = as_images(xs[0]).astype(np.float64)
    s = _windows(node, x, 0.0, 0.0).sum(axis=(3, 4))
    return s / avg_divisors(node, x.shape[1], x.shape[2])[None, :, :, None]


def avgpool_emulate(node, xs):
    x = as_images(xs[0]).astype(np.int64)
    zp = node.attrs["zp"]
    pad = zp if node.attrs["count_include_pad"] else 0   # a counted padded tap is a real zero
    s = _windows(node, x, pad, 0).sum(axis=(3, 4))
    n = avg_divisors(node, x.shape[1], x.shape[2])[None, :, :, None]
    y = np.where(s > 0, s + n // 2, s - n // 2)
    y = np.sign(y) * (np.abs(y) // n)                       # C's truncating division
    return np.clip(y, node.attrs["act_min"], node.attrs["act_max"]).astype(_out_dtype(node))


def _quantize_pool(node, graph, qp):
    q = qp[node.inputs[0]]
    out = Node(node.name, node.op, list(node.inputs), dict(node.attrs), {}, node.source)
    out.attrs.update(zp=q.zero_point, act_min=q.qmin, act_max=q.qmax)
    if q.bits == 16:               # TFLite's int16 MAX_POOL_2D / AVERAGE_POOL_2D: the same loops on int16
        out.attrs["bits"] = 16
    return out


def _macs(node, ins, out):
    kh, kw = node.attrs["kernel"]
    oh, ow = node.attrs["out_hw"]
    return oh * ow * ins[0][-1] * kh * kw


def _pair(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * 2 if len(v) == 1 else v))


def _pool_attrs(ctx, x, kernel, stride, padding, ceil_mode, dilation=1, one_d=False):
    if one_d:
        kernel, stride = (1, _pair(kernel)[0]), (1, _pair(stride or kernel)[0])
        padding, dilation = (0, _pair(padding)[0]), (1, _pair(dilation)[0])
    else:
        kernel = _pair(kernel)
        stride = _pair(stride) if stride else kernel
        padding, dilation = _pair(padding), _pair(dilation)
    if dilation != (1, 1):
        raise UnsupportedOpError(f"pooling with dilation {dilation}")
    h, w, _ = ctx.device_shape(x)
    out_hw = (pool_out_size(h, kernel[0], stride[0], padding[0], ceil_mode),
              pool_out_size(w, kernel[1], stride[1], padding[1], ceil_mode))
    return {"kernel": kernel, "stride": stride, "padding": padding, "out_hw": out_hw,
            "ceil_mode": bool(ceil_mode)}


def maxpool_from_aten(target, args, ctx):
    x, kernel, stride, padding = args["self"], args["kernel_size"], args["stride"], args["padding"]
    dilation, ceil_mode = args["dilation"], args["ceil_mode"]
    attrs = _pool_attrs(ctx, x, kernel, stride, padding, ceil_mode, dilation, one_d="1d" in target)
    return Node(ctx.name, "max_pool2d", [x.name], attrs, {}, ctx.source)


def avgpool_from_aten(target, args, ctx):
    name, src = ctx.name, ctx.source
    if target == "aten.adaptive_avg_pool2d.default" or target == "aten.adaptive_avg_pool1d.default":
        x = args["self"]
        out_size = _pair(args["output_size"]) if "2d" in target else (1, int(_pair(args["output_size"])[0]))
        h, w, _ = ctx.device_shape(x)
        if h % out_size[0] or w % out_size[1]:
            raise UnsupportedOpError(f"adaptive_avg_pool to {out_size} from {h}x{w} (only even splits)")
        k = (h // out_size[0], w // out_size[1])
        attrs = {"kernel": k, "stride": k, "padding": (0, 0), "out_hw": out_size, "ceil_mode": False,
                 "count_include_pad": True}
        return Node(name, "avg_pool2d", [x.name], attrs, {}, src)
    if target == "aten.mean.dim":
        x, dims, keepdim = args["self"], args["dim"], bool(args["keepdim"])
        rank = len(ctx.shape(x))
        dims = sorted(int(d) % rank for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
        if rank == 5:
            return _mean3d(ctx, x, dims, keepdim)
        if rank != 4 or dims != [2, 3]:
            raise UnsupportedOpError(f"mean over dims {dims} of a rank-{rank} tensor (only over H,W)")
        h, w, _ = ctx.device_shape(x)
        attrs = {"kernel": (h, w), "stride": (h, w), "padding": (0, 0), "out_hw": (1, 1),
                 "ceil_mode": False, "count_include_pad": True, "flat": not keepdim}
        return Node(name, "avg_pool2d", [x.name], attrs, {}, src)
    x, kernel, stride, padding = args["self"], args["kernel_size"], args["stride"], args["padding"]
    ceil_mode, include_pad, divisor = args["ceil_mode"], args["count_include_pad"], args.get("divisor_override")
    if divisor is not None:
        raise UnsupportedOpError("avg_pool2d with divisor_override")
    attrs = _pool_attrs(ctx, x, kernel, stride, padding, ceil_mode, one_d="1d" in target)
    attrs["count_include_pad"] = bool(include_pad)
    return Node(name, "avg_pool2d", [x.name], attrs, {}, src)


def is_global_mean(node: Node, in_shape: tuple) -> bool:
    """Every channel averaged over the whole (unpadded) map: one output position, one window."""
    if len(in_shape) != 3:
        return False
    h, w, _ = in_shape
    a = node.attrs
    return tuple(a["out_hw"]) == (1, 1) and tuple(a["kernel"]) == (h, w) and not any(a["padding"]) \
        and a.get("act") is None


def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    h, w, c = image_view(g.shapes[node.inputs[0]])
    oh, ow = a["out_hw"]
    return {"c": dict(H=h, W=w, C=c, OH=oh, OW=ow, KH=a["kernel"][0], KW=a["kernel"][1], SH=a["stride"][0],
                      SW=a["stride"][1], PT=a["padding"][0], PL=a["padding"][1], ZP=a["zp"],
                      INCLUDE_PAD=int(bool(a.get("count_include_pad", False))),
                      ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]), **activation_types(bits_of(node))}


def _onnx(kind: str, out_key: str = "out_hw", divisors=avg_divisors):
    """The ONNX form of a pool over images (attrs out_hw, avg_divisors) or volumes (out_dhw,
    avg_divisors3d): the spatial axes are whatever the kernel attribute lists."""
    def emit(b, n: Node) -> None:
        a, t = n.attrs, n.name
        size = b.g.shapes[n.inputs[0]][:-1]
        k, s, p, o = a["kernel"], a["stride"], a["padding"], a[out_key]
        # ceil_mode: the last window may overhang the far edge; ONNX pads it explicitly
        extra = [max(0, (o[i] - 1) * s[i] + k[i] - (size[i] + 2 * p[i])) for i in range(len(k))]
        kws = dict(kernel_shape=list(k), strides=list(s), pads=list(p) + [p[i] + extra[i] for i in range(len(k))])
        x = b.real[n.inputs[0]]
        if kind == "max":
            y = b.op("MaxPool", [x], t, **kws)
        else:
            # sum over the taps (pads count as 0), then PyTorch's divisor per output position
            sm = b.op("Mul", [b.op("AveragePool", [x], t, count_include_pad=1, **kws),
                              b.const("k", np.float32(np.prod(k)))], t)
            y = b.op("Div", [sm, b.const("div", divisors(n, *size).astype(np.float32)[None, None])], t)
        if a.get("flat"):
            y = b.op("Reshape", [y, b.const("flat", np.array([0, -1], np.int64))], t)
        b.quant(t, b.clamp(y, t, a["act_min"], a["act_max"]))
    return emit


register(OpDef(
    name="max_pool2d", run_float=maxpool_float, output_shape=output_shape,
    quantize=_quantize_pool, emulate=maxpool_emulate, macs=_macs, output_qparams="input",
    aten=("aten.max_pool2d.default", "aten.max_pool1d.default"), from_aten=maxpool_from_aten,
    doc="MaxPool2d/1d with padding and ceil_mode",
    layer_context=layer_context, onnx=_onnx("max"),
    kernels=(KernelRecord("max_pool2d", "pool/max_pool2d.c.j2", lambda node, g: "reference kernel set",
                          bits=(8, 16)),),
    int16=lambda node, g: None,
))

register(OpDef(
    name="avg_pool2d", run_float=avgpool_float, output_shape=output_shape, global_mean=is_global_mean,
    layer_context=layer_context, onnx=_onnx("avg"),
    kernels=(KernelRecord("avg_pool2d", "pool/avg_pool2d.c.j2", lambda node, g: "reference kernel set",
                          bits=(8, 16)),),
    int16=lambda node, g: None,
    quantize=_quantize_pool, emulate=avgpool_emulate, macs=_macs, output_qparams="input",
    aten=("aten.avg_pool2d.default", "aten.avg_pool1d.default", "aten.adaptive_avg_pool2d.default",
          "aten.adaptive_avg_pool1d.default", "aten.mean.dim"),
    from_aten=avgpool_from_aten,
    doc="AvgPool2d/1d (count_include_pad both ways, ceil_mode), AdaptiveAvgPool to 1x1 or even splits, mean over H,W",
))


# ---------------------------------------------------------------------------------------------
# Volumes: max_pool3d, avg_pool3d over NDHWC, attrs kernel/stride/padding/out_dhw as (D, H, W) triples.

def _triple(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * 3 if len(v) == 1 else v))


def _windows3d(node: Node, x: np.ndarray, pad_value, overhang_value):
    """[N, D, H, W, C] -> [N, OD, OH, OW, KD, KH, KW, C], explicit pad and ceil_mode overhang filled."""
    k, s, p, o = (node.attrs[key] for key in ("kernel", "stride", "padding", "out_dhw"))
    x = np.pad(x, ((0, 0),) + tuple((pi, pi) for pi in p) + ((0, 0),), constant_values=pad_value)
    extra = [max(0, (o[i] - 1) * s[i] + k[i] - x.shape[1 + i]) for i in range(3)]
    if any(extra):
        x = np.pad(x, ((0, 0),) + tuple((0, e) for e in extra) + ((0, 0),), constant_values=overhang_value)
    win = np.lib.stride_tricks.sliding_window_view(x, tuple(k), axis=(1, 2, 3))
    win = win[:, ::s[0], ::s[1], ::s[2]][:, :o[0], :o[1], :o[2]]           # [N, OD, OH, OW, C, KD, KH, KW]
    return win.transpose(0, 1, 2, 3, 5, 6, 7, 4)


def _counts(size, k, s, p, out):
    """Per output position along one axis: taps inside the padded border, and in-volume taps."""
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    return end - start, np.minimum(end, size) - np.maximum(start, 0)


def avg_divisors3d(node: Node, d: int, h: int, w: int) -> np.ndarray:
    """Per output position [OD, OH, OW] divisor, PyTorch's avg_pool3d rule (as avg_divisors, per axis)."""
    k, s, p, o = (node.attrs[key] for key in ("kernel", "stride", "padding", "out_dhw"))
    per_axis = [_counts(size, k[i], s[i], p[i], o[i]) for i, size in enumerate((d, h, w))]
    pick = 0 if node.attrs["count_include_pad"] else 1
    a, b, c = (axis[pick] for axis in per_axis)
    return a[:, None, None] * b[None, :, None] * c[None, None, :]


def output_shape3d(node, ins):
    c = ins[0][-1]
    return (c,) if node.attrs.get("flat") else tuple(node.attrs["out_dhw"]) + (c,)


def maxpool3d_float(node, xs):
    return _windows3d(node, xs[0].astype(np.float64), -np.inf, -np.inf).max(axis=(4, 5, 6))


def maxpool3d_emulate(node, xs):
    y = _windows3d(node, xs[0].astype(np.int16), -129, -129).max(axis=(4, 5, 6))
    return np.clip(y, node.attrs["act_min"], node.attrs["act_max"]).astype(np.int8)


def avgpool3d_float(node, xs):
    x = xs[0].astype(np.float64)
    s = _windows3d(node, x, 0.0, 0.0).sum(axis=(4, 5, 6))
    return s / avg_divisors3d(node, *x.shape[1:4])[None, ..., None]


def avgpool3d_emulate(node, xs):
    x = xs[0].astype(np.int64)
    pad = node.attrs["zp"] if node.attrs["count_include_pad"] else 0   # a counted padded tap is a real zero
    s = _windows3d(node, x, pad, 0).sum(axis=(4, 5, 6))
    n = avg_divisors3d(node, *x.shape[1:4])[None, ..., None]
    y = np.where(s > 0, s + n // 2, s - n // 2)
    y = np.sign(y) * (np.abs(y) // n)                       # C's truncating division: half away from zero
    return np.clip(y, node.attrs["act_min"], node.attrs["act_max"]).astype(np.int8)


def _macs3d(node, ins, out):
    return int(np.prod(node.attrs["out_dhw"]) * ins[0][-1] * np.prod(node.attrs["kernel"]))


def _pool3d_attrs(ctx, x, kernel, stride, padding, ceil_mode, dilation=1) -> dict:
    kernel = _triple(kernel)
    stride = _triple(stride) if stride else kernel
    padding, dilation = _triple(padding), _triple(dilation)
    if dilation != (1, 1, 1):
        raise UnsupportedOpError(f"pooling with dilation {dilation}")
    size = ctx.device_shape(x)[:3]
    out = tuple(pool_out_size(size[i], kernel[i], stride[i], padding[i], ceil_mode) for i in range(3))
    return {"kernel": kernel, "stride": stride, "padding": padding, "out_dhw": out, "ceil_mode": bool(ceil_mode)}


def maxpool3d_from_aten(target, args, ctx):
    x = args["self"]
    attrs = _pool3d_attrs(ctx, x, args["kernel_size"], args["stride"], args["padding"], args["ceil_mode"],
                          args["dilation"])
    return Node(ctx.name, "max_pool3d", [x.name], attrs, {}, ctx.source)


def _global3d(ctx, x, flat: bool) -> Node:
    d, h, w, _ = ctx.device_shape(x)
    attrs = {"kernel": (d, h, w), "stride": (d, h, w), "padding": (0, 0, 0), "out_dhw": (1, 1, 1),
             "ceil_mode": False, "count_include_pad": True, "flat": flat}
    return Node(ctx.name, "avg_pool3d", [x.name], attrs, {}, ctx.source)


def _mean3d(ctx, x, dims, keepdim) -> Node:
    if dims != [2, 3, 4]:
        raise UnsupportedOpError(f"mean over dims {dims} of a rank-5 tensor (only over D,H,W)")
    return _global3d(ctx, x, flat=not keepdim)


def avgpool3d_from_aten(target, args, ctx):
    x = args["self"]
    if target == "aten.adaptive_avg_pool3d.default":
        out = _triple(args["output_size"])
        size = ctx.device_shape(x)[:3]
        if any(size[i] % out[i] for i in range(3)):
            raise UnsupportedOpError(f"adaptive_avg_pool3d to {out} from {'x'.join(map(str, size))} (only even splits)")
        k = tuple(size[i] // out[i] for i in range(3))
        attrs = {"kernel": k, "stride": k, "padding": (0, 0, 0), "out_dhw": out, "ceil_mode": False,
                 "count_include_pad": True}
        return Node(ctx.name, "avg_pool3d", [x.name], attrs, {}, ctx.source)
    if args.get("divisor_override") is not None:
        raise UnsupportedOpError("avg_pool3d with divisor_override")
    attrs = _pool3d_attrs(ctx, x, args["kernel_size"], args["stride"], args["padding"], args["ceil_mode"])
    attrs["count_include_pad"] = bool(args["count_include_pad"])
    return Node(ctx.name, "avg_pool3d", [x.name], attrs, {}, ctx.source)


def is_global_mean3d(node: Node, in_shape: tuple) -> bool:
    """Every channel averaged over the whole (unpadded) volume: passes/fold_pool.py can fold it."""
    a = node.attrs
    return len(in_shape) == 4 and tuple(a["out_dhw"]) == (1, 1, 1) and tuple(a["kernel"]) == tuple(in_shape[:3]) \
        and not any(a["padding"]) and a.get("act") is None


def layer_context3d(node: Node, g: Graph) -> dict:
    a = node.attrs
    d, h, w, c = g.shapes[node.inputs[0]]
    (kd, kh, kw), (sd, sh, sw), (pf, pt, pl), (od, oh, ow) = a["kernel"], a["stride"], a["padding"], a["out_dhw"]
    return {"c": dict(D=d, H=h, W=w, C=c, OD=od, OH=oh, OW=ow, KD=kd, KH=kh, KW=kw, SD=sd, SH=sh, SW=sw,
                      PF=pf, PT=pt, PL=pl, ZP=a["zp"], INCLUDE_PAD=int(bool(a.get("count_include_pad", False))),
                      ACT_MIN=a["act_min"], ACT_MAX=a["act_max"])}


register(OpDef(
    name="max_pool3d", run_float=maxpool3d_float, output_shape=output_shape3d,
    quantize=_quantize_pool, emulate=maxpool3d_emulate, macs=_macs3d, output_qparams="input",
    aten=("aten.max_pool3d.default",), from_aten=maxpool3d_from_aten, volumetric=True,
    doc="MaxPool3d with padding and ceil_mode (NDHWC)",
    layer_context=layer_context3d, onnx=_onnx("max", "out_dhw", avg_divisors3d),
    kernels=(KernelRecord("max_pool3d", "pool/max_pool3d.c.j2", lambda node, g: "reference kernel set"),),
))

register(OpDef(
    name="avg_pool3d", run_float=avgpool3d_float, output_shape=output_shape3d,
    quantize=_quantize_pool, emulate=avgpool3d_emulate, macs=_macs3d, output_qparams="input",
    aten=("aten.avg_pool3d.default", "aten.adaptive_avg_pool3d.default"), from_aten=avgpool3d_from_aten,
    volumetric=True, layer_context=layer_context3d, onnx=_onnx("avg", "out_dhw", avg_divisors3d),
    global_mean=is_global_mean3d,
    kernels=(KernelRecord("avg_pool3d", "pool/avg_pool3d.c.j2", lambda node, g: "reference kernel set"),),
    doc="AvgPool3d (count_include_pad both ways, ceil_mode), AdaptiveAvgPool3d with even splits, mean over D,H,W",
))
