"""upsample: nearest-neighbour upsampling (`nn.Upsample(mode="nearest")`, `F.interpolate`), 2-D and 1-D,
and bilinear upsampling (`mode="bilinear"`, align_corners True or False, scale factors or sizes).

The source index of each output row and column is PyTorch's, computed at compile time in float32
exactly as ATen does (`nearest_idx`: identity, `>> 1` for an exact 2x, else `floorf(dst * scale)` with
scale `1 / scale_factor` when given, `in / out` otherwise; `nearest-exact` adds 0.5), and kept in two
small tables. Values are copied, so the output keeps the input's quantization, as TFLite's
RESIZE_NEAREST_NEIGHBOR does (which equals this for align_corners=False, half_pixel_centers=False
with integer factors). Kernel (this folder): upsample_nearest.c.j2.

Bilinear is TFLite's int8 RESIZE_BILINEAR (`reference_ops::ResizeBilinearInteger`): PyTorch's
align_corners=True is TFLite's align_corners, align_corners=False is TFLite's half_pixel_centers.
Per axis the source position is in 1/1024 steps, `scaled = dst * scale_10` (+ `scale_10 / 2 - 512`
with half-pixel centres), `i0 = max(scaled / 1024, 0)`, `i1 = min((scaled + 1023) / 1024, in - 1)`,
`f = scaled - 1024 * i0` (C division, truncating); each output is
`(sum q * wy * wx + (acc > 0 ? 2^19 : -2^19)) / 2^20` over the four taps with weights `1024 - f, f`, so
the output keeps the input's quantization. `scale_10` is TFLite's rounded `1024 * in / out` (or
`1024 * (in - 1) / (out - 1)` with align_corners); where PyTorch's own scale differs from in / out (a
scale factor that does not divide the output size: ATen then uses 1 / scale_factor), it is
`round(1024 / scale_factor)`. The rows' and columns' (i0, i1, f) are tables computed at compile time.
Kernel (this folder): upsample_bilinear.c.j2.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node, image_view
from ..base import KernelRecord, OpDef, as_images, register


def source_index(in_size: int, out_size: int, scale: float | None, exact: bool = False) -> np.ndarray:
    """ATen's nearest / nearest-exact source index for every output position (float32 arithmetic)."""
    dst = np.arange(out_size)
    if not exact and out_size == in_size:
        return dst
    if not exact and out_size == 2 * in_size:
        return dst >> 1
    s = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(in_size) / np.float32(out_size)
    pos = (dst.astype(np.float32) + np.float32(0.5)) * s if exact else dst.astype(np.float32) * s
    return np.minimum(np.floor(pos).astype(np.int64), in_size - 1)


def _gather(node: Node, xs):
    x = as_images(xs[0]) if xs[0].ndim == 2 else xs[0]
    return x[:, node.params["rows"]][:, :, node.params["cols"]]


def from_aten(target, args, ctx):
    x = args.get("input", args.get("self"))
    tin, tout = tuple(ctx.shape(x)), tuple(ctx.out_shape)
    exact = "exact" in target
    if len(tin) == 4:
        scales = args.get("scale_factors") or [args.get("scales_h"), args.get("scales_w")]
        (ih, iw), (oh, ow) = tin[2:], tout[2:]
        rows = source_index(ih, oh, scales[0], exact)
        cols = source_index(iw, ow, scales[1], exact)
    elif len(tin) == 3:
        scales = args.get("scale_factors") or [args.get("scales")]
        rows = np.zeros(1, np.int64)
        cols = source_index(tin[2], tout[2], scales[0], exact)
    else:
        raise UnsupportedOpError(f"upsampling a {tin} tensor")
    return Node(ctx.name, "upsample_nearest", [x.name], {"shape": tuple(ctx.out_device_shape), "exact": exact},
                {"rows": rows, "cols": cols}, ctx.source)


def layer_context(node: Node, g: Graph) -> dict:
    h, w, c = image_view(g.shapes[node.inputs[0]])
    oh, ow, _ = image_view(g.shapes[node.name])
    return {"c": dict(H=h, W=w, C=c, OH=oh, OW=ow), "rows": node.params["rows"], "cols": node.params["cols"]}


