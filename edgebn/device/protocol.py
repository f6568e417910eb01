"""The edgebn wire protocol, host side: frames, payloads and a stream decoder.

The authoritative layout is firmware/harness/protocol.h (documented in firmware/PROTOCOL.md); every
number here mirrors it and tests/device/test_protocol.py checks that they agree.

A frame is ``magic(2) type(1) flags(1) seq(u16) length(u32) payload crc32(u32)``, little-endian,
with the CRC-32 (zlib's) taken over everything before it. The decoder accepts a byte stream that
also carries text (the boot banner, the self-test line) and noise, and turns it into frames, text
lines and "bad frame" notes, resynchronising on the magic after anything that does not check out.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "MAGIC", "HEADER_BYTES", "CRC_BYTES", "PROTOCOL_VERSION", "FLAG_DEBUG",
    "COUNTER_CYCLES", "COUNTER_INSTRET", "BANNER_PREFIX", "SELFTEST_PREFIX",
    "Msg", "ErrorCode", "SelftestStatus", "Frame", "TextLine", "BadFrame",
    "Info", "Result", "Layer", "ErrorReply",
    "encode_frame", "FrameDecoder", "INFO_BYTES", "RESULT_BYTES", "LAYER_BYTES", "ERROR_BYTES",
    "encode_info", "decode_info", "encode_result", "decode_result", "encode_layer", "decode_layer",
    "encode_error", "decode_error",
]

MAGIC = b"\xeb\xd9"
HEADER_BYTES = 10
CRC_BYTES = 4
PROTOCOL_VERSION = 1
FLAG_DEBUG = 0x01
COUNTER_CYCLES = 0x01
COUNTER_INSTRET = 0x02
BANNER_PREFIX = "EDGEBN BOOT"
SELFTEST_PREFIX = "EDGEBN SELFTEST"

_HEADER = struct.Struct("<2sBBHI")
_INFO = struct.Struct("<IIIIIIIHHBBBB")
_RESULT = struct.Struct("<QQI")
_LAYER = struct.Struct("<IQQ")
_ERROR = struct.Struct("<BBHII")
INFO_BYTES, RESULT_BYTES, LAYER_BYTES, ERROR_BYTES = (
    _INFO.size, _RESULT.size, _LAYER.size, _ERROR.size)


class Msg(IntEnum):
    INFO_REQ = 0x01
    RUN = 0x02
    EXIT = 0x03
    INFO = 0x81
    RESULT = 0x82
    LAYER = 0x83
    EXIT_ACK = 0x84
    ERROR = 0xEE


class ErrorCode(IntEnum):
    BAD_CRC = 1
    BAD_LENGTH = 2
    UNKNOWN_TYPE = 3
    WRONG_INPUT_SIZE = 4
    OUT_OF_ORDER = 5
    NOT_SYNCED = 6
    TIMEOUT = 7
    MODEL_FAILED = 8


class SelftestStatus(IntEnum):
    NONE = 0
    PASS = 1
    FAIL = 2


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    flags: int = 0

    def encode(self) -> bytes:
        return encode_frame(self.type, self.seq, self.payload, self.flags)


@dataclass(frozen=True)
class TextLine:
    """A line of text between frames (boot banner, self-test verdict, a board's own log)."""
    text: str


@dataclass(frozen=True)
class BadFrame:
    """Something that began with the magic but was not a frame (bad CRC, absurd length)."""
    reason: str
    seq: int | None = None


def encode_frame(type_: int, seq: int, payload: bytes = b"", flags: int = 0) -> bytes:
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"sequence number {seq} does not fit 16 bits")
    head = _HEADER.pack(MAGIC, int(type_), flags, seq, len(payload))
    body = head + bytes(payload)
    return body + struct.pack("<I", zlib.crc32(body))


