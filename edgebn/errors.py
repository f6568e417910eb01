"""User-facing errors: each carries a one-line cause the CLI prints without a traceback."""

__all__ = ["EdgebnError", "ImportError_", "UnsupportedOpError", "CalibrationError", "BudgetError"]


class EdgebnError(Exception):
    """Anything the user can fix: a bad checkpoint, bad data, an unsupported op, a model too big."""


class ImportError_(EdgebnError):
    """The checkpoint could not be read or is not an inference-ready model."""


class UnsupportedOpError(EdgebnError):
    """The graph holds an op (or an op configuration) edgebn does not compile."""


class CalibrationError(EdgebnError):
    """The calibration data does not fit the model (shape, dtype, NaN, empty)."""


class BudgetError(EdgebnError):
    """The compiled model does not fit the target's RAM or flash."""
