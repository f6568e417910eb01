"""A fault-injecting fake serial port with a Python device behind it.

``FakeDevice`` answers protocol frames the way firmware/harness/edgebn_harness.c does (INFO, RUN,
debug LAYER frames, ERROR frames, sync and sequence rules), computing with the fake emulator, and
``faults`` makes it misbehave on chosen RUN requests so the real Link/compare code can be driven
through every failure the line and the board can produce.
"""
from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from edgebn.device import protocol as P

FAULTS = {
    "corrupt_reply",    # flip a payload byte of the RESULT (CRC then fails on the host)
    "truncate_reply",   # send only the first half of the RESULT frame
    "drop_reply",       # compute, send nothing
    "stale_first",      # send a RESULT with an older seq (and wrong data) before the real one
    "garbage_first",    # line noise before the reply
    "reset",            # reboot instead of answering: banner + self-test text, sync lost
    "corrupt_request",  # the request arrives with a flipped byte (device answers BAD_CRC)
    "dead",             # never answer anything again
    "model_bug",        # compute this input wrongly in layer 0, channel 2
    # endless streams instead of a reply (issue #13 failures 4-6); each stops after STREAM_SECONDS
    # so that a host that never gives up fails its test instead of hanging it
    "stale_flood",      # a valid RESULT frame with an older seq every 0.05 s
    "huge_header",      # a header announcing a 4 MiB frame, then one byte every 0.1 s
    "layer_flood",      # LAYER frames with the request's own seq, every 5 ms, to a plain RUN
}
STREAM_SECONDS = 30.0


