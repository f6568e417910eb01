"""Import: a torch.export program (or a model class + state_dict) -> edgebn IR.

This is the only module that imports torch. It walks the aten graph torch.export gives, hands each
call to the operator that claims its aten target (edgebn.ops.ATEN_RULES), and converts shapes and
weights to device layout. Anything it does not understand is an error naming the op, the node and
the user's source line.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import pickle
import re
import sys
import typing
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .errors import ImportError_, UnsupportedOpError
from .ir import MAX_OUTPUTS, Graph
from .ops import ATEN_RULES, OPS, AtenContext, Ref

__all__ = ["load_program", "run_program", "import_program", "import_module", "import_checkpoint", "supported_aten_ops",
           "unsupported_op_message"]

# aten calls that compute nothing at inference: their output is their first input.
IDENTITY_OPS = {
    "aten.dropout.default", "aten.dropout_.default", "aten.feature_dropout.default",
    "aten.alpha_dropout.default", "aten.clone.default", "aten.contiguous.default",
    "aten.detach.default", "aten.alias.default", "aten.lift_fresh_copy.default",
    "aten._assert_tensor_metadata.default",
}
# aten calls that carry no data (asserts, shape bookkeeping): skipped.
SKIP_OPS = {"aten._assert_scalar.default", "aten.sym_constrain_range_for_size.default",
            "aten._assert_async.msg"}


# What to do instead, for the aten ops without a rule that real models carry (keyed by the op's
# name without its overload); any other op gets GENERIC_ADVICE.
_PRODUCT = ("a product of two computed tensors (attention, bilinear pooling) has no int8 kernel here: "
            "edgebn multiplies activations by constant weights (Linear, Conv) and by broadcast gates (`a * b`)")
_NORM = ("a normalisation over statistics computed at run time has no int8 form here: use BatchNorm, "
         "which folds into the weights at compile time")
UNSUPPORTED_ADVICE: dict[str, str] = {
    "aten.upsample_bicubic2d": "use mode='bilinear' or 'nearest' (TFLite has no bicubic resize either)",
    "aten.upsample_trilinear3d": "upsample the volume outside the model: edgebn has no 3-D resize",
    "aten.upsample_nearest3d": "upsample the volume outside the model: edgebn has no 3-D resize",
    "aten.elu": "use ReLU, LeakyReLU, SiLU, GELU or Tanh (int8 lookup tables) and retrain",
    "aten.selu": "use ReLU, LeakyReLU, SiLU, GELU or Tanh (int8 lookup tables) and retrain",
    "aten.celu": "use ReLU, LeakyReLU, SiLU, GELU or Tanh (int8 lookup tables) and retrain",
    "aten.matmul": _PRODUCT, "aten.bmm": _PRODUCT, "aten.mm": _PRODUCT, "aten.einsum": _PRODUCT,
    "aten.scaled_dot_product_attention": _PRODUCT,
    "aten.layer_norm": _NORM, "aten.native_layer_norm": _NORM, "aten.group_norm": _NORM,
    "aten.native_group_norm": _NORM, "aten.instance_norm": _NORM,
    "aten.argmax": "return the logits and take the argmax on the device with NAME_argmax (the generated header)",
    "aten.max": "use MaxPool for spatial maxima; for a class decision return the logits and call NAME_argmax",
}
GENERIC_ADVICE = ("rewrite that part with the ops docs/OPERATORS.md lists, or move it outside the model "
                  "(before its input or after its outputs)")


def supported_aten_ops() -> list[str]:
    return sorted(set(ATEN_RULES) | IDENTITY_OPS | {"aten.max_pool2d_with_indices.default"})


def unsupported_op_message(target: str, where: str) -> str:
    """The one line that refuses an aten op without a rule: the op, the node and the user's source
    line (`where`), what to do instead, and how many ops edgebn does compile."""
    advice = UNSUPPORTED_ADVICE.get(target.rsplit(".", 1)[0] if target.startswith("aten.") else target,
                                    GENERIC_ADVICE)
    return (f"unsupported op {target} at {where}; what to do: {advice} "
            f"(edgebn compiles {len(supported_aten_ops())} aten ops: docs/OPERATORS.md, "
            "edgebn.importer.supported_aten_ops())")


def _torch():
    try:
        import torch
    except ModuleNotFoundError:  # pragma: no cover - the test extra installs torch
        raise ImportError_("importing a model needs PyTorch: pip install torch") from None
    return torch


def _device_shape(torch_shape) -> tuple[int, ...]:
    s = tuple(int(d) for d in torch_shape)
    if len(s) == 5:
        return (s[2], s[3], s[4], s[1])
    if len(s) == 4:
        return (s[2], s[3], s[1])
    if len(s) == 3:
        return (1, s[2], s[1])
    if len(s) == 2:
        return (s[1],)
    raise UnsupportedOpError(f"tensor of shape {s}: only rank 2 (N,F), 3 (N,C,L), 4 (N,C,H,W) and 5 "
                             "(N,C,D,H,W) are supported")


_LAYOUT = {5: "NCDHW", 4: "NCHW", 3: "NCL", 2: "NF"}
# Data movement (view, permute, transpose) into these ranks is composed with the next movement rather
# than materialised: channel shuffle's rank-5 view + transpose + view is one gather, or none. A
# volume read by a volumetric op (Conv3d after a view) is materialised when it is read.
_COMPOSED_RANKS = {5}
_VOLUME_OPS = ("Conv3d, BatchNorm3d, MaxPool3d, AvgPool3d, AdaptiveAvgPool3d, mean over (D, H, W), "
               "activations, add of two volumes, flatten/view")


def user_source(meta: dict) -> str:
    """`file.py:LINE: code (in module.path: Type)` for the aten call (from node.meta).

    The trace runs outermost call first; the innermost frame outside torch is the line that made the
    call (a submodule's forward, a lambda), not the top-level forward that led to it. Inside an
    nn.Sequential that line is the Sequential's caller, so the module that made the call (from
    nn_module_stack, e.g. `features.3: Conv2d`) is named too."""
    trace = meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)', trace)
    user = [f for f in frames if f"{os.sep}torch{os.sep}" not in f[0]] or frames[-1:]
    text = ""
    if user:
        path, line, code = user[-1]
        text = f"{Path(path).name}:{line}: {code.strip()}"
    stack = meta.get("nn_module_stack") or {}
    if stack:
        qualname, kind = list(stack.values())[-1]
        kind = kind.rsplit(".", 1)[-1] if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        if qualname:
            text = f"{text} (in {qualname}: {kind})" if text else f"in {qualname}: {kind}"
    return text


# ---------------------------------------------------------------------------------------------
# Loading checkpoints

def load_program(path: str | os.PathLike):
    """Load a .pt2 without letting it run code: edgebn.pt2.read_pt2 validates the archive (member
    allowlist, bounded sizes, strict symbolic expressions, aten-only node targets, no pickles, guards
    dropped) and rebuilds it; torch parses only those bytes, with every torch.load forced to
    weights_only=True and torch's own log output silenced. Failures are one line naming the cause."""
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise ImportError_(f"{path}: empty file, not a torch.export program")
    if not zipfile.is_zipfile(path):
        raise ImportError_(f"{path}: not a torch.export .pt2 archive (not a zip file; truncated or corrupt?)")
    from .pt2 import read_pt2

    clean = read_pt2(path)
    torch = _torch()
    from torch.export.pt2_archive._package import load_pt2

    refused: list[str] = []
    try:
        with _quiet_torch(), _weights_only_unpickling(torch, refused), _memoized_type_hints():
            contents = load_pt2(io.BytesIO(clean))
    except Exception as e:  # torch raises many types for corrupt archives
        if refused:
            raise ImportError_(f"{path}: refused: the archive holds pickled Python objects ({refused[0]}); "
                               "edgebn loads .pt2 tensors with weights_only=True and never unpickles code") from e
        raise ImportError_(f"{path}: cannot load torch.export program ({type(e).__name__}: {_first_line(e)})") from e
    ep = contents.exported_programs.get("model")
    if ep is None:
        raise ImportError_(f"{path}: cannot load torch.export program (the archive holds no program 'model')")
    return ep


