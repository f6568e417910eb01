"""Hold every layer of a compiled edgebn graph to TensorFlow Lite Micro (tests/tflm_oracle.py).

`check_layers_against_tflm(graph, q)` runs the emulator over int8 inputs `q`, then, for each layer,
gives TFLM that layer's own int8 inputs, weights and quantization and asserts TFLM's int8 output equals
the emulator's. Adding an operator: add its branch to `oracle_layer` (the TFLite op and how the edgebn
node's attributes map onto it); an op with no TFLite form raises NoTflmForm.
"""
from __future__ import annotations

import numpy as np

import tflm_oracle as tflm
from edgebn.execute import execute, run_int8
from edgebn.ir import image_view
from edgebn.ops import OPS
from tflm_oracle import Q

__all__ = ["oracle_layer", "check_layers_against_tflm", "NoTflmForm"]


class NoTflmForm(Exception):
    """The node's arithmetic has no TFLite equivalent (a documented deviation)."""


def _act(attrs):
    act = attrs.get("act")
    if act is None:
        return None
    if act.get("lo") == 0.0 and act.get("hi") is None:
        return "relu"
    if act.get("lo") == 0.0 and act.get("hi") == 6.0:
        return "relu6"
    raise AssertionError(f"no TFLite fused activation for {act}")


def _image(x):
    """A device tensor as TFLite's 4-D NHWC ((N, F) -> (N, 1, 1, F))."""
    return x if x.ndim == 4 else x.reshape(len(x), 1, 1, -1)


