"""Compare a board against the emulator: every output int8 must be identical.

``compare_on_link`` streams inputs over a synced ``Link``, checks each output (every output of the
model, packed in its order, as the harness's RESULT carries them) against ``emu.run_packed``, survives resets and line noise by resyncing and retrying the input, and explains a
mismatch by re-running that input in debug mode: the first layer whose output differs, the channel
(NHWC: the last axis) and position of its first difference, and a histogram of the differences.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgebnError, input_file
from . import protocol as P
from .link import DeviceErrorReply, DeviceReset, DeviceTimeout, Link, LinkError

__all__ = ["ModelMismatch", "CompareReport", "InputMismatch", "LayerDiff", "check_device_model",
           "load_inputs", "random_inputs", "compare_on_link", "locate_mismatch"]

# Device errors that mean "this attempt was lost on the way", worth a resync and a retry; the
# others (wrong input size, model failure, unknown type) will not get better by repeating.
_TRANSIENT = {P.ErrorCode.BAD_CRC, P.ErrorCode.BAD_LENGTH, P.ErrorCode.OUT_OF_ORDER,
              P.ErrorCode.NOT_SYNCED, P.ErrorCode.TIMEOUT}


class ModelMismatch(EdgebnError):
    """The board runs another model than the one in OUT."""


@dataclass
class LayerDiff:
    index: int
    name: str
    shape: tuple[int, ...]
    differing: int                     # elements that differ
    position: tuple[int, ...]          # first differing element, in the layer's shape
    channel: int | None                # its channel (last axis) for tensors with one
    device_value: int
    emulator_value: int
    histogram: dict[int, int]          # device - emulator -> count, over differing elements
    channels: list[int] = field(default_factory=list)   # every channel with a difference
    note: str = ""                     # set instead when the layer could not be compared

    def describe(self) -> str:
        if self.note:
            return self.note
        hist = ", ".join(f"{d:+d}: {n}" for d, n in sorted(self.histogram.items()))
        where = f"channel {self.channel} at {list(self.position)}" if self.channel is not None \
            else f"element {list(self.position)}"
        chans = "" if not self.channels else \
            f"; channels with differences: {_short_list(self.channels)}"
        return (f"first differing layer {self.index} {self.name!r} {list(self.shape)}: "
                f"{self.differing} element(s) differ, first {where} (device {self.device_value}, "
                f"emulator {self.emulator_value}); device - emulator histogram {{{hist}}}{chans}")


@dataclass
class InputMismatch:
    index: int
    differing_outputs: int
    layer: LayerDiff | None
    note: str = ""
    per_output: list[int] = field(default_factory=list)   # differing int8 per model output (several outputs)

    def describe(self) -> str:
        head = f"input {self.index}: {self.differing_outputs} output int8 differ"
        if len(self.per_output) > 1:
            head += " (" + ", ".join(f"output {k}: {n}" for k, n in enumerate(self.per_output)) + ")"
        if self.layer is not None:
            return f"{head}; {self.layer.describe()}"
        return f"{head}; {self.note}" if self.note else head


@dataclass
class CompareReport:
    info: P.Info
    target: str
    inputs: int = 0
    matched: int = 0
    mismatches: list[InputMismatch] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    instret: list[int] = field(default_factory=list)
    retries: int = 0
    resets: int = 0

    @property
    def ok(self) -> bool:
        return self.inputs > 0 and self.matched == self.inputs

    def mean_cycles(self) -> float | None:
        return float(np.mean(self.cycles)) if self.cycles and self.info.has_cycles else None

    def mean_instret(self) -> float | None:
        return float(np.mean(self.instret)) if self.instret and self.info.has_instret else None

    def summary(self) -> str:
        head = f"{self.matched}/{self.inputs} inputs bit-exact"
        cyc, ins = self.mean_cycles(), self.mean_instret()
        if cyc is not None and self.info.cpu_hz:
            mhz = self.info.cpu_hz / 1e6
            ms = cyc / self.info.cpu_hz * 1e3
            perf = f"{ms:.2f} ms/inference ({cyc:,.0f} cycles @{mhz:g} MHz)"
        elif ins is not None:
            perf = f"{ins:,.0f} instructions/inference ({self.info.port_name})"
        elif cyc is not None:
            perf = f"{cyc:,.0f} cycles/inference"
        else:
            perf = "no performance counters on this board"
        extra = []
        if self.retries:
            extra.append(f"{self.retries} retried after line errors")
        if self.resets:
            extra.append(f"{self.resets} board reset(s) survived")
        return f"{head}, {perf}" + (f" [{'; '.join(extra)}]" if extra else "")

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "port": self.info.port_name,
            "model_hash": f"0x{self.info.model_hash:08x}",
            "inputs": self.inputs,
            "bit_exact": self.matched,
            "ok": self.ok,
            "cpu_hz": self.info.cpu_hz or None,
            "mean_cycles": self.mean_cycles(),
            "mean_instructions": self.mean_instret(),
            "ms_per_inference": (self.mean_cycles() / self.info.cpu_hz * 1e3
                                 if self.mean_cycles() is not None and self.info.cpu_hz else None),
            "cycles": self.cycles if self.info.has_cycles else None,
            "instructions": self.instret if self.info.has_instret else None,
            "selftest": self.info.selftest.name,
            "retries": self.retries,
            "resets": self.resets,
            "mismatches": [{"input": m.index, "differing_outputs": m.differing_outputs,
                            "differing_per_output": m.per_output,
                            "message": m.describe(),
                            "layer": None if m.layer is None else {
                                "index": m.layer.index, "name": m.layer.name,
                                "shape": list(m.layer.shape), "differing": m.layer.differing,
                                "position": list(m.layer.position), "channel": m.layer.channel,
                                "channels": m.layer.channels,
                                "device_value": m.layer.device_value,
                                "emulator_value": m.layer.emulator_value,
                                "histogram": {str(k): v for k, v in m.layer.histogram.items()}}}
                           for m in self.mismatches],
        }


def check_device_model(info: P.Info, emu, out: str | Path) -> None:
    """Refuse a board that runs another model, naming both hashes."""
    if info.model_hash != int(emu.model_hash):
        raise ModelMismatch(
            f"the board runs model 0x{info.model_hash:08x} but {out} holds model "
            f"0x{int(emu.model_hash):08x}; flash it first (edgebn flash {out})")
    in_size, out_size = int(np.prod(emu.input_shape)), int(emu.packed_output_size)
    if (info.input_size, info.output_size) != (in_size, out_size):
        raise ModelMismatch(
            f"the board's model takes {info.input_size} and gives {info.output_size} int8, "
            f"{out} says {in_size} and {out_size}, though the hashes agree")


def random_inputs(emu, count: int, seed: int = 0) -> np.ndarray:
    """Deterministic random int8 inputs in device layout: the default compare set."""
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(count, *emu.input_shape), dtype=np.int8)


def load_inputs(path: str | Path, emu, channels_last: bool = False) -> np.ndarray:
    """X.npy -> int8 ``[N, *emu.input_shape]`` device layout, by the emulator's own rules
    (``emu.as_device_input``, shared with ``edgebn emulate``): float32 in PyTorch layout (device
    layout with ``channels_last``) is quantized; int8 is taken as already quantized."""
    path = input_file(path, "--inputs")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EdgebnError(f"cannot read inputs {path}: {e}") from None
    if x.ndim < 2 or x.shape[0] == 0:
        raise EdgebnError(f"{path}: inputs of shape {list(x.shape)} are not a batch (leading N axis)")
    try:
        q = np.asarray(emu.as_device_input(x, channels_last))
    except EdgebnError as e:
        raise EdgebnError(f"{path}: {e}") from None
    return q.astype(np.int8, copy=False)


def locate_mismatch(emu, x: np.ndarray, layers: list[P.Layer]) -> LayerDiff | None:
    """First layer whose device output (debug-mode LAYER frames) differs from the emulator's."""
    _, emu_layers = emu.run(x[None], return_layers=True)
    for i, (name, expected) in enumerate(emu_layers):
        expected = np.asarray(expected)
        shape = tuple(expected.shape[1:]) if expected.ndim > 1 and expected.shape[0] == 1 \
            else tuple(expected.shape)
        want = expected.reshape(-1).astype(np.int32)
        if i >= len(layers):
            return _size_mismatch(i, name, shape, want.size, 0)
        raw = layers[i].output          # bytes; an int16 layer's values little-endian (--precision int16/auto)
        width = expected.dtype.itemsize
        got = np.frombuffer(raw[:len(raw) - len(raw) % width], np.dtype(expected.dtype).newbyteorder("<")).astype(np.int32)
        if got.size != want.size or layers[i].index != i:
            return _size_mismatch(i, name, shape, want.size, got.size)
        diff = got - want
        bad = np.flatnonzero(diff)
        if bad.size == 0:
            continue
        first = int(bad[0])
        position = tuple(int(p) for p in np.unravel_index(first, shape)) if shape else (first,)
        has_channels = len(shape) >= 2
        channel = int(position[-1]) if has_channels else None
        channels = sorted({int(b) % shape[-1] for b in bad}) if has_channels else []
        return LayerDiff(i, name, shape, int(bad.size), position, channel, int(got[first]),
                         int(want[first]), dict(Counter(int(d) for d in diff[bad])), channels)
    return None


