"""The operator registry: `OPS[name]` and `ATEN_RULES[aten target]`. Importing this package registers
every operator module below; to add an operator, see docs/ADDING_AN_OPERATOR.md."""
from .base import ATEN_RULES, OPS, OpDef, QParams, Ref, AtenContext  # noqa: F401
from . import activation, add, batch_norm, cat, conv2d, linear, pad, pool, reshape  # noqa: F401

__all__ = ["OPS", "ATEN_RULES", "OpDef", "QParams", "Ref", "AtenContext"]
