"""Validate a torch.export .pt2 archive before torch sees it (pure Python: zipfile + json, no torch).

A .pt2 is the untrusted input a user downloads. torch.export.load trusts it completely: it passes
symbolic expression strings to `sympy.sympify` (which evaluates them), hands `data/aotinductor/`
members to AOTInductor's loader (dlopen, a compiler command line, files written from member names),
unpickles several kinds of member, and `ExportedProgram.module()` `exec`s the archive's guards.

edgebn needs only the exported graph and its weights. So `read_pt2` reads the archive itself, with
every size bounded before and during decompression, and accepts only what torch.export.save writes:

  * members: `<root>/archive_format`, `archive_version`, `byteorder`, `.data/version`,
    `.data/serialization_id`, `models/model.json`, `data/weights/model_weights_config.json`,
    `data/weights/weight_<n>`, `data/constants/model_constants_config.json`,
    `data/constants/tensor_constant_<n>`, `data/sample_inputs/model.pt`, `extra/<name>`; plain
    files, stored or deflated, unencrypted, each name unique and free of `..`, `\\`, absolute paths;
  * every symbolic expression (`expr_str`) is integer arithmetic on shape symbols: integers, `s0`
    `u3` `zf1` `zuf2` style names, `+ - * // %` and parentheses;
  * every graph node's target is an aten operator (`torch.ops.aten.<op>.<overload>`) or a plain
    operator function (`_operator.getitem`, `math.*`, `torch.sym_*`);
  * weights and constants are raw tensors (no `use_pickle`, no custom or opaque objects) on the
    CPU, with integer shapes whose extent fits the bytes stored.

It returns a rebuilt archive (bytes) holding exactly the members it read and checked, with the
guards dropped from models/model.json, so torch parses those bytes and nothing else. The loader in
importer.py keeps forcing `weights_only=True` on the one pickle that remains (the sample inputs).
"""
from __future__ import annotations

import io
import json
import re
import stat
import zipfile
from pathlib import Path

from .errors import ImportError_

__all__ = ["read_pt2", "check_expr", "read_member_capped", "nests_deeper", "LIMITS"]

MiB = 1 << 20

# Bounds (bytes after decompression unless said otherwise). A model that fits an ESP32's 16 MB of
# flash as int8 has at most ~64 MB of float weights; model.json grows ~6.5 KB per conv+BN+ReLU layer,
# so 128 MiB is ~20,000 layers.
LIMITS = {
    "members": 100_000,                 # zip entries, counted from the end record before parsing
    "model_json": 128 * MiB,
    "config_json": 64 * MiB,
    "tensor_member": 512 * MiB,         # one weight or constant file
    "sample_inputs": 64 * MiB,
    "extra": 16 * MiB,
    "small": 1024,                      # archive_format, version, byteorder, ...
    "total": 1024 * MiB,                # everything read, together
    "json_depth": 200,                  # nesting of any JSON member
    "expr_chars": 512,                  # one symbolic expression
    "tensor_elements": 1 << 31,         # one weight/constant tensor
    "dim": 1 << 31,                     # one dimension of any tensor in the graph
}

_SMALL = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_MEMBER_KINDS = [
    (re.compile(r"models/model\.json"), "model_json"),
    (re.compile(r"data/(weights/model_weights|constants/model_constants)_config\.json"), "config_json"),
    (re.compile(r"data/weights/weight_[0-9]{1,9}"), "tensor_member"),
    (re.compile(r"data/constants/tensor_constant_[0-9]{1,9}"), "tensor_member"),
    (re.compile(r"data/sample_inputs/model\.pt"), "sample_inputs"),
    (re.compile(r"extra/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"), "extra"),
]
_CODE_MEMBER = re.compile(r"(^|/)data/aotinductor/|\.(so|dll|dylib|cpp|cc|c|h|hpp|o|obj|a|py|pyc)$"
                          r"|_(compile|linker)_flags\.json$|(^|/)(executorch|mtia)/", re.I)
_PICKLE_MEMBER = re.compile(r"data/constants/(custom_obj|opaque_obj)_")
# torch.export.save names the archive's one top folder after the file's stem, whatever characters it
# has ("my model.pt2" -> "my model/"); edgebn never extracts, so only controls, separators and dot names
# are refused
_ROOT = re.compile(r"(?!\.{1,2}\Z)[^/\\\x00-\x1f\x7f]{1,255}")

