"""Emit C: quantized graph + arena plan -> the model library's NAME_model.h, NAME_model.c, NAME_ops.h
(file and symbol names from edgebn.library.LibraryNames; SPEC section 4's edgebn_model.h/.c for the
default name "edgebn_model").

Python decides (shapes, constants, which kernel, where each tensor lives); the Jinja templates hold
all the C: templates/model/ (the model files), templates/ops/ (the macros kernels share) and each
op's kernels in its package (edgebn/ops/<op>/*.c.j2). A layer's template data is its op's
`layer_context` plus the chosen kernel record's `context` (edgebn/kernels.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np

from . import __version__
from .fsio import write_text
from .errors import EdgebnError
from .ir import Graph, image_view
from .kernels import choose_external, choose_kernel, kernel_context
from .targets import KERNEL_LIBRARIES
from .library import ARENA_ALIGN, SPEC4_NAME, LibraryNames
from .ops import OPS
from .plan import ArenaPlan
from .resources import ops_dir, templates_dir

__all__ = ["emit_model", "render_model", "layer_contexts", "output_contexts", "c_string", "CodeOnly"]


_INT8_TEXT = np.array([str(i) for i in range(-128, 128)], dtype=object)


def _c_rows(values, per_row: int = 16, cache: dict | None = None) -> str:
    """A constant array's initializer, per_row values a line. Weights are most of a model's C text
    (int8: one table lookup per value instead of a str() call). cache: {array bytes: text} shared by
    the renders of one compile (the two libraries and the code-only render format each array once)."""
    v = np.asarray(values).ravel()
    if cache is None:
        return _format_rows(v, per_row)
    key = (v.dtype.str, per_row, v.tobytes())
    text = cache.get(key)
    if text is None:
        text = cache[key] = _format_rows(v, per_row)
    return text


def _format_rows(v: np.ndarray, per_row: int) -> str:
    if v.dtype == np.int8:
        text = _INT8_TEXT[v.astype(np.int16) + 128]
    else:
        text = np.array([str(x) for x in v.tolist()], dtype=object)
    full = len(text) - len(text) % per_row
    lines = ["    " + ", ".join(row) for row in text[:full].reshape(-1, per_row).tolist()]
    if full < len(text):
        lines.append("    " + ", ".join(text[full:].tolist()))
    return ",\n".join(lines)


def _c_float_rows(values, per_row: int = 8) -> str:
    """float32 values as C float literals that parse back to the same float32 (shortest float64 repr
    of each float32 value)."""
    vals = [repr(float(v)) + "f" for v in np.asarray(values, dtype=np.float32).ravel()]
    return ",\n".join("    " + ", ".join(vals[i:i + per_row]) for i in range(0, len(vals), per_row))


def c_string(text: str) -> str:
    """A C string literal holding `text` (UTF-8; quotes, backslashes, control bytes escaped)."""
    out = []
    for b in str(text).encode("utf-8"):
        ch = chr(b)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= b < 127 and ch != "?":
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


class CodeOnly:
    """A code-only render: every integer table of at least MIN_VALUES values (the weights, the fast
    kernels' per-column and per-window bias tables) is declared `extern` instead of defined, and its
    bytes are counted here. The kernels index those tables with run-time indices, so the compiler
    emits the same code and frames for them whatever their values: edgebn.stack measures stack and
    code size on this render without compiling megabytes of initializers. Shorter tables stay
    defined: the compiler folds a short constant table into immediates (an add's [m0, hk, rs], the
    weights of a small depthwise layer it unrolls completely), which changes frames.
    tests/test_stack_code_only.py holds the frames equal to the full render's."""

    MIN_VALUES = 1024

    def __init__(self) -> None:
        self.bytes = 0
        self.arrays = 0

    def __call__(self, values) -> bool:
        if not self.omitted(values):
            return False
        self.bytes += int(np.asarray(values).nbytes)
        self.arrays += 1
        return True

    def omitted(self, values) -> bool:
        """Whether a table's values are left out, without counting its bytes: the tables of an outside
        library's kernels (ESP-NN), which the host build never compiles (their #if branch is off there)
        and which replace the counted ones on a board whose build enables them."""
        v = np.asarray(values)
        return v.dtype.kind in "iu" and v.size >= self.MIN_VALUES


class _MemoryBytecodeCache(jinja2.BytecodeCache):
    """Compiled templates shared by every environment of the process (a compile renders the model
    three times, each with its own filters); jinja keys them by template name and source checksum."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = _MemoryBytecodeCache()


def environment(code_only: CodeOnly | None = None, rows_cache: dict | None = None) -> jinja2.Environment:
    # "model/...", "ops/_fast.j2" from templates/; "<op>/<kernel>.c.j2" from edgebn/ops/
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(templates_dir()), str(ops_dir())]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, bytecode_cache=_BYTECODE)
    env.filters["c_rows"] = _c_rows if rows_cache is None else (lambda values: _c_rows(values, cache=rows_cache))
    env.filters["c_extern"] = code_only if code_only is not None else (lambda values: False)
    env.filters["c_extern_alt"] = code_only.omitted if code_only is not None else (lambda values: False)
    env.filters["c_size"] = lambda values: int(np.asarray(values).size)
    env.filters["c_string"] = c_string
    env.filters["c_float_rows"] = _c_float_rows
    return env


def _shape_str(shape) -> str:
    return "x".join(str(d) for d in shape)


def layer_contexts(g: Graph, plan: ArenaPlan, kernels: str = "fast", isa=None) -> list[dict]:
    """One template context per C layer; `kernels` is the kernel set (edgebn/kernels.py), `isa` the
    target's instruction set (edgebn.targets.Isa or its name; None: no ISA-specific kernels)."""
    layers = []
    owners: dict[tuple, str] = {}     # (kernel, shape class, outside libraries) -> the owning layer's prefix
    for node in g.nodes:
        op = OPS[node.op]
        if op.alias:
            continue
        idx = len(layers)
        p = f"l{idx:02d}"
        choice = choose_kernel(node, g, kernels, isa)
        srcs = []
        for t in node.inputs:
            loc = plan.location(t)
            srcs.append("input" if loc == "input" else f"arena + {loc}")
        ctx = {
            "name": node.name, "op": node.op, "template": choice.template, "p": p,
            "template_path": choice.kernel.template,
            "kernel_reason": choice.reason, "fn": f"{p}_{choice.template}_s{int(node.attrs.get('bits', 8))}",
            "srcs": srcs, "out_offset": plan.offsets[node.name],
            "out_size": int(np.prod(g.shapes[node.name])), "out_bytes": plan.sizes[node.name], "source": node.source.replace("*/", "* /"),
            "in_shape": _shape_str(g.shapes[node.inputs[0]]), "out_shape": _shape_str(g.shapes[node.name]),
            "act": None,
        }
        base = {**ctx, **op.layer_context(node, g)}
        ctx = {**base, **kernel_context(node, g, choice)}
        ctx["const_bytes"] = choice.kernel.const_bytes(ctx)
        # outside kernel libraries (ESP-NN): their own context from the op's, compiled instead of the
        # kernel above when the user's build enables the library
        ctx["external"] = []
        for lib, ext in choose_external(node, g).items():
            ectx = {**base, "kernel_reason": ext.reason, "template_path": ext.kernel.template,
                    **kernel_context(node, g, ext)}
            ctx["external"].append({"library": lib, "macro": KERNEL_LIBRARIES[lib].macro, "layer": ectx,
                                    "scratch": bool(ectx.get("esp_nn_scratch", False))})
        if choice.kernel.shared is not None:
            # the first layer of a shape class defines its helper functions, the later ones call them;
            # layers with outside kernels are apart (their helpers sit in the same #if branches)
            shape = choice.kernel.shared(ctx)
            key = (choice.kernel.name, json.dumps(shape, sort_keys=True, default=int), tuple(e["library"] for e in ctx["external"]))
            owner = owners.setdefault(key, p)
            ctx["shared"] = {**shape, "p": owner, "owner": owner == p}
        layers.append(ctx)
    return layers


def graph_external_libraries(g: Graph) -> list[dict]:
    """The outside kernel libraries the graph's layers can call (for the library's build files):
    each KERNEL_LIBRARIES record's fields and how many layers call it."""
    counts: dict[str, int] = {}
    for node in g.nodes:
        if not OPS[node.op].alias:
            for lib in choose_external(node, g):
                counts[lib] = counts.get(lib, 0) + 1
    return [{**vars(KERNEL_LIBRARIES[lib]), "ident": lib.replace("-", "_"), "layers": n} for lib, n in counts.items()]


def external_libraries(layers: list[dict]) -> list[dict]:
    """The outside kernel libraries some layer can call, each with its macro, header and whether some
    layer asks it for scratch memory."""
    out = {}
    for layer in layers:
        for ext in layer["external"]:
            lib = KERNEL_LIBRARIES[ext["library"]]
            e = out.setdefault(lib.name, {"name": lib.name, "macro": lib.macro, "header": lib.header,
                                          "component": lib.component, "version": lib.version,
                                          "layers": 0, "scratch": False})
            e["layers"] += 1
            e["scratch"] = e["scratch"] or ext["scratch"]
    return list(out.values())


def _dims(shape) -> dict:
    """Device shape without batch -> the C, H, W of the shape macros (1-D: 1 x L, features: 1 x 1 x F)."""
    h, w, c = image_view(shape)
    return {"C": c, "H": h, "W": w}


def output_contexts(g: Graph, plan: ArenaPlan) -> list[dict]:
    """One template context per model output, in the model's order. A single-output model keeps
    SPEC section 4's names (`output`, NAME_dequantize_output, NAME_argmax); with several, output k is
    `outputk`, NAME_dequantize_outputk, NAME_argmax_outputk. `offset` is its place in the packed
    outputs (NAME_OUTPUT_ARGS), `location` where its bytes are after the run (an arena offset, or
    "input" when the model returns its input)."""
    several = len(g.outputs) > 1
    outs, offset = [], 0
    for k, t in enumerate(g.outputs):
        q, size = g.qparams[t], int(np.prod(g.shapes[t]))
        outs.append({
            "index": k, "arg": f"output{k}" if several else "output", "fn": str(k) if several else "",
            "argmax": f"argmax_output{k}" if several else "argmax",
            "size": size, "offset": offset, "location": plan.location(t),
            "scale": repr(float(np.float32(q.scale))), "zp": q.zero_point,
            "shape_str": _shape_str(g.shapes[t]), "dims": _dims(g.shapes[t]),
            "layout": g.torch_layouts.get(t, "NF"),
        })
        offset += size
    return outs


def render_model(g: Graph, plan: ArenaPlan, model_hash: int, model_name: str, total_macs: int,
                 kernels: str = "fast", names: LibraryNames | None = None, labels=None,
                 arena_in_psram: bool = False, target_name: str = "target", isa=None,
                 code_only: CodeOnly | None = None, rows_cache: dict | None = None) -> dict[str, str]:
    """The library's C files {file name: text}. names: the C prefix and file names (default: SPEC
    section 4's edgebn_model); labels: one class label per output element, or None. code_only: a
    CodeOnly, for a render whose int8 tables are extern (not a library: for edgebn.stack);
    rows_cache: a dict shared by several renders of one model (see _c_rows)."""
    names = names or LibraryNames.for_name(SPEC4_NAME)
    env = environment(code_only, rows_cache)
    qi = g.qparams[g.inputs[0]]
    layers = layer_contexts(g, plan, kernels, isa)
    outputs = output_contexts(g, plan)
    if labels is not None and len(labels) != outputs[0]["size"]:
        where = "outputs" if len(outputs) == 1 else "elements of output 0"
        raise EdgebnError(f"{len(labels)} labels for {outputs[0]['size']} {where}: give one label per output element")
    ctx = {
        "model_name": model_name, "version": __version__, "layers": layers, "model_hash": model_hash,
        "p": names.prefix, "P": names.macro, "base": names.base, "ops_header": names.ops_header,
        "prefix": names.prefix,
        "input_size": int(np.prod(g.shapes[g.inputs[0]])),
        "input_scale": repr(float(np.float32(qi.scale))), "input_zp": qi.zero_point,
        "outputs": outputs, "outputs_bytes": sum(o["size"] for o in outputs),
        "arena_bytes": plan.arena_bytes,
        "arena_align": ARENA_ALIGN, "arena_in_psram": arena_in_psram, "target_name": target_name,
        "total_macs": total_macs,
        # C helpers some ops need (softmax's fixed point), once each, in the ops header
        "c_helpers": sorted({OPS[n.op].c_helpers for n in g.nodes if OPS[n.op].c_helpers}),
        "external_libraries": external_libraries(layers),
        "input_shape_str": _shape_str(g.shapes[g.inputs[0]]),
        "input_layout_note": "HWC" if len(g.shapes[g.inputs[0]]) == 3 else "features",
        "input_layout": g.torch_layouts.get(g.inputs[0], "NF"),
        "input_dims": _dims(g.shapes[g.inputs[0]]),
        "labels": [c_string(label) for label in labels] if labels is not None else None,
    }
    return {
        names.header: env.get_template("model/edgebn_model.h.j2").render(ctx),
        names.ops_header: env.get_template("model/edgebn_ops.h.j2").render(ctx),
        names.source: env.get_template("model/edgebn_model.c.j2").render(ctx),
    }


def emit_model(g: Graph, plan: ArenaPlan, model_hash: int, lib_dir: Path, model_name: str,
               total_macs: int, kernels: str = "fast", names: LibraryNames | None = None, labels=None,
               arena_in_psram: bool = False, target_name: str = "target", isa=None,
               rows_cache: dict | None = None) -> list[Path]:
    lib_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_model(g, plan, model_hash, model_name, total_macs, kernels, names, labels,
                                   arena_in_psram, target_name, isa, rows_cache=rows_cache).items():
        path = lib_dir / name
        write_text(path, text)
        written.append(path)
    return written
