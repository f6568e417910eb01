"""Reading OUT back safely: edgebn.json and the .npz weight files are checked before anything uses them.

An OUT folder is data someone may have edited or crafted. Everything `emulate`, `evaluate`, `bench`,
`compare` and `flash` read from it passes through here first, and every problem is one EdgebnError
naming the file and the field, never a KeyError / RecursionError / EOFError from deep inside:

  * files: regular files only, edgebn.json at most 64 MiB, JSON nested at most 32 levels;
  * npz: a zip of `.npy` members only, at most 100,000 of them, each member's declared and actual
    (decompressed, read with a cap) size at most 256 MiB and 512 MiB together, no pickles;
  * the graph: known ops, names that are plain identifiers (they become C string literals), inputs
    that exist before they are used, integer shapes with every activation no larger than the
    target's RAM (a tensor that cannot fit the arena can never run), quantization scales finite and
    > 0, zero points in int8 range, every listed weight present with an integer dtype (the float
    per-channel scales finite and > 0), float weights finite and at most 1e15 in magnitude;
  * the model name: what `compile` writes (letters, digits, `_ . + -`, at most 64), since it goes into
    C comments, platformio.ini and the report.
No torch: the emulator and the device side use this module.
"""
from __future__ import annotations

import io
import json
import math
import re
import stat
import zipfile
from pathlib import Path

import numpy as np

from .errors import EdgebnError
from .ir import MAX_OUTPUTS
from .pt2 import nests_deeper, read_member_capped

__all__ = ["LIMITS", "read_json", "read_npz", "check_model_name", "safe_model_name", "check_quantized",
           "check_float", "OutError"]

MiB = 1 << 20
LIMITS = {
    "json_bytes": 64 * MiB,
    "json_depth": 32,
    "nodes": 100_000,
    "npz_members": 100_000,
    "npz_member_bytes": 256 * MiB,
    "npz_total_bytes": 512 * MiB,
    "float_weight_abs": 1e15,
    "rank": 4,
    "outputs": MAX_OUTPUTS,
}

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}")
_LAYOUTS = {"NCDHW", "NCHW", "NCL", "NF"}


class OutError(EdgebnError):
    """A compiled model on disk that edgebn does not accept."""


def safe_model_name(raw: str) -> str:
    """The name `compile` records: RAW with anything but letters, digits and `_ . + -` replaced by '_'."""
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", str(raw))[:64] or "model"
    return name if _NAME.fullmatch(name) else "_" + name[:63]


