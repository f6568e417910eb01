"""Unit tests of the wire protocol: frames, payloads, the stream decoder, and agreement with the C
header firmware/harness/protocol.h."""
from __future__ import annotations

import re
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebn.device import protocol as P
from edgebn.resources import firmware_dir


def test_frame_round_trip_and_layout():
    raw = P.encode_frame(P.Msg.RUN, 0x1234, b"\x01\x02\xff", P.FLAG_DEBUG)
    assert raw[:2] == b"\xeb\xd9"
    assert raw[2] == 0x02 and raw[3] == 0x01
    assert struct.unpack_from("<HI", raw, 4) == (0x1234, 3)
    assert raw[10:13] == b"\x01\x02\xff"
    assert struct.unpack_from("<I", raw, 13)[0] == zlib.crc32(raw[:13])
    assert len(raw) == P.HEADER_BYTES + 3 + P.CRC_BYTES
    assert P.FrameDecoder().feed(raw) == [P.Frame(P.Msg.RUN, 0x1234, b"\x01\x02\xff", P.FLAG_DEBUG)]


def test_seq_must_fit_16_bits():
    with pytest.raises(ValueError, match="16 bits"):
        P.encode_frame(P.Msg.RUN, 0x10000)


def test_crc_error_is_reported_and_next_frame_still_decodes():
    bad = bytearray(P.encode_frame(P.Msg.RESULT, 5, b"abcdef"))
    bad[12] ^= 0x10
    good = P.encode_frame(P.Msg.RESULT, 6, b"xyz")
    events = P.FrameDecoder().feed(bytes(bad) + good)
    assert isinstance(events[0], P.BadFrame) and "CRC" in events[0].reason and events[0].seq == 5
    assert events[-1] == P.Frame(P.Msg.RESULT, 6, b"xyz")


def test_corrupted_crc_field_itself():
    raw = bytearray(P.encode_frame(P.Msg.INFO, 1, b"hello"))
    raw[-1] ^= 0xFF
    assert [type(e) for e in P.FrameDecoder().feed(bytes(raw))] == [P.BadFrame]


def test_truncated_frame_waits_then_is_dropped_on_stall():
    dec = P.FrameDecoder()
    raw = P.encode_frame(P.Msg.RESULT, 9, bytes(range(40)))
    assert dec.feed(raw[:25]) == []                    # incomplete: nothing yet, nothing lost
    events = dec.drop_partial()                        # the line went quiet
    assert len(events) == 1 and isinstance(events[0], P.BadFrame) and "cut short" in events[0].reason
    assert events[0].seq == 9
    good = P.encode_frame(P.Msg.RESULT, 10, b"ok")
    assert dec.feed(good) == [P.Frame(P.Msg.RESULT, 10, b"ok")]


def test_truncated_header():
    dec = P.FrameDecoder()
    assert dec.feed(P.MAGIC + b"\x82\x00") == []
    events = dec.drop_partial()
    assert isinstance(events[0], P.BadFrame) and events[0].seq is None


def test_truncated_frame_followed_by_a_good_one_without_a_pause():
    # The cut frame claims more bytes than it has: the good frame is swallowed as its payload,
    # the CRC fails, and the scan resumes inside it, finding the good frame intact.
    cut = P.encode_frame(P.Msg.RESULT, 1, bytes(30))[:20]
    good = P.encode_frame(P.Msg.RESULT, 2, bytes(range(30)))
    events = P.FrameDecoder().feed(cut + good)
    assert events[-1] == P.Frame(P.Msg.RESULT, 2, bytes(range(30)))


def test_absurd_length_is_noise():
    dec = P.FrameDecoder(max_payload=100)
    fake_header = P.MAGIC + bytes([0x82, 0]) + struct.pack("<HI", 3, 1 << 30)
    good = P.encode_frame(P.Msg.RESULT, 4, b"z")
    events = dec.feed(fake_header + good)
    assert isinstance(events[0], P.BadFrame) and "exceeds" in events[0].reason
    assert events[-1] == P.Frame(P.Msg.RESULT, 4, b"z")


def test_text_lines_between_frames():
    dec = P.FrameDecoder()
    stream = (b"ets Jun  8 2016 boot\r\n" + b"\x00\xff\x13noise" + b"\r\n \r\nEDGEBN BOOT harness=1\r\n"
              + P.encode_frame(P.Msg.INFO, 1, b"i") + b"EDGEBN SELFTEST PASS vectors=3\r\n")
    events = dec.feed(stream)
    texts = [e.text for e in events if isinstance(e, P.TextLine)]
    assert texts == ["ets Jun  8 2016 boot", "EDGEBN BOOT harness=1", "EDGEBN SELFTEST PASS vectors=3"]
    assert [e for e in events if isinstance(e, P.Frame)] == [P.Frame(P.Msg.INFO, 1, b"i")]


