"""TensorFlow Lite Micro as an outside oracle for edgebn's integer arithmetic.

Each function below writes a one-op (or small multi-op) .tflite flatbuffer with the schema bindings
that the `tflite-micro` wheel ships (`tflite_micro.tensorflow.lite.micro.python.schema_py_generated`,
object API + `flatbuffers`; no TensorFlow), runs it in TFLite Micro's own Python interpreter
(`tflite_micro.runtime.Interpreter`, the TFLM C++ kernels behind pybind11) and returns the integer
outputs. Nothing here imports torch or edgebn: the oracle is independent of what it checks.

API (all activations in device layout, NHWC with the batch first; ints as numpy arrays):

    Q(scale, zero_point)                 per-tensor quantization of an activation
    conv2d(x, qx, w, w_scale, bias, qy, stride, padding, dilation, act)   w OHWI int8, bias int32
                                         (int64 when x is int16: TFLite's int16x8 scheme)
    depthwise_conv2d(x, qx, w, w_scale, bias, qy, ...)      w [Cout, KH, KW, 1] (edgebn's layout)
    fully_connected(x, qx, w, w_scale, bias, qy, act)       w [out, in]
    transpose_conv2d(x, qx, w, w_scale, bias, qy, stride, padding, output_padding)
                                         w [Cout, KH, KW, Cin] (TFLite's layout), PyTorch's padding
    add(x1, q1, x2, q2, qy, act) / mul(...) (broadcasting) / concatenation(xs, qs, qy, axis)
    avg_pool2d / max_pool2d(x, q, kernel, stride, padding, count_include_pad)
    pad(x, q, padding)                   constant padding with the zero point (TFLite PAD)
    softmax / log_softmax(x, qx, beta)   TFLite's fixed output quantization (SOFTMAX_Q, LOG_SOFTMAX_Q)
    logistic / tanh(x, qx)               fixed output quantization (LOGISTIC_Q, TANH_Q)
    hard_swish(x, qx, qy)
    resize_nearest(x, q, size, align_corners, half_pixel_centers)
    resize_bilinear(x, q, size, align_corners, half_pixel_centers)
    transpose(x, q, perm) / split(x, q, axis, n) / split_v(x, q, axis, sizes)
    strided_slice(x, q, begin, end, strides)
    quantize(x, qx, qy, dtype)           requantize int8 <-> int16 (TFLite QUANTIZE)
    mean_hw(x, qx, qy)                   TFLite MEAN over H, W (what converters emit for global pooling)

and underneath them `Model` (tensors, constants, operators -> flatbuffer bytes) with `Model.run`,
for multi-op and multi-output graphs (`fb` is the schema module, for the `*OptionsT` classes).
Every function takes int8 or int16 activations; `x.dtype` picks the kernel. int16 activations are
symmetric (zero point 0) as TFLite's int16x8 scheme requires; `Q16(scale)` builds one.

Padding. TFLite's convolutions and pools only know SAME and VALID. An explicit PyTorch padding that
equals SAME for the shape is written as SAME; any other is a PAD (zero point; PADV2 with the minimum
for max pooling) before a VALID op, which is what TFLite converters emit too. Avg pool with
count_include_pad=True is PAD + VALID pool; with count_include_pad=False only SAME-equal padding can
be expressed (TFLite's pool divides by the in-image tap count).

Where edgebn's numerics deliberately differ from TFLite Micro (measured by tests/test_tflm_oracle.py):
  * CONCATENATION: TFLM copies bytes and requires every input to share the output's quantization;
    edgebn's cat requantizes each input through a 256-entry table (SPEC deviation), so the two agree
    only when the quantizations match.
  * LOGISTIC / TANH: TFLM's int8 kernels have a fixed output quantization (1/256, -128 and 1/128, 0);
    edgebn's 256-entry table `quantize(f(dequantize(q)))` uses the calibrated output quantization.
    Given TFLM's output quantization the tables are identical (all 256 inputs, several input
    quantizations): the only difference is the choice of output scale.
  * HARD_SWISH: TFLM's int8 kernel is fixed point (reluish/hardswish multipliers); edgebn's is the
    exactly rounded table: 1 LSB apart on a few of the 256 entries (5 and 14 in the two cases tested),
    never more. TFLM has no int16 HARD_SWISH.
  * Global average pooling: TFLite converters emit MEAN, whose int8 kernel multiplies by a quantized
    reciprocal; edgebn divides exactly (AVERAGE_POOL_2D arithmetic, rounding half away). `mean_hw` is
    here so that difference can be measured; AVERAGE_POOL_2D with the whole plane as the window is
    bit-exact with edgebn.
  * Average pooling with padding and count_include_pad=False but padding other than SAME has no
    TFLite form; edgebn follows PyTorch's divisor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import flatbuffers
import numpy as np
from tflite_micro.python.tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

__all__ = [
    "fb", "Q", "Q16", "Model", "SOFTMAX_Q", "LOG_SOFTMAX_Q", "LOGISTIC_Q", "TANH_Q",
    "conv2d", "depthwise_conv2d", "fully_connected", "transpose_conv2d", "add", "sub", "mul",
    "concatenation", "avg_pool2d", "max_pool2d", "pad", "softmax", "log_softmax", "logistic", "tanh",
    "hard_swish", "resize_nearest", "transpose", "split", "split_v", "strided_slice", "quantize",
    "mean_hw", "same_padding",
]


@dataclass(frozen=True)
class Q:
    """Per-tensor quantization: real = scale * (q - zero_point)."""
    scale: float
    zero_point: int = 0


def Q16(scale: float) -> Q:
    return Q(scale, 0)


# TFLite's fixed output quantizations (int8 / int16), as its kernels assume them.
SOFTMAX_Q = {np.int8: Q(1 / 256, -128), np.int16: Q(1 / 32768, 0)}
LOG_SOFTMAX_Q = {np.int8: Q(16 / 256, 127)}
LOGISTIC_Q = {np.int8: Q(1 / 256, -128), np.int16: Q(1 / 32768, 0)}
TANH_Q = {np.int8: Q(1 / 128, 0), np.int16: Q(1 / 32768, 0)}

_TYPES = {np.dtype(np.int8): fb.TensorType.INT8, np.dtype(np.int16): fb.TensorType.INT16,
          np.dtype(np.int32): fb.TensorType.INT32, np.dtype(np.int64): fb.TensorType.INT64,
          np.dtype(np.float32): fb.TensorType.FLOAT32}
_ACT = {None: fb.ActivationFunctionType.NONE, "relu": fb.ActivationFunctionType.RELU,
        "relu6": fb.ActivationFunctionType.RELU6}
_SAME, _VALID = fb.Padding.SAME, fb.Padding.VALID


class Model:
    """A TFLite subgraph under construction: tensors (inputs, constants, intermediates) and operators."""

    def __init__(self):
        self.tensors: list = []
        self.buffers: list = [fb.BufferT()]          # buffer 0: the empty sentinel
        self.operators: list = []
        self.opcodes: dict[int, int] = {}
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.dtypes: dict[int, np.dtype] = {}

    # -- tensors -------------------------------------------------------------------------------
    def tensor(self, shape, dtype, q: Q | None = None, *, scales=None, zero_points=None, axis=0,
               data: np.ndarray | None = None) -> int:
        t = fb.TensorT()
        t.shape = [int(s) for s in shape]
        dtype = np.dtype(dtype)
        t.type = _TYPES[dtype]
        t.name = f"t{len(self.tensors)}"
        if q is not None:
            scales, zero_points = [q.scale], [q.zero_point]
        if scales is not None:
            qp = fb.QuantizationParametersT()
            qp.scale = [float(np.float32(s)) for s in np.atleast_1d(scales)]
            zps = np.zeros(len(qp.scale), np.int64) if zero_points is None else np.atleast_1d(zero_points)
            qp.zeroPoint = [int(z) for z in zps]
            qp.quantizedDimension = int(axis)
            t.quantization = qp
        if data is None:
            t.buffer = 0
        else:
            b = fb.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        self.dtypes[len(self.tensors) - 1] = dtype
        return len(self.tensors) - 1

    def input(self, shape, dtype, q: Q) -> int:
        i = self.tensor(shape, dtype, q)
        self.inputs.append(i)
        return i

    def const(self, data, dtype, q: Q | None = None, **kw) -> int:
        data = np.asarray(data)
        return self.tensor(data.shape, dtype, q, data=data, **kw)

    def ints(self, values) -> int:
        """An int32 constant vector (shapes, permutations, begin/end/strides, axes)."""
        return self.const(np.asarray(values, np.int32).reshape(-1), np.int32)

    def shape(self, t: int) -> tuple:
        return tuple(self.tensors[t].shape)

    def dtype(self, t: int) -> np.dtype:
        return self.dtypes[t]

    # -- operators -----------------------------------------------------------------------------
    def op(self, code: str, inputs: Sequence[int], outputs: Sequence[int], options=None,
           options_type: str | None = None):
        builtin = getattr(fb.BuiltinOperator, code)
        if builtin not in self.opcodes:
            self.opcodes[builtin] = len(self.opcodes)
        o = fb.OperatorT()
        o.opcodeIndex = self.opcodes[builtin]
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        if options is not None:
            name = options_type or type(options).__name__[:-1]   # Conv2DOptionsT -> Conv2DOptions
            o.builtinOptionsType = getattr(fb.BuiltinOptions, name)
            o.builtinOptions = options
        self.operators.append(o)

    def to_bytes(self) -> bytes:
        sg = fb.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.operators
        sg.inputs, sg.outputs = self.inputs, self.outputs
        m = fb.ModelT()
        m.version = 3
        m.subgraphs = [sg]
        m.buffers = self.buffers
        m.description = "edgebn tflm_oracle"
        m.operatorCodes = []
        for builtin, _ in sorted(self.opcodes.items(), key=lambda kv: kv[1]):
            c = fb.OperatorCodeT()
            c.builtinCode = builtin
            c.deprecatedBuiltinCode = min(builtin, 127)   # the int8 field of older readers
            c.version = 1
            m.operatorCodes.append(c)
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def run(self, *xs: np.ndarray) -> list[np.ndarray]:
        """Run the model once on the given inputs (one array per model input); one array per output."""
        if len(xs) != len(self.inputs):
            raise ValueError(f"model has {len(self.inputs)} inputs, {len(xs)} given")
        data = self.to_bytes()
        arena = 1 << 16
        for t in self.tensors:
            arena += 16 + 8 * int(np.prod(t.shape or [1]))   # int64 scratch of transpose conv, im2col
        it = runtime.Interpreter.from_bytes(data, arena_size=arena)
        for i, (x, t) in enumerate(zip(xs, self.inputs)):
            want_shape, want_dtype = self.shape(t), self.dtype(t)
            x = np.asarray(x)
            if x.shape != want_shape or x.dtype != want_dtype:
                raise ValueError(f"input {i}: {x.dtype}{x.shape}, model wants {want_dtype}{want_shape}")
            it.set_input(np.ascontiguousarray(x), i)
        it.invoke()
        return [np.array(it.get_output(i)).reshape(self.shape(t)) for i, t in enumerate(self.outputs)]


# ---------------------------------------------------------------------------------------------
# helpers

def _check_act(x: np.ndarray, q: Q):
    if x.dtype == np.int16 and q.zero_point != 0:
        raise ValueError("int16 activations are symmetric in TFLite's int16x8 scheme (zero_point 0)")
    if x.dtype not in (np.int8, np.int16):
        raise ValueError(f"activations must be int8 or int16, got {x.dtype}")


def _one(model: Model, *xs) -> np.ndarray:
    return model.run(*xs)[0]


def _out(m: Model, shape, dtype, q: Q) -> int:
    t = m.tensor(shape, dtype, q)
    m.outputs.append(t)
    return t


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def same_padding(size: int, k: int, s: int, d: int = 1) -> tuple[int, int, int]:
    """TFLite SAME: (output size, pad before, pad after)."""
    out = -(-size // s)
    eff = d * (k - 1) + 1
    total = max((out - 1) * s + eff - size, 0)
    return out, total // 2, total - total // 2


def _resolve_padding(m: Model, x: int, kernel, stride, dilation, padding, pad_value=None):
    """(input tensor, Padding enum): SAME when the explicit (top, left, bottom, right) equals it,
    VALID when zero, else PAD/PADV2 then VALID. Returns the (possibly padded) input tensor."""
    n, h, w, c = m.shape(x)
    pt, pl, pb, pr = padding
    if not any(padding):
        return x, _VALID
    (_, st, sb), (_, sl, sr) = (same_padding(h, kernel[0], stride[0], dilation[0]),
                                same_padding(w, kernel[1], stride[1], dilation[1]))
    full = (h + pt + pb - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    fullw = (w + pl + pr - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    if (pt, pl) == (st, sl) and full == -(-h // stride[0]) and fullw == -(-w // stride[1]) \
            and pb <= sb and pr <= sr and pad_value is None:
        return x, _SAME
    return _pad_tensor(m, x, padding, pad_value), _VALID


def _pad_tensor(m: Model, x: int, padding, value=None) -> int:
    pt, pl, pb, pr = padding
    n, h, w, c = m.shape(x)
    src = m.tensors[x].quantization
    q = Q(src.scale[0], src.zeroPoint[0])
    y = m.tensor((n, h + pt + pb, w + pl + pr, c), m.dtype(x), q)
    pads = m.const(np.array([[0, 0], [pt, pb], [pl, pr], [0, 0]], np.int32), np.int32)
    if value is None:
        m.op("PAD", [x, pads], [y], fb.PadOptionsT())
    else:
        v = m.const(np.array([value]), m.dtype(x), q)
        m.op("PADV2", [x, pads, v], [y], fb.PadV2OptionsT())
    return y


def _conv_out(size, k, s, d, p0, p1):
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def _bias(m: Model, x: np.ndarray, qx: Q, w_scale, bias) -> int:
    """The bias constant of a weighted op: int32 (int64 under int16 activations, TFLite's int16x8
    scheme) at scale sx * sw, one per output channel."""
    dtype = np.int64 if x.dtype == np.int16 else np.int32
    return m.const(np.asarray(bias).astype(dtype), dtype, scales=qx.scale * np.asarray(w_scale, np.float64), axis=0)


# ---------------------------------------------------------------------------------------------
# weighted ops

def _window_conv(code: str, o, x, qx: Q, w: np.ndarray, filter_: np.ndarray, filter_axis: int, w_scale, bias,
                 qy: Q, stride, padding, dilation, act: str | None) -> np.ndarray:
    """CONV_2D and DEPTHWISE_CONV_2D: `w` in edgebn's layout [Cout, KH, KW, *] gives the shapes,
    `filter_` is the weight tensor TFLite reads (per-channel scales along `filter_axis`); the options
    `o` get the padding, strides, dilations and activation."""
    _check_act(x, qx)
    stride, dilation = _pair(stride), _pair(dilation)
    cout, kh, kw, _ = w.shape
    m = Model()
    xi = m.input(x.shape, x.dtype, qx)
    xp, pad_kind = _resolve_padding(m, xi, (kh, kw), stride, dilation, tuple(padding))
    wi = m.const(filter_, np.int8, scales=w_scale, axis=filter_axis)
    bi = _bias(m, x, qx, w_scale, bias)
    n, h, wd, _ = x.shape
    pt, pl, pb, pr = padding
    oh, ow = (_conv_out(h, kh, stride[0], dilation[0], pt, pb), _conv_out(wd, kw, stride[1], dilation[1], pl, pr))
    y = _out(m, (n, oh, ow, cout), x.dtype, qy)
    o.padding, (o.strideH, o.strideW), (o.dilationHFactor, o.dilationWFactor) = pad_kind, stride, dilation
    o.fusedActivationFunction = _ACT[act]
    m.op(code, [xp, wi, bi], [y], o)
    return _one(m, x)


def conv2d(x, qx: Q, w, w_scale, bias, qy: Q, stride=1, padding=(0, 0, 0, 0), dilation=1,
           act: str | None = None) -> np.ndarray:
    """CONV_2D, per-channel int8 weights OHWI [Cout, KH, KW, Cin]; padding (top, left, bottom, right)."""
    w = np.asarray(w, np.int8)
    return _window_conv("CONV_2D", fb.Conv2DOptionsT(), x, qx, w, w, 0, w_scale, bias, qy, stride, padding,
                        dilation, act)


def depthwise_conv2d(x, qx: Q, w, w_scale, bias, qy: Q, stride=1, padding=(0, 0, 0, 0), dilation=1,
                     act: str | None = None) -> np.ndarray:
    """DEPTHWISE_CONV_2D; w in edgebn's grouped layout [Cout, KH, KW, 1], Cout = Cin * multiplier
    (TFLite's filter is [1, KH, KW, Cout])."""
    w = np.asarray(w, np.int8)
    o = fb.DepthwiseConv2DOptionsT()
    o.depthMultiplier = w.shape[0] // x.shape[3]
    return _window_conv("DEPTHWISE_CONV_2D", o, x, qx, w, w[..., 0].transpose(1, 2, 0)[None], 3, w_scale, bias,
                        qy, stride, padding, dilation, act)


def fully_connected(x, qx: Q, w, w_scale, bias, qy: Q, act: str | None = None) -> np.ndarray:
    """FULLY_CONNECTED [N, in] x [out, in]^T, per-channel int8 weights."""
    _check_act(x, qx)
    w = np.asarray(w, np.int8)
    m = Model()
    xi = m.input(x.shape, x.dtype, qx)
    wi = m.const(w, np.int8, scales=w_scale, axis=0)
    bi = _bias(m, x, qx, w_scale, bias)
    y = _out(m, (x.shape[0], w.shape[0]), x.dtype, qy)
    o = fb.FullyConnectedOptionsT()
    o.fusedActivationFunction = _ACT[act]
    m.op("FULLY_CONNECTED", [xi, wi, bi], [y], o)
    return _one(m, x)


def transpose_conv2d(x, qx: Q, w, w_scale, bias, qy: Q, stride=1, padding=0, output_padding=0) -> np.ndarray:
    """TRANSPOSE_CONV as PyTorch's ConvTranspose2d computes it (groups 1, dilation 1).

    w in TFLite's layout [Cout, KH, KW, Cin] (PyTorch's weight [Cin, Cout, KH, KW] is
    w.transpose(1, 2, 3, 0)). PyTorch's output is the full (H-1)*s + k map (plus output_padding
    rows/columns that get only the bias) cropped by `padding` on each side: written as a VALID
    TRANSPOSE_CONV to that full size and, when padding > 0, a STRIDED_SLICE."""
    _check_act(x, qx)
    stride, padding, output_padding = _pair(stride), _pair(padding), _pair(output_padding)
    w = np.asarray(w, np.int8)
    cout, kh, kw, cin = w.shape
    n, h, wd, _ = x.shape
    fh, fw = (h - 1) * stride[0] + kh + output_padding[0], (wd - 1) * stride[1] + kw + output_padding[1]
    oh, ow = fh - 2 * padding[0], fw - 2 * padding[1]
    m = Model()
    xi = m.input(x.shape, x.dtype, qx)
    wi = m.const(w, np.int8, scales=w_scale, axis=0)
    bi = _bias(m, x, qx, w_scale, bias)
    shape = m.ints([n, fh, fw, cout])
    cropped = any(padding)
    y = m.tensor((n, fh, fw, cout), x.dtype, qy) if cropped else _out(m, (n, fh, fw, cout), x.dtype, qy)
    o = fb.TransposeConvOptionsT()
    o.padding, (o.strideH, o.strideW) = _VALID, stride
    m.op("TRANSPOSE_CONV", [shape, wi, xi, bi], [y], o)
    if cropped:
        z = _out(m, (n, oh, ow, cout), x.dtype, qy)
        _strided_slice_op(m, y, z, [0, padding[0], padding[1], 0], [n, padding[0] + oh, padding[1] + ow, cout],
                          [1, 1, 1, 1])
    return _one(m, x)


# ---------------------------------------------------------------------------------------------
# elementwise

def _binary(code, options, x1, q1, x2, q2, qy):
    _check_act(x1, q1)
    _check_act(x2, q2)
    m = Model()
    a = m.input(x1.shape, x1.dtype, q1)
    b = m.input(x2.shape, x2.dtype, q2)
    y = _out(m, np.broadcast_shapes(x1.shape, x2.shape), x1.dtype, qy)
    m.op(code, [a, b], [y], options)
    return _one(m, x1, x2)


def add(x1, q1: Q, x2, q2: Q, qy: Q, act: str | None = None) -> np.ndarray:
    """ADD (broadcasting); int8 left_shift 20, int16 general-scale path (left_shift 15)."""
    o = fb.AddOptionsT()
    o.fusedActivationFunction = _ACT[act]
    o.potScaleInt16 = False
    return _binary("ADD", o, x1, q1, x2, q2, qy)


def sub(x1, q1: Q, x2, q2: Q, qy: Q, act: str | None = None) -> np.ndarray:
    o = fb.SubOptionsT()
    o.fusedActivationFunction = _ACT[act]
    o.potScaleInt16 = False
    return _binary("SUB", o, x1, q1, x2, q2, qy)


def mul(x1, q1: Q, x2, q2: Q, qy: Q, act: str | None = None) -> np.ndarray:
    """MUL (broadcasting): (x1 - z1)(x2 - z2) requantized by s1 s2 / sy."""
    o = fb.MulOptionsT()
    o.fusedActivationFunction = _ACT[act]
    return _binary("MUL", o, x1, q1, x2, q2, qy)


def _unary(code, options, x, qx: Q, qy: Q) -> np.ndarray:
    _check_act(x, qx)
    m = Model()
    a = m.input(x.shape, x.dtype, qx)
    y = _out(m, x.shape, x.dtype, qy)
    m.op(code, [a], [y], options)
    return _one(m, x)


def _fixed(table, x, name):
    try:
        return table[x.dtype.type]
    except KeyError:
        raise ValueError(f"TFLM has no {x.dtype} {name}") from None


def softmax(x, qx: Q, beta: float = 1.0) -> np.ndarray:
    """SOFTMAX over the last axis; output quantization SOFTMAX_Q (TFLite's fixed one)."""
    o = fb.SoftmaxOptionsT()
    o.beta = float(beta)
    return _unary("SOFTMAX", o, x, qx, _fixed(SOFTMAX_Q, x, "softmax"))


def log_softmax(x, qx: Q) -> np.ndarray:
    return _unary("LOG_SOFTMAX", fb.LogSoftmaxOptionsT(), x, qx, _fixed(LOG_SOFTMAX_Q, x, "log_softmax"))


def logistic(x, qx: Q) -> np.ndarray:
    return _unary("LOGISTIC", None, x, qx, _fixed(LOGISTIC_Q, x, "logistic"))


def tanh(x, qx: Q) -> np.ndarray:
    return _unary("TANH", None, x, qx, _fixed(TANH_Q, x, "tanh"))


def hard_swish(x, qx: Q, qy: Q) -> np.ndarray:
    return _unary("HARD_SWISH", fb.HardSwishOptionsT(), x, qx, qy)


def quantize(x, qx: Q, qy: Q, dtype) -> np.ndarray:
    """QUANTIZE between integer types (int8 <-> int16, or a requantization within one)."""
    _check_act(x, qx)
    m = Model()
    a = m.input(x.shape, x.dtype, qx)
    y = _out(m, x.shape, np.dtype(dtype), qy)
    m.op("QUANTIZE", [a], [y], fb.QuantizeOptionsT())
    return _one(m, x)


# ---------------------------------------------------------------------------------------------
# pooling, padding

def _pool(code, x, q: Q, kernel, stride, padding, pad_value):
    _check_act(x, q)
    kernel = _pair(kernel)
    stride = _pair(stride if stride is not None else kernel)
    padding = tuple(np.atleast_1d(padding).tolist())
    pads = {1: padding * 4, 2: padding * 2, 4: padding}[len(padding)]   # (top, left, bottom, right)
    n, h, w, c = x.shape
    m = Model()
    xi = m.input(x.shape, x.dtype, q)
    oh, ow = _conv_out(h, kernel[0], stride[0], 1, pads[0], pads[2]), _conv_out(w, kernel[1], stride[1], 1, pads[1], pads[3])
    if pad_value == "same-only":   # average without the padded taps: only TFLite's SAME says that
        if any(pads):
            (sh, st, sb), (sw, sl, sr) = same_padding(h, kernel[0], stride[0]), same_padding(w, kernel[1], stride[1])
            if (sh, sw) != (oh, ow) or (st, sl) != (pads[0], pads[1]):
                raise ValueError(f"average pool padding {pads} without the padded taps has no TFLite form "
                                 f"(only SAME: top/left {(st, sl)}, output {(sh, sw)})")
            kind, xp = _SAME, xi
        else:
            kind, xp = _VALID, xi
    else:
        xp, kind = (_pad_tensor(m, xi, pads, pad_value), _VALID) if any(pads) else (xi, _VALID)
    y = _out(m, (n, oh, ow, c), x.dtype, q)
    o = fb.Pool2DOptionsT()
    o.padding, (o.strideH, o.strideW), (o.filterHeight, o.filterWidth) = kind, stride, kernel
    m.op(code, [xp], [y], o)
    return _one(m, x)


def avg_pool2d(x, q: Q, kernel, stride=None, padding=(0, 0), count_include_pad: bool = True) -> np.ndarray:
    """AVERAGE_POOL_2D (output quantization = input's). count_include_pad: padded taps count as real
    zeros (PAD with the zero point + VALID); without it only a SAME-equal padding can be written."""
    return _pool("AVERAGE_POOL_2D", x, q, kernel, stride, padding, None if count_include_pad else "same-only")


def max_pool2d(x, q: Q, kernel, stride=None, padding=(0, 0)) -> np.ndarray:
    """MAX_POOL_2D; explicit padding as PADV2 with the type's minimum (never the maximum of a window
    that has a real tap)."""
    return _pool("MAX_POOL_2D", x, q, kernel, stride, padding, int(np.iinfo(x.dtype).min))


def mean_hw(x, qx: Q, qy: Q, keepdims: bool = True) -> np.ndarray:
    """MEAN over axes 1, 2 of NHWC (TFLite converters' global average pool)."""
    _check_act(x, qx)
    m = Model()
    a = m.input(x.shape, x.dtype, qx)
    axes = m.ints([1, 2])
    n, _, _, c = x.shape
    y = _out(m, (n, 1, 1, c) if keepdims else (n, c), x.dtype, qy)
    o = fb.ReducerOptionsT()
    o.keepDims = keepdims
    m.op("MEAN", [a, axes], [y], o)
    return _one(m, x)


def pad(x, q: Q, padding) -> np.ndarray:
    """PAD of H, W (top, left, bottom, right) with the zero point (a real 0)."""
    _check_act(x, q)
    m = Model()
    xi = m.input(x.shape, x.dtype, q)
    y = _pad_tensor(m, xi, tuple(padding))
    m.outputs.append(y)
    return _one(m, x)


def concatenation(xs, qs, qy: Q, axis: int = -1) -> np.ndarray:
    """CONCATENATION; TFLM requires every input's quantization to equal the output's."""
    m = Model()
    ins = [m.input(x.shape, x.dtype, q) for x, q in zip(xs, qs)]
    axis = axis % xs[0].ndim
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    y = _out(m, shape, xs[0].dtype, qy)
    o = fb.ConcatenationOptionsT()
    o.axis = axis
    m.op("CONCATENATION", ins, [y], o)
    return _one(m, *xs)


# ---------------------------------------------------------------------------------------------
# data movement

def _resize(code: str, o, x, q: Q, size, align_corners: bool, half_pixel_centers: bool) -> np.ndarray:
    _check_act(x, q)
    m = Model()
    xi = m.input(x.shape, x.dtype, q)
    s = m.ints(size)
    y = _out(m, (x.shape[0], size[0], size[1], x.shape[3]), x.dtype, q)
    o.alignCorners, o.halfPixelCenters = bool(align_corners), bool(half_pixel_centers)
    m.op(code, [xi, s], [y], o)
    return _one(m, x)


def resize_nearest(x, q: Q, size, align_corners: bool = False, half_pixel_centers: bool = False) -> np.ndarray:
    """RESIZE_NEAREST_NEIGHBOR of NHWC to `size` (H, W). PyTorch's `nearest` (floor(dst * in/out))
    is align_corners=False, half_pixel_centers=False; `nearest-exact` is half_pixel_centers=True."""
    return _resize("RESIZE_NEAREST_NEIGHBOR", fb.ResizeNearestNeighborOptionsT(), x, q, size, align_corners,
                   half_pixel_centers)


def resize_bilinear(x, q: Q, size, align_corners: bool = False, half_pixel_centers: bool = False) -> np.ndarray:
    """RESIZE_BILINEAR of NHWC to `size` (H, W). PyTorch's bilinear with align_corners=True is
    align_corners=True; with align_corners=False it is half_pixel_centers=True."""
    return _resize("RESIZE_BILINEAR", fb.ResizeBilinearOptionsT(), x, q, size, align_corners, half_pixel_centers)


def transpose(x, q: Q, perm) -> np.ndarray:
    _check_act(x, q)
    m = Model()
    xi = m.input(x.shape, x.dtype, q)
    y = _out(m, tuple(x.shape[p] for p in perm), x.dtype, q)
    m.op("TRANSPOSE", [xi, m.ints(perm)], [y], fb.TransposeOptionsT())
    return _one(m, x)


def split(x, q: Q, axis: int, num: int) -> list[np.ndarray]:
    """SPLIT into `num` equal parts (several model outputs)."""
    _check_act(x, q)
    axis = axis % x.ndim
    m = Model()
    a = m.ints([axis])
    m.tensors[a].shape = []                     # SPLIT's axis is a scalar
    xi = m.input(x.shape, x.dtype, q)
    part = list(x.shape)
    part[axis] //= num
    ys = [_out(m, part, x.dtype, q) for _ in range(num)]
    o = fb.SplitOptionsT()
    o.numSplits = num
    m.op("SPLIT", [a, xi], ys, o)
    return m.run(x)


def split_v(x, q: Q, axis: int, sizes) -> list[np.ndarray]:
    """SPLIT_V into parts of the given sizes along `axis`."""
    _check_act(x, q)
    axis = axis % x.ndim
    m = Model()
    xi = m.input(x.shape, x.dtype, q)
    s = m.ints(sizes)
    a = m.ints([axis])
    m.tensors[a].shape = []
    ys = []
    for size in sizes:
        part = list(x.shape)
        part[axis] = size
        ys.append(_out(m, part, x.dtype, q))
    o = fb.SplitVOptionsT()
    o.numSplits = len(sizes)
    m.op("SPLIT_V", [xi, s, a], ys, o)
    return m.run(x)


def _strided_slice_op(m: Model, x: int, y: int, begin, end, strides):
    o = fb.StridedSliceOptionsT()
    m.op("STRIDED_SLICE", [x, m.ints(begin), m.ints(end), m.ints(strides)], [y], o)


def strided_slice(x, q: Q, begin, end, strides=None) -> np.ndarray:
    """STRIDED_SLICE with positive strides and explicit begin/end (no masks)."""
    _check_act(x, q)
    strides = [1] * x.ndim if strides is None else list(strides)
    ref = x[tuple(slice(b, e, s) for b, e, s in zip(begin, end, strides))]
    m = Model()
    xi = m.input(x.shape, x.dtype, q)
    y = _out(m, ref.shape, x.dtype, q)
    _strided_slice_op(m, xi, y, begin, end, strides)
    return _one(m, x)
