"""Activation ranges given to the compiler instead of calibrating (edgebn.qat exports them). No torch.

`edgebn compile ... --ranges FILE.json` (or `edgebn.compile(..., ranges=...)`) takes every tensor's
real range from FILE instead of running calibration, so a quantization-aware-trained model compiles
with exactly the ranges it was trained with. FILE is JSON:

    {"format": "edgebn-ranges/1", "source": "edgebn.qat", "weight_method": "max",
     "ranges": {"<tensor>": [lo, hi], ...}}

Tensor names are edgebn's IR names after the passes: the graph input and every tensor whose
(scale, zero_point) comes from a range (conv, linear, add and table outputs; pools and reshapes keep
their input's). The compiler checks the names are exactly the ones the model needs, so ranges made
for another model are refused. `weight_method`, when present, must match the compile's.
(scale, zero_point) then follow from each range by SPEC.md's formula, as after calibration.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .errors import CalibrationError
from .ir import Graph

__all__ = ["FORMAT", "required_tensors", "ranges_document", "save_ranges", "load_ranges", "check_ranges"]

FORMAT = "edgebn-ranges/1"


class _Recorder(dict):
    """A ranges dict that records which tensors the quantize stage asks for."""

    def __init__(self):
        super().__init__()
        self.asked: list[str] = []

    def __missing__(self, tensor):
        self.asked.append(tensor)
        return (0.0, 1.0)


def required_tensors(graph: Graph) -> list[str]:
    """The tensors whose (scale, zero_point) come from a range, in the order the quantize stage
    reads them (the graph input, then conv/linear/add/table outputs; pools and reshapes reuse
    their input's): exactly what assign_qparams asks for."""
    from .quantize import assign_qparams

    rec = _Recorder()
    assign_qparams(graph, rec)
    return list(dict.fromkeys(rec.asked))


def ranges_document(ranges: dict, weight_method: str = "max", source: str = "edgebn.qat") -> dict:
    return {"format": FORMAT, "source": source, "weight_method": weight_method,
            "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in ranges.items()}}


def save_ranges(path, ranges: dict, weight_method: str = "max", source: str = "edgebn.qat") -> Path:
    path = Path(path)
    path.write_text(json.dumps(ranges_document(ranges, weight_method, source), indent=1) + "\n")
    return path


def load_ranges(obj) -> tuple[dict[str, tuple[float, float]], dict]:
    """A ranges file path, a ranges document (dict with "ranges") or a plain {tensor: (lo, hi)} dict
    -> ({tensor: (lo, hi)}, metadata)."""
    where = "ranges"
    if isinstance(obj, (str, os.PathLike)):
        where = str(obj)
        try:
            obj = json.loads(Path(obj).read_text())
        except OSError as e:
            raise CalibrationError(f"{where}: cannot read ranges file ({e.strerror or e})") from None
        except ValueError as e:
            raise CalibrationError(f"{where}: not a JSON ranges file ({e})") from None
    if not isinstance(obj, dict):
        raise CalibrationError(f"{where}: expected a JSON object of tensor ranges, got {type(obj).__name__}")
    meta: dict = {}
    if "ranges" in obj and isinstance(obj.get("ranges"), dict):
        if obj.get("format") != FORMAT:
            raise CalibrationError(f"{where}: format {obj.get('format')!r}, expected {FORMAT!r}")
        meta = {k: v for k, v in obj.items() if k != "ranges"}
        obj = obj["ranges"]
    out: dict[str, tuple[float, float]] = {}
    for name, r in obj.items():
        try:
            lo, hi = (float(v) for v in r)
        except (TypeError, ValueError):
            raise CalibrationError(f"{where}: range of tensor {name!r} is {r!r}, expected [lo, hi]") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise CalibrationError(f"{where}: range of tensor {name!r} is [{lo}, {hi}], expected finite lo <= hi")
        out[str(name)] = (lo, hi)
    return out, meta


def check_ranges(graph: Graph, ranges: dict, where: str = "ranges") -> dict[str, tuple[float, float]]:
    """The given ranges if they name exactly the tensors `graph` needs, else a CalibrationError."""
    need = required_tensors(graph)
    missing = [t for t in need if t not in ranges]
    extra = sorted(set(ranges) - set(need))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no range for tensor(s) {', '.join(missing[:5])}")
        if extra:
            parts.append(f"unknown tensor(s) {', '.join(extra[:5])}")
        raise CalibrationError(f"{where}: {'; '.join(parts)} (were the ranges made for another model?)")
    return {t: ranges[t] for t in need}
