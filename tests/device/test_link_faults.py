"""The real Link and compare code against a fault-injecting fake serial port: every way the line or
the board can fail must end in either the right answer or a one-line error that says what
happened."""
from __future__ import annotations

import numpy as np
import pytest

from edgebn.device import protocol as P
from edgebn.device.compare import ModelMismatch, compare_on_link, random_inputs
from edgebn.device.link import DeviceReset, DeviceTimeout, Link, LinkError
from fake_serial import FakeDevice, FakeSerial


def make_link(emu, timeout=0.3, **device_kw):
    dev = FakeDevice(emu, **device_kw)
    return dev, Link(FakeSerial(dev), name="fake board", reply_timeout=timeout)


def run_compare(link, emu, n=8, **kw):
    return compare_on_link(link, emu, random_inputs(emu, n), progress=False, sync_timeout=1.0,
                           log=lambda m: None, **kw)


def test_clean_run_all_bit_exact(fake_emu):
    dev, link = make_link(fake_emu)
    report = run_compare(link, fake_emu)
    assert report.ok and report.matched == report.inputs == 8
    assert report.retries == 0 and link.bad_frames == 0
    assert report.summary().startswith("8/8 inputs bit-exact, 0.05 ms/inference (12,345 cycles @240 MHz)")
    assert link.selftest_line == "EDGEBN SELFTEST PASS vectors=3"
    assert len(dev.requests) == 1 + 8   # one INFO, one RUN per input, nothing else


def test_sync_skips_boot_text_and_reads_info(fake_emu):
    _, link = make_link(fake_emu)
    info = link.sync(1.0)
    assert info.model_hash == fake_emu.model_hash and info.input_size == 32
    assert info.selftest == P.SelftestStatus.PASS and info.port_name == "fake"
    assert any(line.startswith("EDGEBN BOOT") for line in link.lines)


def test_wait_for_line_reads_the_boot_text_without_sending_anything(fake_emu):
    dev, link = make_link(fake_emu)
    assert link.wait_for_line(P.SELFTEST_PREFIX, 1.0) == "EDGEBN SELFTEST PASS vectors=3"
    assert link.selftest_line == "EDGEBN SELFTEST PASS vectors=3" and link.resets_seen == 1
    assert dev.requests == [] and link.transport.written == b""
    link.sync(1.0)
    assert [line for line in link.lines if line.startswith("EDGEBN")] == [   # each line kept once
        "EDGEBN BOOT harness=1 protocol=1 port=fake model=0x1234abcd",
        "EDGEBN SELFTEST PASS vectors=3"]
    assert link.resets_seen == 1


def test_wait_for_line_gives_up_on_silence_and_leaves_frames_to_the_requests(fake_emu):
    dev = FakeDevice(fake_emu)
    quiet = Link(FakeSerial(dev, boot=False), reply_timeout=0.3)
    assert quiet.wait_for_line(P.SELFTEST_PREFIX, 0.1) is None
    line = FakeSerial(None)            # answers nothing: only what is queued below arrives
    line.rx += P.encode_frame(P.Msg.INFO, 1, P.encode_info(dev.info())) + dev.boot_text()
    link = Link(line, reply_timeout=0.3)
    assert link.wait_for_line(P.SELFTEST_PREFIX, 1.0) is None   # a frame came first: stop there
    assert link.selftest_line is None
    assert link.sync(1.0).model_hash == fake_emu.model_hash     # the frame answers sync's seq 1


@pytest.mark.parametrize("fault", ["corrupt_reply", "truncate_reply", "drop_reply",
                                   "corrupt_request", "reset"])
def test_transient_faults_cost_a_retry_not_the_run(fake_emu, fault):
    dev, link = make_link(fake_emu, faults={3: fault})
    report = run_compare(link, fake_emu)
    assert report.ok and report.matched == 8
    assert report.retries == 1
    if fault == "reset":
        assert report.resets == 1
        assert "1 board reset(s) survived" in report.summary()
    # the faulty input was sent again: 8 inputs + 1 retry (a request garbled on the way in never
    # counted as a RUN on the board, which answered it with a BAD_CRC error frame)
    assert dev.runs == (8 if fault == "corrupt_request" else 9)


@pytest.mark.parametrize("fault", ["stale_first", "garbage_first"])
def test_stale_frames_and_noise_are_skipped_without_retry(fake_emu, fault):
    _, link = make_link(fake_emu, faults={2: fault, 5: fault})
    report = run_compare(link, fake_emu)
    assert report.ok and report.retries == 0
    if fault == "stale_first":
        assert link.stale_frames == 2


