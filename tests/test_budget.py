"""`--target` refuses a model over the board's RAM or flash budget, with the numbers, and writes nothing."""
import numpy as np
import pytest
import torch
from torch import nn

import edgebn
from edgebn.errors import BudgetError
from edgebn.targets import TARGETS


def test_arena_over_the_boards_ram_is_refused_with_the_numbers(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()).eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 96, 96)).astype(np.float32)   # 96*96*32 = 294,912 B out
    with pytest.raises(BudgetError, match=r"arena; esp32 has 163,840 bytes of RAM"):
        edgebn.compile(model, x, tmp_path / "out", target="esp32", example_input=torch.zeros(1, 3, 96, 96))
    assert not (tmp_path / "out").exists()
    # the same model fits the S3's budget
    c = edgebn.compile(model, x, tmp_path / "s3", target="esp32s3", example_input=torch.zeros(1, 3, 96, 96))
    assert TARGETS["esp32"].ram_bytes < c.report["arena_bytes"] <= TARGETS["esp32s3"].ram_bytes
    # the S3 target's library has the ESP32 / S3 conv tiles (2x4, int16 weights: counted as such)
    src = (tmp_path / "s3" / "lib" / "edgebn_model" / "edgebn_model.c").read_text()
    assert "_conv2d_kxk_n_s8" in src and "static const int16_t l00_w[" in src
    assert c.report["flash_bytes"] == 32 * 27 * 2 + sum(
        v.nbytes for n in c.emulator.graph.nodes for k, v in n.params.items() if k not in ("weight", "weight_scale"))


def test_weights_over_the_boards_flash_are_refused_with_the_numbers(tmp_path):
    model = nn.Sequential(nn.Linear(1800, 1800), nn.ReLU(), nn.Linear(1800, 1800)).eval()   # ~6.5 MB int8
    x = np.random.default_rng(0).uniform(size=(4, 1800)).astype(np.float32)
    with pytest.raises(BudgetError, match=r"bytes of weights; esp32c3 has 3,145,728 bytes of flash"):
        edgebn.compile(model, x, tmp_path / "out", target="esp32c3", example_input=torch.zeros(1, 1800))
    assert not (tmp_path / "out").exists()


def test_weights_over_the_n8_modules_flash_fit_the_n16r8_module():
    """8 MiB of code + weights: over every board's flash budget but the ESP32-S3 N16R8's (16 MB)."""
    from edgebn.project import board_fits

    fits = {f.target.name: f for f in board_fits(list(TARGETS.values()), 100_000, 8 * 1024 * 1024)}
    assert [name for name, f in fits.items() if f.fits] == ["esp32s3-n16r8"]
    assert fits["esp32s3-n16r8"].arena_placement == "internal"
    assert fits["esp32s3"].reason == "code + weights 8,388,608 B > 7,340,032 B flash"


def test_weights_over_the_flash_as_int16_tiles_compile_with_the_compact_kernels(tmp_path, monkeypatch):
    """The S3's conv tiles store int16 weights; when those exceed the flash but int8 ones fit, the
    compile takes the compact kernel set (the 4x4 tiles, int8 weights) and says so."""
    from dataclasses import replace

    from edgebn.kernels import weight_flash_bytes
    from edgebn.project import BOARD_SUPPORT

    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU()).eval()
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    roomy = edgebn.compile(model, x, tmp_path / "roomy", target="esp32s3", example_input=torch.zeros(1, 3, 8, 8))
    g = roomy.emulator.graph
    fast, compact = weight_flash_bytes(g, "xtensa-lx7"), weight_flash_bytes(g, "xtensa-lx7", "compact")
    assert roomy.report["flash_bytes"] == fast and roomy.report["kernels"] == {"set": "fast", "note": ""}
    assert compact == weight_flash_bytes(g, "rv32imc") < fast          # int8 weights, as on RV32
    tight = replace(TARGETS["esp32s3"], name="s3-tight", pio_env="s3_tight", flash_bytes=fast - 1)
    monkeypatch.setitem(TARGETS, "s3-tight", tight)
    monkeypatch.setitem(BOARD_SUPPORT, "s3_tight", BOARD_SUPPORT["esp32s3"])
    with pytest.warns(UserWarning, match=r"over s3-tight's .* bytes of flash: compiled with the compact kernel set"):
        c = edgebn.compile(model, x, tmp_path / "tight", target="s3-tight", example_input=torch.zeros(1, 3, 8, 8))
    assert c.report["flash_bytes"] == compact and c.report["kernels"]["set"] == "compact"
    from edgebn.device.bench import compiled_kernel_set
    assert compiled_kernel_set(c.path) == "compact"     # what `edgebn bench OUT` measures by default
    src = (tmp_path / "tight" / "lib" / "edgebn_model" / "edgebn_model.c").read_text()
    assert "_conv2d_kxk_s8" in src and "_conv2d_kxk_n_s8" not in src
    # with less flash than even the int8 weights take, the refusal names the fast set's count
    monkeypatch.setitem(TARGETS, "s3-tight", replace(tight, flash_bytes=compact - 1))
    with pytest.raises(BudgetError, match=rf"model needs {fast:,} bytes of weights; s3-tight has"):
        edgebn.compile(model, x, tmp_path / "none", target="s3-tight", example_input=torch.zeros(1, 3, 8, 8))
