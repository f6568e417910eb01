"""The operator registry, `OpDef`, `KernelRecord` and the array helpers operators share. No torch here.

An operator is one package edgebn/ops/<op>/ whose `__init__.py` registers its `OpDef` and whose
`.c.j2` files are its C kernels. The `OpDef` is everything the compiler's stages know about the op:

* import: `aten` (the aten targets it claims) and `from_aten(target, args, ctx)`, where `args` is a
  dict of the call's named arguments, defaulted from the aten schema (tensors as `Ref`);
* meaning: `output_shape`, `run_float` (float reference and calibration), `macs`;
* int8: `output_qparams`, `quantize` (float node -> int8 node), `emulate` (the bit-exact result);
* C: `layer_context` (the template data every kernel of the op shares) and its `KernelRecord`s,
  the `kernels` (reference set) and `fast_kernels` (fast set) that edgebn/kernels.py chooses from;
* ONNX: `onnx(builder, node)`, its QDQ form for edgebn/onnx_export.py;
* traits the passes read instead of op names: `weighted`, `fusable_activation`, `reads_flat`,
  `affine_form`, `as_affine`, `clamp_bounds`, `gather_index`, `label`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..ir import Graph, Node
from ..numerics import (multiply_by_quantized_multiplier, multiply_by_quantized_multiplier_64,
                        quantize as quantize_array, dequantize)

__all__ = [
    "apply_act",
    "OpDef", "OPS", "register", "Ref", "AtenContext", "QParams", "KernelRecord", "array_bytes",
    "patches", "conv_accumulate", "requantize", "act_range", "as_images", "from_images",
    "build_lut", "bits_of",
]


@dataclass(frozen=True)
class Ref:
    """An importer argument that names a tensor of the graph (not a constant)."""
    name: str


class AtenContext:
    """What an op's `from_aten` may ask the importer, without seeing torch.

    shape(ref) -> torch shape (with batch) of a graph tensor; const(ref) -> float64 numpy array for a
    parameter/buffer/constant, or None when `ref` is a computed tensor; device_shape(ref) -> edgebn
    shape; source -> user source line of the aten call."""

    def __init__(self, shape, const, device_shape, source, name):
        self.shape = shape
        self.const = const
        self.device_shape = device_shape
        self.source = source
        self.name = name


@dataclass(frozen=True)
class QParams:
    scale: float
    zero_point: int
    bits: int = 8          # 8: int8 (asymmetric); 16: int16, symmetric (zero point 0), TFLite's int16x8

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def dtype(self):
        return np.int16 if self.bits == 16 else np.int8


def array_bytes(ctx: dict, keys) -> int:
    """Bytes of the context arrays named by `keys` (missing or None entries count 0)."""
    return int(sum(np.asarray(ctx[k]).nbytes for k in keys if ctx.get(k) is not None))


def _always(node: Node, graph: Graph) -> str:
    return "reference kernel"


@dataclass(frozen=True)
class KernelRecord:
    """One C kernel of an op: a template in the op's folder and when it may compute a node.

    `applies(node, graph)` returns why this kernel computes the node (a sentence shown in the
    generated C, `edgebn bench` and tests), or None when it does not apply; edgebn/kernels.py walks an
    op's records in order and takes the first that applies. `context(node, graph)` adds the
    kernel's own template data to the op's `layer_context`. `constants` names the context arrays the
    kernel places in flash (`const_bytes` counts them; override it for nested data). `isa` names the
    instruction-set facts the kernel relies on (fields or properties of edgebn.targets.Isa, e.g.
    "narrow_register_file"); it is chosen only for a target whose ISA has every one of them (empty:
    tuned for no ISA in particular, chosen for any). Every kernel is portable C99 either way: the
    facts say where it is the fast choice, not where it compiles. `library` names the outside kernel
    library the kernel calls (a key of edgebn.targets.KERNEL_LIBRARIES, e.g. "esp-nn"; empty: edgebn's
    own C): such a record is an OpDef.external_kernels entry, compiled in place of the chosen kernel
    only when the user's build enables that library. `shared(ctx)` (optional) returns the kernel's
    shape class for a rendered layer context: every value its helper functions' C depends on (a
    JSON-able dict; their tables come in as pointers). Layers of one shape class share one copy of
    those functions (edgebn.emit.layer_contexts: ctx["shared"] = that dict plus "p", the owning
    layer's prefix, and "owner"): the C is as long as the distinct shapes, not the layers."""
    name: str                                  # C function stem: l07_<name>_s8
    template: str                              # Jinja path: "<op package>/<file>.c.j2"
    applies: Callable[[Node, Graph], str | None] = _always
    context: Callable[[Node, Graph], dict] = lambda node, graph: {}
    constants: tuple[str, ...] = ()
    const_bytes_fn: Callable[[dict], int] | None = None
    isa: tuple[str, ...] = ()
    weight_bytes: int = 1      # flash bytes per weight value as the kernel stores it (the narrow conv tiles: int16)
    library: str = ""
    bits: tuple[int, ...] = (8,)               # activation widths it computes (16: int16x8, docs/QUANTIZATION.md)
    shared: Callable[[dict], dict] | None = None

    def const_bytes(self, ctx: dict) -> int:
        """Flash bytes of this kernel's constant arrays for a rendered layer context."""
        return self.const_bytes_fn(ctx) if self.const_bytes_fn else array_bytes(ctx, self.constants)


@dataclass
class OpDef:
    name: str
    run_float: Callable[[Node, list[np.ndarray]], np.ndarray]
    output_shape: Callable[[Node, list[tuple]], tuple]
    quantize: Callable[[Node, Graph, dict], Node] | None = None
    emulate: Callable[[Node, list[np.ndarray]], np.ndarray] | None = None
    macs: Callable[[Node, list[tuple], tuple], int] = lambda node, ins, out: 0
    # How the output's (scale, zero_point) is chosen: "calibrated" from observed ranges, or "input":
    # equal to the first input's (pools, padding, reshapes keep the input's quantization as in TFLite).
    output_qparams: str | Callable[[Node], "QParams"] = "calibrated"   # or the op's fixed (scale, zp)
    # "calibrated" only: the calibrated (lo, hi) of the output as the op quantizes it, given its first
    # input's QParams (the mean widens a tight range it cannot exceed: ops/mean); None: as calibrated
    output_range: Callable[[Node, tuple, "QParams"], tuple] | None = None
    # The (lo, hi) of its first input outside which the output no longer changes (a saturating
    # activation: hardswish is 0 below -3), None where there is none. A tensor whose every reader has
    # one is calibrated on its values clipped to their hull (calibrate.reader_domains; by the
    # range-searching methods, not minmax): no int8 level goes to values that reach every reader as the
    # interval's edge does.
    input_domain: Callable[[Node], tuple[float, float] | None] | None = None
    alias: bool = False                       # output shares the input's bytes (reshape): no code
    aten: tuple[str, ...] = ()
    from_aten: Callable[[str, dict, "AtenContext"], Node] | None = None
    doc: str = ""
    # --- C: template data shared by the op's kernels, and the kernels (reference set, fast set)
    layer_context: Callable[[Node, Graph], dict] | None = None
    kernels: tuple[KernelRecord, ...] = ()
    fast_kernels: tuple[KernelRecord, ...] = ()
    # kernels that call an outside library (KernelRecord.library), compiled instead of the kernel above
    # when the user's build enables that library (ESP-NN on the ESP32-S3: edgebn/kernels.py)
    external_kernels: tuple[KernelRecord, ...] = ()
    # --- ONNX QDQ form (edgebn/onnx_export.py passes its builder)
    onnx: Callable[[Any, Node], None] | None = None
    broadcasts: bool = False          # reads inputs of smaller shapes broadcast (an expand before it can fold)
    broadcast_view: bool = False      # its output is its input broadcast (expand): broadcasting readers skip it
    getitem: Callable[[str, dict, int, "AtenContext"], Node] | None = None   # element i of a multi-tensor op
    # pure data movement (view, permute, transpose): its move on a PyTorch-layout array, and the node
    # for a composed chain of them (the importer composes through ranks the device has no layout for)
    layout_move: Callable | None = None
    gather_node: Callable | None = None
    c_helpers: str | None = None      # Jinja path of C helpers included once in the ops header when used
    # --- traits the passes and reports read (never op names)
    weighted: bool = False            # params weight [Cout, ...] + bias [Cout]: BN folds in, weight scales apply
    fusable_activation: bool = False  # a clamp activation that alone reads it fuses into its requantisation
    folds_forward: bool = True        # weighted: a BN before it folds in when unpadded (False: taps vary per pixel)
    volumetric: bool = False          # reads rank-5 (N, C, D, H, W) tensors, NDHWC on the device (the importer
                                      # refuses a volume into any other op)
    reads_flat: bool = False          # reads its input as one feature vector (a flatten before it can fold)
    sums_inputs: bool = False         # output = the elementwise sum of its same-shape inputs (add)
    # weighted 2-D conv: OHWI weight, attrs stride/padding (t, l, b, r)/dilation/groups/act, a kept
    # per-channel affine marked attrs["from_bn"]: parallel ones summed by adds merge (passes/merge_branches.py)
    conv2d_form: bool = False
    affine_form: Callable[[Node], tuple[np.ndarray, np.ndarray]] | None = None   # y = a*x + c per channel
    as_affine: Callable[[Node, np.ndarray, np.ndarray], Node] | None = None      # build y = a*x + c as this op
    clamp_bounds: Callable[[Node], dict | None] | None = None   # {name, lo, hi} when it is a pure clamp
    # set on ops that only move bytes (flatten, permute): the index with out[j] = in[index[j]] (device
    # order), or None where the byte order is kept
    gather_index: Callable[[Node], np.ndarray | None] | None = None
    label: Callable[[Node], str] | None = None                  # report's kernel column (default: name)
    # True when this node is a mean of each channel over its whole input map (a global average
    # pool): passes/fold_pool.py can fold it into the linear reading it
    global_mean: Callable[[Node, tuple], bool] | None = None
    # int16 activations (TFLite's int16x8 scheme, docs/QUANTIZATION.md): None = the op has no int16
    # form; else int16(node, graph) -> None when the node can compute on int16 activations, or the
    # reason it cannot (edgebn/precision.py reads it; the op's quantize/emulate/kernels then see
    # qparams with bits=16)
    int16: Callable[[Node, Graph], str | None] | None = None


OPS: dict[str, OpDef] = {}
ATEN_RULES: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise RuntimeError(f"op {op.name} registered twice")
    if (op.fast_kernels or op.layer_context) and not op.kernels:
        raise RuntimeError(f"op {op.name}: fast kernels or a layer context without a reference kernel")
    OPS[op.name] = op
    for target in op.aten:
        ATEN_RULES[target] = op
    return op


# ---------------------------------------------------------------------------------------------
# Array helpers (batched, device layout)

def as_images(x: np.ndarray) -> np.ndarray:
    """[N, F] -> [N, 1, 1, F]; [N, D, H, W, C] -> [N, D*H, W, C] (ir.image_view); [N, H, W, C] unchanged."""
    if x.ndim == 5:
        return x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3], x.shape[4])
    return x.reshape(x.shape[0], 1, 1, x.shape[1]) if x.ndim == 2 else x


