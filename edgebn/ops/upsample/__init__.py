"""upsample: nearest-neighbour upsampling (`nn.Upsample(mode="nearest")`, `F.interpolate`), 2-D and 1-D.

The source index of each output row and column is PyTorch's, computed at compile time in float32
exactly as ATen does (`nearest_idx`: identity, `>> 1` for an exact 2x, else `floorf(dst * scale)` with
scale `1 / scale_factor` when given, `in / out` otherwise; `nearest-exact` adds 0.5), and kept in two
small tables. Values are copied, so the output keeps the input's quantization, as TFLite's
RESIZE_NEAREST_NEIGHBOR does (which equals this for align_corners=False, half_pixel_centers=False
with integer factors). Kernel (this folder): upsample_nearest.c.j2.
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
    shape = n.attrs["shape"]
    sizes = b.const("sizes", np.array([1, shape[2], shape[0], shape[1]], np.int64))
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
