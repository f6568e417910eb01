"""reshape and permute: flatten/view/reshape/squeeze between PyTorch shapes.

Device tensors are NHWC, PyTorch's NCHW, so a reshape either keeps the device byte order (then it is
an alias: no code, the output shares the input's bytes) or reorders it (`permute`: a gather by a
table, out[j] = in[index[j]]). passes/fold_permute_into_linear removes the common flatten -> linear
permute by permuting the linear's weight columns instead, as SPEC.md asks.

Registers `reshape` (an alias, no code) and `permute`; kernel (this folder): permute.c.j2.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node
from ..base import KernelRecord, OpDef, register


def torch_to_device(a: np.ndarray) -> np.ndarray:
    """An array in PyTorch layout with batch -> device layout with batch."""
    if a.ndim == 5:  # (N, C, D, H, W) -> NDHWC
        return a.transpose(0, 2, 3, 4, 1)
    if a.ndim == 4:
        return a.transpose(0, 2, 3, 1)
    if a.ndim == 3:  # (N, C, L): a 1 x L image
        return a.transpose(0, 2, 1)[:, None, :, :]
    if a.ndim == 2:
        return a
    raise UnsupportedOpError(f"tensors of rank {a.ndim} (supported: 2, 3, 4, 5)")


def device_to_torch(a: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NCHW":
        return a.transpose(0, 3, 1, 2)
    if layout == "NCDHW":
        return a.transpose(0, 4, 1, 2, 3)
    if layout == "NCL":
        return a[:, 0].transpose(0, 2, 1)
    return a


def gather_index(torch_in: tuple, torch_out: tuple, move=None) -> np.ndarray:
    """For each device-order output element, the device-order input element it holds. `move` maps a
    PyTorch-layout array to the op's PyTorch-layout result (a permute, a transpose); default: reshape."""
    total = int(np.prod(torch_in))
    a = np.arange(total).reshape(torch_in)
    src = torch_to_device(a).ravel()                                  # device pos -> torch index
    moved = a.reshape(torch_out) if move is None else move(a)
    dst = torch_to_device(moved).ravel()
    inverse = np.empty(total, dtype=np.int64)
    inverse[src] = np.arange(total)
    return inverse[dst]


def _move(target, args, rank):
    """The PyTorch-layout data movement of permute / transpose (None for the reshape family)."""
    if target == "aten.permute.default":
        dims = [int(d) % rank for d in args["dims"]]
        if dims[0] != 0:
            raise UnsupportedOpError(f"permute {dims} moves the batch axis")
        return lambda a: a.transpose(dims)
    if target in ("aten.transpose.int", "aten.t.default"):
        d0, d1 = (int(args.get("dim0", 0)) % rank, int(args.get("dim1", 1)) % rank)
        if 0 in (d0, d1) and d0 != d1:
            raise UnsupportedOpError(f"transpose of dims {d0}, {d1} moves the batch axis")
        return lambda a: np.swapaxes(a, d0, d1)
    return None


def layout_move(target, args, tin: tuple, tout: tuple):
    """This op's data movement on a PyTorch-layout array (any rank): the importer composes chains of
    them through tensors the device has no layout for (channel shuffle's rank-5 view + transpose)."""
    if tin[0] != tout[0]:
        raise UnsupportedOpError(f"reshape {tin} -> {tout} changes the batch axis")
    move = _move(target, args, len(tin))
    return (lambda a: a.reshape((a.shape[0],) + tout[1:])) if move is None else move


def gather_node(name: str, src: str, tin: tuple, tout: tuple, move, out_device_shape: tuple, source: str) -> Node:
    """`reshape` (an alias) when the movement keeps device byte order, else a `permute` gather."""
    index = gather_index((1,) + tin[1:], (1,) + tout[1:], move)
    attrs = {"shape": tuple(out_device_shape)}
    if np.array_equal(index, np.arange(index.size)):
        return Node(name, "reshape", [src], attrs, {}, source)
    return Node(name, "permute", [src], attrs, {"index": index}, source)


def from_aten(target, args, ctx):
    x = args["self"]
    tin, tout = tuple(ctx.shape(x)), tuple(ctx.out_shape)
    return gather_node(ctx.name, x.name, tin, tout, layout_move(target, args, tin, tout),
                       ctx.out_device_shape, ctx.source)


def _gather(node, xs):
    x = xs[0].reshape(xs[0].shape[0], -1)
    return x[:, node.params["index"]]


def _same(node, graph, qp):
    return Node(node.name, node.op, list(node.inputs), dict(node.attrs), dict(node.params), node.source)


_RESHAPES = ("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default",
             "aten.flatten.using_ints", "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default",
             "aten.unsqueeze.default", "aten.permute.default", "aten.transpose.int")

def _reshape_onnx(b, n: Node) -> None:
    b.quant(n.name, b.from_device_flat(b.to_device_flat(n.inputs[0]), b.g.shapes[n.name]))


def _permute_onnx(b, n: Node) -> None:
    y = b.op("Gather", [b.to_device_flat(n.inputs[0]), b.const("idx", n.params["index"].astype(np.int64))],
             n.name, axis=1)
    b.quant(n.name, b.from_device_flat(y, b.g.shapes[n.name]))


def _permute_context(node: Node, g: Graph) -> dict:
    index = node.params["index"]
    return {"c": dict(SIZE=int(index.size)), "index": index,
            "index_type": "uint16_t" if index.size <= 65536 else "int32_t"}


register(OpDef(
    name="reshape", run_float=lambda node, xs: xs[0],
    output_shape=lambda node, ins: node.attrs["shape"], quantize=_same,
    emulate=lambda node, xs: xs[0], output_qparams="input", alias=True,
    aten=_RESHAPES, from_aten=from_aten, onnx=_reshape_onnx, layout_move=layout_move, gather_node=gather_node,
    gather_index=lambda node: None,
    doc="flatten / view / reshape / squeeze / permute / transpose that keep device byte order (free)",
    int16=lambda node, g: None,        # no code: the bytes keep their meaning at any width
))

register(OpDef(
    name="permute", run_float=_gather,
    output_shape=lambda node, ins: node.attrs["shape"], quantize=_same, emulate=_gather,
    output_qparams="input",
    doc="a reshape / permute / transpose that reorders device bytes (gather by table; a flatten before a linear folds)",
    layer_context=_permute_context, onnx=_permute_onnx, gather_index=lambda node: node.params["index"],
    kernels=(KernelRecord("permute", "reshape/permute.c.j2", lambda node, g: "reference kernel set",
                          constants=("index",)),),
))
