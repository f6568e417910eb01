"""The generated C API beside NAME_run (docs/LIBRARY.md): NAME_quantize_input equals the emulator's
quantization on every float (ties, saturation, -0.0, Inf, NaN, denormals, random bit patterns),
dequantize/argmax equal the emulator's, the caller's arena and the shape/label macros."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from lib_build import HERE, gcc

from edgebn.numerics import quantize, round_half_away

VALUES_PER_SETTING = 1_000_000


def probe_values(scale: float, rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 values that stress quantize(x, scale): exact .5 quotients and their neighbours, the
    saturation edges, specials, and random values and bit patterns, shuffled; n of them."""
    s = np.float32(scale)
    k = np.arange(-300, 301, dtype=np.float64)
    centre = np.concatenate([np.float32((k + 0.5) * np.float64(s)), np.float32(k * np.float64(s))])
    near = [centre]
    up, down = centre.copy(), centre.copy()
    for _ in range(8):  # 8 ulps either side: the x whose float32 quotient lands on the tie
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
        near += [up, down]
    f32 = np.finfo(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, f32.max, -f32.max, f32.tiny, -f32.tiny,
                         1e-45, -1e-45, 1e30, -1e30, 2.0 ** 31, -(2.0 ** 31), 2.0 ** 24 + 1],
                        dtype=np.float32)
    edges = np.float32(np.array([127.5, 128.0, 255.5, 256.0, 256.5, 383.5, 1e4]) * np.float64(s))
    structured = np.concatenate(near + [specials, edges, -edges])
    rest = n - structured.size
    bits = rng.integers(0, 2 ** 32, rest // 4, dtype=np.uint64).astype(np.uint32).view(np.float32)
    normal = (rng.standard_normal(rest // 4) * 64 * s).astype(np.float32)
    uniform = rng.uniform(-300 * s, 300 * s, rest - bits.size - normal.size).astype(np.float32)
    x = np.concatenate([structured, bits, normal, uniform]).astype(np.float32)
    return rng.permutation(x)


def exact_ties(x: np.ndarray, scale: float) -> int:
    with np.errstate(all="ignore"):
        v = x / np.float32(scale)
        return int(np.count_nonzero(np.isfinite(v) & (v - np.floor(v) == 0.5)))


def float64_quantize(x, scale, zp):
    """The emulator's former formula (x / scale in float64), which the device does not compute."""
    with np.errstate(all="ignore"):
        q = round_half_away(np.asarray(x, np.float64) / scale) + zp
    return np.clip(np.nan_to_num(q, nan=zp), -128, 127).astype(np.int8)


def build_driver(lib_dir, name, exe):
    return gcc([lib_dir / f"{name}_model.c", HERE / "quantize_driver.c"], exe, [lib_dir],
               [f"-include{lib_dir / f'{name}_model.h'}", f"-DP(x)={name}_##x", f"-DM(x)={name.upper()}_##x"])


def run_driver(exe, data: bytes, *args) -> bytes:
    res = subprocess.run([str(exe), *args], input=data, capture_output=True, check=True)
    return res.stdout


def with_qparams(lib_dir, tmp, name, scale: float, zp: int):
    """A copy of the library whose header says input scale `scale` and zero point `zp`."""
    copy = tmp / f"lib_{zp}_{scale!r}"
    shutil.copytree(lib_dir, copy)
    header = copy / f"{name}_model.h"
    text = header.read_text()
    text = re.sub(rf"#define {name.upper()}_INPUT_SCALE \S+", f"#define {name.upper()}_INPUT_SCALE {scale!r}f", text)
    text = re.sub(rf"#define {name.upper()}_INPUT_ZERO_POINT \S+", f"#define {name.upper()}_INPUT_ZERO_POINT ({zp})", text)
    header.write_text(text)
    return copy


def test_quantize_input_equals_the_emulator(tiny, tmp_path):
    """The model's own input quantization: NAME_quantize_input (NCHW in, NHWC out) and the NHWC
    variant vs Emulator.quantize_input on 1,000,000 values, about 1,500 of them exact .5 quotients; about 130 of them the float64 formula
    rounds differently (the test tells the two apart)."""
    emu, lib = tiny.emulator, tiny.path / "lib" / "tiny"
    size = int(np.prod(emu.input_shape))
    qp = emu.input_qparams
    rng = np.random.default_rng(0)
    x = probe_values(qp.scale, rng, VALUES_PER_SETTING // size * size)
    nchw = x.reshape(-1, *(emu.input_shape[2], emu.input_shape[0], emu.input_shape[1]))
    exe = build_driver(lib, "tiny", tmp_path / "quant")
    raw = np.frombuffer(run_driver(exe, nchw.tobytes()), np.int8).reshape(len(nchw), 2, size)
    expected = emu.quantize_input(nchw).reshape(len(nchw), size)
    assert np.array_equal(raw[:, 0], expected)
    assert np.array_equal(raw[:, 1], quantize(x, qp.scale, qp.zero_point).reshape(len(nchw), size))
    # the set can tell the float32 formula from the float64 one, and holds thousands of exact ties
    assert np.count_nonzero(float64_quantize(x, qp.scale, qp.zero_point) != quantize(x, qp.scale, qp.zero_point)) > 0
    assert exact_ties(x, qp.scale) > 1000


@pytest.mark.parametrize("scale,zp", [(1.0, 0), (1 / 255, -128), (0.0236, 127), (7.3e-05, 5), (3.1, -17)])
def test_quantize_c_equals_numerics_for_other_qparams(tiny, tmp_path, scale, zp):
    """The same C, recompiled with other input scales and zero points: 1,000,000 values each."""
    scale = float(np.float32(scale))
    lib = with_qparams(tiny.path / "lib" / "tiny", tmp_path, "tiny", scale, zp)
    exe = build_driver(lib, "tiny", tmp_path / "quant")
    size = int(np.prod(tiny.emulator.input_shape))
    x = probe_values(scale, np.random.default_rng(zp & 0xFF), VALUES_PER_SETTING // size * size)
    raw = np.frombuffer(run_driver(exe, x.tobytes()), np.int8).reshape(-1, 2, size)
    want = quantize(x, scale, zp).reshape(-1, size)
    assert np.array_equal(raw[:, 1], want)
    assert exact_ties(x, scale) > 1000
    nan = np.isnan(x)
    assert np.all(quantize(x[nan], scale, zp) == zp) and nan.any()
    assert quantize(np.float32(np.inf), scale, zp) == 127 and quantize(np.float32(-np.inf), scale, zp) == -128
    assert quantize(np.float32(-0.0), scale, zp) == zp


def test_dequantize_and_argmax_equal_the_emulator(tiny, tmp_path):
    emu, lib = tiny.emulator, tiny.path / "lib" / "tiny"
    exe = build_driver(lib, "tiny", tmp_path / "quant")
    size = int(np.prod(emu.output_shape))
    q = np.random.default_rng(3).integers(-128, 128, (500, size), dtype=np.int8)
    q[:5] = 7  # ties everywhere: the first index wins, as np.argmax
    raw = run_driver(exe, q.tobytes(), "out")
    per = size * 4 * 2 + 4
    rows = np.frombuffer(raw, np.uint8).reshape(len(q), per)
    y = rows[:, :size * 4].copy().view(np.float32)
    y_nhwc = rows[:, size * 4:size * 8].copy().view(np.float32)
    best = rows[:, size * 8:].copy().view(np.int32).ravel()
    want = emu.to_torch_layout(emu.dequantize_output(q.reshape(-1, *emu.output_shape))).reshape(len(q), size)
    assert np.array_equal(y, want) and np.array_equal(y_nhwc, want)
    assert np.array_equal(best, np.argmax(q, axis=1))


RUN_WITH_ARENA = r"""
#include <stdio.h>
#include <stdlib.h>
#include "tiny_model.h"
int main(void)
{
    static int8_t in[TINY_INPUT_SIZE], a[TINY_OUTPUT_SIZE], b[TINY_OUTPUT_SIZE];
    static int8_t arena[TINY_ARENA_BYTES + TINY_ARENA_ALIGN] __attribute__((aligned(TINY_ARENA_ALIGN)));
    int i, rc;
    for (i = 0; i < TINY_INPUT_SIZE; ++i) in[i] = (int8_t)(i * 37);
    rc = tiny_run_with_arena(in, a, arena);
#ifdef TINY_CALLER_ARENA
    if (tiny_run(in, b) != -3) return 10;
    for (i = 0; i < TINY_OUTPUT_SIZE; ++i) b[i] = a[i];
#else
    if (tiny_run(in, b) != 0) return 11;
#endif
    if (rc != 0) return 12;
    if (tiny_run_with_arena(in, a, arena + 1) != -2) return 13;
    if (tiny_run_with_arena(in, a, NULL) != -1) return 14;
    fwrite(a, 1, sizeof a, stdout);
    fwrite(b, 1, sizeof b, stdout);
    printf("%s|%d|%d|%d|%d|%d|%ld", tiny_labels[2], TINY_NUM_LABELS, TINY_INPUT_C, TINY_INPUT_H, TINY_INPUT_W,
           TINY_OUTPUT_C, (long)TINY_MACS);
    return 0;
}
"""


@pytest.mark.parametrize("caller_only", [False, True])
def test_run_with_arena_labels_and_shape_macros(tiny, tmp_path, caller_only):
    """NAME_run_with_arena on the caller's aligned arena equals NAME_run and the emulator; a
    misaligned or NULL arena is refused; -DNAME_CALLER_ARENA drops the internal arena."""
    lib, emu = tiny.path / "lib" / "tiny", tiny.emulator
    (tmp_path / "main.c").write_text(RUN_WITH_ARENA)
    flags = ["-DTINY_CALLER_ARENA"] if caller_only else []
    exe = gcc([lib / "tiny_model.c", tmp_path / "main.c"], tmp_path / "run", [lib], flags)
    out = subprocess.run([str(exe)], capture_output=True, check=True).stdout
    size = int(np.prod(emu.output_shape))
    a, b = np.frombuffer(out[:size], np.int8), np.frombuffer(out[size:2 * size], np.int8)
    x = (np.arange(int(np.prod(emu.input_shape))) * 37).astype(np.int64).astype(np.uint8).view(np.int8)
    want = emu.run(x.reshape(1, *emu.input_shape)).ravel()
    assert np.array_equal(a, want) and np.array_equal(b, want)
    assert out[2 * size:].decode() == f'two "quoted"|10|3|8|8|10|{tiny.report["macs"]}'
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    assert ("tiny_arena" in nm) != caller_only


RV32_QUANTIZE = r"""
#include <stdio.h>
#include <string.h>
#include "tiny_model.h"
#define COUNT %(count)d
static const uint32_t bits[COUNT] = {%(bits)s};
static const int8_t want[COUNT] = {%(want)s};
int board_main(void);
int board_main(void)
{
    static float x[TINY_INPUT_SIZE];
    static int8_t q[TINY_INPUT_SIZE];
    int i, j, bad = 0;
    for (i = 0; i < COUNT; i += TINY_INPUT_SIZE) {
        for (j = 0; j < TINY_INPUT_SIZE; ++j) {
            memcpy(&x[j], &bits[i + j], sizeof x[j]);
        }
        tiny_quantize_input_nhwc(x, q);
        for (j = 0; j < TINY_INPUT_SIZE; ++j) {
            bad += q[j] != want[i + j];
        }
    }
    printf("checked=%%d mismatches=%%d\n", COUNT, bad);
    return 0;
}
"""


def test_quantize_input_on_the_emulated_rv32_board(tiny, tmp_path):
    """The same C under QEMU (RV32IMC, soft-float division from libgcc): 24,576 probe values of the
    model's scale (ties, saturation, specials, random bit patterns) against the emulator."""
    from lib_build import rv32, run_rv32

    qp = tiny.emulator.input_qparams
    size = int(np.prod(tiny.emulator.input_shape))
    x = probe_values(qp.scale, np.random.default_rng(7), 128 * size)
    want = quantize(x, qp.scale, qp.zero_point)
    src = tmp_path / "rv32_quantize.c"
    src.write_text(RV32_QUANTIZE % {"count": x.size, "bits": ",".join(f"0x{b:08x}u" for b in x.view(np.uint32)),
                                    "want": ",".join(str(int(v)) for v in want)})
    lib = tiny.path / "lib" / "tiny"
    elf = rv32([lib / "tiny_model.c", src], tmp_path / "q.elf", [lib])
    assert f"checked={x.size} mismatches=0" in run_rv32(elf)
    assert exact_ties(x, qp.scale) > 20
