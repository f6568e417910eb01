"""The compile pipeline, stage by stage:

    import -> passes (fold BN, fuse activations, fold flatten) -> calibrate -> quantize
    -> plan arena -> emit C -> PlatformIO project -> report

Everything is written into a staging folder beside OUT and committed file by file at the end
(edgebn.outdir): an error or Ctrl-C never leaves a half-written OUT, never destroys the previous one,
and never touches a file in OUT that edgebn did not write or that the user changed.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifact import graph_record, write_graph
from .bn_stats import check_bn_statistics
from .outcheck import safe_model_name
from .calibrate import SampleTap, calibrate, validate_batch
from .emit import CodeOnly, emit_model, render_model
from .emulator import Emulator
from .evaluate import float_graph_arrays, float_model_record, save_float_graph
from .errors import BudgetError, CalibrationError, EdgebnError, input_file
from .ir import Graph
from .library import SPEC4_NAME, LibraryNames, default_name, load_labels
from .kernels import weight_flash_bytes
from .ops import OPS, layer_macs
from .outdir import CommitResult, OutputDir
from .passes import ptq_passes, run_passes
from .plan import plan_arena
from .quantize import PTQ_DEFAULTS, assign_qparams, quantize_graph
from .report import LayerSQNR, build_report, measure_sqnr, write_report
from .targets import get_target
from .weights import check_fold_ranges

__all__ = ["compile_model", "CompiledModel", "load_calibration"]

SELFTEST_VECTORS = 4
REPORT_SAMPLES = 256   # calibration samples used for the per-layer SQNR in the report
BIAS_CORRECTION_SAMPLES = 256   # calibration samples the bias correction measures each layer's mean error on
# The int16 tail is taken where its linears hold at most this share of the model's MACs. Measured with
# the fast int16x8 linear (ops/linear linear16_fast, `edgebn bench`): its extra instructions (the int16
# boundaries, the 64-bit requantisation of each output) are 0.12x (digits) to 0.42x (the seed MLP,
# all tail) its linears' share, so 10% bounds them near 4% of the model's (docs/QUANTIZATION.md).
TAIL_MAC_SHARE = 0.10
TAIL_COST_PER_SHARE = 0.42   # the largest measured ratio above (the seed MLP), for the report's note
AUTO_SAMPLES = 64      # calibration samples --precision auto measures each layer's SQNR on


@dataclass
class CompiledModel:
    path: Path
    report: dict
    emulator: Emulator
    timings: dict = field(default_factory=dict)
    commit: CommitResult | None = None      # what the compile did to OUT (files kept, removed)

    @classmethod
    def load(cls, out_dir) -> "CompiledModel":
        out_dir = Path(out_dir)
        report_path = out_dir / "report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        return cls(out_dir, report, Emulator.load(out_dir))

    def emulate(self, x: np.ndarray, dequantize: bool = True, channels_last: bool = False):
        """Float (or int8) input in model layout -> the board's output in model layout (a tuple of
        them, in the model's order, for a model with several outputs)."""
        return self.emulator.predict(x, channels_last=channels_last, dequantize=dequantize)

    def evaluate(self, x: np.ndarray, labels: np.ndarray | None = None) -> dict:
        """Float vs int8 on inputs x (model layout): top-1 agreement, accuracy against labels, SQNR of
        the logits and of every layer (the record `edgebn evaluate --json` writes)."""
        from .evaluate import evaluate

        return evaluate(self.path, x, labels)

    def compare(self, x: np.ndarray | None = None, *, port: str | None = None, qemu: bool = False,
                count: int = 100, seed: int = 0, channels_last: bool = False, **link_options):
        """Run inputs (float in model layout, or int8 device layout; default `count` random int8
        inputs) on a board: `port=` a serial port of a board flashed with `edgebn flash`, or
        `qemu=True` for the emulated RV32IMC board. Returns the CompareReport (`.ok`, `.summary()`,
        `.mismatches`); link_options: board (with qemu: qemu_rv32, qemu_lx106, qemu_esp32,
        qemu_esp32s3), baud, timeout, retries."""
        from .device.commands import compare_out

        return compare_out(self.path, x, port=port, qemu=qemu, count=count, seed=seed,
                           channels_last=channels_last, **link_options)

    def bench(self, kernels: str | None = None, *, board: str | None = None, timeout: float = 60.0) -> dict:
        """Instruction counts per layer and in total on an emulated board (`edgebn bench`; default the
        RV32IMC one, or qemu_lx106 / qemu_esp32 / qemu_esp32s3), with the kernel set compile wrote
        (or `kernels`: fast, reference, compact)."""
        from .device.bench import bench_model

        return bench_model(self.path, kernels, timeout=timeout, **({"board": board} if board else {}))

    def __repr__(self) -> str:
        r = self.report
        lib = r.get("library", {}).get("name") or self.emulator.doc.get("name", "model")
        parts = [f"target={r.get('target', self.emulator.doc.get('target', '?'))}"]
        if "macs" in r:
            parts.append(f"{r['macs']:,} MACs")
        if "arena_bytes" in r:
            parts.append(f"arena {r['arena_bytes']:,} B")
        if "model_flash_bytes" in r or "flash_bytes" in r:
            parts.append(f"flash {r.get('model_flash_bytes', r.get('flash_bytes')):,} B")
        return f"CompiledModel({lib} at {str(self.path)!r}, {', '.join(parts)})"

    def _repr_html_(self) -> str:
        """The report cards (report.html) as a notebook's rich output."""
        from .report_html import render_html

        return render_html(self.report) if self.report.get("layers") is not None else f"<pre>{repr(self)}</pre>"


