"""Worst-case stack depth of the generated model C, measured by the host C compiler.

GCC's -fstack-usage gives each function's frame and -fcallgraph-info=su the calls between them; the
stack a call of `edgebn_model_run` needs is the heaviest path through that call graph. Calls through a
pointer (the optional layer hook the caller passes) are the caller's own stack and count 0. A frame
GCC reports as "dynamic" (a variable-length array or alloca) has no static bound and is an error.
The numbers are for the host compiler (x86-64 / aarch64); the ESP32 toolchains use frames of a
similar size for this code, which has no large locals: all buffers live in the static arena.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import EdgebnError

__all__ = ["stack_usage", "stack_usage_of_files", "parse_su", "parse_callgraph", "worst_path"]

ROOT_FUNCTIONS = ("edgebn_model_run", "edgebn_model_run_hooked")


def parse_su(text: str) -> dict[str, tuple[int, str]]:
    """`file:line:col:function<TAB>bytes<TAB>static|dynamic[,bounded]` lines -> {function: (bytes, kind)}."""
    out: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 3:
            continue
        name = parts[0].rsplit(":", 1)[-1]
        out[name] = (int(parts[1]), parts[2])
    return out


def parse_callgraph(text: str) -> dict[str, set[str]]:
    """VCG `.ci` text from -fcallgraph-info -> {caller: {callees}} (indirect calls dropped)."""
    calls: dict[str, set[str]] = {}
    for src, dst in re.findall(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
        if dst != "__indirect_call":     # static functions are titled "file.c:name"
            calls.setdefault(src.rsplit(":", 1)[-1], set()).add(dst.rsplit(":", 1)[-1])
    return calls


def worst_path(root: str, frames: dict[str, int], calls: dict[str, set[str]]) -> int:
    """Heaviest frame sum from `root` down the call graph; recursion has no static bound (error).
    Callees without a frame of their own (library calls) count 0."""
    memo: dict[str, int] = {}

    def visit(fn: str, stack: tuple[str, ...]) -> int:
        if fn in stack:
            raise EdgebnError(f"generated C recurses ({' -> '.join(stack + (fn,))}); its stack has no bound")
        if fn not in memo:
            memo[fn] = frames.get(fn, 0) + max((visit(c, stack + (fn,)) for c in calls.get(fn, ())), default=0)
        return memo[fn]

    return visit(root, ())


def stack_usage(out_dir, cc: str = "gcc", opt: str = "-O2", extra_flags=()) -> dict:
    """Compile OUT/lib/edgebn_model/*.c with -fstack-usage -fcallgraph-info=su and return
    {"stack_bytes": worst stack of one edgebn_model_run call, "functions": {name: frame bytes},
     "compiler": cc, "flags": [...], "flash_bytes": code, constants and data of the objects}."""
    lib = Path(out_dir) / "lib" / "edgebn_model"
    srcs = sorted(lib.glob("*.c"))
    if not srcs:
        raise EdgebnError(f"{lib}: no generated C to measure")
    return _measure(srcs, lib, cc, opt, extra_flags)


def stack_usage_of_files(files: dict[str, str], cc: str = "gcc", opt: str = "-O2", extra_flags=()) -> dict:
    """stack_usage of generated files given as {file name: text} (its .c files compiled, its headers
    on the include path), e.g. edgebn.emit's code-only render of the model: as stack_usage."""
    with tempfile.TemporaryDirectory(prefix="edgebn-su-src-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        srcs = sorted(Path(tmp).glob("*.c"))
        if not srcs:
            raise EdgebnError("no generated C to measure")
        return _measure(srcs, Path(tmp), cc, opt, extra_flags)


def _measure(srcs: list[Path], lib: Path, cc: str, opt: str, extra_flags) -> dict:
    if shutil.which(cc) is None:
        raise EdgebnError(f"stack usage needs a C compiler; {cc!r} is not on PATH")
    flags = ["-std=c99", opt, "-fstack-usage", "-fcallgraph-info=su", *extra_flags]
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    code_bytes = 0
    with tempfile.TemporaryDirectory(prefix="edgebn-su-") as tmp:
        for i, src in enumerate(srcs):
            obj = Path(tmp) / f"u{i}.o"
            res = subprocess.run([cc, *flags, f"-I{lib}", "-c", str(src), "-o", str(obj)],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                first = (res.stderr.strip().splitlines() or ["?"])[0]
                raise EdgebnError(f"{src.name}: {cc} failed while measuring stack usage ({first})")
            for name, (size, kind) in parse_su(obj.with_suffix(".su").read_text()).items():
                if "dynamic" in kind and "bounded" not in kind:
                    raise EdgebnError(f"{src.name}: function {name} has a dynamic stack frame; no static bound")
                frames[name] = size
            for k, v in parse_callgraph(obj.with_suffix(".ci").read_text()).items():
                calls.setdefault(k, set()).update(v)
            code_bytes += object_flash_bytes(obj)
    roots = [r for r in ROOT_FUNCTIONS if r in frames]
    if not roots:
        raise EdgebnError(f"{lib}: no edgebn_model_run in the generated C")
    return {"stack_bytes": max(worst_path(r, frames, calls) for r in roots),
            "functions": dict(sorted(frames.items())), "compiler": cc, "flags": flags,
            "flash_bytes": code_bytes}


def object_flash_bytes(obj: Path) -> int:
    """Bytes an object puts in flash: its code, read-only data (the weights) and initialised data,
    from the ELF section headers (SHF_ALLOC sections that are not NOBITS)."""
    import struct

    data = obj.read_bytes()
    if data[:4] != b"\x7fELF":
        raise EdgebnError(f"{obj}: not an ELF object")
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    if is64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)
    total = 0
    for i in range(shnum):
        off = shoff + i * shentsize
        if is64:
            _name, sh_type, flags = struct.unpack_from(e + "IIQ", data, off)
            size, = struct.unpack_from(e + "Q", data, off + 0x20)
        else:
            _name, sh_type, flags = struct.unpack_from(e + "III", data, off)
            size, = struct.unpack_from(e + "I", data, off + 0x14)
        if flags & 0x2 and sh_type != 8:  # SHF_ALLOC, not SHT_NOBITS (.bss)
            total += size
    return total
