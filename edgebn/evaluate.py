"""`edgebn evaluate OUT --inputs X.npy [--labels y.npy] [--model MODEL.pt2] [--json FILE]`:
float vs int8 quality of a compiled model, from OUT alone.

The float graph (after the BatchNorm folds, before quantization) is stored at compile time in
OUT/edgebn_float.npz (float64 weights) and the "float_model" section of OUT/edgebn.json, so no
checkpoint and no torch are needed. Reported:
  * top-1 of float and of int8 (emulator) when labels are given, and their top-1 agreement;
  * logit SQNR (int8 vs float outputs; a model with several outputs gets each one's SQNR, and top-1,
    labels and "logit_sqnr_db" are about output 0);
  * per-layer SQNR, worst first: "isolated" feeds each layer the float values of its inputs
    (quantized with their own scales), so it is that layer's own quantization error; "accumulated"
    is the int8 network run end to end up to that layer.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .artifact import FLOAT_NAME, JSON_NAME, _plain, arrays_crc32
from .bn_stats import SHIFT_WARN, VAR_RATIO_WARN, ShiftCheck
from .errors import EdgebnError, input_file
from .execute import execute, run_float, run_int8
from .fsio import save_npz, write_text
from .ir import FoldRecord, Graph
from .numerics import dequantize, quantize
from .ops import OPS
from .ops.reshape import device_to_torch, torch_to_device
from .report import sqnr_from_powers

__all__ = ["FLOAT_NAME", "float_graph_section", "float_graph_arrays", "float_model_record", "save_float_graph", "load_float_graph", "evaluate",
           "format_evaluation", "evaluate_command"]

CHUNK = 128


# ---------------------------------------------------------------------------------------------
# The float graph on disk

def _json_attr(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _json_attr(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_attr(x) for x in v]
    return _plain(v)


def float_graph_section(g: Graph) -> dict:
    """The JSON part of the float graph (structure and attributes; weights go to edgebn_float.npz)."""
    return {
        "file": FLOAT_NAME,
        "inputs": list(g.inputs), "outputs": list(g.outputs), "torch_layouts": dict(g.torch_layouts),
        "shapes": {t: list(s) for t, s in g.shapes.items()},
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "attrs": _json_attr(n.attrs),
                   "params": sorted(n.params)} for n in g.nodes],
        # each BatchNorm's running statistics (arrays in the .npz under "bn:NAME/...") and where its
        # input is in this graph, for evaluate's distribution-shift check
        "batchnorms": [{"bn": r.bn, "action": r.action, "into": r.into, "reason": r.reason, "tensor": r.tensor,
                        "eps": r.stats["eps"], "module": r.stats.get("module"),
                        "num_batches_tracked": r.stats.get("num_batches_tracked")}
                       for r in g.fold_log if r.stats is not None],
    }


BN_ARRAYS = ("mean", "var", "gamma", "beta")


def float_graph_arrays(g: Graph) -> dict[str, np.ndarray]:
    """The arrays of OUT/edgebn_float.npz: every node's parameters and the BatchNorm statistics."""
    arrays = {f"{n.name}/{k}": np.asarray(v) for n in g.nodes for k, v in n.params.items()}
    arrays.update({f"bn:{r.bn}/{k}": np.asarray(r.stats[k], np.float64)
                   for r in g.fold_log if r.stats is not None for k in BN_ARRAYS})
    return arrays


def float_model_record(g: Graph, arrays: dict) -> dict:
    """edgebn.json's float_model section for those arrays: the weights' CRC sits in edgebn.json, so
    the model hash covers them too."""
    return {**float_graph_section(g), "weights_crc32": arrays_crc32(arrays)}


def save_float_graph(g: Graph, out_dir: Path, arrays: dict | None = None) -> dict:
    """Write OUT/edgebn_float.npz and return its float_model section (arrays: float_graph_arrays(g),
    when the caller made them already, e.g. to put the section in edgebn.json before writing them)."""
    arrays = float_graph_arrays(g) if arrays is None else arrays
    save_npz(Path(out_dir) / FLOAT_NAME, arrays)
    return float_model_record(g, arrays)


