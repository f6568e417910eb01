"""linear: fully connected `y = x W^T + b` on a feature vector, fused ReLU/ReLU6/clamp.

Kernels (this folder): linear.c.j2 (reference, int8 and int16x8), linear_fast.c.j2 (int8: blocks of 8
outputs per pass), linear16_fast.c.j2 (int16x8: the same blocks, int32 partial sums over compile-time
runs of the input, int64 bias and requantisation)."""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import Graph, Node
from ..base import apply_act, KernelRecord, OpDef, bits_of, register, requantize
from .._affine import activation_types, quantize_weighted
from .._fast import INT32_MAX, RQ_CONSTANTS, fold_is_exact, folded_bias, weighted_fast_context


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


INT16_SPAN = 32768          # |x| of an int16 activation (zero point 0) is at most 2^15


def fc16_chunks(w: np.ndarray) -> list[dict]:
    """The int16x8 fast kernel's runs of the input, [{i0, n}]: consecutive inputs whose products with
    every row's weights sum inside int32 whatever the int16 input (32768 * sum|w| <= 2^31 - 1 on
    each row), greedily as long as possible. One run (the whole row) on any row with sum|w| <= 65535,
    e.g. every row of up to 516 inputs."""
    aw = np.abs(w.astype(np.int64)) * INT16_SPAN
    chunks, run, i0 = [], np.zeros(w.shape[0], np.int64), 0
    for i in range(w.shape[1]):
        if (run + aw[:, i]).max(initial=0) > INT32_MAX:
            chunks.append({"i0": i0, "n": i - i0})
            run, i0 = np.zeros(w.shape[0], np.int64), i
        run += aw[:, i]
    chunks.append({"i0": i0, "n": w.shape[1] - i0})
    return chunks


def _applies_fast16(node, g):
    chunks = fc16_chunks(node.params["weight"])
    if len(chunks) == 1:
        bound = int(np.abs(node.params["weight"].astype(np.int64)).sum(axis=1).max(initial=0)) * INT16_SPAN
        sums = f"int32 sums over the whole row (|sum| <= {bound:,} < 2^31)"
    else:
        sums = f"int32 sums over {len(chunks)} runs of the row (each < 2^31), added in int64"
    return f"int16x8, 8 outputs per pass, {sums}"


def _fast16_context(node, g, narrow=False):
    w = node.params["weight"]
    ctx = _fc_context(w, node.params["bias"])
    chunks = fc16_chunks(w)
    kernels = []
    for nb in ctx["fc_sizes"]:
        # as linear_fast: a core with 16 registers in view keeps 8 accumulators, an input, a weight,
        # a product and the pointers (one input per iteration); 32 registers take 2 (4 for small blocks)
        u = 1 if narrow and nb > 4 else (2 if nb >= 4 else 4)
        # one function per block size and run length: the loop count a constant (Xtensa's zero-overhead loop)
        kernels += [{"nb": nb, "n": n, "u": u} for n in sorted({ch["n"] for ch in chunks})]
    ctx.update(fc16_chunks=chunks, fc16_kernels=kernels, narrow=narrow,
               w_t="int16_t" if narrow else "int8_t")
    if narrow:
        ctx["weight_fc"] = ctx["weight_fc"].astype(np.int16)
    return ctx


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
        # int16x8 (the int16 tail, --precision int16): the ESP32 / S3 (and lx106) form with int16 weights
        # (one signed load feeds the multiply, no sign extension), then the int8-weight form for any core;
        # both sum in int32 over the runs fc16_chunks proves safe, and say so in their reason
        KernelRecord("linear16_fast_n", "linear/linear16_fast.c.j2",
                     lambda node, g: _applies_fast16(node, g) + ", int16 weights, an input per iteration",
                     lambda node, g: _fast16_context(node, g, narrow=True),
                     constants=("weight_fc", "bias", "m0", "shift"), isa=("narrow_register_file", "unsigned_byte_load"),
                     weight_bytes=2, bits=(16,)),
        KernelRecord("linear16_fast", "linear/linear16_fast.c.j2", _applies_fast16, _fast16_context,
                     constants=("weight_fc", "bias", "m0", "shift"), bits=(16,)),
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
