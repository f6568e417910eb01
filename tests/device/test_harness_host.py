"""The C harness itself, compiled for the host with the strict flags and driven through a pty by
pyserial and the real protocol/link/compare code, exactly as a board on /dev/ttyUSB0 would be."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import numpy as np
import pytest
import serial
from click.testing import CliRunner

from host_board import HARNESS, HostBoard, build_host_harness
from edgebn.device import commands
from edgebn.device import protocol as P
from edgebn.device.compare import compare_on_link, random_inputs
from edgebn.device.link import Link
from edgebn.device.selftest import selftest_header, selftest_inputs
from fake_emulator import FAKE_MODEL_DIR, FakeEmulator


class Raw:
    """pyserial on the pty, frames in and out without the Link's forgiveness."""

    def __init__(self, path):
        self.ser = serial.Serial(path, 115200, timeout=0.05)
        self.dec = P.FrameDecoder()

    def send(self, data: bytes) -> None:
        self.ser.write(data)

    def frames(self, n=1, timeout=2.0) -> list[P.Frame]:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            chunk = self.ser.read(max(1, self.ser.in_waiting))
            out += [e for e in self.dec.feed(chunk) if isinstance(e, P.Frame)]
        return out

    def request(self, type_, seq, payload=b"", flags=0) -> P.Frame:
        self.send(P.encode_frame(type_, seq, payload, flags))
        (f,) = self.frames()
        return f

    def error(self, frame: P.Frame) -> P.ErrorReply:
        assert frame.type == P.Msg.ERROR, frame
        return P.decode_error(frame.payload, frame.seq)


@pytest.fixture
def raw(host_board):
    r = Raw(host_board.path)
    yield r
    r.ser.close()


def boot_text(exe, wait_for=P.SELFTEST_PREFIX) -> str:
    """Start a harness on pipes and read its boot text."""
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        text = b""
        deadline = time.monotonic() + 5
        while wait_for.encode() not in text or not text.endswith(b"\r\n"):
            assert time.monotonic() < deadline, text
            text += proc.stdout.read1(4096)
        return text.decode()
    finally:
        proc.stdin.close()
        assert proc.wait(5) == 0   # stdin closed: the host port leaves cleanly


def test_boot_banner_and_selftest_pass(host_harness):
    text = boot_text(host_harness)
    assert ("EDGEBN BOOT harness=1 protocol=1 port=host model=0x1234abcd in=32 out=5 layers=2 "
            "arena=48\r\n") in text
    assert "EDGEBN SELFTEST PASS vectors=3\r\n" in text


def test_selftest_fail_is_reported_at_boot_and_in_info(tmp_path):
    class WrongEmulator(FakeEmulator):
        def run(self, q, return_layers=False):
            y = super().run(q).copy()
            y[1:, 3] += 1          # vectors 1 and 2 expect something the model does not compute
            return y

    emu = WrongEmulator()
    exe = build_host_harness(tmp_path, header=selftest_header(emu, selftest_inputs(emu)))
    text = boot_text(exe)
    good = FakeEmulator().run(selftest_inputs(emu))[1, 3]
    assert f"EDGEBN SELFTEST FAIL vector=1 index=3 got={good} want={good + 1}\r\n" in text
    board = HostBoard(exe)
    try:
        with Link.open_serial(board.path, reply_timeout=2) as link:
            info = link.sync(3)
        assert info.selftest == P.SelftestStatus.FAIL and info.selftest_failed_vector == 1
    finally:
        board.close()


def test_a_model_that_fails_to_run_is_reported_at_boot_in_info_and_per_request(tmp_path):
    exe = build_host_harness(tmp_path, defines=["FAKE_MODEL_FAILS=-7"])
    assert "EDGEBN SELFTEST FAIL vector=0 model_run=-7\r\n" in boot_text(exe)
    board = HostBoard(exe)
    try:
        raw = Raw(board.path)
        info = P.decode_info(raw.request(P.Msg.INFO_REQ, 1).payload)
        assert info.selftest == P.SelftestStatus.FAIL and info.selftest_failed_vector == 0
        err = raw.error(raw.request(P.Msg.RUN, 2, bytes(32)))
        assert (err.code, err.type, err.seq) == (P.ErrorCode.MODEL_FAILED, P.Msg.RUN, 2)
        assert err.describe() == "edgebn_model_run returned -7 on the device"
        raw.ser.close()
    finally:
        board.close()


def test_no_selftest_vectors(tmp_path):
    emu = FakeEmulator()
    exe = build_host_harness(tmp_path, header=selftest_header(emu, np.zeros((0, 4, 4, 2), np.int8)))
    assert "EDGEBN SELFTEST NONE\r\n" in boot_text(exe)


def test_selftest_header_for_another_model_does_not_compile(tmp_path):
    other = FakeEmulator(model_hash=0x0BADF00D)
    with pytest.raises(subprocess.CalledProcessError) as e:
        build_host_harness(tmp_path, header=selftest_header(other, selftest_inputs(other)))
    assert "rendered for another model" in e.value.stderr