# Symbolic shape expressions: what torch.export writes for dynamic dimensions, and nothing else.
_SYMBOL = r"(?:s|u|zf|zuf)[0-9]{1,9}"
_EXPR_TOKEN = re.compile(rf"\s+|(?P<int>[0-9]{{1,19}})(?![A-Za-z0-9_.])|(?P<sym>{_SYMBOL})(?![A-Za-z0-9_.])"
                         r"|(?P<op>//|[-+*%()])")
_SYMBOL_NAME = re.compile(_SYMBOL)

# Graph node targets torch.export writes for the models edgebn compiles (and the shape arithmetic
# of dynamic ones, which the importer then refuses by name).
# The plain functions are listed one by one: `_operator` also holds call/attrgetter/methodcaller,
# which chained on a graph's values would reach any Python callable.
_TARGET = re.compile(r"torch\.ops\.aten\.[A-Za-z_][A-Za-z0-9_]{0,63}\.[A-Za-z_][A-Za-z0-9_]{0,63}"
                     r"|_operator\.(getitem|add|sub|mul|floordiv|truediv|mod|neg|pos|abs|eq|ne|lt|le|gt|ge"
                     r"|and_|or_|not_|xor)"
                     r"|math\.(ceil|floor|trunc|sqrt)"
                     r"|torch\.sym_(not|float|int|max|min|sqrt|ite|sum)")


class _Refused(ImportError_):
    pass


def check_expr(expr, where: str = "model.json") -> str:
    """`expr` if it is integer arithmetic on shape symbols (the strict grammar above); else refuse."""
    def refuse(why):
        shown = repr(expr) if len(repr(expr)) <= 80 else repr(expr)[:77] + "..."
        raise _Refused(f"refused: symbolic expression {shown} at {where} {why}; edgebn reads only integers, "
                       "shape symbols (s0, u1, ...), + - * // % and parentheses, and never evaluates anything else")

    if not isinstance(expr, str):
        refuse("is not a string")
    if len(expr) > LIMITS["expr_chars"]:
        refuse(f"is longer than {LIMITS['expr_chars']} characters")
    # expr := ('-'|'+')* operand (binop ('-'|'+')* operand)* ; operand := int | symbol | '(' expr ')'
    pos, depth, want_operand = 0, 0, True
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        if m is None:
            refuse(f"has {expr[pos:pos + 12]!r} at character {pos}")
        pos, kind, tok = m.end(), m.lastgroup, m.group()
        if kind is None:                                    # whitespace
            continue
        if want_operand:
            if kind in ("int", "sym"):
                want_operand = False
            elif tok == "(":
                depth += 1
                if depth > 32:
                    refuse("nests parentheses more than 32 deep")
            elif tok not in ("-", "+"):
                refuse(f"has {tok!r} where a number or symbol belongs (character {m.start()})")
        elif tok == ")":
            depth -= 1
            if depth < 0:
                refuse("has an unbalanced ')'")
        elif kind == "op" and tok != "(":
            want_operand = True
        else:
            refuse(f"has {tok!r} where an operator belongs (character {m.start()})")
    if depth or want_operand:
        refuse("is unbalanced" if depth else "is incomplete")
    return expr


# ---------------------------------------------------------------------------------------------
# Reading the zip

def _member_count(path: Path) -> int:
    """Entries announced by the end-of-central-directory record, read before zipfile parses the
    directory (whose ZipInfo objects would otherwise be built for every announced entry)."""
    with open(path, "rb") as f:
        end = zipfile._EndRecData(f)   # noqa: SLF001 - the stdlib's own EOCD (and zip64) reader
    if end is None:
        raise ImportError_(f"{path}: not a torch.export .pt2 archive (not a zip file; truncated or corrupt?)")
    return int(end[zipfile._ECD_ENTRIES_TOTAL])


