"""The emulated Xtensa boards (issue #14): qemu_lx106 (Debian's gcc-xtensa-lx106 and QEMU), and
qemu_esp32 / qemu_esp32s3 (gcc 12.2 and QEMU 7.2 with Espressif's core overlays, from the cache of
scripts/xtensa_toolchain.sh). Each boots the harness with the fake model, passes its self-test and
answers through pyserial on a pty like a real board; the lx106 libgcc helpers are checked against
Python's integer arithmetic."""
from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from edgebn.device import bench as bench_mod
from edgebn.device import commands
from edgebn.device import protocol as P
from edgebn.device.compare import compare_on_link, random_inputs
from edgebn.device.qemu import cross_tool, firmware_sources, qemu_flags, qemu_link
from edgebn.device.selftest import selftest_header, selftest_inputs
from edgebn.errors import EdgebnError
from edgebn.resources import firmware_dir
from edgebn.targets import BOARDS, ISAS, TARGETS, get_board
from edgebn.toolchains import find_tool
from fake_emulator import FAKE_MODEL_DIR, FakeEmulator

XTENSA_BOARDS = ["qemu_lx106", "qemu_esp32", "qemu_esp32s3"]


def test_boards_and_isas_are_data():
    for t in TARGETS.values():
        assert t.bench_board in BOARDS and t.isa in ISAS
        assert BOARDS[t.bench_board].isa == t.isa
    for b in BOARDS.values():
        assert b.isa in ISAS
        assert (firmware_dir() / b.flags_file).is_file()
        assert all(p.is_file() for p in firmware_sources(b))
    assert ISAS["xtensa-lx7"].high_half_multiply and not ISAS["xtensa-lx106"].high_half_multiply
    assert ISAS["xtensa-lx7"].simd == "pie" and ISAS["xtensa-lx6"].simd is None
    assert get_board("qemu_esp32s3").qemu_machine[-1] == "esp32s3"


def test_cache_boards_use_only_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBN_CACHE", str(tmp_path))
    with pytest.raises(EdgebnError, match=r"xtensa-esp32s3-elf-gcc not found in the toolchain cache .*"
                                          r"scripts/xtensa_toolchain.sh"):
        find_tool(BOARDS["qemu_esp32s3"], "xtensa-esp32s3-elf-gcc")
    # a same-named tool on PATH (Debian's qemu-system-xtensa has no esp32 cores) is not taken
    with pytest.raises(EdgebnError, match="qemu-system-xtensa not found in the toolchain cache"):
        find_tool(BOARDS["qemu_esp32"], "qemu-system-xtensa")


@pytest.mark.parametrize("board", XTENSA_BOARDS)
def test_board_boots_and_compares_bit_exact_through_its_pty(board):
    emu = FakeEmulator()
    with qemu_link(FAKE_MODEL_DIR, selftest_header(emu, selftest_inputs(emu)), board=board) as link:
        assert link.selftest_line == "EDGEBN SELFTEST PASS vectors=3"
        assert link.name.startswith("the QEMU board") and "/dev/pts/" not in link.selftest_line
        info = link.sync()
        port = board.replace("_", "-")
        assert info.port_name == port and info.has_instret and not info.has_cycles
        assert info.selftest == P.SelftestStatus.PASS
        report = compare_on_link(link, emu, random_inputs(emu, 6, seed=2), target=port, progress=False)
        x = random_inputs(emu, 1, seed=3)[0].tobytes()
        counts = {link.run(x).instret for _ in range(3)}
        debug = link.run(x, debug=True)
    assert report.ok and report.matched == 6 and report.retries == 0
    # -icount shift=0: the same input costs the same instructions every time
    assert len(counts) == 1 and min(counts) > 0
    assert [l.index for l in debug.layers] == [0, 1] and all(l.instret > 0 for l in debug.layers)


