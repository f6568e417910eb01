"""Kernel choice: which C template computes each layer, and the compile-time data it needs.

Three kernel sets share the numerics exactly (SPEC.md section 1):

* ``"reference"``: each op's `OpDef.kernels` (edgebn/ops/<op>/<op>.c.j2), one loop nest per op in
  the style of TFLite Micro's reference kernels. They are the fallback and the yardstick.
* ``"fast"``: each op's `OpDef.fast_kernels`, per-layer specialised templates with every shape a constant, the input zero point
  folded into the bias (``b' = b - Z_in * sum(w)``; a padding tap then adds ``Z_in * w``), weights
  packed in blocks of four output channels so the inner loop keeps a register tile of accumulators
  (4 pixels x 4 channels on RV32's 32 registers; 2 x 4 with int16 weights and min/max clamps on the
  ESP32 / ESP32-S3 cores, whose windowed code sees 16 registers and loads bytes zero-extended: the
  `_n` records, chosen from those ISA facts), and the requantisation constants loaded once per
  channel. Border
  pixels run the same tiles over their valid taps only: output rows and columns are split at compile
  time into runs sharing one tap window, each (row run, column run) with a bias that already holds
  the padding taps' ``Z_in * w``. Depthwise rows are compile-time plans of unrolled blocks and a
  4-wide loop sharing input loads (rows outside the map read a constant Z_in row). The residual add
  reads each input's rescaled value from a 256-entry table (exact: it depends on the int8 alone).
  Where the constants allow (``_rqf_from``), requantisation is a single rounding that equals
  TFLite's two: the high word of ``(4 * acc) * m0`` (one RV32 ``mulh`` / Xtensa ``mulsh``) plus a
  per-channel offset, one arithmetic shift, with Z_out and the clamp folded in.
* ``"compact"``: the fast set without the records that store weights wider than int8
  (``KernelRecord.weight_bytes`` > 1, the `_n` tiles): the 4x4 tiles then run on the Xtensa cores
  too (as on the lx106), slower but with half the weight flash. The compiler takes it, and says so,
  only where the fast set's weights exceed the target's flash and the compact set's fit.

``choose_kernel`` is the single switch point and knows no op: it walks the op's `KernelRecord`s in
order and takes the first whose ISA facts (``KernelRecord.isa``, e.g. "narrow_register_file") all hold
for the target's ISA (edgebn/targets.py ``ISAS``: data, no per-target branches) and whose ``applies`` gives a reason (no fast record applies: the op's
reference kernel). It returns the record and the reason, so the choice can be tested and shown in
the benchmark; the compile-time arithmetic is in edgebn/ops/_fast.py and each op's package. A fast kernel is only chosen where it is provably exact:
the folded bias and every partial sum must stay inside int32 and every multiplier must be >= 0
(the fast requantisation drops the SRDHM saturation branch, reachable only for m0 == INT32_MIN).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import Graph, Node
from .ops import OPS, KernelRecord
from .ops._fast import BLOCK
from .targets import ISAS, Isa

__all__ = ["KERNEL_SETS", "KernelChoice", "choose_kernel", "choose_external", "kernel_context", "isa_of", "weight_flash_bytes", "BLOCK"]

KERNEL_SETS = ("fast", "reference", "compact")


@dataclass(frozen=True)
class KernelChoice:
    kernel: KernelRecord
    reason: str

    @property
    def template(self) -> str:
        """The kernel's name (the C function stem, e.g. "dwconv")."""
        return self.kernel.name


def isa_of(isa: "Isa | str | None") -> "Isa | None":
    """The ISA record for a name (edgebn/targets.py ISAS), or None: no ISA-specific kernels."""
    if isa is None or isinstance(isa, Isa):
        return isa
    return ISAS[isa]


def _fits(rec: KernelRecord, isa: Isa | None) -> bool:
    return all(isa is not None and isa.holds(fact) for fact in rec.isa)


def _first(records, node: Node, g: Graph, isa: Isa | None = None,
           max_weight_bytes: int | None = None) -> KernelChoice | None:
    bits = int(node.attrs.get("bits", 8))
    for rec in records:
        if not _fits(rec, isa) or bits not in rec.bits:   # a kernel computes only the widths it declares
            continue
        if max_weight_bytes is not None and rec.weight_bytes > max_weight_bytes:   # the compact set
            continue
        reason = rec.applies(node, g)
        if reason:
            return KernelChoice(rec, reason)
    return None


def choose_kernel(node: Node, g: Graph, kernels: str = "fast", isa: Isa | str | None = None) -> KernelChoice:
    """The kernel for `node` in kernel set `kernels` on a core with instruction set `isa` (an
    edgebn.targets.Isa or its name; None: no ISA-specific record), and why."""
    isa = isa_of(isa)
    if kernels not in KERNEL_SETS:
        raise ValueError(f"unknown kernel set {kernels!r}; choose one of {', '.join(KERNEL_SETS)}")
    op = OPS[node.op]
    if not op.kernels:
        raise ValueError(f"{node.where()}: op {node.op!r} has no C kernel")
    if kernels in ("fast", "compact"):
        if not op.fast_kernels:
            return KernelChoice(op.kernels[0], f"no specialised kernel for {node.op}")
        choice = _first(op.fast_kernels, node, g, isa, 1 if kernels == "compact" else None)
        if choice is not None and choice.kernel.isa:
            choice = KernelChoice(choice.kernel, f"{choice.reason} ({isa.name}: {', '.join(choice.kernel.isa)})")
        if choice is not None:
            return choice
    choice = _first(op.kernels, node, g)
    if choice is None:
        bits = int(node.attrs.get("bits", 8))
        raise ValueError(f"{node.where()}: no kernel of {node.op!r} applies" +
                         (f" to int{bits} activations" if bits != 8 else ""))
    return choice


def choose_external(node: Node, g: Graph) -> dict[str, KernelChoice]:
    """For each outside kernel library (KernelRecord.library) with a record that computes `node`:
    that record and why. The generated C compiles it instead of `choose_kernel`'s choice when the
    user's build enables the library (edgebn.targets.KERNEL_LIBRARIES)."""
    out: dict[str, KernelChoice] = {}
    bits = int(node.attrs.get("bits", 8))
    for rec in OPS[node.op].external_kernels:
        if rec.library not in out and bits in rec.bits:      # ESP-NN's s8 kernels: int8 layers only
            reason = rec.applies(node, g)
            if reason:
                out[rec.library] = KernelChoice(rec, reason)
    return out


def weight_flash_bytes(g: Graph, isa: Isa | str | None = None, kernels: str = "fast") -> int:
    """Flash bytes of every layer's parameters as the kernels of set `kernels` chosen for `isa` store
    them (the narrow conv tiles keep their weights as int16: `KernelRecord.weight_bytes`)."""
    total = 0
    for node in g.nodes:
        params = sum(int(np.asarray(v).nbytes) for k, v in node.params.items() if k != "weight_scale")
        op = OPS[node.op]
        if op.kernels and not op.alias and "weight" in node.params:
            rec = choose_kernel(node, g, kernels, isa).kernel
            params += (rec.weight_bytes - 1) * int(np.asarray(node.params["weight"]).size)
        total += params
    return total


def kernel_context(node: Node, g: Graph, choice: KernelChoice) -> dict:
    """The chosen kernel's own template data (added to the op's layer context)."""
    return choice.kernel.context(node, g)
