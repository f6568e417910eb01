"""The compiled model on disk: OUT/edgebn.json (graph, shapes, qparams, attributes) and
OUT/edgebn_weights.npz (every integer array, keyed "<node>/<param>"). No torch, no pickle."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from .errors import EdgebnError
from .fsio import save_npz, write_text
from .ir import Graph
from .outcheck import OutError, check_quantized, read_json, read_npz

__all__ = ["FORMAT", "graph_to_json", "graph_record", "write_graph", "save_graph", "load_graph", "model_hash"]

FORMAT = "edgebn/1"
JSON_NAME = "edgebn.json"
WEIGHTS_NAME = "edgebn_weights.npz"
FLOAT_NAME = "edgebn_float.npz"      # the float graph's weights (edgebn.evaluate)


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _tensor_json(shape, qp) -> dict:
    d = {"shape": list(shape), "scale": qp.scale, "zero_point": qp.zero_point}
    if qp.bits != 8:       # int16 tensors only: an int8 model's edgebn.json (and hash) stays as it was
        d["bits"] = qp.bits
    return d


def graph_to_json(g: Graph) -> dict:
    return {
        "inputs": g.inputs, "outputs": g.outputs,
        "torch_layouts": g.torch_layouts,
        "tensors": {t: _tensor_json(s, g.qparams[t]) for t, s in g.shapes.items()},
        "nodes": [{"name": n.name, "op": n.op, "inputs": n.inputs, "attrs": _plain(n.attrs),
                   "params": sorted(n.params), "source": n.source} for n in g.nodes],
        "fold_log": [r.as_dict() for r in g.fold_log],
        "notes": g.notes,
    }


def _weights(g: Graph) -> dict[str, np.ndarray]:
    return {f"{n.name}/{k}": np.ascontiguousarray(v) for n in g.nodes for k, v in sorted(n.params.items())}


def arrays_crc32(arrays: dict[str, np.ndarray], crc: int = 0) -> int:
    """CRC32 over names and bytes of every array, in name order."""
    for k in sorted(arrays):
        crc = zlib.crc32(k.encode(), crc)
        crc = zlib.crc32(np.ascontiguousarray(arrays[k]).tobytes(), crc)
    return crc & 0xFFFFFFFF


def model_hash(doc: dict, weights: dict[str, np.ndarray]) -> int:
    """CRC32 over every field of edgebn.json but the hash itself (canonical JSON: the graph, name,
    target, input shape, the float graph with its weights' own CRC, ...) and every weight array:
    EDGEBN_MODEL_HASH on the device. An integrity check against mixed-up or edited files, not a
    signature: load_graph validates the contents on their own (edgebn.outcheck)."""
    body = {k: v for k, v in doc.items() if k != "model_hash"}
    return arrays_crc32(weights, zlib.crc32(json.dumps(body, sort_keys=True).encode()))


def graph_record(g: Graph, extra: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """(edgebn.json's document with its model_hash, the weight arrays) of a quantized graph: what
    write_graph writes (the hash is known before anything is written)."""
    weights = _weights(g)
    doc = {"format": FORMAT, "model_hash": 0, "model": graph_to_json(g), **(extra or {})}
    doc = json.loads(json.dumps(doc))            # exactly what a reader gets back (tuples -> lists)
    doc["model_hash"] = model_hash(doc, weights)
    return doc, weights


def write_graph(out_dir: Path, doc: dict, weights: dict[str, np.ndarray]) -> None:
    write_text(out_dir / JSON_NAME, json.dumps(doc, indent=1, sort_keys=False))
    save_npz(out_dir / WEIGHTS_NAME, weights)


def save_graph(g: Graph, out_dir: Path, extra: dict | None = None) -> int:
    doc, weights = graph_record(g, extra)
    write_graph(out_dir, doc, weights)
    return doc["model_hash"]


def load_graph(out_dir: Path) -> tuple[Graph, dict]:
    """OUT -> (Graph, edgebn.json document), every file and field checked (edgebn.outcheck)."""
    out_dir = Path(out_dir)
    jpath, wpath = out_dir / JSON_NAME, out_dir / WEIGHTS_NAME
    if not jpath.exists() or not wpath.exists():
        raise EdgebnError(f"{out_dir}: not an edgebn output (missing {JSON_NAME} or {WEIGHTS_NAME})")
    doc = read_json(jpath)
    if doc.get("format") != FORMAT:
        raise OutError(f"{jpath}: format {str(doc.get('format'))[:40]!r}, this edgebn reads {FORMAT!r}")
    h = doc.get("model_hash")
    if type(h) is not int or not 0 <= h < 1 << 32:
        raise OutError(f"{jpath}: model_hash is {str(h)[:40]!r}, not a 32-bit unsigned integer")
    weights = read_npz(wpath)
    if model_hash(doc, weights) != h:
        raise OutError(f"{out_dir}: model hash mismatch: {JSON_NAME} and {WEIGHTS_NAME} do not belong together "
                       "(edited or mixed up, or written by an older edgebn: recompile)")
    return check_quantized(doc, weights, str(jpath)), doc
