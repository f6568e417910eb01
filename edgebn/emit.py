"""Emit C: quantized graph + arena plan -> lib/edgebn_model/{edgebn_model.h, edgebn_ops.h, edgebn_model.c}.

Python decides (shapes, constants, which template, where each tensor lives); the Jinja templates in
templates/ hold all the C. Each op's layer context is built by one function in `LAYER_CONTEXT`.
"""
from __future__ import annotations

from pathlib import Path

import jinja2
import numpy as np

from . import __version__
from .fsio import write_text
from .ir import Graph, Node, image_view
from .kernels import choose_kernel, kernel_context
from .ops import OPS
from .plan import ArenaPlan
from .resources import templates_dir

__all__ = ["emit_model", "render_model", "layer_contexts"]


def _c_rows(values, per_row: int = 16) -> str:
    vals = [str(int(v)) for v in np.asarray(values).ravel()]
    return ",\n".join("    " + ", ".join(vals[i:i + per_row]) for i in range(0, len(vals), per_row))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["c_rows"] = _c_rows
    env.filters["c_size"] = lambda values: int(np.asarray(values).size)
    return env


def _act_label(node: Node) -> str | None:
    act = node.attrs.get("act")
    return act.get("name") if act else None


def _conv(node: Node, g: Graph) -> dict:
    a = node.attrs
    h, w, cin = image_view(g.shapes[node.inputs[0]])
    oh, ow, cout = image_view(g.shapes[node.name])
    _, kh, kw, cg = node.params["weight"].shape
    groups = a["groups"]
    return {
        "c": dict(H=h, W=w, CIN=cin, OH=oh, OW=ow, COUT=cout, KH=kh, KW=kw, SH=a["stride"][0],
                  SW=a["stride"][1], PT=a["padding"][0], PL=a["padding"][1], DH=a["dilation"][0],
                  DW=a["dilation"][1], GROUPS=groups, CG=cg, OG=cout // groups, INPUT_OFFSET=-a["zp_in"],
                  ZP_OUT=a["zp_out"], ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]),
        "weight": node.params["weight"], "bias": node.params["bias"], "m0": node.params["m0"],
        "shift": node.params["shift"], "acc_bound": a["acc_bound"], "act": _act_label(node),
    }


def _linear(node: Node, g: Graph) -> dict:
    a = node.attrs
    out_f, in_f = node.params["weight"].shape
    return {
        "c": dict(IN=in_f, OUT=out_f, INPUT_OFFSET=-a["zp_in"], ZP_OUT=a["zp_out"], ACT_MIN=a["act_min"],
                  ACT_MAX=a["act_max"]),
        "weight": node.params["weight"], "bias": node.params["bias"], "m0": node.params["m0"],
        "shift": node.params["shift"], "acc_bound": a["acc_bound"], "act": _act_label(node),
    }


def _pool(node: Node, g: Graph) -> dict:
    a = node.attrs
    h, w, c = image_view(g.shapes[node.inputs[0]])
    oh, ow = a["out_hw"]
    return {"c": dict(H=h, W=w, C=c, OH=oh, OW=ow, KH=a["kernel"][0], KW=a["kernel"][1], SH=a["stride"][0],
                      SW=a["stride"][1], PT=a["padding"][0], PL=a["padding"][1], ZP=a["zp"],
                      INCLUDE_PAD=int(bool(a.get("count_include_pad", False))),
                      ACT_MIN=a["act_min"], ACT_MAX=a["act_max"])}


def _add(node: Node, g: Graph) -> dict:
    a = node.attrs
    return {"c": dict(SIZE=int(np.prod(g.shapes[node.name])), LEFT_SHIFT=a["left_shift"], ZP1=a["zp1"],
                      ZP2=a["zp2"], M1=a["m1"], S1=a["s1"], M2=a["m2"], S2=a["s2"], MO=a["mo"], SO=a["so"],
                      ZP_OUT=a["zp_out"], ACT_MIN=a["act_min"], ACT_MAX=a["act_max"]),
            "act": _act_label(node)}


def _lut(node: Node, g: Graph) -> dict:
    return {"c": dict(SIZE=int(np.prod(g.shapes[node.name]))), "lut": node.params["lut"],
            "fn_name": node.attrs["fn"]}


def _cat(node: Node, g: Graph) -> dict:
    shape = image_view(g.shapes[node.name])
    parts, offset = [], 0
    for i, t in enumerate(node.inputs):
        ch = image_view(g.shapes[t])[2]
        parts.append({"channels": ch, "offset": offset, "copy": node.attrs["copy"][i],
                      "lut": node.params["luts"][i]})
        offset += ch
    return {"c": dict(PIXELS=shape[0] * shape[1], COUT=shape[2]), "parts": parts}


def _pad(node: Node, g: Graph) -> dict:
    h, w, c = image_view(g.shapes[node.inputs[0]])
    oh, ow, _ = image_view(g.shapes[node.name])
    pt, pl, _, _ = node.attrs["padding"]
    return {"c": dict(H=h, W=w, C=c, OH=oh, OW=ow, PT=pt, PL=pl, ZP=node.attrs["zp"])}


def _permute(node: Node, g: Graph) -> dict:
    index = node.params["index"]
    return {"c": dict(SIZE=int(index.size)), "index": index,
            "index_type": "uint16_t" if index.size <= 65536 else "int32_t"}


LAYER_CONTEXT = {
    "conv2d": _conv, "linear": _linear, "max_pool2d": _pool, "avg_pool2d": _pool, "add": _add,
    "lut": _lut, "cat": _cat, "pad": _pad, "permute": _permute,
}


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
            "kernel_reason": choice.reason, "fn": f"{p}_{choice.template}_s8", "srcs": srcs, "out_offset": plan.offsets[node.name],
            "out_size": int(np.prod(g.shapes[node.name])), "source": node.source.replace("*/", "* /"),
            "in_shape": _shape_str(g.shapes[node.inputs[0]]), "out_shape": _shape_str(g.shapes[node.name]),
            "act": None,
        }
        ctx.update(LAYER_CONTEXT[node.op](node, g))
        ctx.update(kernel_context(node, g, choice))
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