def load_float_graph(out_dir) -> Graph:
    """The float graph of OUT, checked like the int8 one (edgebn.outcheck), its weights matched
    against the CRC edgebn.json records for them (which the model hash covers)."""
    from .outcheck import check_float, read_json, read_npz

    out_dir = Path(out_dir)
    doc = read_json(out_dir / JSON_NAME)
    sec = doc.get("float_model")
    if sec is None or not (out_dir / FLOAT_NAME).exists():
        raise EdgebnError(f"{out_dir}: no float graph stored (compiled by an older edgebn); recompile, "
                          "or pass --model MODEL.pt2")
    if not isinstance(sec, dict):
        raise EdgebnError(f"{out_dir / JSON_NAME}: float_model is not an object")
    from .targets import TARGETS

    tgt = TARGETS.get(doc.get("target")) if isinstance(doc.get("target"), str) else None
    ram = max(tgt.ram_bytes, tgt.psram_bytes) if tgt else None
    weights = read_npz(out_dir / FLOAT_NAME, "float weights")
    if sec.get("weights_crc32") != arrays_crc32(weights):
        raise EdgebnError(f"{out_dir / FLOAT_NAME}: does not match the CRC recorded in {JSON_NAME} "
                          "(edited or mixed up, or written by an older edgebn: recompile)")
    g = check_float(sec, weights, f"{out_dir / JSON_NAME} float_model", ram)
    g.fold_log = _bn_records(sec.get("batchnorms", []), weights, g, f"{out_dir / JSON_NAME} float_model")
    return g


def _bn_records(recs, weights: dict, g: Graph, where: str) -> list[FoldRecord]:
    """The BatchNorms' running statistics (for evaluate's distribution-shift check), checked."""
    out = []
    if not isinstance(recs, list):
        raise EdgebnError(f"{where}: batchnorms is not a list")
    for b in recs:
        try:
            arrays = {k: np.asarray(weights[f"bn:{b['bn']}/{k}"], np.float64) for k in BN_ARRAYS}
            c = arrays["mean"].shape
            ok = (len(c) == 1 and all(a.shape == c for a in arrays.values())
                  and (b["tensor"] is None or b["tensor"] in g.shapes)
                  and (b["into"] is None or any(n.name == b["into"] for n in g.nodes))
                  and isinstance(b["eps"], (int, float)))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise EdgebnError(f"{where}: batchnorms entry {str(b)[:80]} does not match the float graph")
        out.append(FoldRecord(str(b["bn"]), str(b["action"]), b["into"], str(b["reason"]), b["tensor"],
                              {"eps": float(b["eps"]), "module": b.get("module"),
                               "num_batches_tracked": b.get("num_batches_tracked"), **arrays}))
    return out


# ---------------------------------------------------------------------------------------------
# Metrics

class _Acc:
    """Streaming SQNR: sums of signal and error power."""

    def __init__(self):
        self.sig = 0.0
        self.err = 0.0

    def add(self, ref, test):
        ref = np.asarray(ref, np.float64)
        self.sig += float(np.sum(ref ** 2))
        self.err += float(np.sum((np.asarray(test, np.float64).reshape(ref.shape) - ref) ** 2))

    def db(self):
        return float(sqnr_from_powers(self.sig, self.err))


def _dq(g: Graph, name: str, q):
    qp = g.qparams[name]
    return dequantize(q, qp.scale, qp.zero_point)


def _torch_float(model_path, x: np.ndarray) -> list[np.ndarray]:
    """The checkpoint's float outputs on x, one array per output (model layout)."""
    import torch

    from .importer import load_program, run_program

    ep = load_program(model_path)        # validated archive; its guards are never built or run
    mod = lambda xb: run_program(ep, xb)  # noqa: E731 - the aten graph, node by node
    outs = []
    step = CHUNK
    with torch.no_grad():
        i = 0
        while i < len(x):
            xb = torch.from_numpy(np.array(x[i:i + step], np.float32))
            try:
                y = mod(xb)
            except Exception as e:  # noqa: BLE001 - a .pt2 exported with a static batch of 1
                if step == 1:
                    raise EdgebnError(f"{model_path}: running the checkpoint failed "
                                      f"({str(e).splitlines()[0]})") from e
                step = 1
                continue
            outs.append([t.numpy().astype(np.float64) for t in (y if isinstance(y, (tuple, list)) else [y])])
            i += len(xb)
    return [np.concatenate(parts) for parts in zip(*outs)]