class FrameDecoder:
    """Incremental decoder: ``feed(data)`` returns the frames, text lines and bad frames found.

    ``max_payload`` bounds the length field: a longer one is taken as noise (the magic was a
    coincidence or the header is corrupt) and scanning resumes one byte after that magic.
    """

    def __init__(self, max_payload: int = 1 << 24, max_line: int = 512):
        self.max_payload = max_payload
        self.max_line = max_line
        self._buf = bytearray()
        self._line = bytearray()
        self._noisy = False
        self.skipped_bytes = 0  # noise and text seen outside frames, for diagnostics

    def feed(self, data: bytes) -> list[Frame | TextLine | BadFrame]:
        self._buf += data
        events: list[Frame | TextLine | BadFrame] = []
        while True:
            start = self._buf.find(MAGIC)
            if start < 0:
                # Keep a trailing first magic byte: its partner may be in the next read.
                keep = 1 if self._buf[-1:] == MAGIC[:1] else 0
                self._text(self._buf[:len(self._buf) - keep], events)
                del self._buf[:len(self._buf) - keep]
                return events
            self._text(self._buf[:start], events)
            del self._buf[:start]
            if len(self._buf) < HEADER_BYTES:
                return events
            _, type_, flags, seq, length = _HEADER.unpack_from(self._buf)
            if length > self.max_payload:
                self._reject(events, f"length {length} exceeds {self.max_payload}", seq)
                continue
            total = HEADER_BYTES + length + CRC_BYTES
            if len(self._buf) < total:
                return events
            body = bytes(self._buf[:HEADER_BYTES + length])
            (crc,) = struct.unpack_from("<I", self._buf, HEADER_BYTES + length)
            if crc != zlib.crc32(body):
                self._reject(events, f"CRC mismatch on a type 0x{type_:02x} frame", seq)
                continue
            del self._buf[:total]
            events.append(Frame(type_, seq, body[HEADER_BYTES:], flags))

    @property
    def pending(self) -> int:
        """Bytes held of a frame still arriving (0 when none has started)."""
        return len(self._buf) if self._buf.startswith(MAGIC) else 0

    def drop_partial(self) -> list[Frame | TextLine | BadFrame]:
        """Give up on a frame that stopped arriving (called when the line has gone quiet).

        A cut-short frame, or a magic that was only noise, would otherwise hold back every frame
        behind it until its claimed length had arrived."""
        if not self._buf.startswith(MAGIC):
            return []
        seq = _HEADER.unpack_from(self._buf)[3] if len(self._buf) >= HEADER_BYTES else None
        events: list[Frame | TextLine | BadFrame] = []
        self._reject(events, f"frame cut short after {len(self._buf)} bytes", seq)
        return events + self.feed(b"")

    def _reject(self, events: list, reason: str, seq: int | None) -> None:
        """The magic at the buffer's start began no frame: note why, and resume scanning one byte
        after it; what follows the magic is frame debris, not text."""
        events.append(BadFrame(reason, seq))
        self.skipped_bytes += 1
        del self._buf[:1]
        self._noisy = True

    def _text(self, data: bytes | bytearray, events: list) -> None:
        """Collect printable lines; a line with any non-text byte in it is noise, not text."""
        self.skipped_bytes += len(data)
        for b in data:
            if b in (0x0A, 0x0D):
                text = self._line.decode("ascii").strip()
                if text and not self._noisy:
                    events.append(TextLine(text))
                self._line.clear()
                self._noisy = False
            elif (0x20 <= b < 0x7F or b == 0x09) and len(self._line) < self.max_line:
                self._line.append(b)
            else:
                self._noisy = True


# ---- payloads ----

def _split(payload: bytes, fixed: struct.Struct, what: str) -> tuple[tuple, bytes]:
    """Every payload is fixed fields followed by a variable tail (INFO's port name, RESULT's output
    int8, LAYER's layer int8; ERROR's is empty): returns (fields, tail)."""
    if len(payload) < fixed.size:
        raise ValueError(f"{what} payload is {len(payload)} bytes, expected at least {fixed.size}")
    return fixed.unpack_from(payload), bytes(payload[fixed.size:])