# ---------------------------------------------------------------------------------------------
# Inputs

def load_calibration(path) -> np.ndarray:
    """CALIB.npy (memory-mapped) or .npz (array 'x', or its only array)."""
    path = input_file(path, "calibration data", CalibrationError)
    if path.stat().st_size == 0:
        raise CalibrationError(f"{path}: empty file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                key = "x" if "x" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise CalibrationError(f"{path}: .npz with arrays {keys}; name the calibration array 'x'")
                return z[key]
        _refuse_object_npy(path)
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except CalibrationError:
        raise
    except Exception as e:
        raise CalibrationError(f"{path}: cannot read calibration data ({str(e).splitlines()[0]})") from e


def _refuse_object_npy(path: Path) -> None:
    """An object-dtype .npy is a pickle: say so (np.load would only say it cannot memory-map it)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _shape, _fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise CalibrationError(f"{path}: refused: the array holds Python objects (a pickle); calibration data is "
                               "loaded with allow_pickle=False and must be float32 numbers")


def _first_batch(data, torch_shape):
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray):
        return validate_batch(data, torch_shape)
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
        return data
    raise CalibrationError("calibration data must be an array, a .npy/.npz path or an iterable of batches")


# ---------------------------------------------------------------------------------------------

def _import(model, example_input):
    if isinstance(model, Graph):        # already imported (an edgebn IR graph, e.g. built by a test)
        return model.copy()
    from . import importer

    if isinstance(model, (str, os.PathLike)):
        return importer.import_program(importer.load_program(model))
    if hasattr(model, "graph_signature"):
        return importer.import_program(model)
    if example_input is None:
        raise EdgebnError("compiling an nn.Module needs example_input (a tensor of the input shape) or "
                          "calibration data to take it from")
    return importer.import_module(model, example_input)


def _needs_example(model) -> bool:
    return not isinstance(model, (str, os.PathLike)) and not hasattr(model, "graph_signature")


def _example_from_calibration(calib):
    """(example input of batch 1 as a float32 tensor, calib) from the first calibration batch; a
    one-pass iterator (a generator) gets that batch put back in front."""
    import itertools

    import torch

    from .calibrate import iter_batches

    if hasattr(calib, "detach"):
        calib = calib.detach().cpu().numpy()
    if isinstance(calib, np.ndarray):
        first, rest = (np.asarray(calib[:1]) if calib.ndim > 0 else calib), calib
    else:
        if not hasattr(calib, "__iter__") or isinstance(calib, (str, bytes, dict)):
            raise CalibrationError("calibration data must be an array, a .npy/.npz path or an iterable of batches")
        items = iter(calib)
        try:
            item = next(items)
        except StopIteration:
            raise CalibrationError("calibration data is empty") from None
        rest = itertools.chain([item], items) if items is calib else calib
        first = next(iter(iter_batches([item], 1)))
        first = first[:1] if first.ndim > 0 else first
    if first.dtype.kind != "f" or first.ndim < 2 or len(first) == 0:
        raise CalibrationError(f"the first calibration batch ({first.dtype} {tuple(first.shape)}) gives no example "
                               "input: expected float32 with a leading batch axis")
    return torch.from_numpy(np.ascontiguousarray(first, dtype=np.float32)), rest


def _cap_samples(calib, max_samples: int | None):
    """At most max_samples calibration samples (arrays sliced, iterables cut mid-batch)."""
    if max_samples is None:
        return calib
    if int(max_samples) < 1:
        raise CalibrationError(f"max_samples={max_samples}: must be at least 1")
    if isinstance(calib, np.ndarray):
        return calib[:int(max_samples)]

    def capped():
        from .calibrate import iter_batches

        left = int(max_samples)
        for batch in iter_batches(calib, 64):
            if left <= 0:
                return
            batch = batch[:left] if batch.ndim > 0 else batch
            left -= len(batch) if batch.ndim > 0 else 1
            yield batch

    return capped()


def torch_input_shape(g: Graph) -> tuple[int, ...]:
    s = g.shapes[g.inputs[0]]
    layout = g.torch_layouts[g.inputs[0]]
    if layout == "NCDHW":
        return (1, s[3], s[0], s[1], s[2])
    if layout == "NCHW":
        return (1, s[2], s[0], s[1])
    if layout == "NCL":
        return (1, s[2], s[1])
    return (1, s[0])


def compile_model(model, calib, out_dir, target: str = "qemu-rv32", *, example_input=None,
                  calibration: str = PTQ_DEFAULTS["calibration"], percentile: float = 99.99,
                  weight_method: str = PTQ_DEFAULTS["weight_method"],
                  bias_correction: bool = PTQ_DEFAULTS["bias_correction"], equalize: bool = PTQ_DEFAULTS["equalize"],
                  fold_pool: bool = PTQ_DEFAULTS["fold_pool"], pool_mean: bool = PTQ_DEFAULTS["pool_mean"],
                  fold_pool_budget: float | None = PTQ_DEFAULTS["fold_pool_budget"],
                  adaround: bool | None = PTQ_DEFAULTS["adaround"],
                  ranges=None, force: bool = False,
                  progress: bool = False, model_name: str | None = None,
                  check_budget: bool = True, name: str | None = None, labels=None,
                  max_samples: int | None = None, precision: str = "int8", min_sqnr: float | None = None,
                  int16_layers=None, int16_tail: bool = PTQ_DEFAULTS["int16_tail"]) -> CompiledModel:
    """Compile `model` (a .pt2 path, an ExportedProgram, or an nn.Module with example_input) into OUT.

    `ranges` (a ranges file path or dict, see edgebn/ranges.py; edgebn.qat writes them) replaces
    calibration: every tensor's range is taken from it, so a QAT-trained model compiles bit-exactly to
    its integer forward. `calib` is then only used for the report and the self-test vectors.

    name: the C name of the model library (--name; every symbol, macro and file carries it), by default
    from model_name, the checkpoint's file name or the module's class. labels: class labels, one per
    output element (a list of str, or a labels.txt path, one per line).

    Quantization choices (the int8 arithmetic is the same for all): `calibration` picks activation
    ranges (minmax | minmax_clip | percentile | mse | histogram; "auto", the default: histogram, minmax_clip
    or minmax with AdaRound, whichever scores the higher logit SQNR on held-out calibration rows beyond
    their sampling noise, within a cost bound: edgebn/recipe.py), `weight_method` the per-channel weight scales
    (max | mse), `fold_pool` folds a global average pool into the linear reading it where that adds at
    most `fold_pool_budget` x the model's weights (passes/fold_pool.py; None: no budget), `pool_mean`
    computes the other global average pools as TFLite's MEAN with their own output scale
    (passes/pool_mean.py), `equalize` runs cross-layer equalization on the folded float graph, and
    `bias_correction` corrects each weighted layer's int32 bias for the mean error quantization adds
    (measured layer by layer with the emulator on the first BIAS_CORRECTION_SAMPLES calibration inputs).
    `adaround` learns, layer by layer on the same samples, whether each int8 weight rounds up or down
    (edgebn/adaround.py; before the bias correction); None: as `calibration` "auto" chose (else off).

    precision (docs/QUANTIZATION.md): "int8" (every layer int8), "int16" (every layer whose op has an
    int16 form computes on int16 activations, TFLite's int16x8 scheme), "auto" (the fewest layers raised
    to int16 so that every layer's accumulated SQNR on the calibration sample reaches `min_sqnr` dB,
    default edgebn.precision.DEFAULT_MIN_SQNR, within the target's RAM and flash). `int16_layers`:
    layer names raised to int16 in any mode. `int16_tail` (on by default, any mode but "int16"): the
    classifier tail, a linear head writing a model output with the global mean or linear computing its
    input (edgebn/precision.py `int16_tail`), computes on int16 activations where the target's RAM and
    flash allow it (else it stays int8, with a warning and the reason in report.json).
    The model's input and output stay int8."""
    from .precision import PRECISIONS
    if precision not in PRECISIONS:
        raise EdgebnError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if min_sqnr is not None and precision != "auto":
        raise EdgebnError("--min-sqnr is the target of --precision auto; add --precision auto (or drop --min-sqnr)")
    t0, c0 = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}    # CPU seconds of this process per stage (gcc's are its own entry)
    tgt = get_target(target)
    model_name = model_name or (Path(model).stem if isinstance(model, (str, os.PathLike)) else type(model).__name__)
    names = LibraryNames.for_name(name if name is not None else default_name(model_name))
    labels = load_labels(labels) if labels is not None else None
    out_dir = Path(out_dir)
    # refuses a wrong OUT before the slow stages and locks it against a concurrent compile of it
    with OutputDir(out_dir, force) as output:

        def lap(stage):
            nonlocal t0, c0
            now, cnow = time.perf_counter(), time.process_time()
            timings[stage], cpu[stage] = now - t0, cnow - c0
            t0, c0 = now, cnow

        if isinstance(calib, (str, os.PathLike)):
            calib = load_calibration(calib)
        if hasattr(calib, "detach"):
            calib = calib.detach().cpu().numpy()
        calib = _cap_samples(calib, max_samples)
        if example_input is None and _needs_example(model):
            example_input, calib = _example_from_calibration(calib)
        imported = _import(model, example_input)
        float_graph = run_passes(imported)
        # given ranges (QAT) name the tensors of the plain folded graph and fix its arithmetic:
        # the PTQ-only rewrites and the bias correction stay off then
        fold_pool, equalize = fold_pool and ranges is None, equalize and ranges is None
        if adaround and ranges is not None:
            raise EdgebnError("--adaround re-rounds the weights the given ranges were trained with, so the compile "
                              "would no longer reproduce the QAT model; drop --adaround (or --ranges)")
        pool_mean = pool_mean and ranges is None
        float_graph = ptq_passes(float_graph, fold_pool=fold_pool, pool_mean=pool_mean, equalize=equalize,
                                 fold_pool_budget=fold_pool_budget)
        lap("import")
        tshape = torch_input_shape(float_graph)
        if isinstance(calib, (str, os.PathLike)):
            calib = load_calibration(calib)
        calib = _first_batch(calib, tshape)
        recipe_rows = None      # the rows --calibration auto chooses on (a loader's first ones, peeked)
        if calibration == "auto" and ranges is None:
            recipe_rows, calib = (calib, calib) if isinstance(calib, np.ndarray) else _peek_rows(calib, tshape)
        tap = None if isinstance(calib, np.ndarray) else SampleTap(calib, max(REPORT_SAMPLES, BIAS_CORRECTION_SAMPLES))
        ranges_meta = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_bn_statistics(imported)
            check_fold_ranges(float_graph)
            recipe = None
            if ranges is None and calibration == "auto":
                recipe = _choose_recipe(float_graph, recipe_rows, tshape, tgt, percentile,
                                        weight_method, bias_correction, adaround, precision, min_sqnr,
                                        int16_layers, int16_tail, check_budget)
                calibration = recipe.calibration
                adaround = recipe.adaround if adaround is None else adaround
            lap("recipe")
            adaround = bool(adaround)
            if ranges is None:
                ranges = calibrate(float_graph, calib if tap is None else tap, tshape, method=calibration,
                                   percentile=percentile, progress=progress)
            else:
                ranges, ranges_meta = _given_ranges(float_graph, ranges, calibration, weight_method)
                for batch in (tap or ()):  # the report's sample and the self-test vectors
                    validate_batch(batch, tshape)
            lap("calibrate")

            def first(n):   # the first n calibration inputs (for a loader: those the tap kept, if any)
                kept = np.asarray(calib[:n]) if tap is None else tap.sample()
                return None if kept is None else kept[:n]

            # bias correction and AdaRound measure each layer on the same samples
            ptq_data = first(BIAS_CORRECTION_SAMPLES) if (bias_correction or adaround) and ranges_meta is None \
                else None
            bc_data = ptq_data if bias_correction else None
            ar_data = ptq_data if adaround else None
            bc_log: list = []
            ar_log: list = []
            graph_in, ranges_in = float_graph, ranges
            sample = first(REPORT_SAMPLES)      # the report's SQNR, the self-test vectors, the examples

            def build(tail: bool):
                bc_log.clear()
                ar_log.clear()
                g, r, bits, info = _choose_precision(
                    graph_in, ranges_in, precision, min_sqnr, int16_layers, weight_method, tgt,
                    first(AUTO_SAMPLES) if precision == "auto" else None, tail=tail)
                qp = assign_qparams(g, r, bits)
                # the bias correction walks the float and the final int8 network over its samples: when
                # they are the report's, the report's per-layer SQNR is taken on that walk
                obs = LayerSQNR(g, qp) if bc_data is not None and sample is not None \
                    and len(bc_data) == len(sample) else None
                q = quantize_graph(g, qp, weight_method, bias_correction_data=bc_data, log=bc_log,
                                   adaround_data=ar_data, adaround_log=ar_log, observe=obs)
                return g, r, info, q, obs

            float_graph, ranges, precision_info, qgraph, sqnr = build(int16_tail and ranges_meta is None)
            tail_layers = precision_info.get("int16_tail", {}).get("layers")
            if check_budget and tail_layers:
                plain, note = _tail_over_budget(qgraph, tgt, tail_layers, lambda: build(False),
                                                lambda built: built[3])
                if plain is not None:
                    float_graph, ranges, precision_info, qgraph, sqnr = plain
                    precision_info["int16_tail"] = {"on": True, "layers": [], "note": note}
                    warnings.warn(note)
            lap("quantize")
        plan = plan_arena(qgraph)
        macs = layer_macs(qgraph)
        # the weights as the target's kernels store them (int16 in the ESP32 / S3 conv tiles)
        const_bytes = weight_flash_bytes(qgraph, tgt.isa_facts)
        kernels, kernel_note = "fast", ""
        arena_in_psram = plan.arena_bytes > tgt.ram_bytes and plan.arena_bytes <= tgt.psram_bytes
        if check_budget:
            if const_bytes > tgt.flash_bytes:   # int16 weights of the narrow tiles: the compact set may fit
                compact = weight_flash_bytes(qgraph, tgt.isa_facts, "compact")
                if compact < const_bytes and compact <= tgt.flash_bytes:
                    kernel_note = (f"the fast kernels store {const_bytes:,} bytes of weights (int16 in the "
                                   f"{tgt.isa} conv tiles), over {tgt.name}'s {tgt.flash_bytes:,} bytes of flash: "
                                   f"compiled with the compact kernel set instead ({compact:,} bytes, int8 weights, "
                                   f"slower kernels)")
                    kernels, const_bytes = "compact", compact
            if plan.arena_bytes > tgt.ram_bytes and not arena_in_psram:
                psram = f" and {tgt.psram_bytes:,} bytes of PSRAM" if tgt.psram_bytes else ""
                raise BudgetError(f"model needs a {plan.arena_bytes:,}-byte arena; {tgt.name} has {tgt.ram_bytes:,} "
                                  f"bytes of RAM{psram} for it")
            if const_bytes > tgt.flash_bytes:
                raise BudgetError(f"model needs {const_bytes:,} bytes of weights; {tgt.name} has {tgt.flash_bytes:,} "
                                  f"bytes of flash for them")

        name = safe_model_name(model_name)   # the display name: comments, platformio.ini, report
        tmp = output.staging()
        # the artefact and the float graph are written after gcc's start; their CRCs and the model hash now
        float_arrays = float_graph_arrays(float_graph)
        artefact = graph_record(qgraph, extra={"target": tgt.name, "name": name, "library": names.prefix,
                                               "torch_input_shape": list(tshape),
                                               "float_model": float_model_record(float_graph, float_arrays)})
        mhash = artefact[0]["model_hash"]
        # host gcc measures the stack and the code size (in a thread, on a code-only render of the model:
        # its large tables declared extern) while Python writes the artefact, the float graph and the
        # library; "stack" is the part of the measurement they did not overlap
        code_only, rows_cache = CodeOnly(), {}
        code_files = render_model(qgraph, plan, mhash, name, int(sum(macs.values())), labels=labels,
                                  arena_in_psram=arena_in_psram, target_name=tgt.name, isa=tgt.isa_facts,
                                  code_only=code_only, rows_cache=rows_cache, kernels=kernels)
        stack_job = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edgebn-stack")
        stack_future = stack_job.submit(_stack_report, code_files, code_only.bytes)
        try:
            # after gcc's start: gcc is the longest stage of a large model
            write_graph(tmp, *artefact)
            del artefact
            save_float_graph(float_graph, tmp, float_arrays)
            del float_arrays
            emu = Emulator.load(tmp)
            for lib_names in {names.prefix: names, SPEC4_NAME: LibraryNames.for_name(SPEC4_NAME)}.values():
                # lib/NAME is the library; lib/edgebn_model the same model under SPEC section 4's names,
                # which the harness (src/) and code written for those names use
                emit_model(qgraph, plan, mhash, tmp / "lib" / lib_names.prefix, name, int(sum(macs.values())),
                           names=lib_names, labels=labels, arena_in_psram=arena_in_psram, target_name=tgt.name,
                           isa=tgt.isa_facts, rows_cache=rows_cache, kernels=kernels)
            del rows_cache
            lap("emit")
            rng = np.random.default_rng(0)
            vectors = emu.quantize_input(sample[:SELFTEST_VECTORS]) if sample is not None else \
                rng.integers(-128, 128, (SELFTEST_VECTORS,) + emu.input_shape, dtype=np.int8)
            if sqnr is not None:
                layer_sqnr = sqnr.db
            else:
                layer_sqnr = measure_sqnr(float_graph, qgraph, sample) if sample is not None and len(sample) else {}
            report = build_report(qgraph, plan, macs, const_bytes, emu.model_hash, layer_sqnr, tgt,
                                  [str(w.message) for w in caught] + ([kernel_note] if kernel_note else []))
            lap("report")
            stack = stack_future.result()
        finally:
            stack_job.shutdown(wait=False)     # on an error, gcc's thread ends on its own
        lap("stack")
        model_flash = stack.pop("model_flash_bytes", None) or const_bytes
        fits = _board_fits(tgt, plan.arena_bytes, model_flash)
        _write_project(tmp, name, tgt, emu, vectors, [f for f in fits if not f.fits], names.prefix)
        _write_library(tmp, names, name, int(sum(macs.values())), plan.arena_bytes, emu,
                       sample[:1] if sample is not None and len(sample) else np.zeros(tshape, np.float32),
                       labels, tgt, fits)
        lap("project")
        report["quantization"] = {
            "calibration": calibration if ranges_meta is None else "given ranges",
            "weight_method": weight_method,
            "samples": int(tap.seen if tap is not None else len(calib)),
            "max_samples": None if max_samples is None else int(max_samples),
            "equalize": bool(equalize), "bias_correction": bool(bc_data is not None), "fold_pool": bool(fold_pool),
            "pool_mean": bool(pool_mean), "fold_pool_budget": fold_pool_budget,
            "bias_correction_layers": [{"layer": r.layer, "mean_abs_error_before": r.mean_abs_error_before,
                                        "mean_abs_error_after": r.mean_abs_error_after, "max_shift": r.max_shift}
                                       for r in bc_log],
            "recipe": recipe.as_dict() if recipe is not None else {"mode": "given"},
            "adaround": bool(ar_data is not None),
            "adaround_layers": [{"layer": r.layer, "weights": r.weights, "iterations": r.iterations,
                                 "error_nearest": r.error_nearest, "error_adaround": r.error_adaround,
                                 "changed": r.changed, "seconds": round(r.seconds, 3), "skipped": r.skipped}
                                for r in ar_log],
            # part of timings["quantize"]
            "adaround_seconds": round(sum(r.seconds for r in ar_log), 3)}
        if ranges_meta is not None:
            report["quantization"]["ranges_source"] = ranges_meta.get("source", "user")
        report["library"] = {"name": names.prefix, "dir": f"lib/{names.prefix}", "header": names.header,
                             "arena_placement": "psram" if arena_in_psram else "internal",
                             "labels": len(labels) if labels is not None else 0}
        report["model_flash_bytes"] = int(model_flash)
        report["precision"] = {**precision_info, "arena_bytes": int(plan.arena_bytes), "flash_bytes": int(const_bytes),
                               "int16_layers": [n.name for n in qgraph.nodes
                                                if qgraph.qparams[n.name].bits == 16 and not OPS[n.op].alias
                                                and n.op != "requantize"],
                               "boundaries": [n.name for n in qgraph.nodes if n.op == "requantize"]}
        report["boards"] = [f.as_dict() for f in fits]
        report["compile_seconds"] = round(sum(timings.values()), 3)
        report["timings"] = {k: round(v, 3) for k, v in timings.items()}
        cpu["gcc"] = stack.pop("gcc_cpu_seconds", 0.0)
        report["timings_cpu"] = {k: round(v, 3) for k, v in cpu.items()}
        report.update(stack)
        report["kernels"] = {"set": kernels, "note": kernel_note}
        write_report(report, tmp)
        commit = output.commit()
        for w in caught:
            warnings.warn(str(w.message), stacklevel=2)
        if kernel_note:
            warnings.warn(kernel_note, stacklevel=2)
        return CompiledModel(out_dir, report, emu, timings, commit)


def _choose_precision(float_graph: Graph, ranges: dict, precision: str, min_sqnr, int16_layers, weight_method: str,
                      tgt, sample, tail: bool = False):
    """(float graph with its int8 <-> int16 boundaries, ranges, {tensor: bits}, report record) for
    --precision / --int16-layers / --int16-tail (edgebn/precision.py)."""
    from .precision import DEFAULT_MIN_SQNR, choose_auto, insert_boundaries, wide_layers

    wide = wide_layers(float_graph, precision, int16_layers)
    info: dict = {"mode": precision}
    if precision != "int16":
        info["int16_tail"] = _int16_tail(float_graph, wide, tail)
        wide |= set(info["int16_tail"]["layers"])
    if precision == "auto":
        target = DEFAULT_MIN_SQNR if min_sqnr is None else float(min_sqnr)
        if sample is None or not len(sample):
            raise EdgebnError("--precision auto measures SQNR on the calibration data, and none was given")
        auto = choose_auto(float_graph, _auto_evaluator(float_graph, ranges, weight_method, tgt, sample, wide), target)
        wide |= auto.wide
        info.update(min_sqnr=target, reached=auto.reached, unreachable=auto.unreachable,
                    skipped_for_budget=auto.skipped_budget, steps=auto.steps,
                    min_layer_sqnr_db=_finite_min(auto.sqnr), min_layer_sqnr_int8_db=_finite_min(auto.sqnr_int8),
                    samples=int(len(sample)))
        if not auto.reached:
            warnings.warn(f"--precision auto: layer(s) {', '.join(auto.unreachable[:6])} stay below "
                          f"{target:g} dB SQNR with every raise tried" +
                          (f" ({', '.join(auto.skipped_budget[:6])} left int8: the board's RAM or flash)"
                           if auto.skipped_budget else ""), stacklevel=3)
    g, ranges, bits = insert_boundaries(float_graph, wide, ranges)
    return g, ranges, bits, info


def _int16_tail(float_graph: Graph, wide: set, on: bool) -> dict:
    """report.json's precision.int16_tail: {"on", "layers" raised, "note"} (precision.int16_tail)."""
    from .precision import int16_tail

    rec: dict = {"on": bool(on), "layers": [], "note": ""}
    if on:
        rec["layers"] = [t for t in int16_tail(float_graph) if t not in wide]
        if not rec["layers"]:
            rec["note"] = "no linear head reading a global mean or a linear (or it is int16 already)"
        else:
            macs = layer_macs(float_graph)
            weighted = [n.name for n in float_graph.nodes if n.name in rec["layers"] and OPS[n.op].weighted]
            share = sum(macs[t] for t in weighted) / max(1, sum(macs.values()))
            if share > TAIL_MAC_SHARE:
                rec["note"] = (f"the tail's linears ({', '.join(weighted)}) hold {share:.1%} of the model's MACs, over "
                               f"{TAIL_MAC_SHARE:.0%}: kept int8 (its int16 boundaries and 64-bit requantisation would add up "
                               f"to {TAIL_COST_PER_SHARE * share:.0%} instructions; --int16-layers raises it anyway)")
                rec["layers"] = []
    return rec


def _peek_rows(data, tshape):
    """(the first recipe.MAX_ROWS rows of an iterable calibration source, an iterable giving every batch
    of it, those first ones included): the recipe choice sees the same rows as for an array, and a
    generator is still read once."""
    import itertools

    from .calibrate import iter_batches
    from .recipe import MAX_ROWS

    it = iter(iter_batches(data, 64))
    head, have = [], 0
    for b in it:
        head.append(validate_batch(b, tshape))      # a bad batch: the calibration's own one-line error
        have += len(b) if b.ndim > 0 else 0
        if have >= MAX_ROWS:
            break
    rows = np.concatenate([b for b in head if b.ndim > 0])[:MAX_ROWS] if have else None
    return rows, itertools.chain(head, it)


def _tail_over_budget(qgraph: Graph, tgt, tail_layers, build_plain, quantized_of):
    """The int16 tail is taken only where the model fits with it whenever it fits without: for
    `qgraph` (quantized with the tail) over the target's RAM or flash, (build_plain(), the note saying
    why) when the all-int8 build fits; else (None, ""). `quantized_of(build_plain())` is its quantized
    graph. The compile and the recipe choice's candidates both decide here."""
    a16, f16 = plan_arena(qgraph).arena_bytes, weight_flash_bytes(qgraph, tgt.isa_facts)
    ram = max(tgt.ram_bytes, tgt.psram_bytes)
    if a16 <= ram and f16 <= tgt.flash_bytes:
        return None, ""
    plain = build_plain()
    q8 = quantized_of(plain)
    a8, f8 = plan_arena(q8).arena_bytes, weight_flash_bytes(q8, tgt.isa_facts)
    if a8 > ram or f8 > tgt.flash_bytes:
        return None, ""
    return plain, (f"the int16 tail ({', '.join(tail_layers)}) needs a {a16:,}-byte arena and {f16:,} bytes of "
                   f"weights, over {tgt.name}'s {ram:,} / {tgt.flash_bytes:,} bytes (int8: {a8:,} / {f8:,}): "
                   "the tail stays int8")


def _choose_recipe(float_graph: Graph, rows, tshape, tgt, percentile, weight_method, bias_correction, adaround,
                   precision, min_sqnr, int16_layers, int16_tail, check_budget: bool = True):
    """`--calibration auto` (edgebn/recipe.py): each candidate recipe quantized as this compile would,
    from the rows it is given, the int16 tail's RAM and flash check included."""
    from .recipe import choose_recipe

    def quantize_with(method: str, ar: bool, fit: np.ndarray, reference=None, fit_idx=None):
        """reference, fit_idx: the choice's FloatReference and fit's rows in it (recipe.choose_recipe)."""
        r = calibrate(float_graph, fit, tshape, method=method, percentile=percentile,
                      reference=None if reference is None else (reference, fit_idx))
        data = np.asarray(fit[:BIAS_CORRECTION_SAMPLES])
        ar = ar if adaround is None else adaround
        bias_ref = None if reference is None or ar or not bias_correction else \
            (reference, fit_idx[:BIAS_CORRECTION_SAMPLES])

        def build(tail: bool):
            g, rr, bits, info = _choose_precision(float_graph, r, precision, min_sqnr, int16_layers, weight_method,
                                                  tgt, data[:AUTO_SAMPLES] if precision == "auto" else None,
                                                  tail=tail)
            q = quantize_graph(g, assign_qparams(g, rr, bits), weight_method,
                               bias_correction_data=data if bias_correction else None,
                               adaround_data=data if ar else None, bias_reference=bias_ref)
            return q, info.get("int16_tail", {}).get("layers")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q, tail_layers = build(int16_tail)
            if check_budget and tail_layers:
                plain, _ = _tail_over_budget(q, tgt, tail_layers, lambda: build(False), lambda built: built[0])
                q = q if plain is None else plain[0]
            return q

    macs = sum(layer_macs(float_graph).values())
    return choose_recipe(float_graph, None if rows is None else np.asarray(rows), macs, quantize_with)


def _finite_min(sq: dict):
    vals = [v for v in sq.values() if np.isfinite(v)]
    return round(float(min(vals)), 2) if vals else None


def _auto_evaluator(float_graph: Graph, ranges: dict, weight_method: str, tgt, sample, fixed: set):
    """wide -> ({layer: accumulated SQNR dB}, fits the target's RAM and flash), on `sample` (model layout)."""
    from .execute import execute, run_float, run_int8
    from .numerics import quantize
    from .ops.reshape import torch_to_device
    from .precision import insert_boundaries, layer_sqnr

    x = torch_to_device(np.asarray(sample, np.float64))
    fvals = execute(float_graph, x, run_float)
    names = [n.name for n in float_graph.nodes if not OPS[n.op].alias]
    ram = max(tgt.ram_bytes, tgt.psram_bytes)

    def evaluate(wide: set):
        g, r, bits = insert_boundaries(float_graph, set(wide) | fixed, ranges)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = quantize_graph(g, assign_qparams(g, r, bits), weight_method)
        except EdgebnError:
            return None, False        # a raise the int16 form refuses (its error says why)
        qi = q.qparams[q.inputs[0]]
        qvals = execute(q, quantize(x, qi.scale, qi.zero_point), run_int8)
        fits = plan_arena(q).arena_bytes <= ram and weight_flash_bytes(q, tgt.isa) <= tgt.flash_bytes
        return layer_sqnr(fvals, q, qvals, names), fits

    return evaluate


def _given_ranges(graph: Graph, ranges, calibration: str, weight_method: str):
    """Ranges given instead of calibration (edgebn/ranges.py): checked against the graph's tensors."""
    from .ranges import check_ranges, load_ranges

    if calibration != PTQ_DEFAULTS["calibration"]:
        raise CalibrationError(f"ranges were given, so calibration {calibration!r} would be ignored; "
                               "drop --calibration (or drop --ranges)")
    given, meta = load_ranges(ranges)
    wm = meta.get("weight_method")
    if wm is not None and wm != weight_method:
        raise CalibrationError(f"the ranges were trained with weight method {wm!r}; compile with "
                               f"--weight-method {wm} (not {weight_method!r}) to reproduce them")
    where = str(ranges) if isinstance(ranges, (str, os.PathLike)) else "ranges"
    return check_ranges(graph, given, where), meta


def _stack_report(code_files: dict[str, str], table_bytes: int) -> dict:
    """Worst-case stack of edgebn_model_run, measured with the host gcc (-fstack-usage) on the
    code-only render of the model (edgebn.emit.CodeOnly: the same kernels, its tables of 1024 values
    or more extern); without a host gcc the report says so instead of guessing. code_flash_bytes: that
    object's code, shorter tables and data (x86-64 code, larger than the boards' 16/24-bit
    encodings); model_flash_bytes: that plus the extern tables (table_bytes: weights, bias tables)."""
    if shutil.which("gcc") is None:
        return {"stack_bytes": None, "stack_note": "not measured: no host gcc on PATH"}
    import resource

    from .stack import stack_usage_of_files

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    su = stack_usage_of_files(code_files)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"gcc_cpu_seconds": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
            "stack_bytes": su["stack_bytes"], "stack_functions": su["functions"],
            "stack_note": "host gcc -O2 -fstack-usage, heaviest call path from edgebn_model_run",
            "code_flash_bytes": su["flash_bytes"], "model_flash_bytes": su["flash_bytes"] + table_bytes}