def evaluate(out_dir, x: np.ndarray, labels: np.ndarray | None = None, model=None) -> dict:
    """Float vs int8 on inputs x (float32, model layout, leading batch axis)."""
    from .emulator import Emulator

    emu = Emulator.load(out_dir)
    fg = load_float_graph(out_dir)
    qg = emu.graph
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise EdgebnError(f"inputs: dtype {x.dtype}, expected float32 in the model's input layout")
    if x.ndim < 2 or len(x) == 0:
        raise EdgebnError(f"inputs: shape {x.shape}; expected a leading batch axis and at least one sample")
    if not np.isfinite(x).all():
        raise EdgebnError("inputs contain NaN or Inf")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(x):
            raise EdgebnError(f"labels: {len(labels)} labels for {len(x)} inputs")
    bn_shift = ShiftCheck(fg)
    layers = [n for n in qg.nodes if not OPS[n.op].alias]
    iso = {n.name: _Acc() for n in layers}
    acc = {n.name: _Acc() for n in layers}
    f_logits, q_logits = [[] for _ in qg.outputs], [[] for _ in qg.outputs]
    # every tensor of a chunk is kept (float64): bound the chunk to ~2e7 values (160 MB)
    per_sample = sum(int(np.prod(sh)) for sh in fg.shapes.values()) + int(np.prod(fg.shapes[fg.inputs[0]]))
    chunk = max(1, min(CHUNK, int(2e7 // max(per_sample, 1))))
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]
        dev = emu.quantize_input(xb)                       # also checks the shape
        fvals = execute(fg, torch_to_device(np.asarray(xb, np.float64)), run_float)
        bn_shift.add(fvals)
        ys, qlayers = emu.run_all(dev, return_layers=True)
        for name, qv in qlayers:
            acc[name].add(fvals[name], _dq(qg, name, qv))
        for n in layers:
            ins = [quantize(fvals[t], qg.qparams[t].scale, qg.qparams[t].zero_point, qg.qparams[t].qmin,
                            qg.qparams[t].qmax) for t in n.inputs]     # an int16 tensor keeps its bounds
            iso[n.name].add(fvals[n.name], _dq(qg, n.name, run_int8(n, ins)))
        for k, (fout, qout, y) in enumerate(zip(fg.outputs, qg.outputs, ys)):
            f_logits[k].append(device_to_torch(fvals[fout], fg.torch_layouts[fout]))
            q_logits[k].append(emu.to_torch_layout(_dq(qg, qout, y), k))
    bn_report = bn_shift.result()
    f_logits = [np.concatenate(f) for f in f_logits]
    q_logits = [np.concatenate(q) for q in q_logits]
    if model is not None:
        f_logits = _torch_float(model, x)
        if [f.shape for f in f_logits] != [q.shape for q in q_logits]:
            raise EdgebnError(f"--model output shapes {[f.shape for f in f_logits]} differ from the compiled "
                              f"model's {[q.shape for q in q_logits]}: not the same model")
    per_output = []
    for k, (f, q) in enumerate(zip(f_logits, q_logits)):
        sq = _Acc()
        sq.add(f, q)
        per_output.append({"index": k, "shape": list(q.shape[1:]), "sqnr_db": sq.db(),
                           "top1_agreement": float(np.mean(f.reshape(len(x), -1).argmax(1)
                                                           == q.reshape(len(x), -1).argmax(1)))})
    # top-1 and labels are about output 0 (a classifier's logits; a detector's class head first)
    f_top = f_logits[0].reshape(len(x), -1).argmax(1)
    q_top = q_logits[0].reshape(len(x), -1).argmax(1)
    res = {
        "n": int(len(x)),
        "float_reference": "checkpoint" if model is not None else "stored float graph",
        "logit_sqnr_db": per_output[0]["sqnr_db"],
        "outputs": per_output,
        "top1_agreement": float(np.mean(f_top == q_top)),
        "float_top1": float(np.mean(f_top == labels)) if labels is not None else None,
        "int8_top1": float(np.mean(q_top == labels)) if labels is not None else None,
        "layers": sorted(({"name": n.name, "op": n.op, "sqnr_isolated_db": iso[n.name].db(),
                           "sqnr_accumulated_db": acc[n.name].db()} for n in layers),
                         key=lambda r: (r["sqnr_isolated_db"], r["sqnr_accumulated_db"])),
        "batchnorms": bn_report,
    }
    return res


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and np.isinf(v):
        return "exact" if v > 0 else "-inf"
    return f"{v:.1f}"


def format_evaluation(r: dict) -> str:
    lines = [f"{r['n']} inputs; float reference: {r['float_reference']}"]
    if r["float_top1"] is not None:
        lines.append(f"top-1  float {100 * r['float_top1']:.2f}%   int8 {100 * r['int8_top1']:.2f}%")
    several = len(r.get("outputs", ())) > 1
    lines.append(f"top-1 agreement int8 vs float {100 * r['top1_agreement']:.2f}%   "
                 f"logit SQNR {_fmt(r['logit_sqnr_db'])} dB" + ("   (output 0)" if several else ""))
    if several:
        for o in r["outputs"]:
            lines.append(f"output {o['index']} {'x'.join(map(str, o['shape']))}: SQNR {_fmt(o['sqnr_db'])} dB, "
                         f"argmax agreement {100 * o['top1_agreement']:.2f}%")
    head = f"{'layer (worst first)':<28} {'op':<11} {'isolated dB':>12} {'accumulated dB':>15}"
    lines += ["", head, "-" * len(head)]
    for l in r["layers"]:
        lines.append(f"{l['name'][:28]:<28} {l['op'][:11]:<11} {_fmt(l['sqnr_isolated_db']):>12} "
                     f"{_fmt(l['sqnr_accumulated_db']):>15}")
    if r.get("batchnorms"):
        lines += ["", "BatchNorm statistics: these inputs' batch statistics of each BN's input vs its running "
                  "statistics", "(mean shift in running std units, avg / max [channel]; batch var / running var, "
                  "median / worst [channel])"]
        head = f"{'BatchNorm':<28} {'batches':>7} {'mean shift':>20} {'var ratio':>22}"
        lines += [head, "-" * len(head)]
        flagged = []
        for b in r["batchnorms"]:
            name = b["module"] or b["bn"]
            nbt = "-" if b["num_batches_tracked"] is None else str(b["num_batches_tracked"])
            shift = f"{b['mean_shift_avg']:.2f} / {b['mean_shift_max']:.2f} [{b['mean_shift_channel']}]"
            ratio = f"{b['var_ratio_median']:.2f} / {b['var_ratio_worst']:.2f} [{b['var_ratio_channel']}]"
            lines.append(f"{name[:28]:<28} {nbt:>7} {shift:>20} {ratio:>22}" + ("  <- shifted" if b["flagged"] else ""))
            if b["flagged"]:
                flagged.append(name)
        if flagged:
            lines.append(f"{len(flagged)} BatchNorm(s) see data unlike the data their statistics came from "
                         f"(mean shift > {SHIFT_WARN} std or variance off by > {VAR_RATIO_WARN:g}x): check the "
                         "input preprocessing, or re-estimate the statistics on representative data and save the "
                         "moving averages after training")
    return "\n".join(lines)


def _jsonable(r: dict) -> dict:
    def f(v):
        if isinstance(v, float) and np.isinf(v):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, dict):
            return {k: f(x) for k, x in v.items()}
        if isinstance(v, list):
            return [f(x) for x in v]
        return v
    return f(r)


def _load_npy(path, what):
    path = input_file(path, what)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - reported as a one-line cause
        raise EdgebnError(f"{path}: cannot read {what} ({str(e).splitlines()[0]})") from e


try:
    import click
except ImportError:  # pragma: no cover - click is a dependency of the CLI
    click = None

if click is not None:
    @click.command("evaluate")
    @click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--inputs", "inputs", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="X.npy: float32 inputs in the model's layout, leading batch axis")
    @click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="y.npy: integer class labels, for top-1")
    @click.option("--model", "model", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="MODEL.pt2: use the checkpoint (torch) as the float reference for outputs")
    @click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="also write the result as JSON to this file")
    def evaluate_command(out_dir, inputs, labels, model, json_path):
        """Float vs int8 accuracy and SQNR of a compiled model (needs only OUT)."""
        try:
            x = _load_npy(inputs, "inputs")
            y = _load_npy(labels, "labels") if labels is not None else None
            r = evaluate(out_dir, x, y, model)
        except EdgebnError as e:
            raise click.ClickException(str(e)) from None
        click.echo(format_evaluation(r))
        if json_path is not None:
            write_text(json_path, json.dumps(_jsonable(r), indent=1))
