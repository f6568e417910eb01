"""linear: fully connected `y = x W^T + b` on a feature vector, fused ReLU/ReLU6/clamp.

Kernels (this folder): linear.c.j2 (reference), linear_fast.c.j2 (blocks of 8 outputs per pass)."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node
from ..base import apply_act, KernelRecord, OpDef, bits_of, register, requantize
from .._affine import activation_types, quantize_weighted
from .._fast import RQ_CONSTANTS, fold_is_exact, folded_bias, weighted_fast_context


def output_shape(node, ins):
    # (F,), or (1, F, 1) for a Linear over L of an (N, 1, L) tensor: the same bytes either way
    return tuple(node.attrs.get("shape", (node.params["weight"].shape[0],)))


def run_float(node, xs):
    y = xs[0].reshape(xs[0].shape[0], -1).astype(np.float64) @ node.params["weight"].T + node.params["bias"]
    return apply_act(y, node.attrs.get("act"))


def quantize(node, graph, qp):
    return quantize_weighted(node, qp[node.inputs[0]], qp[node.name])


def emulate(node, xs):
    a = node.attrs
    x = xs[0].reshape(xs[0].shape[0], -1).astype(np.float64) - a["zp_in"]
    acc = (x @ node.params["weight"].astype(np.float64).T).astype(np.int64) + node.params["bias"]
    return requantize(acc, node.params["m0"], node.params["shift"], a["zp_out"], a["act_min"], a["act_max"],
                      bits_of(node))


def macs(node, ins, out):
    return int(node.params["weight"].size)


def from_aten(target, args, ctx):
    x, w, b = args["input"], args["weight"], args["bias"]
    wt = ctx.const(w)
    if wt is None:
        raise UnsupportedOpError("linear weights must be parameters, not computed tensors")
    tin = tuple(ctx.shape(x))
    # (N, F), or (N, 1, L) (a Linear over L after a permute, as torchaudio's M5 does): one vector either way
    if not (len(tin) == 2 or (len(tin) == 3 and tin[1] == 1)):
        raise UnsupportedOpError(f"linear over a {tin} tensor (flatten first)")
    bias = np.zeros(wt.shape[0]) if b is None else ctx.const(b)
    attrs = {"act": None} if len(tin) == 2 else {"act": None, "shape": tuple(ctx.out_device_shape)}
    return Node(ctx.name, "linear", [x.name], attrs,
                {"weight": np.asarray(wt, np.float64), "bias": np.asarray(bias, np.float64)}, ctx.source)


FC_BLOCK = 8  # outputs per pass over the input in linear_fast


def _fc_context(w: np.ndarray, bias: np.ndarray) -> dict:
    """Fully connected: blocks of 8 outputs (the last one smaller), each block's weights [IN][rows]
    so one input byte feeds every accumulator of the block."""
    out_f, in_f = w.shape
    blocks, packed, off = [], [], 0
    for o0 in range(0, out_f, FC_BLOCK):
        nb = min(FC_BLOCK, out_f - o0)
        blocks.append({"o0": o0, "nb": nb, "woff": off})
        packed.append(w[o0:o0 + nb].T.ravel())
        off += nb * in_f
    return {"fc_blocks": blocks, "fc_sizes": sorted({b["nb"] for b in blocks}, reverse=True),
            "weight_fc": np.concatenate(packed), "bias_f": bias}





def layer_context(node: Node, g: Graph) -> dict:
    a = node.attrs
    out_f, in_f = node.params["weight"].shape
    act = a.get("act")
    return {
        "c": dict(IN=in_f, OUT=out_f, INPUT_OFFSET=-a["zp_in"], ZP_OUT=a["zp_out"], ACT_MIN=a["act_min"],
                  ACT_MAX=a["act_max"]),
        "weight": node.params["weight"], "bias": node.params["bias"], "m0": node.params["m0"],
        "shift": node.params["shift"], "acc_bound": a["acc_bound"], "act": act.get("name") if act else None,
        **activation_types(bits_of(node)),
    }


def _applies_fast(node, g):
    return None if fold_is_exact(node) else "fully connected: 8 outputs per pass over the input"


def _fast_context(node, g):
    bias = folded_bias(node).astype(np.int32)
    return weighted_fast_context(node, _fc_context(node.params["weight"], bias), blocked=False, tiles=False)


def _applies_fast_narrow(node, g):
    return _applies_fast(node, g) and "fully connected: 8 outputs per pass, int16 weights, an input per iteration"


def _fast_context_narrow(node, g):
    """The ESP32 / S3 form (16 registers in view, bytes load zero-extended): int16 weights, which the
    16x16 multiply reads as loaded (an int8 costs a load and a sign extension)."""
    ctx = _fast_context(node, g)
    return {**ctx, "weight_fc": ctx["weight_fc"].astype(np.int16), "w_t": "int16_t", "narrow": True}


def onnx(b, n: Node) -> None:
    a, t = n.attrs, n.name
    w, bias = b.weights(n, n.params["weight"], n.inputs[0])
    y = b.op("Gemm", [b.to_device_flat(n.inputs[0]), w, bias], t, transB=1)
    b.quant(t, b.clamp(y, t, a["act_min"], a["act_max"]))


REFERENCE = KernelRecord("linear", "linear/linear.c.j2", lambda node, g: "reference kernel set",
                         constants=("weight", "bias", "m0", "shift"), bits=(8, 16))


def _applies_esp_nn(node, g):
    """ESP-NN's per-channel FULLY_CONNECTED (esp_nn_fully_connected_per_ch_s8: TFLite numerics, the
    row length a uint16)."""
    out_f, in_f = node.params["weight"].shape
    if max(out_f, in_f) > 65535:
        return None
    return "ESP-NN esp_nn_fully_connected_per_ch_s8 (PIE SIMD on the ESP32-S3)"


ESP_NN = KernelRecord("esp_nn_fc", "linear/esp_nn_fc.c.j2", _applies_esp_nn,
                      constants=("weight", "bias", "m0", "shift"), library="esp-nn")

register(OpDef(
    name="linear", run_float=run_float, output_shape=output_shape,
    quantize=quantize, emulate=emulate, macs=macs, aten=("aten.linear.default",), from_aten=from_aten,
    doc="Linear (fully connected), fused ReLU/ReLU6/clamp",
    layer_context=layer_context, kernels=(REFERENCE,),
    fast_kernels=(
        KernelRecord("linear_fast_n", "linear/linear_fast.c.j2", _applies_fast_narrow, _fast_context_narrow,
                     constants=("weight_fc", "bias_f") + RQ_CONSTANTS, isa=("narrow_register_file", "unsigned_byte_load"),
                     weight_bytes=2),
        KernelRecord("linear_fast", "linear/linear_fast.c.j2", _applies_fast, _fast_context,
                     constants=("weight_fc", "bias_f") + RQ_CONSTANTS),
        # the zero-point fold could overflow: the reference loop, and why
        KernelRecord("linear", "linear/linear.c.j2", lambda node, g: fold_is_exact(node),
                     constants=REFERENCE.constants),
    ),
    external_kernels=(ESP_NN,),
    onnx=onnx, weighted=True, fusable_activation=True, reads_flat=True,
    int16=lambda node, g: None,        # TFLite FULLY_CONNECTED int16x8
))