def test_harness_core_builds_for_xtensa(tmp_path):
    cc = shutil.which("xtensa-lx106-elf-gcc")
    if cc is None:
        pytest.fail("xtensa-lx106-elf-gcc is required (Debian: gcc-xtensa-lx106)")
    emu = FakeEmulator()
    (tmp_path / "edgebn_selftest.h").write_text(selftest_header(emu, selftest_inputs(emu)))
    for src in ("edgebn_harness.c", "crc32.c"):
        # the lx106 toolchain ships no C library: the core must need only freestanding headers
        subprocess.run([cc, "-ffreestanding", "-Wall", "-Werror", "-O2", f"-I{HARNESS}",
                        f"-I{FAKE_MODEL_DIR}", f"-I{tmp_path}", "-c", str(HARNESS / src),
                        "-o", str(tmp_path / (src + ".o"))], check=True)


def test_info(raw):
    f = raw.request(P.Msg.INFO_REQ, 41)
    assert f.type == P.Msg.INFO and f.seq == 41
    info = P.decode_info(f.payload)
    assert (info.model_hash, info.input_size, info.output_size, info.num_layers,
            info.arena_bytes) == (0x1234ABCD, 32, 5, 2, 48)
    assert info.port_name == "host" and info.cpu_hz == 1_000_000_000 and info.has_cycles
    assert info.selftest == P.SelftestStatus.PASS and info.selftest_count == 3
    assert info.protocol_version == P.PROTOCOL_VERSION and info.max_payload == 32


def test_run_and_debug_run_match_the_model(raw, fake_emu):
    raw.request(P.Msg.INFO_REQ, 1)
    x = random_inputs(fake_emu, 1, seed=3)[0]
    y, layers = fake_emu.run(x[None], return_layers=True)
    f = raw.request(P.Msg.RUN, 2, x.tobytes())
    r = P.decode_result(f.payload)
    assert f.type == P.Msg.RESULT and f.seq == 2 and r.output == y.tobytes()
    assert r.cycles > 0 and r.layers_sent == 0
    raw.send(P.encode_frame(P.Msg.RUN, 3, x.tobytes(), P.FLAG_DEBUG))
    frames = raw.frames(3)
    assert [fr.type for fr in frames] == [P.Msg.LAYER, P.Msg.LAYER, P.Msg.RESULT]
    assert all(fr.seq == 3 for fr in frames)
    for fr, (_, want) in zip(frames, layers):
        layer = P.decode_layer(fr.payload)
        assert layer.output == want.astype(np.int8).tobytes()
    final = P.decode_result(frames[-1].payload)
    assert final.output == y.tobytes() and final.layers_sent == 2


def test_error_frames(raw):
    assert raw.error(raw.request(P.Msg.RUN, 5, bytes(32))).code == P.ErrorCode.NOT_SYNCED
    raw.request(P.Msg.INFO_REQ, 10)
    e = raw.error(raw.request(P.Msg.RUN, 12, bytes(32)))
    assert (e.code, e.arg0, e.arg1, e.seq) == (P.ErrorCode.OUT_OF_ORDER, 12, 11, 12)
    e = raw.error(raw.request(P.Msg.RUN, 11, bytes(31)))
    assert (e.code, e.arg0, e.arg1) == (P.ErrorCode.WRONG_INPUT_SIZE, 31, 32)
    e = raw.error(raw.request(0x42, 11))
    assert (e.code, e.arg0) == (P.ErrorCode.UNKNOWN_TYPE, 0x42)
    e = raw.error(raw.request(P.Msg.INFO_REQ, 11, b"xx"))
    assert (e.code, e.arg0, e.arg1) == (P.ErrorCode.BAD_LENGTH, 2, 0)
    bad = bytearray(P.encode_frame(P.Msg.RUN, 11, bytes(32)))
    bad[20] ^= 0x04
    raw.send(bytes(bad))
    e = raw.error(raw.frames()[0])
    assert e.code == P.ErrorCode.BAD_CRC and e.seq == 11
    assert e.arg0 != e.arg1
    # after all of that the board still serves, and the sequence did not move
    assert raw.request(P.Msg.RUN, 11, bytes(32)).type == P.Msg.RESULT


def test_oversized_frame_is_refused_and_drained(raw):
    raw.request(P.Msg.INFO_REQ, 1)
    raw.send(P.encode_frame(P.Msg.RUN, 2, bytes(range(200)) * 2))   # 400 > 32
    e = raw.error(raw.frames()[0])
    assert (e.code, e.arg0, e.arg1) == (P.ErrorCode.WRONG_INPUT_SIZE, 400, 32)
    time.sleep(0.1)
    assert raw.frames(timeout=0.3) == []          # its payload was drained, not parsed
    assert raw.request(P.Msg.RUN, 2, bytes(32)).type == P.Msg.RESULT


def test_truncated_frame_times_out_with_an_error(raw):
    raw.request(P.Msg.INFO_REQ, 1)
    raw.send(P.encode_frame(P.Msg.RUN, 2, bytes(32))[:20])
    e = raw.error(raw.frames(timeout=2)[0])
    assert (e.code, e.arg0, e.arg1, e.seq) == (P.ErrorCode.TIMEOUT, 20, 46, 2)
    assert raw.request(P.Msg.RUN, 2, bytes(32)).type == P.Msg.RESULT