def run_program(ep, x):
    """The float forward of an ExportedProgram, run node by node on its aten graph (torch.fx.Interpreter)
    with its stored parameters, buffers and constants: the output tensor, or the list of them for a
    model with several outputs. Never `ep.module()`, which builds and exec()s a guard function from
    strings in the archive."""
    torch = _torch()
    runnable = set(supported_aten_ops()) | SKIP_OPS | {"<built-in function getitem>"}
    for n in ep.graph.nodes:     # nothing but the ops edgebn compiles is run on the archive's arguments
        if n.op == "call_function" and str(n.target) not in runnable:
            raise UnsupportedOpError(f"the program calls {str(n.target)[:80]} (node {n.name!r}), which edgebn does "
                                     "not compile; it runs only programs it can compile")
        if n.op in ("call_module", "call_method"):
            raise UnsupportedOpError(f"the program has a {n.op} node {n.name!r}; edgebn runs aten graphs only")
    args = []
    for spec in ep.graph_signature.input_specs:
        kind = spec.kind.name
        if kind == "USER_INPUT":
            args.append(x)
        elif kind in ("PARAMETER", "BUFFER"):
            args.append(ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target])
        elif kind == "CONSTANT_TENSOR":
            args.append(ep.constants[spec.target])
        else:
            raise UnsupportedOpError(f"program input {spec.arg.name!r} of kind {kind}: edgebn runs tensor programs only")
    with torch.no_grad():
        outs = torch.fx.Interpreter(ep.graph_module).run(*args)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    user = [o for o, spec in zip(outs, ep.graph_signature.output_specs) if spec.kind.name == "USER_OUTPUT"]
    if not user:
        raise UnsupportedOpError("the program returns nothing")
    return user[0] if len(user) == 1 else list(user)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