def onnx(b, n: Node) -> None:
    sizes = _batch_sizes(b, b.real[n.inputs[0]], n.attrs["shape"])
    y = b.op("Resize", [b.real[n.inputs[0]], "", "", sizes], n.name, mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    b.quant(n.name, y)


register(OpDef(
    name="upsample_nearest", run_float=_gather, output_shape=lambda node, ins: tuple(node.attrs["shape"]),
    quantize=lambda node, graph, qp: node, emulate=_gather, output_qparams="input",
    aten=("aten.upsample_nearest2d.vec", "aten.upsample_nearest2d.default", "aten.upsample_nearest1d.vec",
          "aten.upsample_nearest1d.default", "aten._upsample_nearest_exact2d.vec",
          "aten._upsample_nearest_exact2d.default", "aten._upsample_nearest_exact1d.vec"),
    from_aten=from_aten,
    doc="nearest-neighbour upsampling (PyTorch's source indices; RESIZE_NEAREST_NEIGHBOR for integer factors)",
    layer_context=layer_context,
    kernels=(KernelRecord("upsample_nearest", "upsample/upsample_nearest.c.j2",
                          lambda node, g: "row and column source tables", constants=("rows", "cols")),),
    onnx=onnx,
))


# ---------------------------------------------------------------------------------------------
# Bilinear: TFLite RESIZE_BILINEAR int8 (align_corners / half_pixel_centers), the float as ATen

def _c_div(a: np.ndarray, b: int) -> np.ndarray:
    """C's integer division (truncates toward zero)."""
    return np.sign(a) * (np.abs(a) // b)


def bilinear_scale_10(in_size: int, out_size: int, align_corners: bool, scale: float | None) -> int:
    """The source step per output position in 1/1024 of an input pixel (TFLite's height_scale_10)."""
    if align_corners and out_size > 1:
        return ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    if not align_corners and scale is not None and scale > 0 and out_size != in_size * scale:
        return int(np.floor(1024.0 / scale + 0.5))      # ATen uses 1 / scale_factor, not in / out
    return ((1 << 10) * in_size + out_size // 2) // out_size


def bilinear_taps(in_size: int, out_size: int, align_corners: bool, scale: float | None = None) -> np.ndarray:
    """[out_size, 3] int32: (i0, i1, f) per output position, TFLite's ComputeInterpolationValuesInteger;
    the taps' weights are 1024 - f and f."""
    s10 = bilinear_scale_10(in_size, out_size, align_corners, scale)
    dst = np.arange(out_size, dtype=np.int64)
    scaled = dst * s10 if align_corners else dst * s10 + s10 // 2 - (1 << 9)
    i0 = np.maximum(_c_div(scaled, 1 << 10), 0)      # (scaled < 1024 * in_size for every PyTorch size)
    i1 = np.minimum(_c_div(scaled + (1 << 10) - 1, 1 << 10), in_size - 1)
    return np.stack([i0, i1, scaled - (1 << 10) * i0], axis=1).astype(np.int32)


def bilinear_emulate(node: Node, xs):
    x = xs[0].astype(np.int64)
    rows, cols = node.params["rows"].astype(np.int64), node.params["cols"].astype(np.int64)
    fy = rows[:, 2][None, :, None, None]
    fx = cols[:, 2][None, None, :, None]
    top, bottom = x[:, rows[:, 0]], x[:, rows[:, 1]]
    acc = (top[:, :, cols[:, 0]] * (1024 - fy) * (1024 - fx) + bottom[:, :, cols[:, 0]] * fy * (1024 - fx)
           + top[:, :, cols[:, 1]] * (1024 - fy) * fx + bottom[:, :, cols[:, 1]] * fy * fx)
    y = _c_div(acc + np.where(acc > 0, 1 << 19, -(1 << 19)), 1 << 20)   # half away from zero
    return y.astype(np.int8)


def aten_linear_source(in_size: int, out_size: int, align_corners: bool, scale: float | None):
    """ATen's upsample_bilinear2d per axis: (i0, i1, lambda1) in float64 (area_pixel_compute_source_index)."""
    if align_corners:
        s = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = np.arange(out_size) * s
    else:
        s = 1.0 / scale if scale is not None and scale > 0 else in_size / out_size
        src = np.maximum(s * (np.arange(out_size) + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, np.clip(src - i0, 0.0, 1.0)


def bilinear_float(node: Node, xs):
    x = xs[0].astype(np.float64)
    a = node.attrs
    (y0, y1, ly), (x0, x1, lx) = (aten_linear_source(x.shape[1 + i], a["shape"][i], a["align_corners"],
                                                     a["scales"][i]) for i in range(2))
    ly, lx = ly[None, :, None, None], lx[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - lx) + x[:, y0][:, :, x1] * lx
    bottom = x[:, y1][:, :, x0] * (1 - lx) + x[:, y1][:, :, x1] * lx
    return top * (1 - ly) + bottom * ly


def bilinear_from_aten(target, args, ctx):
    x = args["input"] if "input" in args else args["self"]
    tin, tout = tuple(ctx.shape(x)), tuple(ctx.out_shape)
    if len(tin) != 4:
        raise UnsupportedOpError(f"bilinear upsampling of a {tin} tensor (only (N, C, H, W))")
    scales = args.get("scale_factors") or [args.get("scales_h"), args.get("scales_w")]
    scales = [None if v is None else float(v) for v in scales]
    align = bool(args["align_corners"])
    (ih, iw), (oh, ow) = tin[2:], tout[2:]
    return Node(ctx.name, "upsample_bilinear", [x.name],
                {"shape": tuple(ctx.out_device_shape), "align_corners": align, "scales": tuple(scales)},
                {"rows": bilinear_taps(ih, oh, align, scales[0]), "cols": bilinear_taps(iw, ow, align, scales[1])},
                ctx.source)


def bilinear_context(node: Node, g: Graph) -> dict:
    h, w, c = image_view(g.shapes[node.inputs[0]])
    oh, ow, _ = image_view(g.shapes[node.name])
    return {"c": dict(H=h, W=w, C=c, OH=oh, OW=ow, ALIGN=int(node.attrs["align_corners"])),
            "rows": node.params["rows"].ravel(), "cols": node.params["cols"].ravel()}


def _batch_sizes(b, x: str, shape) -> str:
    """ONNX Resize sizes [N, C, OH, OW] with the batch of x (a constant 1 would resize the batch)."""
    n = b.op("Slice", [b.op("Shape", [x], "shape"), b.const("s0", np.array([0], np.int64)),
                       b.const("s1", np.array([1], np.int64))], "batch")
    return b.op("Concat", [n, b.const("chw", np.array([shape[2], shape[0], shape[1]], np.int64))], "sizes", axis=0)


def bilinear_onnx(b, n: Node) -> None:
    shape = n.attrs["shape"]
    sizes = _batch_sizes(b, b.real[n.inputs[0]], shape)
    mode = "align_corners" if n.attrs["align_corners"] else "pytorch_half_pixel"
    y = b.op("Resize", [b.real[n.inputs[0]], "", "", sizes], n.name, mode="linear",
             coordinate_transformation_mode=mode)
    b.quant(n.name, y)


register(OpDef(
    name="upsample_bilinear", run_float=bilinear_float, output_shape=lambda node, ins: tuple(node.attrs["shape"]),
    quantize=lambda node, graph, qp: node, emulate=bilinear_emulate, output_qparams="input",
    macs=lambda node, ins, out: 4 * int(np.prod(out)),
    aten=("aten.upsample_bilinear2d.vec", "aten.upsample_bilinear2d.default"), from_aten=bilinear_from_aten,
    doc="bilinear upsampling, TFLite RESIZE_BILINEAR int8 (align_corners / half_pixel_centers), quantization kept",
    layer_context=bilinear_context,
    kernels=(KernelRecord("upsample_bilinear", "upsample/upsample_bilinear.c.j2",
                          lambda node, g: "row and column tap tables", constants=("rows", "cols")),),
    onnx=bilinear_onnx,
))