def test_garbage_is_skipped(raw):
    raw.send(bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)).replace(
        P.MAGIC[:1], b"\x00") + b"\r\nhello\r\n")
    time.sleep(0.2)
    assert raw.request(P.Msg.INFO_REQ, 7).type == P.Msg.INFO


def test_exit(host_harness):
    # over pipes, so the acknowledgement outlives the process (a pty loses unread output when the
    # master side closes)
    proc = subprocess.Popen([str(host_harness)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = proc.communicate(P.encode_frame(P.Msg.EXIT, 3), timeout=5)
    assert proc.returncode == 0
    frames = [e for e in P.FrameDecoder().feed(out) if isinstance(e, P.Frame)]
    assert frames == [P.Frame(P.Msg.EXIT_ACK, 3)]


def test_compare_on_the_host_board(host_board, fake_emu):
    with Link.open_serial(host_board.path, reply_timeout=2) as link:
        report = compare_on_link(link, fake_emu, random_inputs(fake_emu, 40), progress=False)
        link.exit()
        assert host_board.proc.wait(2) == 0    # it left because it was asked to, port still open
    assert report.ok and report.matched == 40 and report.retries == 0
    assert report.summary().startswith("40/40 inputs bit-exact, 0.")


@pytest.fixture
def fake_out(tmp_path, monkeypatch):
    """An OUT directory for the CLI, its emulator replaced by the fake model's twin."""
    out = tmp_path / "OUT"
    shutil.copytree(FAKE_MODEL_DIR, out / "lib" / "edgebn_model")
    monkeypatch.setattr(commands, "load_emulator", lambda path: FakeEmulator())
    return out


def test_cli_compare_port_with_float_inputs(host_board, fake_out, tmp_path):
    x = np.random.default_rng(1).normal(0, 2, (6, 2, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = CliRunner().invoke(commands.compare, [str(fake_out), "--port", host_board.path,
                                                "--inputs", str(tmp_path / "x.npy"),
                                                "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "6/6 inputs bit-exact" in res.output and "cycles @1000 MHz" in res.output
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["ok"] and record["inputs"] == 6 and record["model_hash"] == "0x1234abcd"
    assert len(record["cycles"]) == 6 and record["instructions"] is None


def test_cli_compare_channels_last_and_int8(host_board, fake_out, tmp_path):
    x = np.random.default_rng(1).normal(0, 2, (3, 4, 4, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "q.npy", FakeEmulator().quantize_input(x, channels_last=True))
    for args in (["--inputs", str(tmp_path / "x.npy"), "--channels-last"],
                 ["--inputs", str(tmp_path / "q.npy")]):
        board = HostBoard(host_board.proc.args[0])
        try:
            res = CliRunner().invoke(commands.compare, [str(fake_out), "--port", board.path, *args])
        finally:
            board.close()
        assert res.exit_code == 0, res.output
        assert "3/3 inputs bit-exact" in res.output


def test_cli_compare_finds_a_buggy_board(tmp_path, fake_out):
    exe = build_host_harness(tmp_path / "bug", defines=["FAKE_MODEL_BUG"],
                             header=selftest_header(FakeEmulator(), np.zeros((0, 4, 4, 2), np.int8)))
    board = HostBoard(exe)
    try:
        res = CliRunner().invoke(commands.compare, [str(fake_out), "--port", board.path,
                                                    "--count", "5", "--json", str(tmp_path / "r.json")])
    finally:
        board.close()
    assert res.exit_code == 1
    assert "'conv1x1_relu'" in res.output and "channel 2 at [1, 1, 2]" in res.output
    record = json.loads((tmp_path / "r.json").read_text())
    assert not record["ok"] and record["mismatches"]
    assert all(m["layer"]["name"] == "conv1x1_relu" and m["layer"]["channel"] == 2
               for m in record["mismatches"])
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "inputs differ from the emulator" in last


def test_cli_compare_refuses_another_model(tmp_path, fake_out):
    exe = build_host_harness(tmp_path / "other", defines=["FAKE_MODEL_HASH=0x0badf00du"],
                             header=selftest_header(FakeEmulator(0x0BADF00D),
                                                    np.zeros((0, 4, 4, 2), np.int8)))
    board = HostBoard(exe)
    try:
        res = CliRunner().invoke(commands.compare, [str(fake_out), "--port", board.path])
    finally:
        board.close()
    assert res.exit_code == 1
    assert "board runs model 0x0badf00d" in res.output and "holds model 0x1234abcd" in res.output


def test_cli_compare_errors_are_one_line(fake_out):
    res = CliRunner().invoke(commands.compare, [str(fake_out), "--port", "/dev/edgebn-nope"])
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0 and "cannot open serial port" in res.output
    res = CliRunner().invoke(commands.compare, [str(fake_out)])
    assert res.exit_code == 2 and "exactly one of --port PORT or --qemu" in res.output
