"""lib/NAME builds as a PlatformIO library through its library.json (PlatformIO's own library finder,
srcFilter and flags), offline, for the emulated RV32IMC board: a PlatformIO project whose lib_dir is
OUT/lib and whose src is the ESP-IDF example's main.c (with the test board and esp_timer stand-in)
builds, and the firmware prints the emulator's class for the example input."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from edgebn.device.pio import run_pio
from edgebn.emulator import Emulator
from edgebn.project import PLATFORM_DIR

LIBRARY_TESTS = Path(__file__).resolve().parents[1] / "library"
sys.path.insert(0, str(LIBRARY_TESTS))

from lib_build import run_rv32  # noqa: E402
from test_library_examples import LINE  # noqa: E402


def example_input(header: Path) -> np.ndarray:
    text = header.read_text()
    body = text[text.index("= {") + 3:text.index("};")]
    return np.array([float(v.strip().rstrip("f")) for v in body.split(",") if v.strip()], dtype=np.float32)


def test_the_library_builds_with_platformio_through_library_json(compiled_out, pio_core, offline_env, tmp_path):
    name = json.loads((compiled_out / "report.json").read_text())["library"]["name"]
    project = tmp_path / "app"
    src = project / "src"
    src.mkdir(parents=True)
    for f in (compiled_out / "examples" / "esp-idf" / "main" / "main.c", LIBRARY_TESTS / "idf_app.c",
              LIBRARY_TESTS / "rv32_board.c", LIBRARY_TESTS / "standins" / "esp_timer.h"):
        shutil.copy2(f, src / f.name)
    (project / "platformio.ini").write_text(
        f"[platformio]\nlib_dir = {compiled_out / 'lib'}\n\n"
        f"[env:qemu_rv32]\nplatform = symlink://{compiled_out / PLATFORM_DIR}\nboard = qemu_rv32\n")
    result = run_pio(project, ["run", "-e", "qemu_rv32"], offline=True, core_dir=pio_core)
    text = "".join(result.tail)
    assert result.ok, text
    assert name in text and "edgebn_model" not in text.replace(f"{name}_model", "")  # only lib/NAME was built
    out = run_rv32(project / ".pio" / "build" / "qemu_rv32" / "firmware.elf")
    m = LINE.search(out)
    emu = Emulator.load(compiled_out)
    x = example_input(compiled_out / "lib" / name / f"{name}_example_input.h")
    q = emu.run(emu.quantize_input(x.reshape((1, emu.input_shape[2], *emu.input_shape[:2]))))
    best = int(np.argmax(q.reshape(-1)))
    assert m and (m.group(1), int(m.group(2))) == (name, best), out
    assert m.group(4) == f"{float(emu.dequantize_output(q).reshape(-1)[best]):.6f}"
