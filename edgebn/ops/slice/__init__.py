"""slice: `x[:, a:b]`, `x[..., ::2]` and the parts of `split` / `split_with_sizes` / `chunk` / `unbind`-free
splits (MixNet's mixed kernels, ShuffleNetV2's channel halves), along channels, H, W, L or features.

A slice copies the selected int8 values (in NHWC a channel range is not contiguous) and keeps the
input's quantization, as TFLite's STRIDED_SLICE / SPLIT do. The split family returns several tensors:
each `getitem` of it becomes its own slice (OpDef.getitem). Kernel (this folder): slice.c.j2.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node, image_view
from ..base import KernelRecord, OpDef, as_images, register

# PyTorch dim of an (N,C,H,W) / (N,C,L) / (N,F) tensor -> axis of the (H, W, C) image view
_AXIS = {4: {1: 2, 2: 0, 3: 1}, 3: {1: 2, 2: 1}, 2: {1: 2}}


def _axis(rank: int, dim: int) -> int:
    dim = dim % rank
    if dim == 0:
        raise UnsupportedOpError("slicing the batch axis")
    return _AXIS[rank][dim]


def slice_node(name: str, src: str, in_view: tuple, axis: int, start: int, stop: int, step: int,
               out_shape: tuple, source: str) -> Node:
    starts, steps = [0, 0, 0], [1, 1, 1]
    starts[axis], steps[axis] = start, step
    return Node(name, "slice", [src], {"start": tuple(starts), "step": tuple(steps), "shape": out_shape}, {}, source)


def _run(node: Node, xs):
    x = as_images(xs[0]) if xs[0].ndim == 2 else xs[0]
    shape = tuple(node.attrs["shape"])
    oh, ow, oc = image_view(shape)
    (h0, w0, c0), (sh, sw, sc) = node.attrs["start"], node.attrs["step"]
    y = x[:, h0:h0 + sh * oh:sh, w0:w0 + sw * ow:sw, c0:c0 + sc * oc:sc]
    return y.reshape((len(y),) + shape)


def _range(size: int, start, end, step) -> tuple[int, int, int]:
    start, stop, step = slice(start, end, step).indices(size)
    if step <= 0:
        raise UnsupportedOpError(f"slice step {step}")
    return start, stop, step


def from_aten(target, args, ctx):
    x = args["self"]
    tin = tuple(ctx.shape(x))
    axis = _axis(len(tin), int(args["dim"]))
    start, stop, step = _range(tin[int(args["dim"]) % len(tin)], args["start"], args["end"], args["step"])
    return slice_node(ctx.name, x.name, tuple(ctx.device_shape(x)), axis, start, stop, step,
                      tuple(ctx.out_device_shape), ctx.source)


def split_getitem(target, args, index: int, ctx) -> Node:
    """Part `index` of split / split_with_sizes / chunk as a slice."""
    x = args["self"]
    tin = tuple(ctx.shape(x))
    dim = int(args["dim"]) % len(tin)
    size = tin[dim]
    if "split_with_sizes" in target:
        sizes = [int(s) for s in args["split_sizes"]]
    elif "chunk" in target:
        each = -(-size // int(args["chunks"]))
        sizes = [min(each, size - i) for i in range(0, size, each)]
    else:
        each = int(args["split_size"])
        sizes = [min(each, size - i) for i in range(0, size, each)]
    if index >= len(sizes):
        raise UnsupportedOpError(f"part {index} of a split into {len(sizes)}")
    start = sum(sizes[:index])
    return slice_node(ctx.name, x.name, tuple(ctx.device_shape(x)), _axis(len(tin), dim), start,
                      start + sizes[index], 1, tuple(ctx.out_device_shape), ctx.source)


def layer_context(node: Node, g: Graph) -> dict:
    h, w, c = image_view(g.shapes[node.inputs[0]])
    oh, ow, oc = image_view(g.shapes[node.name])
    (h0, w0, c0), (sh, sw, sc) = node.attrs["start"], node.attrs["step"]
    return {"c": dict(H=h, W=w, C=c, OH=oh, OW=ow, OC=oc, H0=h0, W0=w0, C0=c0, SH=sh, SW=sw, SC=sc)}


def onnx(b, n: Node) -> None:
    shape = b.g.shapes[n.inputs[0]]
    (h0, w0, c0), (sh, sw, sc) = n.attrs["start"], n.attrs["step"]
    oh, ow, oc = image_view(b.g.shapes[n.name])
    if len(shape) == 3:       # ONNX tensors are NCHW
        starts, ends, axes, steps = [c0, h0, w0], [c0 + sc * oc, h0 + sh * oh, w0 + sw * ow], [1, 2, 3], [sc, sh, sw]
    else:
        starts, ends, axes, steps = [c0], [c0 + sc * oc], [1], [sc]
    y = b.op("Slice", [b.real[n.inputs[0]]] + [b.const(k, np.array(v, np.int64)) for k, v in
                                               (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))],
             n.name)
    b.quant(n.name, y)


register(OpDef(
    name="slice", run_float=_run, output_shape=lambda node, ins: tuple(node.attrs["shape"]),
    quantize=lambda node, graph, qp: node, emulate=_run, output_qparams="input",
    aten=("aten.slice.Tensor", "aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default"),
    from_aten=from_aten, getitem=split_getitem,
    doc="x[:, a:b:s], split / split_with_sizes / chunk parts (a strided copy; quantization kept)",
    layer_context=layer_context,
    kernels=(KernelRecord("slice", "slice/slice.c.j2", lambda node, g: "strided copy"),),
    onnx=onnx,
))
