"""Whole networks on the emulated board: the digits example (trained briefly) and the three reference
architectures of examples/models (ResNet-8, DS-CNN, MobileNetV1-0.25), each compiled with edgebn and
run through the real `edgebn compare OUT --qemu --inputs X.npy --json` command line, bit-exact on
every output int8, with the per-input instruction counts in the JSON record. The same compiled
outputs are then built for 32-bit Xtensa with warnings as errors (see tests/project/
test_project_xtensa.py): the generated sources of every architecture, not only a toy net.

A handful of inputs each: every compare pays ~2-3 s once (firmware build, QEMU boot, the pty's
connection), then MobileNet costs ~0.25 s per input (its 27,648-byte input on the emulated UART),
the others less (docs/DEVICE.md). The whole file takes 35-50 s on 2 cores.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebn.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "project"))
from project_fixtures import xtensa_compile

EDGEBN = [sys.executable, "-m", "edgebn"]
# name -> inputs sent to the board
COUNTS = {"digits": 32, "resnet8": 4, "dscnn": 4, "mobilenet_v1": 4}


def _digits_module():
    """examples/digits/model.py, loaded by path (examples/digits is a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location("edgebn_example_digits_model",
                                                  ROOT / "examples" / "digits" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(name: str):
    """(model, calibration set, test inputs): float32 in PyTorch layout with a batch axis."""
    n = COUNTS[name]
    if name == "digits":
        digits = _digits_module()
        model, _ = digits.train(epochs=1)   # real BN statistics; accuracy is not the point here
        x_train, _, x_test, _ = digits.load_data()
        return model, x_train[:256], x_test[:n]
    mod = importlib.import_module(f"examples.models.{name}")
    rng = np.random.default_rng(7)
    shape = tuple(mod.INPUT_SHAPE[1:])
    return (mod.build(seed=0), rng.standard_normal((16, *shape)).astype(np.float32),
            rng.standard_normal((n, *shape)).astype(np.float32))


@pytest.fixture(scope="module", params=list(COUNTS))
def compiled(request, tmp_path_factory):
    import torch

    import edgebn

    name = request.param
    work = tmp_path_factory.mktemp(name)
    model, calib, x = _build(name)
    out = work / "out"
    edgebn.compile(model, calib, out, target="qemu-rv32", example_input=torch.from_numpy(calib[:1]),
                   model_name=name)
    np.save(work / "x.npy", x)
    return name, work, out


def test_compare_qemu_is_bit_exact_on_whole_networks(compiled):
    name, work, out = compiled
    n = COUNTS[name]
    record_path = work / "compare.json"
    res = subprocess.run(EDGEBN + ["compare", str(out), "--qemu", "--inputs", str(work / "x.npy"),
                                   "--json", str(record_path)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{n}/{n} inputs bit-exact, "), res.stdout
    assert last.endswith(" instructions/inference (qemu-rv32)"), last

    record = json.loads(record_path.read_text())
    emu = Emulator.load(out)
    assert record["ok"] and record["inputs"] == n and record["bit_exact"] == n
    assert record["model_hash"] == f"0x{emu.model_hash:08x}" and record["selftest"] == "PASS"
    assert record["target"] == "qemu-rv32" and record["mismatches"] == []
    # Per input: the emulated board counts retired instructions exactly (-icount) and has no
    # clock, so cycles are recorded as absent rather than as a made-up number.
    assert record["cycles"] is None and record["cpu_hz"] is None
    instructions = record["instructions"]
    assert len(instructions) == n and all(isinstance(v, int) for v in instructions)
    # RV32IMC has no SIMD: every multiply-accumulate costs at least one instruction.
    macs = json.loads((out / "report.json").read_text())["macs"]
    assert min(instructions) > macs, (instructions, macs)
    assert record["mean_instructions"] == pytest.approx(np.mean(instructions))


def test_generated_sources_compile_for_xtensa(compiled, tmp_path):
    """Each network's model C and the portable harness core built against its header."""
    name, _, out = compiled
    lib = out / "lib" / "edgebn_model"
    sources = sorted(lib.glob("*.c")) + sorted((out / "src").glob("*.c"))
    assert {"edgebn_model.c", "edgebn_harness.c", "crc32.c"} <= {s.name for s in sources}
    failures = xtensa_compile(sources, [lib, out / "src"], tmp_path / "obj")
    assert not failures, "\n".join(f"{name} {src.name}:\n{err}" for src, err in failures)