@dataclass(frozen=True)
class Info:
    model_hash: int
    input_size: int
    output_size: int
    num_layers: int
    arena_bytes: int
    cpu_hz: int
    max_payload: int
    harness_version: int
    protocol_version: int
    counters: int
    selftest: SelftestStatus
    selftest_count: int
    selftest_failed_vector: int | None
    port_name: str

    @property
    def has_cycles(self) -> bool:
        return bool(self.counters & COUNTER_CYCLES)

    @property
    def has_instret(self) -> bool:
        return bool(self.counters & COUNTER_INSTRET)


def encode_info(info: Info) -> bytes:
    failed = 0xFF if info.selftest_failed_vector is None else info.selftest_failed_vector
    return _INFO.pack(info.model_hash, info.input_size, info.output_size, info.num_layers,
                      info.arena_bytes, info.cpu_hz, info.max_payload, info.harness_version,
                      info.protocol_version, info.counters, int(info.selftest),
                      info.selftest_count, failed) + info.port_name.encode("ascii")


def decode_info(payload: bytes) -> Info:
    f, name = _split(payload, _INFO, "INFO")
    return Info(*f[:10], SelftestStatus(f[10]) if f[10] in (0, 1, 2) else SelftestStatus.FAIL,
                f[11], None if f[12] == 0xFF else f[12], name.decode("ascii", "replace"))


@dataclass(frozen=True)
class Result:
    output: bytes
    cycles: int
    instret: int
    layers_sent: int


def encode_result(r: Result) -> bytes:
    return _RESULT.pack(r.cycles, r.instret, r.layers_sent) + bytes(r.output)


def decode_result(payload: bytes) -> Result:
    (cycles, instret, layers), output = _split(payload, _RESULT, "RESULT")
    return Result(output, cycles, instret, layers)


@dataclass(frozen=True)
class Layer:
    index: int
    cycles: int
    instret: int
    output: bytes


def encode_layer(l: Layer) -> bytes:
    return _LAYER.pack(l.index, l.cycles, l.instret) + bytes(l.output)


def decode_layer(payload: bytes) -> Layer:
    (index, cycles, instret), output = _split(payload, _LAYER, "LAYER")
    return Layer(index, cycles, instret, output)


@dataclass(frozen=True)
class ErrorReply:
    code: int
    type: int
    arg0: int
    arg1: int
    seq: int = field(default=0xFFFF, compare=False)

    def describe(self) -> str:
        """What went wrong, in the words of firmware/PROTOCOL.md."""
        a0, a1 = self.arg0, self.arg1
        try:
            code = ErrorCode(self.code)
        except ValueError:
            return f"unknown device error code {self.code} (args {a0}, {a1})"
        return {
            ErrorCode.BAD_CRC: f"the device saw a bad CRC (received 0x{a0:08x}, computed 0x{a1:08x})",
            ErrorCode.BAD_LENGTH: f"the device refused a payload length of {a0} (at most {a1})",
            ErrorCode.UNKNOWN_TYPE: f"the device does not know frame type 0x{a0:02x}",
            ErrorCode.WRONG_INPUT_SIZE: f"the device expects {a1} input bytes, got {a0}",
            ErrorCode.OUT_OF_ORDER: f"the device expected sequence number {a1}, got {a0}",
            ErrorCode.NOT_SYNCED: "the device has not been synchronised since it booted",
            ErrorCode.TIMEOUT: f"the device got only {a0} of {a1} frame bytes before a pause",
            # arg0 carries edgebn_model_run's int return code, sent as its 32-bit pattern
            ErrorCode.MODEL_FAILED: f"edgebn_model_run returned {a0 - (a0 >> 31 << 32)} on the device",
        }[code]


def encode_error(e: ErrorReply) -> bytes:
    return _ERROR.pack(e.code, e.type, 0, e.arg0, e.arg1)


def decode_error(payload: bytes, seq: int = 0xFFFF) -> ErrorReply:
    (code, type_, _, arg0, arg1), _ = _split(payload, _ERROR, "ERROR")
    return ErrorReply(code, type_, arg0, arg1, seq)