def from_images(x: np.ndarray, shape: tuple) -> np.ndarray:
    return x.reshape((x.shape[0],) + tuple(shape))


def patches(x: np.ndarray, kernel, stride, padding, dilation, pad_value=0) -> np.ndarray:
    """im2col view: [N, H, W, C] -> [N, OH, OW, KH, KW, C] with explicit (top, left, bottom, right) pads."""
    kh, kw = kernel
    sh, sw = stride
    pt, pl, pb, pr = padding
    dh, dw = dilation
    if any(padding):
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (eff_h, eff_w), axis=(1, 2))
    # win: [N, H', W', C, eff_h, eff_w]
    win = win[:, ::sh, ::sw, :, ::dh, ::dw]
    return win.transpose(0, 1, 2, 4, 5, 3)


# a depthwise conv sums this many bytes of output at a time (L2-sized: the sums stay in cache)
DW_CHUNK_BYTES = 1 << 20


def conv_accumulate(x: np.ndarray, w: np.ndarray, groups: int, stride, padding, dilation) -> np.ndarray:
    """Grouped conv of [N, H, W, Cin] with OHWI weight [Cout, KH, KW, Cin/g]: returns [N, OH, OW, Cout].

    Used for float (float64 in) and for int8 (integer-valued float64 in, exact: every partial sum of
    int8 x int8 products stays far below 2^53, so BLAS's summation order cannot round). A pointwise
    conv is one matrix product without an im2col copy; a depthwise conv is summed tap by tap (for
    float64 that is a different, equally accurate, summation order than a matrix product's)."""
    cout, kh, kw, cg = w.shape
    if groups == 1 and kh == kw == 1 and not any(padding):
        # a pointwise conv: the same matrix product on the strided pixels, without the im2col copy
        cols = x[:, ::stride[0], ::stride[1], :]
        n, oh, ow = cols.shape[:3]
        out = cols.reshape(n * oh * ow, cg) @ w.reshape(cout, -1).T
        return out.reshape(n, oh, ow, cout)
    if cg == 1 and groups == cout:
        return _depthwise_taps(x, w, stride, padding, dilation)
    p = patches(x, (kh, kw), stride, padding, dilation)             # [N, OH, OW, KH, KW, Cin]
    n, oh, ow = p.shape[:3]
    og = cout // groups
    if groups == 1:
        cols = p.reshape(n * oh * ow, kh * kw * cg)
        out = cols @ w.reshape(cout, -1).T
        return out.reshape(n, oh, ow, cout)
    p = p.reshape(n, oh, ow, kh, kw, groups, cg)
    wg = w.reshape(groups, og, kh, kw, cg)
    if cg == 1:  # depthwise: a multiply-add per channel, no reduction over channels
        out = np.einsum("nhwyxg,goyx->nhwgo", p[..., 0], wg[..., 0], optimize=True)
    else:
        out = np.einsum("nhwyxgc,goyxc->nhwgo", p, wg, optimize=True)
    return out.reshape(n, oh, ow, cout)


