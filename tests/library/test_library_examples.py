"""The example applications of a compiled model (OUT/lib/NAME/examples/NAME_classify/*.ino, the
Arduino sketch the PlatformIO example builds, and OUT/examples/esp-idf/main/main.c), each built
unchanged against its library on the host and on the emulated RV32IMC board: from the float example
input they print the emulator's class, label and dequantized score. The framework calls (Serial,
micros, esp_timer_get_time, app_main) come from stand-ins in tests/library/standins/."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from lib_models import LABELS, compile_small
from lib_build import HERE, STRICT, run_rv32

from edgebn.device.qemu import CROSS_CC, qemu_flags

LINE = re.compile(r"(\w+): class (\d+) \((.*)\) score (-?[0-9.]+), (\d+) us per inference")
CXX_FLAGS = ["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fno-exceptions", "-fno-rtti"]


def expected_line(compiled, labels):
    emu = compiled.emulator
    q = emu.run(emu.quantize_input(compiled.calib[:1]))
    best = int(np.argmax(q.reshape(-1)))
    score = emu.dequantize_output(q).reshape(-1)[best]
    return best, (labels[best] if labels else "-"), f"{float(score):.6f}"


def build_and_run(compiled, app_sources_cxx, app_sources_c, board: str, tmp_path, includes):
    """Compile the app (C++ and C sources), the library's C and the board; run it; its one output line."""
    name = compiled.report["library"]["name"]
    lib = compiled.path / "lib" / name
    host = board == "host"
    cc = "gcc" if host else CROSS_CC
    arch = [] if host else qemu_flags()
    incs = [f"-I{lib}", f"-I{HERE / 'standins'}", *(f"-I{i}" for i in includes)]
    objs = []
    for i, src in enumerate(app_sources_cxx):
        objs.append(tmp_path / f"cxx{i}.o")
        cmd = [cc, *arch, "-x", "c++", *CXX_FLAGS, "-O2", *incs, "-c", str(src), "-o", str(objs[-1])]
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    board_src = HERE / ("host_board.c" if host else "rv32_board.c")
    for i, src in enumerate([*app_sources_c, lib / f"{name}_model.c", board_src]):
        objs.append(tmp_path / f"c{i}.o")
        flags = STRICT if src != board_src or host else ["-std=c99", "-Wall", "-Werror"]
        cmd = [cc, *arch, *flags, "-O2", *incs, "-c", str(src), "-o", str(objs[-1])]
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    exe = tmp_path / f"app_{board}"
    res = subprocess.run([cc, *arch, *map(str, objs), "-o", str(exe)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    if host:
        out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, check=True).stdout
    else:
        out = run_rv32(exe)
    lines = [m for m in (LINE.search(line) for line in out.splitlines()) if m]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize("board", ["host", "qemu_rv32"])
def test_arduino_sketch_prints_the_emulators_class(tiny, board, tmp_path):
    """lib/tiny/examples/tiny_classify/tiny_classify.ino (also the PlatformIO example's sketch)."""
    sketch = tiny.path / "lib" / "tiny" / "examples" / "tiny_classify" / "tiny_classify.ino"
    m = build_and_run(tiny, [sketch, HERE / "arduino_app.cpp"], [], board, tmp_path, [])
    best, label, score = expected_line(tiny, LABELS)
    assert (m.group(1), int(m.group(2)), m.group(3), m.group(4)) == ("tiny", best, label, score)


@pytest.mark.parametrize("board", ["host", "qemu_rv32"])
def test_idf_example_prints_the_emulators_class(kws, board, tmp_path):
    """OUT/examples/esp-idf/main/main.c (a model without labels prints '-')."""
    main = kws.path / "examples" / "esp-idf" / "main" / "main.c"
    m = build_and_run(kws, [], [main, HERE / "idf_app.c"], board, tmp_path, [])
    best, label, score = expected_line(kws, None)
    assert (m.group(1), int(m.group(2)), m.group(3), m.group(4)) == ("kws", best, label, score)
    assert int(m.group(5)) > 0  # time per inference: microseconds on the host, instructions on QEMU


def test_example_input_header_is_the_first_calibration_sample(tiny):
    text = (tiny.path / "lib" / "tiny" / "tiny_example_input.h").read_text()
    body = text[text.index("= {") + 3:text.index("};")]
    values = np.array([float(v.strip().rstrip("f")) for v in body.split(",") if v.strip()], dtype=np.float32)
    assert np.array_equal(values, tiny.calib[0].ravel())


def test_examples_of_a_two_output_model_print_output_0s_class(tmp_path):
    """A model with two outputs: the Arduino sketch and the ESP-IDF main run it with one pointer per
    output (NAME_OUTPUT_ARGS into one packed buffer) and print output 0's class, label and score."""
    heads = compile_small(tmp_path / "out", "heads", seed=3, labels=LABELS, two_heads=True)
    emu = heads.emulator
    q = emu.run_all(emu.quantize_input(heads.calib[:1]))[0]
    best = int(np.argmax(q.reshape(-1)))
    want = ("heads", best, LABELS[best], f"{float(emu.dequantize_output(q, 0).reshape(-1)[best]):.6f}")
    sketch = heads.path / "lib" / "heads" / "examples" / "heads_classify" / "heads_classify.ino"
    (tmp_path / "ino").mkdir()
    (tmp_path / "idf").mkdir()
    m = build_and_run(heads, [sketch, HERE / "arduino_app.cpp"], [], "host", tmp_path / "ino", [])
    assert (m.group(1), int(m.group(2)), m.group(3), m.group(4)) == want
    main = heads.path / "examples" / "esp-idf" / "main" / "main.c"
    m = build_and_run(heads, [], [main, HERE / "idf_app.c"], "host", tmp_path / "idf", [])
    assert (m.group(1), int(m.group(2)), m.group(3), m.group(4)) == want
