"""A compiled model and the portable harness core compile for Xtensa with warnings as errors.

The host's gcc is x86-64 (64-bit long and pointers); the ESP32 and S3 are 32-bit Xtensa. Compiling
the generated sources with Debian's xtensa-lx106-elf-gcc (the ESP8266's core, same 32-bit Xtensa
ABI) catches non-portable C before a user's board does: 64-bit assumptions, __int128, x86
intrinsics, format mismatches. Board ports (src/ports/) are framework code and are built by
PlatformIO instead.
"""
from __future__ import annotations

from project_fixtures import xtensa_compile


def test_compiled_model_and_harness_core_compile_for_xtensa(compiled_out, tmp_path):
    lib = compiled_out / "lib" / "edgebn_model"
    sources = sorted(lib.glob("*.c")) + sorted((compiled_out / "src").glob("*.c"))
    assert {"edgebn_model.c", "edgebn_harness.c"} <= {s.name for s in sources}
    failures = xtensa_compile(sources, [lib, compiled_out / "src"], tmp_path / "obj")
    assert not failures, "\n".join(f"{src.name}:\n{err}" for src, err in failures)
    assert len(list((tmp_path / "obj").glob("*.o"))) == len(sources)


def test_the_check_rejects_code_that_only_builds_on_a_64_bit_host(tmp_path):
    source = tmp_path / "wide.c"
    source.write_text("#include <stdint.h>\n"
                      "int64_t mul_hi(int64_t a, int64_t b) { return (int64_t)(((__int128)a * b) >> 64); }\n")
    failures = xtensa_compile([source], [], tmp_path / "obj")
    assert len(failures) == 1 and "__int128" in failures[0][1]
