"""Emit C: quantized graph + arena plan -> lib/edgebn_model/{edgebn_model.h, edgebn_ops.h, edgebn_model.c}.

Python decides (shapes, constants, which kernel, where each tensor lives); the Jinja templates hold
all the C: templates/model/ (the model files), templates/ops/ (the macros kernels share) and each
op's kernels in its package (edgebn/ops/<op>/*.c.j2). A layer's template data is its op's
`layer_context` plus the chosen kernel record's `context` (edgebn/kernels.py).
"""
from __future__ import annotations

from pathlib import Path

import jinja2
import numpy as np

from . import __version__
from .fsio import write_text
from .ir import Graph
from .kernels import choose_kernel, kernel_context
from .ops import OPS
from .plan import ArenaPlan
from .resources import ops_dir, templates_dir

__all__ = ["emit_model", "render_model", "layer_contexts"]


def _c_rows(values, per_row: int = 16) -> str:
    vals = [str(int(v)) for v in np.asarray(values).ravel()]
    return ",\n".join("    " + ", ".join(vals[i:i + per_row]) for i in range(0, len(vals), per_row))


def environment() -> jinja2.Environment:
    # "model/...", "ops/_fast.j2" from templates/; "<op>/<kernel>.c.j2" from edgebn/ops/
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(templates_dir()), str(ops_dir())]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["c_rows"] = _c_rows
    env.filters["c_size"] = lambda values: int(np.asarray(values).size)
    return env


def _shape_str(shape) -> str:
    return "x".join(str(d) for d in shape)


def layer_contexts(g: Graph, plan: ArenaPlan, kernels: str = "fast") -> list[dict]:
    """One template context per C layer; `kernels` is the kernel set (edgebn/kernels.py)."""
    layers = []
    for node in g.nodes:
        op = OPS[node.op]
        if op.alias:
            continue
        idx = len(layers)
        p = f"l{idx:02d}"
        choice = choose_kernel(node, g, kernels)
        srcs = []
        for t in node.inputs:
            loc = plan.location(t)
            srcs.append("input" if loc == "input" else f"edgebn_arena + {loc}")
        ctx = {
            "name": node.name, "op": node.op, "template": choice.template, "p": p,
            "template_path": choice.kernel.template,
            "kernel_reason": choice.reason, "fn": f"{p}_{choice.template}_s8", "srcs": srcs, "out_offset": plan.offsets[node.name],
            "out_size": int(np.prod(g.shapes[node.name])), "source": node.source.replace("*/", "* /"),
            "in_shape": _shape_str(g.shapes[node.inputs[0]]), "out_shape": _shape_str(g.shapes[node.name]),
            "act": None,
        }
        ctx.update(op.layer_context(node, g))
        ctx.update(kernel_context(node, g, choice))
        ctx["const_bytes"] = choice.kernel.const_bytes(ctx)
        layers.append(ctx)
    return layers


def render_model(g: Graph, plan: ArenaPlan, model_hash: int, model_name: str, total_macs: int,
                 kernels: str = "fast") -> dict[str, str]:
    env = environment()
    qi, qo = g.qparams[g.inputs[0]], g.qparams[g.outputs[0]]
    layers = layer_contexts(g, plan, kernels)
    ctx = {
        "model_name": model_name, "version": __version__, "layers": layers, "model_hash": model_hash,
        "input_size": int(np.prod(g.shapes[g.inputs[0]])), "output_size": int(np.prod(g.shapes[g.outputs[0]])),
        "input_scale": repr(float(np.float32(qi.scale))), "input_zp": qi.zero_point,
        "output_scale": repr(float(np.float32(qo.scale))), "output_zp": qo.zero_point,
        "arena_bytes": plan.arena_bytes, "output_offset": plan.location(g.outputs[0]),
        "total_macs": total_macs,
        "input_shape_str": _shape_str(g.shapes[g.inputs[0]]), "output_shape_str": _shape_str(g.shapes[g.outputs[0]]),
        "input_layout_note": "HWC" if len(g.shapes[g.inputs[0]]) == 3 else "features",
    }
    if ctx["output_offset"] == "input":  # an identity model: the output aliases the input
        raise ValueError("the model output is its input")
    return {
        "edgebn_model.h": env.get_template("model/edgebn_model.h.j2").render(ctx),
        "edgebn_ops.h": env.get_template("model/edgebn_ops.h.j2").render(ctx),
        "edgebn_model.c": env.get_template("model/edgebn_model.c.j2").render(ctx),
    }


def emit_model(g: Graph, plan: ArenaPlan, model_hash: int, lib_dir: Path, model_name: str,
               total_macs: int, kernels: str = "fast") -> list[Path]:
    lib_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_model(g, plan, model_hash, model_name, total_macs, kernels).items():
        path = lib_dir / name
        write_text(path, text)
        written.append(path)
    return written
