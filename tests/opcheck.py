"""Shared by the operator-breadth tests (test_ops_*.py, test_models.py, test_zoo_property.py):
compile a PyTorch module with edgebn, build its C for the host once, and check

  * host C == emulator on every int8 (quantized test inputs plus uniform random int8 and the
    all -128 / all 127 extremes), and
  * the emulator's dequantized output tracks torch float (SQNR in dB, a bound the caller gives).

Calibration and test inputs are standard normal (different seeds), in PyTorch layout.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edgebn
from edgebn.report import sqnr_db
from helpers import build_host, run_host

ROOT = Path(__file__).resolve().parents[1]
_serial = itertools.count()


class Fn(nn.Module):
    """A module whose forward is `fn(x)`: a functional call or tensor method the importer must read."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine parameters on every BatchNorm; returns model.eval()."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.3)
    return model.eval()


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@dataclass
class Checked:
    compiled: object
    sqnr_db: float
    fold_log: list
    host_exe: Path
    test_inputs: np.ndarray


def normal(shape, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape[1:])).astype(np.float32)


def compile_model(model: nn.Module, calib: np.ndarray, out_dir: Path, **options):
    return edgebn.compile(model.eval(), calib, out_dir, example_input=torch.from_numpy(calib[:1]), force=True,
                          **options)


def check_model(model: nn.Module, input_shape, work: Path, *, min_sqnr_db: float, n_calib: int = 512,
                n_test: int = 32, n_random: int = 16, seed: int = 0, calib=None, test=None,
                calibrate_on_test: bool = False, **options) -> Checked:
    """Compile, build the C, assert host == emulator bit for bit and SQNR(torch, emulator) >= bound.

    calibrate_on_test adds the test inputs to the calibration set: no test value is then clipped by
    a range it never saw, so the SQNR measures the int8 arithmetic alone (single-op tests use it to
    keep their bounds tight, with minmax ranges unless `options` say otherwise: the default histogram
    ranges clip sparse tails by design); model tests calibrate on separate data with the default
    recipe, as a user would. `options` go to edgebn.compile (e.g. fold_pool=True)."""
    model = model.eval()
    calib = normal(input_shape, n_calib, seed) if calib is None else calib
    test = normal(input_shape, n_test, seed + 1000) if test is None else test
    if calibrate_on_test:
        calib = np.concatenate([calib, test])
    tag = f"m{next(_serial)}"
    out = Path(work) / tag
    if calibrate_on_test:
        options = {"calibration": "minmax", **options}
    compiled = compile_model(model, calib, out, **options)
    emu = compiled.emulator
    exe = build_host(out, Path(work) / f"{tag}.exe")

    rng = np.random.default_rng(seed + 7)
    q_test = emu.quantize_input(test)
    shape = emu.input_shape
    q = np.concatenate([q_test, rng.integers(-128, 128, (n_random,) + shape, dtype=np.int8),
                        np.full((1,) + shape, -128, np.int8), np.full((1,) + shape, 127, np.int8)])
    want = emu.run(q).reshape(len(q), -1)
    got = run_host(exe, q.reshape(len(q), -1), want.shape[1])
    mismatch = np.argwhere(got != want)
    assert mismatch.size == 0, (f"host C != emulator at {len(mismatch)} int8s, first (sample, index) "
                                f"{mismatch[0].tolist()}: C {got[tuple(mismatch[0])]} emulator "
                                f"{want[tuple(mismatch[0])]}")

    with torch.no_grad():
        ref = model(torch.from_numpy(test)).double().numpy()
    approx = emu.predict(test)
    assert approx.shape == ref.shape, (approx.shape, ref.shape)
    s = sqnr_db(ref, approx)
    assert s >= min_sqnr_db, f"SQNR {s:.1f} dB < {min_sqnr_db} dB (torch float vs emulator)"
    return Checked(compiled, s, compiled.report.get("fold_log", []), exe, test)