def test_magic_split_across_reads():
    raw = P.encode_frame(P.Msg.RESULT, 3, b"abc")
    dec = P.FrameDecoder()
    assert dec.feed(b"xx" + raw[:1]) == []
    assert dec.feed(raw[1:]) == [P.Frame(P.Msg.RESULT, 3, b"abc")]


_noise = st.binary(max_size=40).map(lambda b: bytes(x for x in b if x != P.MAGIC[0]))
_frame = st.builds(P.Frame, st.sampled_from(list(P.Msg)), st.integers(0, 0xFFFF),
                   st.binary(max_size=64), st.integers(0, 255))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_noise, _frame), max_size=8), st.lists(st.integers(1, 50), max_size=20))
def test_frames_survive_noise_and_arbitrary_chunking(items, cuts):
    stream = b"".join(noise + f.encode() for noise, f in items)
    dec = P.FrameDecoder()
    events, pos = [], 0
    for c in cuts + [len(stream)]:
        events += dec.feed(stream[pos:pos + c])
        pos += c
    assert [e for e in events if isinstance(e, P.Frame)] == [f for _, f in items]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), _frame)
def test_any_garbage_then_stall_then_frame_recovers(garbage, frame):
    dec = P.FrameDecoder(max_payload=1024)
    dec.feed(garbage)
    for _ in range(len(garbage) + 1):          # the link calls this each time the line is quiet
        if not dec.drop_partial():
            break
    assert [e for e in dec.feed(frame.encode()) if isinstance(e, P.Frame)] == [frame]


def test_payload_round_trips():
    info = P.Info(0xDEADBEEF, 3072, 10, 7, 12345, 240_000_000, 3072, 1, 1,
                  P.COUNTER_CYCLES | P.COUNTER_INSTRET, P.SelftestStatus.FAIL, 3, 2, "esp32s3")
    assert P.decode_info(P.encode_info(info)) == info
    assert len(P.encode_info(info)) == P.INFO_BYTES + len("esp32s3")
    r = P.Result(b"\x80\x7f\x00", 2**40 + 5, 77, 2)
    assert P.decode_result(P.encode_result(r)) == r
    layer = P.Layer(3, 11, 22, bytes(range(100)))
    assert P.decode_layer(P.encode_layer(layer)) == layer
    e = P.ErrorReply(P.ErrorCode.OUT_OF_ORDER, P.Msg.RUN, 9, 8)
    assert P.decode_error(P.encode_error(e)) == e
    assert "expected sequence number 8, got 9" in e.describe()


@pytest.mark.parametrize("decode,size", [(P.decode_info, P.INFO_BYTES),
                                         (P.decode_result, P.RESULT_BYTES),
                                         (P.decode_layer, P.LAYER_BYTES),
                                         (P.decode_error, P.ERROR_BYTES)])
def test_short_payloads_are_refused(decode, size):
    with pytest.raises(ValueError, match="bytes"):
        decode(bytes(size - 1))


def test_every_error_code_has_a_message():
    for code in P.ErrorCode:
        assert P.ErrorReply(code, 2, 1, 2).describe()
    assert "unknown device error code 99" in P.ErrorReply(99, 0, 0, 0).describe()


def _c_defines() -> dict[str, str]:
    text = (firmware_dir() / "harness" / "protocol.h").read_text()
    return dict(re.findall(r"#define[ \t]+(EDGEBN_\w+)[ \t]+(\S+)", text))


def test_python_constants_match_protocol_h():
    d = _c_defines()
    num = lambda name: int(d[name].rstrip("u"), 0)  # noqa: E731
    assert bytes([num("EDGEBN_MAGIC0"), num("EDGEBN_MAGIC1")]) == P.MAGIC
    assert num("EDGEBN_HEADER_BYTES") == P.HEADER_BYTES
    assert num("EDGEBN_CRC_BYTES") == P.CRC_BYTES
    assert num("EDGEBN_PROTOCOL_VERSION") == P.PROTOCOL_VERSION
    assert num("EDGEBN_FLAG_DEBUG") == P.FLAG_DEBUG
    assert num("EDGEBN_COUNTER_CYCLES") == P.COUNTER_CYCLES
    assert num("EDGEBN_COUNTER_INSTRET") == P.COUNTER_INSTRET
    for m in P.Msg:
        assert num(f"EDGEBN_MSG_{m.name}") == m.value, m
    for e in P.ErrorCode:
        assert num(f"EDGEBN_ERR_{e.name}") == e.value, e
    for s in P.SelftestStatus:
        assert num(f"EDGEBN_SELFTEST_{s.name}") == s.value, s
    for name, size in [("INFO", P.INFO_BYTES), ("RESULT", P.RESULT_BYTES),
                       ("LAYER", P.LAYER_BYTES), ("ERROR", P.ERROR_BYTES)]:
        assert num(f"EDGEBN_{name}_BYTES") == size, name
    text = (firmware_dir() / "harness" / "protocol.h").read_text()
    assert f'"{P.BANNER_PREFIX}"' in text and f'"{P.SELFTEST_PREFIX}"' in text