def test_reset_is_detected_by_the_banner(fake_emu):
    _, link = make_link(fake_emu, faults={0: "reset"})
    link.sync(1.0)
    with pytest.raises(DeviceReset, match="rebooted while RUN seq 2 was awaited"):
        link.run(bytes(32))


def test_device_that_goes_silent_names_the_sequence_numbers(fake_emu):
    _, link = make_link(fake_emu, faults={4: "dead"})
    with pytest.raises(LinkError) as e:
        run_compare(link, fake_emu)
    msg = str(e.value)
    assert "input 4" in msg and "stopped answering" in msg
    assert "no reply to RUN seq 6" in msg and "last good reply: seq 5" in msg
    assert "resync failed" in msg and "\n" not in msg


def test_timeout_exception_carries_seq(fake_emu):
    _, link = make_link(fake_emu, faults={0: "dead"})
    link.sync(1.0)
    with pytest.raises(DeviceTimeout) as e:
        link.run(bytes(32))
    assert e.value.seq == 2


def test_retries_are_bounded(fake_emu):
    _, link = make_link(fake_emu, faults={1: "corrupt_reply", 2: "corrupt_reply",
                                          3: "corrupt_reply", 4: "corrupt_reply"})
    with pytest.raises(LinkError, match="input 1: .*stopped answering"):
        run_compare(link, fake_emu, retries=3)


def test_other_model_on_the_board_is_refused_naming_both_hashes(fake_emu):
    _, link = make_link(fake_emu, model_hash=0xCAFEF00D)
    with pytest.raises(ModelMismatch) as e:
        run_compare(link, fake_emu, out="build/net")
    assert "0xcafef00d" in str(e.value) and "0x1234abcd" in str(e.value)
    assert "build/net" in str(e.value)


def test_wrong_baud_rate_is_named(fake_emu):
    link = Link(FakeSerial(noise=True), name="/dev/ttyUSB0 @ 9600 baud", reply_timeout=0.2)
    with pytest.raises(LinkError, match="wrong baud rate"):
        link.sync(0.6, retry_interval=0.2)


def test_nothing_connected_is_named():
    link = Link(FakeSerial(), name="/dev/ttyUSB0", reply_timeout=0.2)
    with pytest.raises(LinkError, match="nothing was received; is the board connected"):
        link.sync(0.5, retry_interval=0.2)


def test_board_without_harness_is_named():
    ser = FakeSerial()
    ser.rx += b"Hello from some other sketch\r\n"
    with pytest.raises(LinkError, match="printed 'Hello from some other sketch' but never answered"):
        Link(ser, name="/dev/ttyUSB0").sync(0.5, retry_interval=0.2)


def test_port_that_cannot_open():
    with pytest.raises(LinkError, match="cannot open serial port /dev/edgebn-no-such-port"):
        Link.open_serial("/dev/edgebn-no-such-port")


def test_fatal_device_error_is_not_retried(fake_emu):
    from edgebn.device.compare import CompareReport, _run_with_retry

    dev, link = make_link(fake_emu)
    info = link.sync(1.0)
    report = CompareReport(info=info, target="fake")
    with pytest.raises(LinkError, match="input 7: .*expects 32 input bytes, got 31") as e:
        _run_with_retry(link, fake_emu, np.zeros(31, np.int8), 7, report, 3, 1.0, "OUT")
    assert "\n" not in str(e.value)
    assert dev.runs == 1 and report.retries == 0


def test_same_hash_but_other_sizes_is_refused(fake_emu):
    dev, link = make_link(fake_emu)
    link.sync(1.0)
    link.info = P.Info(**{**link.info.__dict__, "input_size": 48})
    with pytest.raises(ModelMismatch, match="takes 48 and gives 5 int8, OUT says 32 and 5"):
        run_compare(link, fake_emu, out="OUT")
    assert dev.runs == 0


def test_out_of_order_sequence_is_recovered(fake_emu):
    dev, link = make_link(fake_emu)
    link.sync(1.0)
    link._seq += 5          # the host skips sequence numbers (e.g. requests lost on the line)
    with pytest.raises(LinkError, match="expected sequence number 2, got 7"):
        link.run(bytes(32))
    report = run_compare(link, fake_emu, n=3)
    assert report.ok


def test_mismatch_is_located_to_layer_and_channel(fake_emu):
    # runs 2 and 3: the input and its debug-mode re-run both hit the bug
    _, link = make_link(fake_emu, faults={2: "model_bug", 3: "model_bug"})
    report = run_compare(link, fake_emu, n=5)
    assert not report.ok and report.matched == 4
    (m,) = report.mismatches
    assert m.index == 2 and m.differing_outputs == 1
    assert m.layer.index == 0 and m.layer.name == "conv1x1_relu"
    assert m.layer.channel == 2 and m.layer.position == (1, 1, 2)    # pixel 5 of a 4x4 map
    assert sum(m.layer.histogram.values()) == m.layer.differing == 1
    text = m.describe()
    assert "input 2" in text and "'conv1x1_relu'" in text and "channel 2 at [1, 1, 2]" in text
    record = report.to_json()
    assert record["ok"] is False and record["mismatches"][0]["layer"]["channel"] == 2


