"""Two different compiled models (--name tiny, --name kws) link into one program and both compute
their emulator's int8 outputs: host gcc, the emulated RV32IMC board (QEMU) and a bare link with the
Xtensa cross compiler (xtensa-lx106-elf-gcc; no Xtensa emulator runs here). Every global symbol a
model object defines starts with its name."""
from __future__ import annotations

import re
import subprocess

import pytest
from lib_build import HERE, STRICT, gcc, rv32, run_rv32

XTENSA_GCC = "xtensa-lx106-elf-gcc"
# Debian's lx106 compiler has no C library: picolibc's target-neutral headers stand in (as in
# tests/project/project_fixtures.py), and xtensa_stub.c gives the two functions the models call.
XTENSA_FLAGS = ["-mlongcalls", "-O2", "-isystem", "/usr/lib/picolibc/riscv64-unknown-elf/include"]


def sources(tiny, kws):
    libs = [tiny.path / "lib" / "tiny", kws.path / "lib" / "kws"]
    return [libs[0] / "tiny_model.c", libs[1] / "kws_model.c", HERE / "two_models.c"], libs


def expected(compiled):
    emu = compiled.emulator
    return emu.run(emu.quantize_input(compiled.calib[:1])).reshape(-1).tolist()


def parse(out: str) -> dict:
    return {m.group(1): [int(v) for v in m.group(2).split()]
            for m in re.finditer(r"^(tiny|kws):((?: -?\d+)+)$", out, re.M)}


def test_two_models_on_the_host(tiny, kws, tmp_path):
    srcs, libs = sources(tiny, kws)
    exe = gcc([*srcs, HERE / "two_models_print.c", HERE / "host_board.c"], tmp_path / "two", libs)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True, timeout=60).stdout
    assert parse(out) == {"tiny": expected(tiny), "kws": expected(kws)}


def test_two_models_on_the_emulated_rv32_board(tiny, kws, tmp_path):
    srcs, libs = sources(tiny, kws)
    elf = rv32([*srcs, HERE / "two_models_print.c"], tmp_path / "two.elf", libs)
    assert parse(run_rv32(elf)) == {"tiny": expected(tiny), "kws": expected(kws)}


def global_symbols(obj) -> list[str]:
    nm = subprocess.run(["nm", "-g", "--defined-only", str(obj)], capture_output=True, text=True, check=True).stdout
    return [line.split()[-1] for line in nm.splitlines() if line.strip()]


@pytest.mark.parametrize("cc", ["gcc", XTENSA_GCC])
def test_each_model_defines_only_its_own_global_symbols(tiny, kws, tmp_path, cc):
    srcs, libs = sources(tiny, kws)
    flags = XTENSA_FLAGS if cc == XTENSA_GCC else ["-O2"]
    for name, src in (("tiny", srcs[0]), ("kws", srcs[1])):
        obj = tmp_path / f"{name}.o"
        subprocess.run([cc, *STRICT, *flags, f"-I{src.parent}", "-c", str(src), "-o", str(obj)], check=True)
        symbols = global_symbols(obj)
        assert f"{name}_run" in symbols and f"{name}_quantize_input" in symbols
        assert [s for s in symbols if not s.startswith(f"{name}_")] == []


def test_two_models_link_for_xtensa(tiny, kws, tmp_path):
    """Both models and the two-model program compiled for Xtensa and linked into one relocatable
    object (ld -r: a duplicate symbol fails the link). Debian's lx106 libgcc leaves the 64-bit multiply
    and soft-float helpers to the ESP8266's ROM, so a full link is not possible here: what stays
    undefined must be exactly such compiler-runtime helpers and memcpy/memset."""
    srcs, libs = sources(tiny, kws)
    elf = tmp_path / "two_xtensa.o"
    cmd = [XTENSA_GCC, *STRICT, *XTENSA_FLAGS, *(f"-I{lib}" for lib in libs), *map(str, srcs),
           "-nostdlib", "-r", "-o", str(elf)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    symbols = set(global_symbols(elf))
    assert {"tiny_run", "kws_run", "tiny_quantize_input", "kws_quantize_input", "two_models_run"} <= symbols
    nm = subprocess.run(["nm", "-u", str(elf)], capture_output=True, text=True, check=True).stdout
    undefined = {line.split()[-1] for line in nm.splitlines() if line.strip()}
    assert undefined and all(u.startswith("__") or u in ("memcpy", "memset") for u in undefined), undefined
    # the duplicate check works: the same model twice does not link
    res = subprocess.run([XTENSA_GCC, *XTENSA_FLAGS, f"-I{libs[0]}", str(srcs[0]), str(srcs[0]), "-nostdlib", "-r",
                          "-o", str(tmp_path / "twice.o")], capture_output=True, text=True)
    assert res.returncode != 0 and "multiple definition of `tiny_run'" in res.stderr
