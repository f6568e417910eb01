"""User-facing errors: each carries a one-line cause the CLI prints without a traceback."""

__all__ = ["EdgebnError", "ImportError_", "UnsupportedOpError", "CalibrationError", "BudgetError", "input_file"]


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


def input_file(path, what: str, error: type = EdgebnError):
    """PATH as a Path if it is an existing regular file; else `error` naming WHAT. A FIFO, a device or
    a socket is refused before it is opened (opening a FIFO with no writer blocks forever)."""
    import stat
    from pathlib import Path

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: no such file ({what})") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) \
            else "a device or socket"
        raise error(f"{path}: {what} must be a regular file, not {kind}")
    return path