class FakeDevice:
    def __init__(self, emu, *, model_hash: int | None = None, faults: dict | None = None,
                 bug_every_run: bool = False, port_name: str = "fake"):
        self.emu = emu
        self.model_hash = emu.model_hash if model_hash is None else model_hash
        self.faults: dict[int, set[str]] = defaultdict(set)
        for k, v in (faults or {}).items():
            names = {v} if isinstance(v, str) else set(v)
            assert names <= FAULTS, names - FAULTS
            self.faults[k] |= names
        self.bug_every_run = bug_every_run
        self.port_name = port_name
        self.decoder = P.FrameDecoder(max_payload=int(np.prod(emu.input_shape)))
        self.synced = False
        self.expected_seq = 0
        self.runs = 0            # RUN frames received, the key of `faults`
        self.dead = False
        self.requests: list[P.Frame] = []
        self.stream = None       # (interval s, iterator of byte chunks) paced out by FakeSerial.read

    def boot_text(self) -> bytes:
        return (f"\r\n{P.BANNER_PREFIX} harness=1 protocol=1 port={self.port_name} "
                f"model=0x{self.model_hash:08x}\r\n{P.SELFTEST_PREFIX} PASS vectors=3\r\n").encode()

    def info(self) -> P.Info:
        return P.Info(self.model_hash, int(np.prod(self.emu.input_shape)),
                      int(self.emu.packed_output_size), len(self.emu.layer_names), 48,
                      240_000_000, int(np.prod(self.emu.input_shape)), 1, 1,
                      P.COUNTER_CYCLES, P.SelftestStatus.PASS, 3, None, self.port_name)

    def receive(self, data: bytes) -> bytes:
        """Bytes from the host in, bytes to the host out."""
        out = bytearray()
        if self.dead:
            return bytes(out)
        fault_now = self.faults.get(self.runs, set())
        if "corrupt_request" in fault_now and data[:2] == P.MAGIC and data[2] == P.Msg.RUN:
            data = bytearray(data)
            data[P.HEADER_BYTES] ^= 0x40
            fault_now.discard("corrupt_request")
            data = bytes(data)
        for ev in self.decoder.feed(data):
            if isinstance(ev, P.BadFrame):
                out += P.encode_frame(P.Msg.ERROR, ev.seq or 0xFFFF, P.encode_error(
                    P.ErrorReply(P.ErrorCode.BAD_CRC, 0, 0, 0)))
            elif isinstance(ev, P.Frame):
                self.requests.append(ev)
                out += self._handle(ev)
                if self.dead:
                    break
        return bytes(out)

    def _error(self, frame: P.Frame, code: P.ErrorCode, a0: int = 0, a1: int = 0) -> bytes:
        return P.encode_frame(P.Msg.ERROR, frame.seq,
                              P.encode_error(P.ErrorReply(code, frame.type, a0, a1)))

    def _handle(self, f: P.Frame) -> bytes:
        if f.type == P.Msg.INFO_REQ:
            self.synced, self.expected_seq = True, (f.seq + 1) & 0xFFFF
            return P.encode_frame(P.Msg.INFO, f.seq, P.encode_info(self.info()))
        if f.type != P.Msg.RUN:
            return self._error(f, P.ErrorCode.UNKNOWN_TYPE, f.type)
        index = self.runs
        self.runs += 1
        faults = self.faults.get(index, set())
        if "dead" in faults:
            self.dead = True
            return b""
        if "reset" in faults:
            self.synced = False
            return self.boot_text()
        if not self.synced:
            return self._error(f, P.ErrorCode.NOT_SYNCED)
        if f.seq != self.expected_seq:
            return self._error(f, P.ErrorCode.OUT_OF_ORDER, f.seq, self.expected_seq)
        size = int(np.prod(self.emu.input_shape))
        if len(f.payload) != size:
            return self._error(f, P.ErrorCode.WRONG_INPUT_SIZE, len(f.payload), size)
        self.expected_seq = (f.seq + 1) & 0xFFFF
        x = np.frombuffer(f.payload, np.int8).reshape(1, *self.emu.input_shape)
        y, layers = self.emu.run(x, return_layers=True)
        layers = [np.asarray(a).reshape(-1).copy() for _, a in layers]
        if "model_bug" in faults or self.bug_every_run:
            layers[0][5 * 3 + 2] = min(int(layers[0][5 * 3 + 2]) + 100, 127)
            layers[-1][0] = (int(layers[-1][0]) + 1) % 128  # the error reaches the output
        y = layers[-1]
        out = bytearray()
        if faults & {"stale_flood", "huge_header", "layer_flood"}:
            self.stream = self._endless(f, faults, len(y))
            return b""
        if "garbage_first" in faults:
            out += bytes(np.random.default_rng(index).integers(0, 256, 64, dtype=np.uint8))
        if "stale_first" in faults:
            out += P.encode_frame(P.Msg.RESULT, (f.seq - 1) & 0xFFFF, P.encode_result(
                P.Result(bytes(len(y)), 1, 0, 0)))
        debug = bool(f.flags & P.FLAG_DEBUG)
        if debug:
            for i, a in enumerate(layers):
                out += P.encode_frame(P.Msg.LAYER, f.seq, P.encode_layer(
                    P.Layer(i, 1000 + i, 0, a.astype(np.int8).tobytes())), P.FLAG_DEBUG)
        reply = bytearray(P.encode_frame(P.Msg.RESULT, f.seq, P.encode_result(P.Result(
            y.astype(np.int8).tobytes(), 12345, 0, len(layers) if debug else 0)),
            P.FLAG_DEBUG if debug else 0))
        if "corrupt_reply" in faults:
            reply[P.HEADER_BYTES + P.RESULT_BYTES] ^= 0x01
        if "truncate_reply" in faults:
            reply = reply[:len(reply) // 2]
        if "drop_reply" in faults:
            reply = bytearray()
        return bytes(out + reply)


    def _endless(self, f: P.Frame, faults: set, out_size: int):
        import itertools

        if "stale_flood" in faults:
            return 0.05, (P.encode_frame(P.Msg.RESULT, (f.seq - 1 - k) & 0xFFFF, P.encode_result(
                P.Result(bytes(out_size), 1, 0, 0))) for k in itertools.count())
        if "huge_header" in faults:
            head = P.encode_frame(P.Msg.RESULT, f.seq, bytes(4 << 20))[:P.HEADER_BYTES]
            return 0.1, itertools.chain([head], itertools.repeat(b"\x00"))
        return 0.005, (P.encode_frame(P.Msg.LAYER, f.seq, P.encode_layer(P.Layer(k, 0, 0, bytes(48))))
                       for k in itertools.count())


class FakeSerial:
    """pyserial's read/write/in_waiting/close over a FakeDevice (or over pure noise)."""

    def __init__(self, device: FakeDevice | None = None, *, noise: bool = False,
                 boot: bool = True, timeout: float = 0.01):
        self.device = device
        self.noise = np.random.default_rng(7) if noise else None
        self.timeout = timeout
        self.rx = bytearray(device.boot_text() if device is not None and boot else b"")
        self.written = bytearray()
        self.closed = False

    @property
    def in_waiting(self) -> int:
        return len(self.rx)

    def write(self, data: bytes) -> int:
        self.written += data
        if self.device is not None:
            self.rx += self.device.receive(bytes(data))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if self.device is not None and self.device.stream is not None and not self.rx:
            interval, chunks = self.device.stream
            started = getattr(self, "_stream_started", None) or time.monotonic()
            self._stream_started = started
            if time.monotonic() - started > STREAM_SECONDS:
                self.device.stream = None
                return b""
            time.sleep(interval)
            self.rx += next(chunks)
        if self.noise is not None:
            time.sleep(self.timeout)
            return bytes(self.noise.integers(0, 256, size=max(size, 16), dtype=np.uint8))
        if not self.rx:
            time.sleep(self.timeout)
            return b""
        chunk = bytes(self.rx[:size])
        del self.rx[:size]
        return chunk

    def close(self) -> None:
        self.closed = True
