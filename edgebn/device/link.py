"""The host end of the serial link to a board running the edgebn harness.

``Link`` talks the framed protocol (edgebn/device/protocol.py) over anything with pyserial's
``read(size)`` / ``write(data)`` / ``close()`` (a real port, QEMU's pty, a test's fake). It keeps
the board honest without trusting the line:

* text between frames (boot banner, self-test verdict, ROM noise) is skipped and remembered;
  a boot banner while a reply is awaited means the board reset (``DeviceReset``);
* frames that fail their CRC, carry another request's sequence number, or stop arriving are
  dropped, and the decoder resynchronises on the next magic;
* every request has an absolute deadline (``reply_timeout`` seconds from sending it, plus the
  line time of the reply's bytes for a debug RUN): no byte, stale frame or noise extends it, and
  missing it raises ``DeviceTimeout`` naming the sequence number of the request and of the last
  good reply (and the last frame refused, if any);
* a frame header announcing more than the largest reply the board's model can send (known from
  its INFO; before INFO, an INFO reply's size) is refused at once, not waited for;
* a request accepts at most ``MAX_EXTRA_FRAMES`` frames that are not its answer (stale replies,
  LAYER frames nobody asked for), and a debug RUN at most INFO's layer count of LAYER frames:
  a board that keeps sending ends the request with a LinkError, and the host keeps no more
  than that in memory.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from ..errors import EdgebnError
from . import protocol as P

__all__ = ["LinkError", "DeviceTimeout", "DeviceReset", "DeviceErrorReply", "Link", "RunResult",
           "DEFAULT_BAUD"]

DEFAULT_BAUD = 115200
_READ_POLL_S = 0.02          # the transport's own read timeout
_STALL_S = 0.25              # a frame with no new byte for this long is given up on
MAX_EXTRA_FRAMES = 32        # frames per request that are not its answer (stale replies, stray LAYERs)
MAX_PORT_NAME = 64           # INFO's trailing port name, bytes (the harness sends a short one)
RAW_PREVIEW = 32             # bytes of unexplained input quoted (hex + text) in a "no answer" error
FRAME_OVERHEAD = 14          # header + CRC bytes per frame


class LinkError(EdgebnError):
    """The board could not be reached or did not keep to the protocol."""


class DeviceTimeout(LinkError):
    def __init__(self, message: str, seq: int):
        super().__init__(message)
        self.seq = seq


class DeviceReset(LinkError):
    """The board printed its boot banner while a reply was awaited."""


class DeviceErrorReply(LinkError):
    def __init__(self, reply: P.ErrorReply, request: str):
        super().__init__(f"{request}: {reply.describe()}")
        self.reply = reply


@dataclass
class RunResult:
    seq: int
    output: bytes
    cycles: int
    instret: int
    layers: list[P.Layer] = field(default_factory=list)


class Link:
    def __init__(self, transport, *, name: str = "device", reply_timeout: float = 10.0,
                 bytes_per_second: float | None = None):
        """bytes_per_second: the line's rate (baud / 10 for a UART), for the deadline of a debug RUN
        whose reply is long; None for a line as fast as the board (a pty, a test's fake)."""
        self.transport = transport
        self.name = name
        self.reply_timeout = reply_timeout
        self.bytes_per_second = bytes_per_second
        # until INFO says how big the model's replies are, nothing longer than an INFO is taken
        self.decoder = P.FrameDecoder(max_payload=max(P.INFO_BYTES + MAX_PORT_NAME, P.ERROR_BYTES))
        self.info: P.Info | None = None
        self.lines: deque[str] = deque(maxlen=200)   # text the board printed, most recent last
        self.selftest_line: str | None = None
        self.resets_seen = 0
        self.bad_frames = 0
        self.stale_frames = 0
        self.last_reply_seq: int | None = None
        self.last_refused: str | None = None      # why the last bad frame was dropped, for errors
        self._events: deque = deque()
        self.bytes_received = 0
        self._raw_tail: deque[int] = deque(maxlen=RAW_PREVIEW)   # the last bytes read, for error messages
        self._seq = 0
        self._last_byte_at = time.monotonic()   # last byte of any kind (for stall detection)

    # ---- opening and closing ----

    @classmethod
    def open_serial(cls, port: str, baud: int = DEFAULT_BAUD, **kwargs) -> "Link":
        import serial

        try:
            ser = serial.serial_for_url(port, baudrate=baud, timeout=_READ_POLL_S,
                                        write_timeout=max(5.0, kwargs.get("reply_timeout", 10.0)),
                                        do_not_open=True)
            # ESP32 dev boards wire RTS to EN and DTR to IO0: keep both released so opening the
            # port neither holds the chip in reset nor drops it into the ROM bootloader.
            ser.dtr = False
            ser.rts = False
            ser.open()
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open serial port {port}: {e}") from None
        kwargs.setdefault("bytes_per_second", baud / 10)
        return cls(ser, name=f"{port} @ {baud} baud", **kwargs)

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception:  # closing a port that already vanished (unplugged board) is fine
            pass

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- requests ----

    def sync(self, timeout: float = 10.0, retry_interval: float = 0.5) -> P.Info:
        """Send INFO requests until the board answers one; returns (and keeps) its Info.

        Tolerates a board that is still booting (its banner and self-test lines are read and
        kept) and noise on the line; every attempt uses a fresh sequence number, which the
        harness adopts as the start of the session."""
        deadline = time.monotonic() + timeout
        received_before = self.decoder.skipped_bytes
        self._sync_bytes_before = self.bytes_received
        while True:
            seq = self._send(P.Msg.INFO_REQ)
            wait = min(retry_interval, max(0.05, deadline - time.monotonic()))
            try:
                frame = self._await(seq, (P.Msg.INFO,), time.monotonic() + wait, "INFO", wait,
                                    resets_fatal=False, errors_fatal=False)
            except DeviceTimeout:
                if time.monotonic() >= deadline:
                    raise LinkError(self._no_answer(timeout, received_before)) from None
                continue
            try:
                self.info = P.decode_info(frame.payload)
            except ValueError as e:
                raise LinkError(f"{self.name}: malformed INFO reply: {e}") from None
            self.decoder.max_payload = self.largest_reply(self.info)
            return self.info

    @staticmethod
    def largest_reply(info: P.Info) -> int:
        """The longest payload the board's model can legitimately send: a RESULT with its output, a
        LAYER with a layer's output (which lives in the arena) or an INFO."""
        return max(P.INFO_BYTES + MAX_PORT_NAME, P.ERROR_BYTES, P.RESULT_BYTES + info.output_size,
                   P.LAYER_BYTES + max(info.arena_bytes, info.output_size))

    def wait_for_line(self, prefix: str, timeout: float) -> str | None:
        """Read what a booting board prints until a text line starting with ``prefix`` (kept in
        ``lines`` like any other) and return it; None when a frame or noise came first, or nothing
        within ``timeout`` seconds. For a board known to be booting (QEMU): a request sent before
        its UART is set up is lost, and costs a sync attempt or two."""
        deadline = time.monotonic() + timeout
        while True:
            while self._events and isinstance(self._events[0], P.TextLine):
                text = self._events.popleft().text
                self._note_text(text)
                if text.startswith(prefix):
                    return text
            if self._events or time.monotonic() >= deadline:
                return None
            chunk = self._read()
            if chunk:
                self._events.extend(self.decoder.feed(chunk))

    def run(self, data: bytes, *, debug: bool = False, timeout: float | None = None,
            reply_bytes: int | None = None) -> RunResult:
        """Run one input (int8 bytes, device layout) and return the board's output and counters;
        with ``debug`` also every layer's output, in order.

        The whole reply must arrive within ``timeout`` (default ``reply_timeout``) seconds of the
        request; a debug RUN gets the line time of ``reply_bytes`` (the layers' int8 count; by
        default the most INFO allows) on top."""
        seq = self._send(P.Msg.RUN, bytes(data), P.FLAG_DEBUG if debug else 0)
        what = f"RUN seq {seq}"
        budget = timeout or self.reply_timeout
        max_layers = 0
        if debug:
            max_layers = self.info.num_layers if self.info is not None else 4096
            if reply_bytes is None:
                per_layer = self.decoder.max_payload
                reply_bytes = max_layers * per_layer
            reply_bytes += max_layers * (FRAME_OVERHEAD + P.LAYER_BYTES)
            if self.bytes_per_second:
                budget += reply_bytes / self.bytes_per_second
        deadline = time.monotonic() + budget
        layers: list[P.Layer] = []
        stray = 0
        while True:
            frame = self._await(seq, (P.Msg.RESULT, P.Msg.LAYER), deadline, what, budget)
            if frame.type == P.Msg.LAYER:
                if debug and len(layers) < max_layers:
                    try:
                        layers.append(P.decode_layer(frame.payload))
                    except ValueError as e:
                        raise LinkError(f"{what}: malformed LAYER frame: {e}") from None
                    continue
                stray += 1                  # kept in no list: a board cannot make the host grow
                if debug or stray > MAX_EXTRA_FRAMES:
                    why = f"a debug RUN of a {max_layers}-layer model" if debug else "a plain RUN"
                    raise LinkError(f"{what}: the board keeps sending LAYER frames ({len(layers) + stray} "
                                    f"so far) in answer to {why}; it does not keep to the protocol")
                continue
            try:
                result = P.decode_result(frame.payload)
            except ValueError as e:
                raise LinkError(f"{what}: malformed RESULT frame: {e}") from None
            if self.info is not None and len(result.output) != self.info.output_size:
                raise LinkError(f"{what}: the board sent {len(result.output)} output bytes, its "
                                f"INFO promised {self.info.output_size}")
            if debug and result.layers_sent != len(layers):
                raise LinkError(f"{what}: the board sent {result.layers_sent} layers but only "
                                f"{len(layers)} arrived intact")
            return RunResult(seq, result.output, result.cycles, result.instret, layers)

    def exit(self, timeout: float = 2.0) -> bool:
        """Ask the harness to end the session (QEMU and host builds exit). True if acknowledged."""
        seq = self._send(P.Msg.EXIT)
        try:
            self._await(seq, (P.Msg.EXIT_ACK,), time.monotonic() + timeout, "EXIT", timeout,
                        resets_fatal=False)
        except LinkError:
            return False
        return True

    # ---- internals ----

    def _send(self, type_: int, payload: bytes = b"", flags: int = 0) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        try:
            self.transport.write(P.encode_frame(type_, self._seq, payload, flags))
        except Exception as e:  # pyserial raises SerialException/SerialTimeoutException/OSError
            raise LinkError(f"{self.name}: writing to the board failed: {e}") from None
        return self._seq

    def _await(self, seq: int, types: tuple[int, ...], deadline: float, what: str, budget: float, *,
               resets_fatal: bool = True, errors_fatal: bool = True) -> P.Frame:
        """Next frame of one of ``types`` answering ``seq``, before the absolute ``deadline``
        (``budget`` seconds after the request, for the message). At most MAX_EXTRA_FRAMES other
        frames are skipped on the way."""
        extra = 0
        while True:
            while self._events:
                ev = self._events.popleft()
                if isinstance(ev, P.TextLine):
                    self._note_text(ev.text)
                    if resets_fatal and ev.text.startswith(P.BANNER_PREFIX):
                        raise DeviceReset(f"{self.name} rebooted while {what} was awaited "
                                          f"({ev.text.strip()!r})")
                    continue
                if isinstance(ev, P.BadFrame):
                    self.bad_frames += 1
                    self.last_refused = ev.reason
                    continue
                if ev.seq == seq and ev.type == P.Msg.ERROR:
                    reply = P.decode_error(ev.payload, ev.seq)
                    if errors_fatal:
                        raise DeviceErrorReply(reply, what)
                elif ev.seq == seq and ev.type in types:
                    self.last_reply_seq = seq
                    return ev
                else:
                    self.stale_frames += 1   # a late reply to an earlier, abandoned request
                extra += 1
                if extra > MAX_EXTRA_FRAMES:
                    raise LinkError(f"{self.name} sent {extra} frames that do not answer {what} "
                                    f"(stale sequence numbers or unexpected types); it does not keep "
                                    f"to the protocol")
            if time.monotonic() >= deadline:
                last = "none yet" if self.last_reply_seq is None else f"seq {self.last_reply_seq}"
                refused = f"; last frame refused: {self.last_refused}" if self.last_refused else ""
                raise DeviceTimeout(f"{self.name} stopped answering: no reply to {what} within "
                                    f"{budget:g} s (last good reply: {last}{refused})", seq)
            chunk = self._read()
            if chunk:
                self._events.extend(self.decoder.feed(chunk))
                self._last_byte_at = time.monotonic()
            elif time.monotonic() - self._last_byte_at >= _STALL_S:
                self._events.extend(self.decoder.drop_partial())

    def _read(self) -> bytes:
        try:
            waiting = getattr(self.transport, "in_waiting", 0) or 0
            data = bytes(self.transport.read(max(1, min(waiting, 1 << 16))))
        except Exception as e:  # the port vanished (board unplugged, QEMU died)
            raise LinkError(f"{self.name}: reading from the board failed: {e}") from None
        self.bytes_received += len(data)
        self._raw_tail.extend(data)
        return data

    def _note_text(self, text: str) -> None:
        self.lines.append(text)
        if text.startswith(P.BANNER_PREFIX):
            self.resets_seen += 1
        elif text.startswith(P.SELFTEST_PREFIX):
            self.selftest_line = text.strip()

    def _received(self, count: int) -> str:
        """What came in, readable: `N bytes, the last K: hex 47 0a ff = text "G.."` (bounded)."""
        tail = bytes(self._raw_tail)[-min(count, RAW_PREVIEW):] if count > 0 else b""
        if not tail:
            return "no bytes"
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in tail)
        return f"{count} bytes, the last {len(tail)}: hex {tail.hex(' ')} = text \"{text}\""

    def _no_answer(self, timeout: float, received_before: int) -> str:
        noise = self.decoder.skipped_bytes - received_before
        where = f"no answer from {self.name} within {timeout:g} s"
        got = self.bytes_received - getattr(self, "_sync_bytes_before", 0)
        if self.lines:
            return (f"{where}: it printed {self.lines[-1][:80]!r} but never answered an INFO request "
                    f"({self._received(got)}); is the edgebn harness flashed on it?")
        if noise or self.bad_frames:
            return (f"{where}: received {noise} bytes that were not protocol frames ({self._received(got)}); "
                    f"wrong baud rate (the harness uses {DEFAULT_BAUD} unless built otherwise)?")
        return f"{where}: nothing was received; is the board connected and flashed with edgebn?"