def test_debug_run_returns_every_layer(fake_emu):
    _, link = make_link(fake_emu)
    link.sync(1.0)
    x = random_inputs(fake_emu, 1)[0]
    r = link.run(x.tobytes(), debug=True)
    y, layers = fake_emu.run(x[None], return_layers=True)
    assert [l.index for l in r.layers] == [0, 1]
    for got, (_, want) in zip(r.layers, layers):
        assert np.array_equal(np.frombuffer(got.output, np.int8), want.reshape(-1))
    assert r.output == y.tobytes()


def test_mismatch_that_vanishes_in_debug_mode_is_called_nondeterministic(fake_emu):
    _, link = make_link(fake_emu, faults={2: "model_bug"})
    report = run_compare(link, fake_emu, n=4)
    (m,) = report.mismatches
    assert m.layer is None and "not deterministic" in m.describe()


@pytest.mark.parametrize("fault, message", [
    # 4: stale frames no longer hold the deadline off
    ("stale_flood", r"^fake board stopped answering: no reply to RUN seq 2 within 1 s \(last good reply: "
                    r"seq 1\)$"),
    # 5: a 4 MiB header is refused at once (the fake model's largest reply is far smaller) and the
    # dribble after it cannot extend the deadline
    ("huge_header", r"^fake board stopped answering: no reply to RUN seq 2 within 1 s \(last good reply: "
                    r"seq 1; last frame refused: length 4194304 exceeds \d+\)$"),
    # 6: endless LAYER frames to a plain RUN end the request after MAX_EXTRA_FRAMES, nothing kept
    ("layer_flood", r"^RUN seq 2: the board keeps sending LAYER frames \(33 so far\) in answer to a plain "
                    r"RUN; it does not keep to the protocol$"),
])
def test_misbehaving_board_cannot_hold_the_host(fake_emu, fault, message):
    """Issue #13 failures 4-6: each endless stream ends within the request's deadline (1 s here)
    with one line; the board would go on for 30 s."""
    import time

    _, link = make_link(fake_emu, timeout=1.0, faults={0: fault})
    link.sync(1.0)
    t0 = time.monotonic()
    with pytest.raises(LinkError, match=message) as e:
        link.run(bytes(32))
    assert time.monotonic() - t0 < 1.0 + 1.0      # the deadline plus one read poll and a frame
    assert "\n" not in str(e.value)
    assert len(link.decoder._buf) <= P.HEADER_BYTES + link.decoder.max_payload + P.CRC_BYTES


def test_frame_size_limit_follows_the_boards_info(fake_emu):
    """Before INFO only an INFO-sized frame is accepted; after it, the model's largest reply."""
    _, link = make_link(fake_emu)
    assert link.decoder.max_payload == P.INFO_BYTES + 64
    info = link.sync(1.0)
    assert link.decoder.max_payload == max(P.INFO_BYTES + 64, P.RESULT_BYTES + info.output_size,
                                           P.LAYER_BYTES + info.arena_bytes)


def test_debug_run_gets_more_layers_than_info_says_refused(fake_emu):
    """A debug RUN accepts INFO's layer count of LAYER frames, no more."""
    _, link = make_link(fake_emu, faults={0: "layer_flood"})
    info = link.sync(1.0)
    with pytest.raises(LinkError, match=rf"keeps sending LAYER frames \({info.num_layers + 1} so far\) in "
                                        rf"answer to a debug RUN of a {info.num_layers}-layer model"):
        link.run(bytes(32), debug=True)


def test_garbage_from_a_board_is_shown_readably():
    """Issue 13: a board sending garbage was reported as "it printed 'G'"; the error now quotes what
    came in as hex and text (the last 32 bytes at most)."""
    ser = FakeSerial()
    ser.rx += b"G\r\n" + bytes(range(0xF0, 0x100)) * 8 + b"\x00\x01AB"
    with pytest.raises(LinkError) as e:
        Link(ser, name="/dev/ttyUSB0").sync(0.5, retry_interval=0.2)
    msg = str(e.value)
    assert "hex " in msg and "fc fd fe ff 00 01 41 42" in msg, msg
    assert 'text "' in msg and '..AB"' in msg, msg
    assert f"{3 + 16 * 8 + 4} bytes" in msg and "the last 32" in msg, msg
    assert len(msg) < 400 and "\n" not in msg