def test_cli_compare_qemu_esp32s3(tmp_path, monkeypatch):
    out = tmp_path / "OUT"
    (out / "lib").mkdir(parents=True)
    shutil.copytree(FAKE_MODEL_DIR, out / "lib" / "edgebn_model")
    monkeypatch.setattr(commands, "load_emulator", lambda path: FakeEmulator())
    res = CliRunner().invoke(commands.compare, [str(out), "--qemu", "--board", "qemu_esp32s3", "--count", "4",
                                                "--json", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("4/4 inputs bit-exact, ")
    assert "instructions/inference (qemu-esp32s3)" in res.output
    rec = json.loads((tmp_path / "c.json").read_text())
    assert rec["ok"] and rec["port"] == "qemu-esp32s3" and rec["target"] == "qemu-esp32s3"


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def test_lx106_libgcc_helpers(tmp_path):
    """__muldi3 and the 32/64-bit divisions supplied for Debian's lx106 libgcc, run on the core."""
    rng = random.Random(5)
    m64 = (1 << 64) - 1
    pairs = [(0, 1), (1, 1), (7, 3), (m64, 1), (m64, m64), (1 << 63, 3), ((1 << 63) - 1, (1 << 32) + 1),
             (0xFFFFFFFF, 0xFFFFFFFF), (0x80000000, 0xFFFFFFFF), (0x7FFFFFFF, 2), (123456789, 1000),
             (0xFFFFFFFF80000000, 0xFFFFFFFFFFFFFFFF), (0x0000000100000000, 0x00000000FFFFFFFF)]
    pairs += [(rng.getrandbits(64), rng.getrandbits(rng.choice((8, 31, 32, 40, 64))) | 1) for _ in range(40)]
    pairs += [(rng.getrandbits(32), rng.getrandbits(16) | 1) for _ in range(20)]
    lines = [f"static const uint64_t vec_{n}[] = {{" + ", ".join(f"0x{p[i]:016x}ull" for p in pairs) + "};"
             for i, n in enumerate("ab")]
    (tmp_path / "vectors.h").write_text("#include <stdint.h>\n" + "\n".join(lines) + "\n")
    board = get_board("qemu_lx106")
    fw = firmware_dir()
    elf = tmp_path / "helpers.elf"
    cmd = [cross_tool(board, "gcc"), *qemu_flags(board), "-std=c99", "-Wall", "-Wextra", "-Werror",
           f"-I{tmp_path}", f"-I{fw / 'ports' / 'xtensa'}", f"-L{fw / 'ports' / 'xtensa'}",
           str(fw / "ports" / "xtensa" / "crt0.S"), str(fw / "ports" / "xtensa" / "lx106_libgcc.c"),
           str(FAKE_MODEL_DIR.parent / "lx106_helpers" / "main.c"), "-o", str(elf)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    undefined = subprocess.run([cross_tool(board, "nm"), "-u", str(elf)], capture_output=True, text=True).stdout
    assert undefined.strip() == ""
    for helper in ("__muldi3", "__udivsi3", "__divdi3", "__umoddi3"):   # linked in from the port file
        assert helper in subprocess.run([cross_tool(board, "nm"), str(elf)], capture_output=True, text=True).stdout
    run = subprocess.run([find_tool(board, board.qemu), *board.qemu_machine, "-kernel", str(elf),
                          "-display", "none", "-nodefaults", "-monitor", "none",
                          "-semihosting-config", "enable=on,target=native"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    got = run.stdout.splitlines()
    assert len(got) == len(pairs)
    for (a, b), line in zip(pairs, got):
        a32, b32 = a & 0xFFFFFFFF, b & 0xFFFFFFFF
        s32 = lambda v: v - (1 << 32) if v >> 31 else v  # noqa: E731
        s64 = lambda v: v - (1 << 64) if v >> 63 else v  # noqa: E731
        want = [(a * b) & m64, a32 // b32, a32 % b32,
                _c_div(s32(a32), s32(b32)) & 0xFFFFFFFF if not (s32(a32) == -(1 << 31) and s32(b32) == -1)
                else int(line.split()[3], 16),   # INT_MIN / -1 overflows in C: any value is allowed
                a // b, a % b, _c_div(s64(a), s64(b)) & m64]
        assert [int(v, 16) for v in line.split()] == want, (hex(a), hex(b))


FAKE_FACTS = [{"name": "conv1x1_relu", "op": "conv2d", "macs": 96, "output_shape": [4, 4, 3]},
              {"name": "linear", "op": "linear", "macs": 240, "output_shape": [5]}]


def test_bench_port_reports_cycles_and_milliseconds_per_layer(host_board, tmp_path, monkeypatch):
    """`edgebn bench OUT --port PORT` on the host-built harness (its port counts nanoseconds as
    cycles of a 1 GHz clock): per-layer cycles and milliseconds, bit-exact check, JSON record, and
    the costs recorded into report.json / report.html with --update-report."""
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({
        "target": "esp32s3", "input": {"shape": [4, 4, 2], "layout": "NHWC"}, "output": {"shape": [5]},
        "layers": [{"name": f["name"], "op": f["op"], "input_shape": [4, 4, 2], "output_shape": f["output_shape"],
                    "macs": f["macs"], "weight_bytes": 0, "scale": 0.1, "zero_point": 0, "sqnr_db": 40.0}
                   for f in FAKE_FACTS],
        "fold_log": [], "macs": 336, "flash_bytes": 1000, "arena_bytes": 48}))
    monkeypatch.setattr(commands, "load_emulator", lambda path: FakeEmulator())
    monkeypatch.setattr(bench_mod, "layer_facts", lambda path: FAKE_FACTS)
    res = CliRunner().invoke(bench_mod.bench, [str(out), "--port", host_board.path, "--json",
                                               str(tmp_path / "b.json"), "--update-report"])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "b.json").read_text())
    assert rec["board"] == "host" and rec["cpu_hz"] == 1_000_000_000 and rec["macs"] == 336
    assert rec["cycles"] > 0 and rec["ms"] == pytest.approx(rec["cycles"] / 1e6, rel=1e-3)
    assert [l["name"] for l in rec["layers"]] == ["conv1x1_relu", "linear"]
    assert all(l["cycles"] > 0 and l["ms"] is not None for l in rec["layers"])
    assert "bit-exact" in res.output and "ms" in res.output and "at 1000 MHz" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["cost"]["unit"] == "cycles" and set(report["cost"]["layers"]) == {"conv1x1_relu", "linear"}
    html = (out / "report.html").read_text()
    assert "cycles" in html and f"{rec['layers'][1]['cycles']:,}" in html


def test_port_commands_refuse_emulator_options(host_board, tmp_path):
    res = CliRunner().invoke(bench_mod.bench, [str(tmp_path), "--port", host_board.path, "--board", "qemu_esp32"])
    assert res.exit_code != 0 and "--board applies to emulated boards" in res.output
    res = CliRunner().invoke(commands.compare, [str(tmp_path), "--port", host_board.path, "--board", "qemu_esp32"])
    assert res.exit_code != 0 and "--board applies to --qemu" in res.output
