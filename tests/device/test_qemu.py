"""The emulated board: harness + model built bare-metal for RV32IMC with the cross gcc and
picolibc, booted in qemu-system-riscv32 and spoken to through pyserial on its pty."""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import serial
from click.testing import CliRunner

from edgebn.device import commands
from edgebn.device import protocol as P
from edgebn.device.compare import compare_on_link, random_inputs
from edgebn.device.link import Link
from edgebn.device.qemu import QEMU, CROSS_CC, QemuBoard, build_firmware, qemu_flags, qemu_link
from edgebn.device.selftest import selftest_header, selftest_inputs
from fake_emulator import FAKE_MODEL_DIR, FakeEmulator


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    for tool, pkg in ((CROSS_CC, "gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf"),
                      (QEMU, "qemu-system-misc")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required for the QEMU board tests (Debian: {pkg})")
    emu = FakeEmulator()
    return build_firmware(FAKE_MODEL_DIR, tmp_path_factory.mktemp("qemu"),
                          selftest_header(emu, selftest_inputs(emu)))


@pytest.fixture
def board(elf):
    b = QemuBoard(elf)
    path = b.start()
    yield b, path
    b.stop()


def test_flags_file_is_the_build_recipe():
    flags = qemu_flags()
    assert flags[:4] == ["--specs=picolibc.specs", "--oslib=semihost", "-march=rv32imc", "-mabi=ilp32"]
    assert "-T" in flags and flags[flags.index("-T") + 1] == "picolibc.ld"
    assert "-Wl,--defsym=__ram=0x80400000" in flags


def test_boot_selftest_pass_and_info(board):
    b, path = board
    with Link.open_serial(path, reply_timeout=5) as link:
        b.resume()
        info = link.sync(10)
        assert link.selftest_line == "EDGEBN SELFTEST PASS vectors=3"
        assert any(l.startswith("EDGEBN BOOT harness=1 protocol=1 port=qemu-rv32 model=0x1234abcd")
                   for l in link.lines)
        assert info.port_name == "qemu-rv32" and info.has_instret and not info.has_cycles
        assert info.cpu_hz == 0 and info.selftest == P.SelftestStatus.PASS
        assert link.exit()
    assert b.wait(5) == 0        # the finisher ended QEMU with status 0


def test_run_frames_and_exact_instruction_counts(board, fake_emu):
    b, path = board
    ser = serial.Serial(path, 115200, timeout=0.05)   # open before the board runs: QEMU's pty
    b.resume()                                          # drops what nobody is connected to read
    dec = P.FrameDecoder()

    def frames(n, timeout=5.0):
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            out += [e for e in dec.feed(ser.read(max(1, ser.in_waiting))) if isinstance(e, P.Frame)]
        return out

    for _ in range(20):     # bytes that arrive while the board boots are lost: ask until it answers
        ser.write(P.encode_frame(P.Msg.INFO_REQ, 100))
        got = frames(1, timeout=0.5)
        if got:
            break
    assert got[0].type == P.Msg.INFO
    frames(5, timeout=0.5)  # answers to repeated requests (same seq, so the session is unchanged)
    x = random_inputs(fake_emu, 1, seed=9)[0]
    y, layers = fake_emu.run(x[None], return_layers=True)
    counts = []
    for seq in (101, 102):
        ser.write(P.encode_frame(P.Msg.RUN, seq, x.tobytes()))
        (f,) = frames(1)
        r = P.decode_result(f.payload)
        assert f.seq == seq and r.output == y.tobytes()
        counts.append(r.instret)
    # -icount shift=0: the same input retires exactly the same instructions
    assert counts[0] == counts[1] and 500 < counts[0] < 100_000
    ser.write(P.encode_frame(P.Msg.RUN, 103, x.tobytes(), P.FLAG_DEBUG))
    fs = frames(3)
    assert [f.type for f in fs] == [P.Msg.LAYER, P.Msg.LAYER, P.Msg.RESULT]
    per_layer = [P.decode_layer(f.payload) for f in fs[:2]]
    for got, (_, want) in zip(per_layer, layers):
        assert got.output == want.astype(np.int8).tobytes() and got.instret > 0
    total = P.decode_result(fs[2].payload).instret
    assert sum(l.instret for l in per_layer) <= total <= counts[0] + 200   # hooks cost a little

    # corrupted and cut-short frames get error frames, and the board carries on
    bad = bytearray(P.encode_frame(P.Msg.RUN, 104, x.tobytes()))
    bad[15] ^= 0x80
    ser.write(bytes(bad))
    (f,) = frames(1)
    e = P.decode_error(f.payload)
    assert f.type == P.Msg.ERROR and e.code == P.ErrorCode.BAD_CRC and f.seq == 104
    ser.write(P.encode_frame(P.Msg.RUN, 104, x.tobytes())[:30])
    (f,) = frames(1, timeout=5)
    e = P.decode_error(f.payload)
    assert (e.code, e.arg0, e.arg1) == (P.ErrorCode.TIMEOUT, 30, 46)
    ser.write(bytes(range(256)) * 4)           # noise, magic included
    time.sleep(0.3)
    frames(10, timeout=1.0)                     # whatever the noise provoked
    ser.write(P.encode_frame(P.Msg.RUN, 104, x.tobytes()))
    (f,) = frames(1)
    assert f.type == P.Msg.RESULT and P.decode_result(f.payload).output == y.tobytes()
    ser.close()


def test_qemu_link_lets_the_board_boot_before_the_first_request(fake_emu):
    """Bytes sent while the harness sets up its UART are lost (a cut-short first INFO request costs
    the sync a TIMEOUT error and a retry): qemu_link yields only after the self-test line."""
    header = selftest_header(fake_emu, selftest_inputs(fake_emu))
    with qemu_link(FAKE_MODEL_DIR, header) as link:
        assert link.info is None and link.last_reply_seq is None   # not synced: nothing sent yet
        assert link.selftest_line == "EDGEBN SELFTEST PASS vectors=3"
        assert link.sync(10).selftest == P.SelftestStatus.PASS
        assert link.bad_frames == 0 and link.resets_seen == 1   # one boot, no frame cut short


def test_compare_and_a_buggy_build(fake_emu):
    header = selftest_header(fake_emu, selftest_inputs(fake_emu))
    with qemu_link(FAKE_MODEL_DIR, header, defines=["FAKE_MODEL_BUG"]) as link:
        report = compare_on_link(link, fake_emu, random_inputs(fake_emu, 6), progress=False,
                                 log=lambda m: None)
        assert link.info.selftest == P.SelftestStatus.FAIL
        assert link.selftest_line.startswith("EDGEBN SELFTEST FAIL vector=0 index=")
    assert not report.ok and report.mismatches
    m = report.mismatches[0]
    assert m.layer.name == "conv1x1_relu" and m.layer.channel == 2 and m.layer.position == (1, 1, 2)


def test_cli_compare_qemu(tmp_path, monkeypatch):
    out = tmp_path / "OUT"
    shutil.copytree(FAKE_MODEL_DIR, out / "lib" / "edgebn_model")
    monkeypatch.setattr(commands, "load_emulator", lambda path: FakeEmulator())
    res = CliRunner().invoke(commands.compare, [str(out), "--qemu", "--count", "25",
                                                "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("25/25 inputs bit-exact, ") and line.endswith(
        " instructions/inference (qemu-rv32)")
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["ok"] and record["port"] == "qemu-rv32" and record["selftest"] == "PASS"
    assert len(set(record["instructions"])) >= 1 and record["cycles"] is None