def _size_mismatch(i: int, name: str, shape: tuple[int, ...], want: int, got: int) -> LayerDiff:
    return LayerDiff(i, name, shape, want, (), None, 0, 0, {}, [], note=(
        f"layer {i} {name!r}: the board sent {got} int8, the emulator has {want}; the board's "
        f"layer list differs from OUT's"))


def _short_list(xs: list[int], n: int = 12) -> str:
    return ", ".join(map(str, xs[:n])) + (f", ... ({len(xs)} in all)" if len(xs) > n else "")


def compare_on_link(link: Link, emu, inputs: np.ndarray, *, target: str = "board",
                    out: str | Path = "OUT", retries: int = 3, sync_timeout: float = 10.0,
                    progress: bool | None = None, log=None) -> CompareReport:
    """Run every input on the board behind ``link`` and check it against ``emu``.

    The link is synced first (and the board's model hash checked); a reset, a garbled frame or a
    lost reply costs a resync and a retry of that input, ``retries`` times at most."""
    from tqdm import tqdm

    log = log or (lambda msg: print(msg, file=sys.stderr))
    info = link.info or link.sync(sync_timeout)
    check_device_model(info, emu, out)
    if info.selftest == P.SelftestStatus.FAIL:
        log(f"warning: the board's boot self-test failed "
            f"({link.selftest_line or f'vector {info.selftest_failed_vector}'})")
    report = CompareReport(info=info, target=target)
    resets_at_start = link.resets_seen
    expected_all = np.asarray(emu.run_packed(inputs))

    for i in tqdm(range(len(inputs)), desc="compare", unit="input", disable=progress is False
                  or (progress is None and not sys.stderr.isatty()), file=sys.stderr):
        x = np.ascontiguousarray(inputs[i], dtype=np.int8)
        result = _run_with_retry(link, emu, x, i, report, retries, sync_timeout, out)
        got = np.frombuffer(result.output, np.int8)
        report.inputs += 1
        report.cycles.append(result.cycles)
        report.instret.append(result.instret)
        bad = got != expected_all[i]
        differing = int(np.count_nonzero(bad))
        if differing == 0:
            report.matched += 1
            continue
        # the debug reply's length (every layer's int8) sets its deadline on a slow line
        layer_bytes = sum(int(np.asarray(a).nbytes) for _, a in emu.run(x[None], return_layers=True)[1])
        debug = _run_with_retry(link, emu, x, i, report, retries, sync_timeout, out, debug=True,
                                reply_bytes=layer_bytes)
        layer = locate_mismatch(emu, x, debug.layers)
        note = "" if layer is not None else (
            "every layer matched when re-run in debug mode; the board is not deterministic")
        per_output = [int(np.count_nonzero(bad[o.offset:o.offset + o.size])) for o in emu.outputs] \
            if len(emu.outputs) > 1 else []
        report.mismatches.append(InputMismatch(i, differing, layer, note, per_output))
    report.resets = link.resets_seen - resets_at_start
    return report


def _run_with_retry(link: Link, emu, x, index, report, retries, sync_timeout, out, debug=False,
                    reply_bytes=None):
    attempt = 0
    while True:
        try:
            return link.run(x.tobytes(), debug=debug, reply_bytes=reply_bytes)
        except DeviceErrorReply as e:
            if e.reply.code not in _TRANSIENT or attempt >= retries:
                raise LinkError(f"input {index}: {e}") from None
            cause: LinkError = e
        except (DeviceReset, DeviceTimeout) as e:
            if attempt >= retries:
                raise LinkError(f"input {index}: {e}") from None
            cause = e
        attempt += 1
        report.retries += 1
        try:
            info = link.sync(sync_timeout)
        except LinkError as e:
            raise LinkError(f"input {index}: {cause}; resync failed: {e}") from None
        check_device_model(info, emu, out)
