"""The compiled model on disk: OUT/edgebn.json (graph, shapes, qparams, attributes) and
OUT/edgebn_weights.npz (every integer array, keyed "<node>/<param>"). No torch, no pickle."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from .errors import EdgebnError
from .fsio import save_npz, write_text
from .ir import FoldRecord, Graph, Node
from .ops import QParams

__all__ = ["FORMAT", "graph_to_json", "save_graph", "load_graph", "model_hash"]

FORMAT = "edgebn/1"
JSON_NAME = "edgebn.json"
WEIGHTS_NAME = "edgebn_weights.npz"


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def graph_to_json(g: Graph) -> dict:
    return {
        "inputs": g.inputs, "outputs": g.outputs,
        "torch_layouts": g.torch_layouts,
        "tensors": {t: {"shape": list(s), "scale": g.qparams[t].scale, "zero_point": g.qparams[t].zero_point}
                    for t, s in g.shapes.items()},
        "nodes": [{"name": n.name, "op": n.op, "inputs": n.inputs, "attrs": _plain(n.attrs),
                   "params": sorted(n.params), "source": n.source} for n in g.nodes],
        "fold_log": [r.as_dict() for r in g.fold_log],
        "notes": g.notes,
    }


def _weights(g: Graph) -> dict[str, np.ndarray]:
    return {f"{n.name}/{k}": np.ascontiguousarray(v) for n in g.nodes for k, v in sorted(n.params.items())}


def model_hash(model_json: dict, weights: dict[str, np.ndarray]) -> int:
    """CRC32 over the canonical model JSON and every weight array: EDGEBN_MODEL_HASH on the device."""
    crc = zlib.crc32(json.dumps(model_json, sort_keys=True).encode())
    for k in sorted(weights):
        crc = zlib.crc32(k.encode(), crc)
        crc = zlib.crc32(np.ascontiguousarray(weights[k]).tobytes(), crc)
    return crc & 0xFFFFFFFF


def save_graph(g: Graph, out_dir: Path, extra: dict | None = None) -> int:
    model = graph_to_json(g)
    weights = _weights(g)
    h = model_hash(model, weights)
    doc = {"format": FORMAT, "model_hash": h, "model": model, **(extra or {})}
    write_text(out_dir / JSON_NAME, json.dumps(doc, indent=1, sort_keys=False))
    save_npz(out_dir / WEIGHTS_NAME, weights)
    return h


def load_graph(out_dir: Path) -> tuple[Graph, dict]:
    out_dir = Path(out_dir)
    jpath, wpath = out_dir / JSON_NAME, out_dir / WEIGHTS_NAME
    if not jpath.is_file() or not wpath.is_file():
        raise EdgebnError(f"{out_dir}: not an edgebn output (missing {JSON_NAME} or {WEIGHTS_NAME})")
    try:
        doc = json.loads(jpath.read_text())
        weights = dict(np.load(wpath, allow_pickle=False))
    except (ValueError, OSError, zipfile_error()) as e:
        raise EdgebnError(f"{out_dir}: corrupt compiled model ({e})") from e
    if doc.get("format") != FORMAT:
        raise EdgebnError(f"{jpath}: format {doc.get('format')!r}, this edgebn reads {FORMAT!r}")
    m = doc["model"]
    if model_hash(m, weights) != doc["model_hash"]:
        raise EdgebnError(f"{out_dir}: model hash mismatch: edgebn.json and the weights do not belong together")
    nodes = [Node(n["name"], n["op"], n["inputs"], n["attrs"],
                  {k: weights[f"{n['name']}/{k}"] for k in n["params"]}, n.get("source", ""))
             for n in m["nodes"]]
    g = Graph(inputs=m["inputs"], outputs=m["outputs"], nodes=nodes,
              shapes={t: tuple(v["shape"]) for t, v in m["tensors"].items()},
              torch_layouts=m["torch_layouts"],
              fold_log=[FoldRecord(**r) for r in m["fold_log"]], notes=m.get("notes", []),
              qparams={t: QParams(v["scale"], v["zero_point"]) for t, v in m["tensors"].items()})
    return g, doc


def zipfile_error():
    import zipfile
    return zipfile.BadZipFile