def _depthwise_taps(x: np.ndarray, w: np.ndarray, stride, padding, dilation) -> np.ndarray:
    """Depthwise conv (one filter per channel, w [C, KH, KW, 1]) of [N, H, W, C] in x's dtype: one
    multiply-add of a strided slice per kernel tap, several times faster than im2col and a batched
    matrix product. A tap adds only over the output pixels whose input it reads (no padded copy: a
    padding tap's product is a zero, and adding a zero to a sum that starts at +0 changes no bit), and
    the batch goes through in chunks of about DW_CHUNK_BYTES of output so the running sums stay in
    cache across the taps; each output is the same sum in the same tap order either way."""
    cout, kh, kw, _ = w.shape
    n, h, wd, _ = x.shape
    sh, sw = stride
    pt, pl, pb, pr = padding
    dh, dw = dilation
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, oh, ow, cout), x.dtype)
    w = w.astype(x.dtype, copy=False)

    def valid(k, d, p, s, size, osize):
        # the outputs o with 0 <= o * s + k * d - p < size, and the first one's input index
        o0 = min(max(-(-(p - k * d) // s), 0), osize)
        o1 = min(max((size - 1 + p - k * d) // s + 1, o0), osize)
        return o0, o1, o0 * s + k * d - p

    rows = [valid(i, dh, pt, sh, h, oh) for i in range(kh)]
    cols = [valid(j, dw, pl, sw, wd, ow) for j in range(kw)]
    step = max(1, DW_CHUNK_BYTES // max(1, out[:1].nbytes))
    tmp = np.empty((min(step, n), oh, ow, cout), x.dtype)   # one product buffer for every tap
    for b0 in range(0, n, step):
        b1 = min(b0 + step, n)
        for i, (y0, y1, iy) in enumerate(rows):
            for j, (x0, x1, ix) in enumerate(cols):
                if y0 == y1 or x0 == x1:
                    continue
                tap = x[b0:b1, iy:iy + (y1 - y0 - 1) * sh + 1:sh, ix:ix + (x1 - x0 - 1) * sw + 1:sw, :]
                t = tmp[:b1 - b0, y0:y1, x0:x1]
                np.multiply(tap, w[:, i, j, 0], out=t)
                out[b0:b1, y0:y1, x0:x1] += t
    return out


def requantize(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray, zp_out: int,
               act_min: int, act_max: int, bits: int = 8) -> np.ndarray:
    """Accumulators (last axis = channel) -> int8, per SPEC.md: MBQM + zp, then clamp. bits=16: int64
    accumulators -> int16 with TFLite's 64-bit MultiplyByQuantizedMultiplier (the int16x8 kernels')."""
    if bits == 16:
        y = multiply_by_quantized_multiplier_64(acc.astype(np.int64), m0.astype(np.int64),
                                                shift.astype(np.int64)) + zp_out
        return np.clip(y, act_min, act_max).astype(np.int16)
    y = multiply_by_quantized_multiplier(np.asarray(acc, np.int64), np.asarray(m0, np.int64),
                                         np.asarray(shift, np.int64)) + zp_out
    return np.clip(y, act_min, act_max).astype(np.int8)


def bits_of(node: Node) -> int:
    """The width of a quantized node's output activations (attrs "bits", 8 when absent)."""
    return int(node.attrs.get("bits", 8))


def apply_act(y: np.ndarray, act: dict | None) -> np.ndarray:
    """A fused clamp activation {lo, hi} (None = none, a bound None = open) on a float result: what
    run_float of every op with a fusable activation does after its affine part."""
    return y if act is None else np.clip(y, act.get("lo"), act.get("hi"))


def act_range(act: dict | None, q: QParams) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for a fused clamp activation {lo, hi} (None = none)."""
    from ..numerics import round_half_away

    lo, hi = q.qmin, q.qmax
    if act is None:
        return lo, hi
    if act.get("lo") is not None:
        lo = max(lo, int(q.zero_point + round_half_away(act["lo"] / q.scale)))
    if act.get("hi") is not None:
        hi = min(hi, int(q.zero_point + round_half_away(act["hi"] / q.scale)))
    return lo, hi


def build_lut(fn: Callable[[np.ndarray], np.ndarray], qin: QParams, qout: QParams) -> np.ndarray:
    """256-entry int8 table, index q + 128: lut = quantize(f(dequantize(q))) (SPEC.md section 1)."""
    q = np.arange(-128, 128)
    return quantize_array(fn(dequantize(q, qin.scale, qin.zero_point)), qout.scale, qout.zero_point)