def layerwise_sqnr(model: nn.Module, compiled, x: np.ndarray) -> dict[str, float]:
    """Each layer's own error, without what it inherits: its float op (from the float graph the
    compiler quantized) run on the dequantized int8 inputs the emulator gave it, vs its dequantized
    int8 output. Deep random nets amplify inherited error; this stays tight at any depth."""
    from edgebn.execute import execute, run_int8
    from edgebn.importer import import_module
    from edgebn.numerics import dequantize
    from edgebn.ops import OPS
    from edgebn.passes import ptq_passes, run_passes

    emu = compiled.emulator
    fg = run_passes(import_module(model.eval(), torch.from_numpy(x[:1])))
    quant = compiled.report.get("quantization", {})
    # the graph the compiler quantized (the default folds the pool)
    fg = ptq_passes(fg, **{k: bool(quant.get(k)) for k in ("fold_pool", "pool_mean", "equalize")},
                    fold_pool_budget=quant.get("fold_pool_budget"))
    qg = emu.graph
    values = execute(qg, emu.quantize_input(x), run_int8, keep_all=True)

    def deq(t):
        qp = qg.qparams[t]
        return dequantize(values[t], qp.scale, qp.zero_point)

    out = {}
    for node in fg.nodes:
        if OPS[node.op].alias:
            continue
        ref = OPS[node.op].run_float(node, [deq(t) for t in node.inputs])
        out[node.name] = sqnr_db(np.asarray(ref).reshape(values[node.name].shape), deq(node.name))
    return out


def quantize_only(model: nn.Module, calib: np.ndarray, **ptq):
    """The emulator of the int8 model `edgebn.compile(model, calib, ...)` would build with these PTQ
    options (edgebn.quantize.PTQ_DEFAULTS for the others), without emitting C or writing OUT: the same
    import, passes, fold-pool / equalization, the recipe choice (`calibration` "auto", edgebn/recipe.py),
    calibration, the int16 tail (precision.int16_tail, without its budget check), AdaRound and bias
    correction (on the first BIAS_CORRECTION_SAMPLES inputs) and quantization. For SQNR checks of nets whose C takes long to build."""
    from edgebn.calibrate import calibrate
    from edgebn.compiler import BIAS_CORRECTION_SAMPLES, _choose_recipe, torch_input_shape
    from edgebn.emulator import Emulator
    from edgebn.importer import import_module
    from edgebn.passes import ptq_passes, run_passes
    from edgebn.precision import insert_boundaries, int16_tail
    from edgebn.quantize import PTQ_DEFAULTS, assign_qparams, quantize_graph
    from edgebn.targets import get_target

    o = {**PTQ_DEFAULTS, **ptq}
    g = run_passes(import_module(model.eval(), torch.from_numpy(np.ascontiguousarray(calib[:1]))))
    g = ptq_passes(g, fold_pool=o["fold_pool"], pool_mean=o["pool_mean"], equalize=o["equalize"],
                   fold_pool_budget=o["fold_pool_budget"])
    method, adaround = o["calibration"], o["adaround"]
    if method == "auto":        # the compile's recipe choice (edgebn/recipe.py)
        choice = _choose_recipe(g, np.asarray(calib), torch_input_shape(g), get_target("qemu-rv32"), 99.99,
                                o["weight_method"], o["bias_correction"], adaround, "int8", None, None,
                                o["int16_tail"], check_budget=False)   # as the tail below: no budget check
        method, adaround = choice.calibration, choice.adaround if adaround is None else adaround
    ranges = calibrate(g, calib, torch_input_shape(g), method=method)
    g, ranges, bits = insert_boundaries(g, set(int16_tail(g)) if o["int16_tail"] else set(), ranges)
    data = np.asarray(calib[:BIAS_CORRECTION_SAMPLES])
    return Emulator(quantize_graph(g, assign_qparams(g, ranges, bits), o["weight_method"],
                                   bias_correction_data=data if o["bias_correction"] else None,
                                   adaround_data=data if adaround else None))


def onnxruntime_int8(model: nn.Module, calib: np.ndarray, test: np.ndarray, work: Path):
    """The peer the SQNR floor is measured against: ONNX Runtime static QDQ per-channel int8 of
    `model` (benchmarks/timm_coverage.py's `_onnxruntime`), calibrated on `calib`, run on `test`.
    Returns (float reference, ONNX Runtime's outputs), both float64 with the reference's shape (a
    model with several outputs gives them concatenated per sample, as ONNX Runtime returns them)."""
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from timm_coverage import _onnxruntime
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    with torch.no_grad():
        ref = model(torch.from_numpy(test))
    out = np.asarray(_onnxruntime(model, torch.from_numpy(calib[:1]), calib, test, work), np.float64)
    if isinstance(ref, (tuple, list)):
        return ref, out
    ref = ref.double().numpy()
    return ref, out.reshape(ref.shape)


def onnxruntime_sqnr(model: nn.Module, calib: np.ndarray, test: np.ndarray, work: Path) -> float:
    """Logit SQNR (dB) of ONNX Runtime's static QDQ per-channel int8 vs torch float on `test`."""
    ref, out = onnxruntime_int8(model, calib, test, work)
    return float(sqnr_db(ref.reshape(len(ref), -1), out.reshape(len(ref), -1)))