def check_model_name(name, where: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise OutError(f"{where}: model name {str(name)[:80]!r} is not letters, digits and _ . + - "
                       "(at most 64); edgebn writes it into C comments and platformio.ini")
    return name


def _regular(path: Path, what: str) -> int:
    try:
        st = path.stat()
    except OSError as e:
        raise OutError(f"{path}: cannot read {what} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise OutError(f"{path}: {what} is not a regular file")
    if st.st_size == 0:
        raise OutError(f"{path}: {what} is an empty file")
    return st.st_size


def read_json(path: Path, what: str = "the compiled model") -> dict:
    size = _regular(path, what)
    if size > LIMITS["json_bytes"]:
        raise OutError(f"{path}: {size:,} bytes, more than the {LIMITS['json_bytes']:,} edgebn reads for {what}")
    try:
        doc = json.loads(path.read_bytes())
    except RecursionError:
        raise OutError(f"{path}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise OutError(f"{path}: not valid JSON ({e})") from None
    if nests_deeper(doc, LIMITS["json_depth"]):
        raise OutError(f"{path}: JSON nested more than {LIMITS['json_depth']} levels")
    if not isinstance(doc, dict):
        raise OutError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


def read_npz(path: Path, what: str = "weights") -> dict[str, np.ndarray]:
    """Every array of an .npz, with the member count and each member's size checked before (declared)
    and while (actual) it is decompressed; never a pickle."""
    _regular(path, what)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise OutError(f"{path}: {what} are not an .npz archive ({e})") from None
    out: dict[str, np.ndarray] = {}
    total = 0
    with zf:
        infos = zf.infolist()
        if len(infos) > LIMITS["npz_members"]:
            raise OutError(f"{path}: {len(infos):,} members, more than {LIMITS['npz_members']:,}")
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or name[:-4] in out or "\x00" in name:
                raise OutError(f"{path}: unexpected member {name[:80]!r} (an .npz holds unique NAME.npy arrays)")
            cap = min(LIMITS["npz_member_bytes"], LIMITS["npz_total_bytes"] - total)
            try:
                buf = read_member_capped(zf, info, cap, lambda why: OutError(f"{path}: member {name[:80]!r} {why}"))
                arr = np.lib.format.read_array(io.BytesIO(buf), allow_pickle=False)
            except OutError:
                raise
            except Exception as e:  # noqa: BLE001 - zlib, CRC, header and pickle refusals: one line
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise OutError(f"{path}: member {name[:80]!r} is corrupt ({first})") from None
            total += len(buf)
            out[name[:-4]] = arr
    return out


# ---------------------------------------------------------------------------------------------
# Field checks

def _get(d: dict, key: str, types, where: str):
    if not isinstance(d, dict) or key not in d:
        raise OutError(f"{where}: missing {key!r}")
    v = d[key]
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, types) or (type(v) is bool and bool not in types):
        raise OutError(f"{where}: {key!r} is {type(v).__name__}, expected {'/'.join(t.__name__ for t in types)}")
    return v


def _ident(v, where: str) -> str:
    if not isinstance(v, str) or not _IDENT.fullmatch(v):
        raise OutError(f"{where}: name {str(v)[:80]!r} is not an identifier")
    return v


def _shape(v, where: str, ram: int | None) -> tuple[int, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= LIMITS["rank"] or \
            not all(type(d) is int and 1 <= d <= (1 << 31) for d in v):
        raise OutError(f"{where}: shape {str(v)[:80]} is not 1 to {LIMITS['rank']} positive integers")
    size = math.prod(v)
    if ram is not None and size > ram:
        raise OutError(f"{where}: shape {v} holds {size:,} int8 values, more than the target's {ram:,} bytes of RAM (PSRAM included)")
    return tuple(v)


def _plain_attr(v, where: str, depth: int = 0):
    if depth > 8:
        raise OutError(f"{where}: attribute nested too deeply")
    if isinstance(v, dict):
        for k, x in v.items():
            _plain_attr(x, f"{where}.{k}", depth + 1)
    elif isinstance(v, list):
        for x in v:
            _plain_attr(x, where, depth + 1)
    elif not isinstance(v, (int, float, str, bool, type(None))):
        raise OutError(f"{where}: attribute of type {type(v).__name__}")


def _graph_nodes(sec: dict, where: str, shapes: dict, weights: dict, integer: bool) -> list[tuple]:
    """(name, op, inputs, attrs, params) per node, checked: known op, identifiers, topological inputs,
    every param present with the right kind of dtype."""
    from .ops import OPS

    nodes = _get(sec, "nodes", list, where)
    if len(nodes) > LIMITS["nodes"]:
        raise OutError(f"{where}: {len(nodes):,} nodes, more than {LIMITS['nodes']:,}")
    inputs = _get(sec, "inputs", list, where)
    outputs = _get(sec, "outputs", list, where)
    if len(inputs) != 1 or not 1 <= len(outputs) <= LIMITS["outputs"]:
        raise OutError(f"{where}: {len(inputs)} inputs and {len(outputs)} outputs; edgebn models have one input "
                       f"and 1 to {LIMITS['outputs']} outputs")
    known = {_ident(inputs[0], f"{where} inputs")}
    out = []
    for i, n in enumerate(nodes):
        w = f"{where} nodes[{i}]"
        name = _ident(_get(n, "name", str, w), w)
        op = _get(n, "op", str, w)
        if op not in OPS:
            raise OutError(f"{w} ({name}): unknown op {op[:40]!r}; this edgebn knows {', '.join(sorted(OPS))}")
        ins = _get(n, "inputs", list, w)
        for t in ins:
            if t not in known:
                raise OutError(f"{w} ({name}): input {str(t)[:60]!r} is not computed before it")
        if name in known:
            raise OutError(f"{w}: {name!r} is defined twice")
        known.add(name)
        if name not in shapes:
            raise OutError(f"{w} ({name}): no shape recorded for its output")
        attrs = _get(n, "attrs", dict, w)
        _plain_attr(attrs, f"{w} ({name}) attrs")
        params = {}
        for k in _get(n, "params", list, w):
            key = f"{name}/{k}"
            if not isinstance(k, str) or key not in weights:
                raise OutError(f"{w} ({name}): weight {str(k)[:40]!r} is not in the weights file")
            arr = weights[key]
            if arr.dtype.kind == "f":
                if not np.isfinite(arr).all() or (arr.size and float(np.max(np.abs(arr))) > LIMITS["float_weight_abs"]):
                    raise OutError(f"{w} ({name}): weight {k!r} has NaN/Inf or values beyond "
                                   f"±{LIMITS['float_weight_abs']:g}")
                if integer and not k.endswith("scale"):
                    raise OutError(f"{w} ({name}): weight {k!r} has dtype {arr.dtype}; the int8 model stores integers")
                if integer and arr.size and float(np.min(arr)) <= 0:
                    raise OutError(f"{w} ({name}): {k!r} has a scale <= 0")
            elif arr.dtype.kind not in "iu" or (not integer and arr.dtype.kind not in "iuf"):
                raise OutError(f"{w} ({name}): weight {k!r} has dtype {arr.dtype}")
            params[k] = arr
        out.append((name, op, list(ins), attrs, params, n.get("source", "") if integer else ""))
    for k, t in enumerate(outputs):
        if not isinstance(t, str) or t not in known:
            raise OutError(f"{where}: output {k} {str(t)[:60]!r} is not computed")
    layouts = _get(sec, "torch_layouts", dict, where)
    for t in (inputs[0], *outputs):
        if layouts.get(t) not in _LAYOUTS:
            raise OutError(f"{where}: torch layout of {t!r} is {str(layouts.get(t))[:20]!r}, not one of {sorted(_LAYOUTS)}")
    return out


def _check_output_shapes(g, where: str) -> None:
    """Each node's recorded shape is what its op computes from its inputs and attributes."""
    from .ops import OPS

    for n in g.nodes:
        try:
            want = tuple(int(d) for d in OPS[n.op].output_shape(n, [g.shapes[t] for t in n.inputs]))
        except Exception as e:  # noqa: BLE001 - tampered attributes: one line naming the node
            raise OutError(f"{where}: node {n.name!r} ({n.op}): attributes do not fit the op "
                           f"({type(e).__name__}: {str(e)[:80]})") from None
        if want != tuple(g.shapes[n.name]):
            raise OutError(f"{where}: node {n.name!r} ({n.op}) records shape {list(g.shapes[n.name])}, "
                           f"its op computes {list(want)}")


def _check_widths(g, where: str) -> None:
    """The model's input and output are int8 (the C API's types); a node that computes its output at
    a width (attrs "bits", 8 when absent) records it on its tensor too."""
    from .ops import OPS

    for t in (g.inputs[0], *g.outputs):
        if g.qparams[t].bits != 8:
            raise OutError(f"{where}: tensor {t!r} is the model's input or output and is int{g.qparams[t].bits}, not int8")
    for n in g.nodes:
        bits = n.attrs.get("bits", 8)
        if OPS[n.op].alias or OPS[n.op].output_qparams == "input" and "bits" not in n.attrs:
            bits = g.qparams[n.inputs[0]].bits
        if bits != g.qparams[n.name].bits:
            raise OutError(f"{where}: node {n.name!r} ({n.op}) computes int{bits}, its tensor records "
                           f"int{g.qparams[n.name].bits}")


def check_quantized(doc: dict, weights: dict, where: str):
    """edgebn.json's document + its weights -> (Graph, target RAM); raises OutError."""
    from .ir import FoldRecord, Graph, Node
    from .ops import QParams
    from .targets import TARGETS

    target = _get(doc, "target", str, where)
    if target not in TARGETS:
        raise OutError(f"{where}: unknown target {target[:40]!r}")
    ram = max(TARGETS[target].ram_bytes, TARGETS[target].psram_bytes)   # the arena may live in PSRAM
    check_model_name(_get(doc, "name", str, where), where)
    if "library" in doc:       # the C prefix of lib/NAME (compile --name): a lowercase C identifier
        from .library import check_name
        try:
            check_name(doc["library"])
        except EdgebnError as e:
            raise OutError(f"{where}: library {str(doc['library'])[:60]!r} refused ({e})") from None
    m = _get(doc, "model", dict, where)
    mw = f"{where} model"
    tensors = _get(m, "tensors", dict, mw)
    shapes, qparams = {}, {}
    for t, v in tensors.items():
        tw = f"{mw} tensor {str(t)[:60]!r}"
        _ident(t, tw)
        shapes[t] = _shape(_get(v, "shape", list, tw), tw, ram)
        scale = _get(v, "scale", (int, float), tw)
        zp = _get(v, "zero_point", int, tw)
        if not (math.isfinite(scale) and scale > 0):
            raise OutError(f"{tw}: scale {scale} must be finite and > 0")
        bits = v.get("bits", 8)
        if type(bits) is not int or bits not in (8, 16):
            raise OutError(f"{tw}: bits {str(bits)[:20]!r}, not 8 or 16")
        if bits == 16 and zp != 0:
            raise OutError(f"{tw}: int16 tensor with zero point {zp} (int16 activations are symmetric, zero point 0)")
        if not -128 <= zp <= 127:
            raise OutError(f"{tw}: zero point {zp} is outside int8 [-128, 127]")
        qparams[t] = QParams(float(scale), zp, bits)
    nodes = []
    for name, op, ins, attrs, params, source in _graph_nodes(m, mw, shapes, weights, integer=True):
        if not isinstance(source, str) or len(source) > 2000:
            raise OutError(f"{mw} node {name!r}: source is not a string of at most 2000 characters")
        nodes.append(Node(name, op, ins, attrs, params, source))
    fold_log = []
    for i, r in enumerate(_get(m, "fold_log", list, mw)):
        rw = f"{mw} fold_log[{i}]"
        if not isinstance(r, dict) or set(r) != {"bn", "action", "into", "reason"} or \
                not all(isinstance(r[k], str) for k in ("bn", "action", "reason")) or \
                not isinstance(r["into"], (str, type(None))):
            raise OutError(f"{rw}: expected bn/action/into/reason strings")
        fold_log.append(FoldRecord(**r))
    notes = m.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(s, str) for s in notes):
        raise OutError(f"{mw}: notes is not a list of strings")
    g = Graph(inputs=list(m["inputs"]), outputs=list(m["outputs"]), nodes=nodes, shapes=shapes,
              torch_layouts=dict(m["torch_layouts"]), fold_log=fold_log, notes=list(notes), qparams=qparams)
    if set(shapes) != {g.inputs[0], *(n.name for n in nodes)}:
        raise OutError(f"{mw}: tensors do not match the graph's input and nodes")
    _check_output_shapes(g, mw)
    _check_widths(g, mw)
    tis = _get(doc, "torch_input_shape", list, where)
    if not all(type(d) is int and d > 0 for d in tis) or math.prod(tis) != math.prod(shapes[g.inputs[0]]):
        raise OutError(f"{where}: torch_input_shape {str(tis)[:60]} does not match the input {list(shapes[g.inputs[0]])}")
    return g


def check_float(sec: dict, weights: dict, where: str, ram: int | None = None):
    """The float_model section + edgebn_float.npz -> Graph; raises OutError."""
    from .ir import Graph, Node

    raw = _get(sec, "shapes", dict, where)
    shapes = {_ident(t, where): _shape(s, f"{where} shape of {t!r}", ram) for t, s in raw.items()}
    nodes = [Node(name, op, ins, attrs, params)
             for name, op, ins, attrs, params, _ in _graph_nodes(sec, where, shapes, weights, integer=False)]
    g = Graph(inputs=list(sec["inputs"]), outputs=list(sec["outputs"]), nodes=nodes, shapes=shapes,
              torch_layouts=dict(sec["torch_layouts"]))
    _check_output_shapes(g, where)
    return g