def read_member_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, refuse) -> bytes:
    """A zip member's bytes, decompressed in 1 MiB chunks and never more than `cap` of them: the
    header's declared size is checked first (it is not trusted) and the actual size again while
    reading. Over the cap, raises `refuse(why)`; zipfile's and zlib's own errors reach the caller.
    Shared by the .pt2 reader and outcheck's .npz reader."""
    if info.file_size > cap:
        raise refuse(f"declares {info.file_size:,} bytes, more than the {cap:,} edgebn reads for it")
    buf = bytearray()
    with zf.open(info) as f:
        while chunk := f.read(min(MiB, cap + 1 - len(buf))):
            buf += chunk
            if len(buf) > cap:
                raise refuse(f"inflates past {cap:,} bytes (its header says {info.file_size:,}): a zip bomb")
    return bytes(buf)


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, path: Path) -> bytes:
    """The member's bytes, at most `cap` of them (read_member_capped), exactly as many as its header says."""
    try:
        buf = read_member_capped(zf, info, cap, lambda why: _Refused(f"refused: member {info.filename!r} {why}"))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        if isinstance(e, _Refused):
            raise
        raise ImportError_(f"{path}: corrupt member {info.filename!r} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if len(buf) != info.file_size:
        raise _Refused(f"refused: member {info.filename!r} holds {len(buf):,} bytes, its header says "
                       f"{info.file_size:,}")
    return buf


def _unsafe_name(name: str) -> str | None:
    if not name or "\x00" in name or "\\" in name:
        return "has a NUL or backslash"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' component"
    return None


def _classify(infos: list[zipfile.ZipInfo], path: Path) -> tuple[str, list[tuple[zipfile.ZipInfo, str, str]]]:
    """(root folder, [(info, path below the root, size-limit kind)]); refuses anything else."""
    seen: set[str] = set()
    files = []
    for info in infos:
        name = info.filename
        why = _unsafe_name(name)
        if why:
            raise _Refused(f"refused: member name {name[:100]!r} {why} (a path-traversal attempt)")
        if name in seen:
            raise _Refused(f"refused: member {name!r} appears twice (readers disagree on which one counts)")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise _Refused(f"refused: member {name!r} is encrypted")
        mode = info.external_attr >> 16
        if _CODE_MEMBER.search(name):
            raise _Refused(f"refused: the archive carries compiled code or build instructions "
                           f"(member {name!r}: AOTInductor/ExecuTorch output); edgebn loads only the "
                           "exported graph and never runs, builds or unpacks code from a .pt2")
        if info.is_dir():
            if info.file_size:
                raise _Refused(f"refused: directory entry {name!r} carries data")
            continue
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise _Refused(f"refused: member {name!r} is not a plain file (mode {oct(mode)}: a link or device)")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Refused(f"refused: member {name!r} uses zip compression method {info.compress_type} "
                           "(torch.export.save writes stored members)")
        files.append(info)
    roots = {i.filename.split("/", 1)[0] for i in files}
    names = [i.filename.split("/", 1)[1] if "/" in i.filename else "" for i in files]
    for info, rel in zip(files, names):
        if _PICKLE_MEMBER.match(rel):
            raise _Refused(f"refused: the archive holds pickled Python objects (member {info.filename!r}, a "
                           "custom or opaque object constant); edgebn never unpickles code")
    if "models/model.json" not in names:
        raise ImportError_(f"{path}: cannot load torch.export program (no models/model.json: not written by "
                           "torch.export.save; a torch.save file or another zip?)")
    if len(roots) != 1:
        raise _Refused(f"refused: members lie under {len(roots)} top folders {sorted(roots)[:3]} "
                       "(torch.export.save writes one)")
    if not _ROOT.fullmatch(next(iter(roots))):
        raise _Refused(f"refused: the top folder {next(iter(roots))[:60]!r} is not a name torch.export.save "
                       "writes (control characters, a separator or a dot name)")
    out = []
    for info, rel in zip(files, names):
        kind = "small" if rel in _SMALL else next((k for rx, k in _MEMBER_KINDS if rx.fullmatch(rel)), None)
        if kind is None:
            raise _Refused(f"refused: unexpected member {info.filename!r} (not one torch.export.save writes "
                           "for a single program)")
        out.append((info, rel, kind))
    return next(iter(roots)), out


# ---------------------------------------------------------------------------------------------
# Checking the JSON

def _parse_json(data: bytes, where: str):
    try:
        doc = json.loads(data)
    except RecursionError:
        raise _Refused(f"refused: {where} nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ImportError_(f"cannot load torch.export program ({where} is not JSON: {e})") from None
    _check_depth(doc, where)
    return doc


def nests_deeper(doc, limit: int) -> bool:
    """Whether a parsed JSON document nests lists / objects more than `limit` levels (iterative: no
    recursion for a hostile file to exhaust). Also used by edgebn/outcheck.py."""
    stack = [(doc, 0)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return False


def _check_depth(doc, where: str) -> None:
    if nests_deeper(doc, LIMITS["json_depth"]):
        raise _Refused(f"refused: {where} nests more than {LIMITS['json_depth']} levels deep")


def _walk(doc, path="$"):
    """Every (json-path, dict) in doc, iteratively (depth is already bounded)."""
    stack = [(doc, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, dict):
            yield p, v
            stack.extend((x, f"{p}.{k}") for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, f"{p}[{i}]") for i, x in enumerate(v))


def _check_int(v, where: str, lo: int = 0, hi: int | None = None) -> int:
    if type(v) is not int or v < lo or (hi is not None and v > hi):
        raise _Refused(f"refused: {where} is {str(v)[:40]!r}, expected an integer in [{lo}, {hi if hi else 'inf'})")
    return v


def _check_model_json(doc) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("graph_module"), dict):
        raise ImportError_("cannot load torch.export program (models/model.json has no graph_module)")
    for p, d in _walk(doc):
        if "expr_str" in d:
            check_expr(d["expr_str"], f"models/model.json {p}")
        if "as_expr" in d and not (isinstance(d["as_expr"], dict) and "expr_str" in d["as_expr"]):
            raise _Refused(f"refused: models/model.json {p}.as_expr is not a symbolic expression record")
        if "target" in d and "inputs" in d and "outputs" in d:       # a graph node
            t = d["target"]
            if not isinstance(t, str) or not _TARGET.fullmatch(t):
                raise _Refused(f"refused: graph node {str(d.get('name'))[:60]!r} calls {str(t)[:80]!r}, which is not "
                               "an aten operator; edgebn resolves no other Python callables from a .pt2")
        if "sizes" in d and isinstance(d["sizes"], list) and p.startswith("$.graph_module.graph.tensor_values"):
            for i, s in enumerate(d["sizes"]):
                if isinstance(s, dict) and "as_int" in s:
                    _check_int(s["as_int"], f"models/model.json {p}.sizes[{i}]", 0, LIMITS["dim"])
    rc = doc.get("range_constraints") or {}
    if not isinstance(rc, dict):
        raise _Refused("refused: models/model.json range_constraints is not a mapping")
    for k, v in rc.items():
        if not _SYMBOL_NAME.fullmatch(k):
            check_expr(k, "models/model.json range_constraints")
            raise _Refused(f"refused: range constraint on {k[:60]!r}, not a shape symbol")
        if not isinstance(v, dict) or not all(type(v.get(b)) in (int, type(None)) for b in ("min_val", "max_val")):
            raise _Refused(f"refused: range constraint on {k!r} is not a pair of integers")
    verifiers = doc.get("verifiers", [])
    if not isinstance(verifiers, list) or not all(v in ("", "ATEN", "TRAINING") for v in verifiers):
        raise _Refused(f"refused: unknown verifier dialect in models/model.json ({str(verifiers)[:60]})")
    # Guards are Python source that ExportedProgram.module() exec()s; edgebn needs only the graph.
    doc["guards_code"] = []
    return doc


def _check_payload_config(doc, rel: str, members: dict[str, int], kind: str) -> None:
    where = rel
    cfg = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(cfg, dict):
        raise ImportError_(f"cannot load torch.export program ({where} has no 'config' mapping)")
    base = rel.rsplit("/", 1)[0] + "/"
    prefix = "weight_" if kind == "weights" else "tensor_constant_"
    for fqn, meta in cfg.items():
        if not isinstance(meta, dict):
            raise _Refused(f"refused: {where} entry {fqn[:60]!r} is not a record")
        if meta.get("use_pickle"):
            raise _Refused(f"refused: the archive holds pickled Python objects ({kind[:-1]} {fqn[:60]!r} is stored "
                           "as a pickle); edgebn loads .pt2 tensors with weights_only=True and never unpickles code")
        name = meta.get("path_name")
        if not isinstance(name, str) or not re.fullmatch(prefix + r"[0-9]{1,9}", name):
            raise _Refused(f"refused: {where} entry {fqn[:60]!r} points at {str(name)[:60]!r}, not a {prefix}<n> file")
        if base + name not in members:
            raise ImportError_(f"cannot load torch.export program ({where}: {fqn!r} is stored in {name!r}, which "
                               "the archive does not hold)")
        tm = meta.get("tensor_meta")
        if not isinstance(tm, dict):
            raise _Refused(f"refused: {where} entry {fqn[:60]!r} has no tensor metadata")
        dev = tm.get("device")
        if not isinstance(dev, dict) or dev.get("type") != "cpu":
            raise _Refused(f"refused: {kind[:-1]} {fqn[:60]!r} is on device {str(dev)[:40]}; edgebn loads CPU tensors")
        numel = 1
        for field in ("sizes", "strides"):
            dims = tm.get(field)
            if not isinstance(dims, list) or len(dims) > 8:
                raise _Refused(f"refused: {where} {fqn[:60]!r} {field} is not a list of at most 8 integers")
            for i, s in enumerate(dims):
                v = _check_int(s.get("as_int") if isinstance(s, dict) else None,
                               f"{where} {fqn[:60]!r} {field}[{i}]", 0, LIMITS["dim"])
                if field == "sizes":
                    numel *= v
        off = tm.get("storage_offset")
        _check_int(off.get("as_int") if isinstance(off, dict) else None, f"{where} {fqn[:60]!r} storage_offset",
                   0, LIMITS["tensor_elements"])
        if numel > LIMITS["tensor_elements"]:
            raise _Refused(f"refused: {kind[:-1]} {fqn[:60]!r} claims {numel:,} elements")
        if numel and members[base + name] == 0:
            # torch would allocate torch.zeros(sizes) for an empty record: a memory bomb
            raise _Refused(f"refused: {kind[:-1]} {fqn[:60]!r} claims {numel:,} elements but its file {name!r} is empty")


# ---------------------------------------------------------------------------------------------

def read_pt2(path) -> bytes:
    """Validate the .pt2 at `path`; return the rebuilt archive bytes torch may load. Raises
    ImportError_ (one line, naming the file and the cause) for anything not accepted."""
    path = Path(path)
    try:
        return _read(path)
    except _Refused as e:
        raise ImportError_(f"{path}: {e}") from None
    except ImportError_ as e:
        text = str(e)
        raise ImportError_(text if text.startswith(str(path)) else f"{path}: {text}") from None


def _read(path: Path) -> bytes:
    n = _member_count(path)
    if n > LIMITS["members"]:
        raise _Refused(f"refused: the archive announces {n:,} members (edgebn reads at most {LIMITS['members']:,})")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ImportError_(f"not a torch.export .pt2 archive ({e}; truncated or corrupt?)") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > LIMITS["members"]:
            raise _Refused(f"refused: the archive holds {len(infos):,} members")
        root, files = _classify(infos, path)
        sizes = {rel: info.file_size for info, rel, _ in files}
        for info, rel, kind in files:
            if info.file_size > LIMITS[kind]:
                raise _Refused(f"refused: member {info.filename!r} declares {info.file_size:,} bytes, more than the "
                               f"{LIMITS[kind]:,} edgebn reads for it")
        declared = sum(sizes.values())
        if declared > LIMITS["total"]:
            raise _Refused(f"refused: the members declare {declared:,} bytes in total (edgebn reads at most "
                           f"{LIMITS['total']:,})")
        data: dict[str, bytes] = {}
        total = 0
        for info, rel, kind in files:
            blob = _read_capped(zf, info, min(LIMITS[kind], LIMITS["total"] - total), path)
            total += len(blob)
            data[rel] = blob
    if data.get("archive_format", b"").strip() != b"pt2":
        raise ImportError_("cannot load torch.export program (archive_format is not 'pt2')")
    model = _check_model_json(_parse_json(data["models/model.json"], "models/model.json"))
    for rel, kind in (("data/weights/model_weights_config.json", "weights"),
                      ("data/constants/model_constants_config.json", "constants")):
        if rel in data:
            _check_payload_config(_parse_json(data[rel], rel), rel, sizes, kind)
    data["models/model.json"] = json.dumps(model).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
        for rel, blob in data.items():
            out.writestr(zipfile.ZipInfo(f"{root}/{rel}", date_time=(1980, 1, 1, 0, 0, 0)), blob)
    return buf.getvalue()
