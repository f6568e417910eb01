"""The host end of the serial link to a board running the edgebn harness.

``Link`` talks the framed protocol (edgebn/device/protocol.py) over anything with pyserial's
``read(size)`` / ``write(data)`` / ``close()`` (a real port, QEMU's pty, a test's fake). It keeps
the board honest without trusting the line:

* text between frames (boot banner, self-test verdict, ROM noise) is skipped and remembered;
  a boot banner while a reply is awaited means the board reset (``DeviceReset``);
* frames that fail their CRC, carry another request's sequence number, or stop arriving are
  dropped, and the decoder resynchronises on the next magic;
* a reply that does not come within ``reply_timeout`` seconds of silence raises
  ``DeviceTimeout`` naming the sequence number of the request and of the last good reply.
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
                 max_payload: int = 1 << 22):
        self.transport = transport
        self.name = name
        self.reply_timeout = reply_timeout
        self.decoder = P.FrameDecoder(max_payload=max_payload)
        self.info: P.Info | None = None
        self.lines: deque[str] = deque(maxlen=200)   # text the board printed, most recent last
        self.selftest_line: str | None = None
        self.resets_seen = 0
        self.bad_frames = 0
        self.stale_frames = 0
        self.last_reply_seq: int | None = None
        self._events: deque = deque()
        self._seq = 0
        self._last_byte_at = time.monotonic()   # last byte of any kind (for stall detection)
        self._progress_at = time.monotonic()    # last byte that built a frame

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
        while True:
            seq = self._send(P.Msg.INFO_REQ)
            wait = min(retry_interval, max(0.05, deadline - time.monotonic()))
            try:
                frame = self._await(seq, (P.Msg.INFO,), wait, "INFO", resets_fatal=False,
                                    errors_fatal=False)
            except DeviceTimeout:
                if time.monotonic() >= deadline:
                    raise LinkError(self._no_answer(timeout, received_before)) from None
                continue
            try:
                self.info = P.decode_info(frame.payload)
            except ValueError as e:
                raise LinkError(f"{self.name}: malformed INFO reply: {e}") from None
            return self.info

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

    def run(self, data: bytes, *, debug: bool = False, timeout: float | None = None) -> RunResult:
        """Run one input (int8 bytes, device layout) and return the board's output and counters;
        with ``debug`` also every layer's output, in order."""
        seq = self._send(P.Msg.RUN, bytes(data), P.FLAG_DEBUG if debug else 0)
        what = f"RUN seq {seq}"
        layers: list[P.Layer] = []
        while True:
            frame = self._await(seq, (P.Msg.RESULT, P.Msg.LAYER), timeout or self.reply_timeout,
                                what)
            if frame.type == P.Msg.LAYER:
                try:
                    layers.append(P.decode_layer(frame.payload))
                except ValueError as e:
                    raise LinkError(f"{what}: malformed LAYER frame: {e}") from None
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
            self._await(seq, (P.Msg.EXIT_ACK,), timeout, "EXIT", resets_fatal=False)
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

    def _await(self, seq: int, types: tuple[int, ...], timeout: float, what: str, *,
               resets_fatal: bool = True, errors_fatal: bool = True) -> P.Frame:
        """Next frame of one of ``types`` answering ``seq``. The timeout counts from the last
        byte that built a frame, so a long debug dump over a slow line is not cut off."""
        self._progress_at = time.monotonic()
        while True:
            while self._events:
                ev = self._events.popleft()
                if isinstance(ev, P.TextLine):
                    self._note_text(ev.text)
                    if resets_fatal and ev.text.startswith(P.BANNER_PREFIX):
                        raise DeviceReset(f"{self.name} rebooted while {what} was awaited "
                                          f"({ev.text.strip()!r})")
                elif isinstance(ev, P.BadFrame):
                    self.bad_frames += 1
                elif ev.seq != seq:
                    self.stale_frames += 1   # a late reply to an earlier, abandoned request
                elif ev.type == P.Msg.ERROR:
                    reply = P.decode_error(ev.payload, ev.seq)
                    if errors_fatal:
                        raise DeviceErrorReply(reply, what)
                elif ev.type in types:
                    self.last_reply_seq = seq
                    return ev
                else:
                    self.stale_frames += 1
            if time.monotonic() - self._progress_at >= timeout:
                last = "none yet" if self.last_reply_seq is None else f"seq {self.last_reply_seq}"
                raise DeviceTimeout(f"{self.name} stopped answering: no reply to {what} within "
                                    f"{timeout:g} s (last good reply: {last})", seq)
            chunk = self._read()
            if chunk:
                pending = self.decoder.pending
                events = self.decoder.feed(chunk)
                self._events.extend(events)
                # Only bytes that build frames count as the board answering: endless noise (a
                # wrong baud rate) must not hold the timeout off.
                if self.decoder.pending > pending or any(isinstance(e, P.Frame) for e in events):
                    self._progress_at = time.monotonic()
                self._last_byte_at = time.monotonic()
            elif time.monotonic() - self._last_byte_at >= _STALL_S:
                self._events.extend(self.decoder.drop_partial())

    def _read(self) -> bytes:
        try:
            waiting = getattr(self.transport, "in_waiting", 0) or 0
            return bytes(self.transport.read(max(1, min(waiting, 1 << 16))))
        except Exception as e:  # the port vanished (board unplugged, QEMU died)
            raise LinkError(f"{self.name}: reading from the board failed: {e}") from None

    def _note_text(self, text: str) -> None:
        self.lines.append(text)
        if text.startswith(P.BANNER_PREFIX):
            self.resets_seen += 1
        elif text.startswith(P.SELFTEST_PREFIX):
            self.selftest_line = text.strip()

    def _no_answer(self, timeout: float, received_before: int) -> str:
        noise = self.decoder.skipped_bytes - received_before
        where = f"no answer from {self.name} within {timeout:g} s"
        if self.lines:
            return (f"{where}: it printed {self.lines[-1]!r} but never answered an INFO request; "
                    f"is the edgebn harness flashed on it?")
        if noise or self.bad_frames:
            return (f"{where}: received {noise} bytes that were not protocol frames; wrong baud "
                    f"rate (the harness uses {DEFAULT_BAUD} unless built otherwise)?")
        return f"{where}: nothing was received; is the board connected and flashed with edgebn?"