def _board_fits(tgt, arena_bytes: int, model_flash: int):
    """Every board of the project against the model; the --target board is the default env and
    always kept (its budget was checked before anything was written)."""
    from .project import board_fits
    from .targets import TARGETS

    return [f if f.target.name != tgt.name or f.fits else type(f)(f.target, True, "internal", "")
            for f in board_fits(list(TARGETS.values()), arena_bytes, model_flash)]


def _write_project(tmp: Path, name: str, tgt, emu: Emulator, vectors: np.ndarray, left_out, library: str) -> None:
    from .device.selftest import selftest_header
    from .project import write_project
    from .targets import TARGETS

    gone = {f.target.name for f in left_out}
    write_project(tmp, model_name=name, targets=[t for t in TARGETS.values() if t.name not in gone],
                  default_env=tgt.pio_env, selftest_header=selftest_header(emu, vectors), left_out=left_out,
                  library=library)


def _write_library(tmp: Path, names, model_name: str, total_macs: int, arena_bytes: int, emu: Emulator,
                   example, labels, tgt, fits) -> None:
    """lib/NAME's metadata (ESP-IDF component, Arduino and PlatformIO library) and OUT/examples/;
    example: one float input (PyTorch layout, batch axis of 1) for the examples."""
    from . import __version__
    from .emit import graph_external_libraries
    from .library import LibraryInfo, write_examples, write_library
    from .project import BOARD_SUPPORT, env_for

    x = np.asarray(example, dtype=np.float32)
    info = LibraryInfo(names, model_name, __version__, total_macs, arena_bytes, int(np.prod(emu.input_shape)),
                       tuple(o.size for o in emu.outputs), emu.input_layout,
                       labels is not None, x[0], int(np.argmax(emu.predict_all(x, dequantize=False)[0].reshape(-1))),
                       tgt.idf_target or "esp32c3", tuple(graph_external_libraries(emu.graph)))
    lib_dir = tmp / "lib" / names.prefix
    write_library(lib_dir, info)
    arduino = [f for f in fits if getattr(BOARD_SUPPORT.get(f.target.pio_env), "framework", None) == "arduino"]
    envs = [env_for(f.target) for f in arduino if f.fits]    # as the project's platformio.ini has them
    gone = [{"name": f.target.pio_env, "reason": f.reason} for f in arduino if not f.fits]
    write_examples(tmp, info, envs, gone)
