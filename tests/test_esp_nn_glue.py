"""The ESP-NN path of the generated C (issue #14 part 3): layers ESP-NN's kernels compute are
compiled as calls to it when the build defines <PREFIX>_USE_ESP_NN (the ESP-IDF component does on
the ESP32-S3, where the component manager fetches espressif/esp-nn).

ESP-NN itself is not in this repository (its code is only fetched by the user's build), so CI links
the glue against tests/c/esp_nn_double/, a test double written from ESP-NN's documented API and
TFLite's int8 arithmetic; docs/ESP_NN.md records the checks against ESP-NN 1.2.3 itself (its ANSI C
on the host, its S3 assembly linked with the S3 toolchain). Here: every ESP-NN kernel record builds
with -Werror -pedantic over the conv shape classes; a model's host build with the glue equals the
emulator on every int8 of every layer (under AddressSanitizer, with the double writing every scratch
byte it asks for); a static scratch buffer too small gives -4; the library's ESP-IDF files declare
the dependency for the S3 only."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

import edgebn
from edgebn.emit import environment, layer_contexts
from edgebn.ops import OPS
from edgebn.plan import plan_arena
from helpers import HERE, STRICT, run_host
from test_kernel_variants_build import conv_classes, other_classes

DOUBLE = HERE / "c" / "esp_nn_double"


class Net(torch.nn.Module):
    """conv 3x3/s2 (ESP-NN's im2col path), depthwise x1, depthwise 5x5 x2, pointwise, fully connected."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16)
        self.dw, self.b2 = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.BatchNorm2d(16)
        self.dw2 = torch.nn.Conv2d(16, 32, 5, padding=2, groups=16)
        self.pw, self.b3 = torch.nn.Conv2d(32, 24, 1), torch.nn.BatchNorm2d(24)
        self.dil = torch.nn.Conv2d(24, 8, 3, padding=2, dilation=2)     # dilated: edgebn's kernel
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.dw(x)))
        x = torch.nn.functional.relu6(self.b3(self.pw(self.dw2(x))))
        return self.fc(self.dil(x).flatten(1))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        for b in (m.b1, m.b2, m.b3):
            b.running_mean.uniform_(-0.2, 0.2)
            b.running_var.uniform_(0.5, 2)
            b.num_batches_tracked.fill_(100)
    calib = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    out = tmp_path_factory.mktemp("espnn") / "m"
    return edgebn.compile(m, calib, out, example_input=torch.from_numpy(calib[:1]), name="m", force=True)


def _build(out, exe, *flags):
    lib = out / "lib" / "edgebn_model"
    cmd = ["gcc", *STRICT, "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", *flags, f"-I{lib}",
           f"-I{DOUBLE}", *map(str, sorted(lib.glob("*.c"))), str(DOUBLE / "esp_nn_double.c"),
           str(HERE / "c" / "run_model.c"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[:3000]
    return exe


def test_glue_equals_emulator_on_every_layer(compiled, tmp_path):
    out = compiled.path
    src = (out / "lib" / "edgebn_model" / "edgebn_model.c").read_text()
    assert src.count("esp_nn_conv_s8(") == 2 and src.count("esp_nn_depthwise_conv_s8(") == 2
    assert src.count("esp_nn_fully_connected_per_ch_s8(") == 1
    exe = _build(out, tmp_path / "with_esp_nn", "-DEDGEBN_MODEL_USE_ESP_NN=1")
    emu = compiled.emulator
    rng = np.random.default_rng(1)
    q = np.concatenate([rng.integers(-128, 128, (6,) + emu.input_shape, dtype=np.int8),
                        emu.quantize_input(np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)),
                        np.full((1,) + emu.input_shape, 127, np.int8), np.full((1,) + emu.input_shape, -128, np.int8)])
    want, layers = emu.run(q, return_layers=True)
    want = want.reshape(len(q), -1)
    sizes = [int(np.prod(v.shape[1:])) for _, v in layers]
    got, got_layers = run_host(exe, q.reshape(len(q), -1), want.shape[1], sizes)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_layers, np.concatenate([v.reshape(len(q), -1) for _, v in layers], axis=1))


def test_static_scratch_too_small_is_minus_4(compiled, tmp_path):
    exe = _build(compiled.path, tmp_path / "small", "-DEDGEBN_MODEL_USE_ESP_NN=1",
                 "-DEDGEBN_MODEL_ESP_NN_SCRATCH_BYTES=8")
    res = subprocess.run([str(exe)], input=bytes(3 * 16 * 16), capture_output=True)
    assert res.returncode == 2 and res.stdout == b""          # run_model.c: a run that returned non-zero
    ok = _build(compiled.path, tmp_path / "big", "-DEDGEBN_MODEL_USE_ESP_NN=1",
                "-DEDGEBN_MODEL_ESP_NN_SCRATCH_BYTES=65536")
    assert subprocess.run([str(ok)], input=bytes(3 * 16 * 16), capture_output=True).returncode == 0


def test_library_declares_esp_nn_for_the_s3_only(compiled):
    lib = compiled.path / "lib" / "m"
    manifest = (lib / "idf_component.yml").read_text()
    assert 'espressif/esp-nn:\n    version: "^1.2.3"\n    rules:\n      - if: "target in [esp32s3]"' in manifest
    cmake = (lib / "CMakeLists.txt").read_text()
    assert "set(M_ESP_NN_TARGETS esp32s3)" in cmake and "PUBLIC M_USE_ESP_NN=1" in cmake
    header = (lib / "m_model.h").read_text()
    assert "int32_t m_esp_nn_scratch_bytes(void);" in header
    # without the macro the library is edgebn's own C: no ESP-NN symbol reaches the compiler
    res = subprocess.run(["gcc", *STRICT, "-O1", "-E", f"-I{lib}", str(lib / "m_model.c")], capture_output=True,
                         text=True, check=True)
    assert "esp_nn_" not in res.stdout


def test_every_esp_nn_record_builds_with_werror(tmp_path):
    """Each ESP-NN kernel record over the kernel-variant shape classes (every stride, padding, kernel
    size, depthwise multiplier they hold), built against the double's header with -Werror."""
    env = environment()
    parts, used, n = [], set(), 0
    for name, g in conv_classes() + other_classes():
        for layer in layer_contexts(g, plan_arena(g), "fast"):
            for ext in layer["external"]:
                n += 1
                e = dict(ext["layer"], p=f"v{n:03d}", fn=f"v{n:03d}_esp_nn_s8")
                used.add(ext["layer"]["template_path"])
                parts.append(f"/* case {name} */\n" + env.get_template(e["template_path"]).render(layer=e, p="v"))
    records = {r.template for op in OPS.values() for r in op.external_kernels}
    assert records <= used, f"ESP-NN records no case renders: {sorted(records - used)}"
    src = "\n".join(["#include <stdint.h>", '#include "esp_nn.h"', "#define EDGEBN_ALIGNED",
                     "static int8_t v_esp_nn_scratch_buf[16];", "static int8_t *v_esp_nn_scratch = v_esp_nn_scratch_buf;",
                     ""] + parts)
    (tmp_path / "glue.c").write_text(src)
    res = subprocess.run(["gcc", *STRICT, "-Wno-unused-function", "-O2", "-c", f"-I{DOUBLE}", str(tmp_path / "glue.c"),
                          "-o", str(tmp_path / "glue.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[:4000]
    assert n >= 10