def oracle_layer(node, xs, qp):
    """The TFLM result of one quantized edgebn node, from its int8 inputs and parameters alone."""
    a, p = node.attrs, node.params
    qin = [Q(qp[t].scale, qp[t].zero_point) for t in node.inputs]
    qout = Q(qp[node.name].scale, qp[node.name].zero_point)
    if node.op == "conv2d":
        w = p["weight"]
        args = (xs[0], qin[0], w, p["weight_scale"], p["bias"], qout)
        kw = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"], act=_act(a))
        if a["groups"] == 1:
            return tflm.conv2d(*args, **kw)
        assert w.shape[3] == 1 and a["groups"] == xs[0].shape[-1], "grouped conv: no TFLite op"
        return tflm.depthwise_conv2d(*args, **kw)
    if node.op == "linear":
        return tflm.fully_connected(xs[0].reshape(len(xs[0]), -1), qin[0], p["weight"], p["weight_scale"],
                                    p["bias"], qout, act=_act(a))
    if node.op == "add":
        return tflm.add(xs[0], qin[0], xs[1], qin[1], qout, act=_act(a))
    if node.op in ("max_pool2d", "avg_pool2d"):
        x = xs[0] if xs[0].ndim == 4 else xs[0].reshape(len(xs[0]), 1, 1, -1)
        (kh, kw), (sh, sw), (pt, pl), (oh, ow) = (a[k] for k in ("kernel", "stride", "padding", "out_hw"))
        # ceil_mode: windows past the padded input (overhang) hold no tap at all
        over_h = max(0, (oh - 1) * sh + kh - (x.shape[1] + 2 * pt))
        over_w = max(0, (ow - 1) * sw + kw - (x.shape[2] + 2 * pl))
        pads = (pt, pl, pt + over_h, pl + over_w)
        if node.op == "max_pool2d":
            return tflm.max_pool2d(x, qin[0], (kh, kw), (sh, sw), pads)
        if over_h or over_w:
            raise NoTflmForm("avg_pool2d (ceil_mode overhang)")
        try:
            return tflm.avg_pool2d(x, qin[0], (kh, kw), (sh, sw), pads, a["count_include_pad"])
        except ValueError as e:        # padding without its taps that is not TFLite's SAME
            raise NoTflmForm("avg_pool2d (padding not SAME, count_include_pad=False)") from e
    if node.op == "mean":            # a global average pool with its own output quantization: TFLite MEAN
        x = xs[0]
        return tflm.mean_hw(x.reshape(len(x), -1, 1, x.shape[-1]), qin[0], qout)
    if node.op == "pad":
        return tflm.pad(xs[0], qin[0], a["padding"])
    if node.op == "cat":
        if any(q != qout for q in qin):
            raise NoTflmForm("cat (requantizing)")   # TFLM's CONCATENATION only copies
        return tflm.concatenation(xs, qin, qout, axis=-1)
    if node.op == "requantize":      # an int8 <-> int16 boundary: TFLite QUANTIZE between integer types
        return tflm.quantize(xs[0], qin[0], qout, np.int16 if a["bits"] == 16 else np.int8)
    if node.op == "lut":
        raise NoTflmForm(f"lut ({node.attrs.get('fn')})")   # compared op by op in test_tflm_oracle.py
    if node.op == "mul":
        x1, x2 = (_image(x) if len(a["shape"]) == 3 else x for x in xs)
        return tflm.mul(x1, qin[0], x2, qin[1], qout, act=_act(a))
    if node.op == "softmax":
        x = xs[0]
        rows = np.moveaxis(x, node.attrs["axis"], -1) if x.ndim > 2 else x
        y = (tflm.log_softmax if a["log"] else tflm.softmax)(np.ascontiguousarray(rows), qin[0])
        return np.moveaxis(y, -1, node.attrs["axis"]) if x.ndim > 2 else y
    if node.op == "conv_transpose2d":
        if a.get("act") is not None:
            raise NoTflmForm("conv_transpose2d (fused activation)")   # TRANSPOSE_CONV has none in TFLM
        return tflm.transpose_conv2d(_image(xs[0]), qin[0], p["weight"], p["weight_scale"], p["bias"], qout,
                                     a["stride"], a["padding"], a["output_padding"])
    if node.op == "upsample_nearest":
        x = _image(xs[0])
        oh, ow = len(p["rows"]), len(p["cols"])
        for hp in (False, True):      # PyTorch nearest = (False, False); nearest-exact = half pixel centers
            idx = [np.minimum(np.floor(((np.arange(o) + 0.5 * hp) * (i / o))).astype(int), i - 1)
                   for o, i in ((oh, x.shape[1]), (ow, x.shape[2]))]
            if np.array_equal(idx[0], p["rows"]) and np.array_equal(idx[1], p["cols"]):
                return tflm.resize_nearest(x, qin[0], (oh, ow), half_pixel_centers=hp)
        raise NoTflmForm("upsample_nearest (ATen float32 indices differ from TFLite's)")
    if node.op == "upsample_bilinear":
        x = _image(xs[0])
        oh, ow = len(p["rows"]), len(p["cols"])
        align = a["align_corners"]
        from edgebn.ops.upsample import bilinear_taps
        if not (np.array_equal(bilinear_taps(x.shape[1], oh, align), p["rows"])
                and np.array_equal(bilinear_taps(x.shape[2], ow, align), p["cols"])):
            raise NoTflmForm("upsample_bilinear (ATen's 1 / scale_factor differs from TFLite's in / out)")
        return tflm.resize_bilinear(x, qin[0], (oh, ow), align_corners=align, half_pixel_centers=not align)
    if node.op == "slice":
        x = _image(xs[0])
        oh, ow, oc = image_view(tuple(a["shape"]))
        (h0, w0, c0), (sh, sw, sc) = a["start"], a["step"]
        return tflm.strided_slice(x, qin[0], [0, h0, w0, c0], [len(x), h0 + sh * oh, w0 + sw * ow, c0 + sc * oc],
                                  [1, sh, sw, sc])
    if node.op in ("conv3d", "max_pool3d", "avg_pool3d"):
        raise NoTflmForm(f"{node.op} (TFLite Micro has no 3-D kernels; docs/OPERATORS.md writes the numerics down)")
    if node.op in ("permute", "expand"):
        raise NoTflmForm(f"{node.op} (a gather by a table: int8 values copied)")
    raise AssertionError(f"no oracle mapping for {node.op}: add it to tests/tflm_layers.py")




def check_layers_against_tflm(graph, q: np.ndarray) -> tuple[dict, int]:
    """Assert every layer's TFLM output equals the emulator's on inputs q (int8, device layout).
    Returns ({op or 'NoTflmForm reason': count}, number of saturated output int8s)."""
    values = execute(graph, q, run_int8, keep_all=True)
    checked: dict[str, int] = {}
    saturated = 0
    for node in graph.nodes:
        if OPS[node.op].alias:
            continue
        xs = [values[t] for t in node.inputs]
        want = values[node.name]
        try:
            got = oracle_layer(node, xs, graph.qparams).reshape(want.shape)
        except NoTflmForm as e:
            checked[str(e)] = checked.get(str(e), 0) + 1
            continue
        bad = np.argwhere(got != want)
        assert bad.size == 0, (f"{node.name} ({node.op}): TFLM != emulator at {len(bad)} of {want.size} int8s, "
                               f"first {bad[0].tolist()}: TFLM {got[tuple(bad[0])]} emulator {want[tuple(bad[0])]}")
        info = np.iinfo(want.dtype)
        saturated += int(((want == info.min) | (want == info.max)).sum())
        checked[node.op] = checked.get(node.op, 0) + 1
    return checked, saturated