@contextlib.contextmanager
def _quiet_torch():
    """No torch log records or Python warnings while a .pt2 loads: the caller reports the cause."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


class _RefusedPickle(pickle.UnpicklingError):
    pass


@contextlib.contextmanager
def _weights_only_unpickling(torch, refused: list):
    """torch.export.load unpickles parts of a .pt2 with weights_only=False (pickled weights and
    constants, custom/opaque objects, and sample inputs after a weights_only failure), which runs any
    code the file carries. For the duration of the load, every torch.load is forced to
    weights_only=True and plain pickle.loads / torch._C._pickle_load_obj are refused; `refused` collects
    why, so the caller can say so."""
    real_load, real_loads = torch.load, pickle.loads
    real_obj = getattr(torch._C, "_pickle_load_obj", None)

    def safe_load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        kwargs.pop("pickle_module", None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return real_load(f, *args, **kwargs)
        except Exception as e:
            if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
                found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
                refused.append(f"global {found.group(1)}" if found else "not a plain tensor")
            raise

    def no_pickle(*args, **kwargs):
        refused.append("a pickled Python object")
        raise _RefusedPickle("edgebn refuses to unpickle Python objects")

    torch.load, pickle.loads = safe_load, no_pickle
    if real_obj is not None:
        torch._C._pickle_load_obj = no_pickle
    try:
        yield
    finally:
        torch.load, pickle.loads = real_load, real_loads
        if real_obj is not None:
            torch._C._pickle_load_obj = real_obj


@contextlib.contextmanager
def _memoized_type_hints():
    """torch's .pt2 deserializer (torch._export.serde.serialize._dict_to_dataclass) calls
    typing.get_type_hints again for every node, argument and tensor meta it rebuilds: three quarters
    of loading mixnet_s (1.6 of 2.1 s CPU). A schema class's hints do not change during the load, so
    for its duration each (class, namespaces) pair is evaluated once."""
    real = typing.get_type_hints
    cache: dict = {}

    def memoized(obj, globalns=None, localns=None, include_extras=False):
        key = (obj, id(globalns), id(localns), include_extras)
        try:
            hit = cache.get(key)
        except TypeError:                 # an unhashable object: evaluated as usual
            return real(obj, globalns, localns, include_extras)
        if hit is None:                   # the namespaces are kept alive with it: their ids stay theirs
            hit = cache[key] = (real(obj, globalns, localns, include_extras), globalns, localns)
        return dict(hit[0])

    typing.get_type_hints = memoized
    try:
        yield
    finally:
        typing.get_type_hints = real


def _resolve_factory(spec: str):
    if ":" not in spec:
        raise ImportError_(f"--model {spec!r}: expected 'package.module:Factory'")
    mod_name, attr = spec.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:
        raise ImportError_(f"--model {spec!r}: cannot import module {mod_name!r} ({e})") from e
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportError_(f"--model {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_state_dict(path: str | os.PathLike) -> dict:
    """torch.load(weights_only=True): a pickle that carries code is refused, never run."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch's notes on pickle protocols are noise here
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
            raise ImportError_(f"{path}: refused: the file holds Python objects/code, not just tensors "
                               "(loaded with weights_only=True; edgebn never unpickles code)") from e
        raise ImportError_(f"{path}: cannot read state_dict ({first})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ImportError_(f"{path}: not a state_dict (expected a dict of tensors)")
    return sd


def export_module(model, example_input):
    """torch.export an eval-mode module; BN in training mode is caught by the importer."""
    torch = _torch()
    try:
        return torch.export.export(model, (example_input,))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImportError_(f"torch.export failed on the model: {first}") from e


def import_checkpoint(model_spec: str, weights: str | None, input_shape: tuple[int, ...]):
    """--model pkg.module:Factory --weights sd.pt --input-shape 1,3,32,32 -> exported program."""
    torch = _torch()
    factory = _resolve_factory(model_spec)
    try:
        model = factory()
    except Exception as e:
        raise ImportError_(f"--model {model_spec!r}: calling the factory failed ({e})") from e
    if not isinstance(model, torch.nn.Module):
        raise ImportError_(f"--model {model_spec!r} returned {type(model).__name__}, not an nn.Module")
    if weights:
        sd = load_state_dict(weights)
        try:
            result = model.load_state_dict(sd, strict=False)
        except RuntimeError as e:   # size mismatches raise even with strict=False
            lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
            raise ImportError_(f"{weights}: state_dict does not match the model "
                               f"({lines[0] if lines else str(e).splitlines()[0]})") from None
        if result.missing_keys or result.unexpected_keys:
            parts = []
            if result.missing_keys:
                parts.append(f"missing {', '.join(result.missing_keys[:5])}")
            if result.unexpected_keys:
                parts.append(f"unexpected {', '.join(result.unexpected_keys[:5])}")
            raise ImportError_(f"{weights}: state_dict does not match the model ({'; '.join(parts)})")
    model.eval()
    return export_module(model, torch.zeros(*input_shape))


# ---------------------------------------------------------------------------------------------
# Graph import

def import_module(model, example_input) -> Graph:
    """Export and import an nn.Module. It must already be in eval mode: edgebn does not flip the
    caller's module, and a training-mode BatchNorm has no fixed inference form."""
    torch = _torch()
    if isinstance(model, torch.nn.Module):
        training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
        if training:
            raise ImportError_(f"the model is in training mode ({', '.join(training[:3])}"
                               f"{', ...' if len(training) > 3 else ''}): call model.eval() before compiling, "
                               "so BatchNorm uses its running statistics and Dropout is off")
    return import_program(export_module(model, example_input))


def import_program(ep) -> Graph:
    """Walk an ExportedProgram's aten graph into edgebn IR."""
    torch = _torch()
    sig = ep.graph_signature
    consts: dict[str, np.ndarray] = {}
    user_inputs: list[str] = []
    buffer_of: dict[str, str] = {}
    for spec in sig.input_specs:
        kind = spec.kind.name
        name = spec.arg.name
        if kind == "BUFFER":
            buffer_of[name] = spec.target
        if kind == "USER_INPUT":
            user_inputs.append(name)
            continue
        target = spec.target
        value = ep.state_dict.get(target) if target in ep.state_dict else ep.constants.get(target)
        if value is None:
            raise ImportError_(f"program input {name!r} ({kind}) has no stored value")
        if isinstance(value, torch.Tensor):
            consts[name] = value.detach().to(torch.float64).cpu().numpy() if value.is_floating_point() \
                else value.detach().cpu().numpy()
    if len(user_inputs) != 1:
        raise UnsupportedOpError(f"the model takes {len(user_inputs)} tensor inputs; edgebn compiles single-input models")

    fx_nodes = list(ep.graph.nodes)
    tshapes: dict[str, tuple] = {}
    aliases: dict[str, str] = {}
    several: dict[str, tuple] = {}      # multi-tensor op (split) -> (rule, target, named args)
    pending: dict[str, tuple] = {}      # rank-5+ data movement -> (source tensor, its torch shape, move)
    movers: dict[str, object] = {}      # ... and the op that made it (its gather_node materialises it)
    for n in fx_nodes:
        val = n.meta.get("val")
        if hasattr(val, "shape"):
            try:
                tshapes[n.name] = tuple(int(d) for d in val.shape)
            except TypeError:
                raise UnsupportedOpError(f"node {n.name!r} has a dynamic shape {tuple(val.shape)}; "
                                         "export with static shapes") from None

    inp = user_inputs[0]
    if len(tshapes[inp]) not in _LAYOUT:
        raise UnsupportedOpError(f"model input of shape {tshapes[inp]}: expected (N,F), (N,C,L), (N,C,H,W) "
                                 "or (N,C,D,H,W)")
    graph = Graph(inputs=[inp], outputs=[], nodes=[], shapes={inp: _device_shape(tshapes[inp])},
                  torch_layouts={inp: _LAYOUT[len(tshapes[inp])]})

    def resolve(name: str) -> str:
        while name in aliases:
            name = aliases[name]
        return name

    def convert(a):
        if isinstance(a, torch.fx.Node):
            return Ref(resolve(a.name))
        if isinstance(a, (list, tuple)):
            return type(a)(convert(x) for x in a)
        return a

    def const_of(ref):
        if isinstance(ref, Ref):
            return consts.get(ref.name)
        return None

    for n in fx_nodes:
        if n.op in ("placeholder", "get_attr"):
            continue
        if n.op == "output":
            outs = _graph_outputs(n, sig, resolve, consts, graph, tshapes, pending)
            graph.outputs = [t for t, _ in outs]
            graph.torch_layouts.update(outs)
            continue
        target = str(n.target)
        source = user_source(n.meta)
        where = f"node {n.name!r}" + (f" at {source}" if source else "")
        if target in SKIP_OPS:
            continue
        multi = None     # (rule, target, named args, index): element `index` of a multi-tensor op
        if target == "<built-in function getitem>":
            src, idx = n.args
            if str(src.target) == "aten.max_pool2d_with_indices.default" and idx == 0:
                aliases[n.name] = resolve(src.name)
                continue
            if src.name not in several:
                raise UnsupportedOpError(f"unsupported getitem on {src.target} at {where}")
            multi = several[src.name] + (int(idx),)
        if target in IDENTITY_OPS:
            aliases[n.name] = resolve(n.args[0].name)
            continue
        rule = ATEN_RULES.get(target) if multi is None else multi[0]
        if target == "aten.max_pool2d_with_indices.default":
            rule = ATEN_RULES["aten.max_pool2d.default"]
        if rule is None:
            raise UnsupportedOpError(unsupported_op_message(target, where))
        args = [convert(a) for a in n.args] if multi is None else [a for a in multi[2].values() if isinstance(a, Ref)]
        flat_args = [r for a in args for r in (a if isinstance(a, (list, tuple)) else [a])]   # cat's list
        for a in flat_args:
            if isinstance(a, Ref) and a.name in pending and ATEN_RULES.get(target, rule).layout_move is None:
                if len(tshapes[a.name]) not in _LAYOUT:
                    raise UnsupportedOpError(f"{target} at {where} reads a tensor of shape {tshapes[a.name]}: only "
                                             "rank 2 (N,F), 3 (N,C,L), 4 (N,C,H,W) and 5 (N,C,D,H,W) are supported")
                src, tsrc, move = pending.pop(a.name)      # a volume made by a view: materialise it here
                node = movers.pop(a.name).gather_node(a.name, src, tsrc, tshapes[a.name], move,
                                                      _device_shape(tshapes[a.name]), source)
                graph.nodes.append(node)
                graph.shapes[node.name] = _device_shape(tshapes[a.name])
            if isinstance(a, Ref) and a.name in pending:
                continue
            if isinstance(a, Ref) and a.name not in graph.shapes and a.name not in consts:
                raise UnsupportedOpError(f"{target} at {where} reads {a.name!r}, which edgebn did not compute")
        in_place = target.count(".") >= 2 and target.split(".")[1].endswith("_")
        if in_place and isinstance(args[0], Ref) and args[0].name in buffer_of:
            raise ImportError_(f"{target} at {where} updates the buffer {buffer_of[args[0].name]!r} in place: "
                               "the model was exported in training mode (call model.eval() before torch.export)")
        def computed(a):
            return (isinstance(a, Ref) and a.name not in consts) or (isinstance(a, list) and any(map(computed, a)))

        if not any(computed(a) for a in args):
            raise UnsupportedOpError(f"{target} at {where} computes on constants only; fold it into the weights")
        named = _named_arguments(n.target, args, {k: convert(v) for k, v in n.kwargs.items()}, target, where) \
            if multi is None else multi[2]
        out_tshape = tshapes.get(n.name)
        if out_tshape is None and rule.getitem is not None and isinstance(n.meta.get("val"), (list, tuple)):
            several[n.name] = (rule, target, named)      # its getitem nodes make one node each
            continue
        if out_tshape is None:
            raise UnsupportedOpError(f"{target} at {where} does not produce a single tensor")
        ctx = AtenContext(
            shape=lambda r: tshapes[r.name],
            const=const_of,
            device_shape=lambda r: graph.shapes[r.name] if len(graph.shapes[r.name]) in (3, 4)
            else (1, 1) + graph.shapes[r.name],
            source=source, name=n.name)
        ctx.out_shape = out_tshape
        # state_dict key of a parameter/buffer argument, and other state_dict entries (a BatchNorm's
        # num_batches_tracked is no argument of the aten call, but says how its statistics were made)
        ctx.state_key = lambda r: buffer_of.get(r.name) if isinstance(r, Ref) else None
        ctx.state_value = lambda key: _state_value(ep, key)
        if rule.layout_move is not None and multi is None:
            # data movement: composed with the movements before it while a tensor has no device layout
            x = named["self"]
            src, tsrc, move = pending.pop(x.name, None) or (x.name, tshapes[x.name], None)
            step = rule.layout_move(target, named, tshapes[x.name], out_tshape)
            composed = step if move is None else (lambda a, m=move, s=step: s(m(a)))
            if len(out_tshape) not in _LAYOUT or len(out_tshape) in _COMPOSED_RANKS:
                pending[n.name] = (src, tsrc, composed)
                movers[n.name] = rule
                continue
            try:
                node = rule.gather_node(n.name, src, tsrc, out_tshape, composed, _device_shape(out_tshape), source)
            except UnsupportedOpError as e:
                raise UnsupportedOpError(f"{e} at {where}") from None
            graph.nodes.append(node)
            graph.shapes[node.name] = _device_shape(out_tshape)
            continue
        ctx.out_device_shape = _device_shape(out_tshape)
        try:
            node = rule.from_aten(target, named, ctx) if multi is None else rule.getitem(multi[1], named, multi[3], ctx)
        except UnsupportedOpError as e:
            raise UnsupportedOpError(f"{e} at {where}") from None
        except (ImportError_,):
            raise
        volumes = [t for t in node.inputs if len(graph.shapes.get(t, ())) == 4]
        if volumes and not OPS[node.op].volumetric:
            raise UnsupportedOpError(f"{target} at {where} reads the rank-5 tensor {volumes[0]!r} of shape "
                                     f"{tshapes.get(volumes[0])}: on volumes (N,C,D,H,W) edgebn compiles "
                                     f"{_VOLUME_OPS}; give this op a 4-D tensor (view the volume as (N, C*D, H, W))")
        for k, v in node.params.items():
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                raise ImportError_(f"{k} of {where} ({target}) contains NaN/Inf values")
        graph.nodes.append(node)
        graph.shapes[node.name] = _device_shape(out_tshape)
    if not graph.outputs:
        raise UnsupportedOpError("the program has no output")
    if not graph.nodes:
        raise UnsupportedOpError("the model computes nothing (no supported op between input and output)")
    return graph


def _graph_outputs(n, sig, resolve, consts: dict, graph: Graph, tshapes: dict, pending: dict) -> list[tuple[str, str]]:
    """The program's user outputs, in order, as (edgebn tensor, PyTorch layout). A tuple or list of
    tensors (torch.export flattens nested ones) gives several graph outputs; the same tensor returned
    twice, an intermediate that later layers also read, and the input itself are outputs like any
    other. Buffer mutations among the outputs mean a training-mode export."""
    torch = _torch()
    outs = list(n.args[0]) if isinstance(n.args[0], (list, tuple)) else [n.args[0]]
    specs = list(sig.output_specs)
    if len(specs) == len(outs):
        mutated = [s.target for s in specs if s.kind.name != "USER_OUTPUT"]
        if mutated:
            raise ImportError_(f"the program updates {', '.join(map(repr, mutated[:3]))}"
                               f"{', ...' if len(mutated) > 3 else ''}: the model was exported in training mode "
                               "(call model.eval() before torch.export)")
    if not outs:
        raise UnsupportedOpError("the model returns no tensor")
    if len(outs) > MAX_OUTPUTS:
        raise UnsupportedOpError(f"the model returns {len(outs)} tensors; edgebn compiles at most {MAX_OUTPUTS} "
                                 "outputs (one C pointer parameter each)")
    result = []
    for k, o in enumerate(outs):
        which = "the model output" if len(outs) == 1 else f"output {k} of the model"
        if not isinstance(o, torch.fx.Node):
            raise UnsupportedOpError(f"{which} is {type(o).__name__} {str(o)[:40]!r}, not a tensor: return only "
                                     "tensors computed from the input")
        if o.name in pending:
            raise UnsupportedOpError(f"{which} has shape {tshapes[o.name]}: only rank 2 (N,F), 3 (N,C,L) and "
                                     "4 (N,C,H,W) outputs are supported")
        t = resolve(o.name)
        if t in consts or t not in graph.shapes or o.name not in tshapes:
            raise UnsupportedOpError(f"{which} is not computed from its input (a constant, parameter or buffer)")
        shape = tshapes[o.name]
        if len(shape) not in _LAYOUT:
            raise UnsupportedOpError(f"{which} has shape {shape}: expected (1,F), (1,C,L) or (1,C,H,W)")
        result.append((t, _LAYOUT[len(shape)]))
    return result


def _named_arguments(overload, args: list, kwargs: dict, target: str, where: str) -> dict:
    """The call's arguments by name, from the aten schema: positional, then keyword, then the schema's
    defaults (tensors are `Ref`s). Every op's `from_aten` reads this dict, never positions."""
    schema = getattr(overload, "_schema", None)
    if schema is None:  # pragma: no cover - every registered target is an aten OpOverload
        raise UnsupportedOpError(f"{target} at {where} has no aten schema")
    params = [a for a in schema.arguments]
    if len(args) > len(params):
        raise UnsupportedOpError(f"{target} at {where} takes {len(params)} arguments, got {len(args)}")
    named = {a.name: v for a, v in zip(params, args)}
    known = {a.name for a in params}
    for k, v in kwargs.items():
        if k not in known or k in named:
            raise UnsupportedOpError(f"{target} at {where}: unexpected keyword argument {k!r}")
        named[k] = v
    for a in params:
        if a.name not in named:
            if not a.has_default_value():
                raise UnsupportedOpError(f"{target} at {where}: missing argument {a.name!r}")
            named[a.name] = a.default_value
    return named


def _state_value(ep, key: str):
    """A state_dict entry of the exported program as numpy, or None."""
    v = ep.state_dict.get(key) if key in ep.state_dict else ep.constants.get(key)
    return None if v is None else v.detach().cpu().numpy()
