"""edgebn: compile BatchNorm CNNs from PyTorch into bit-exact int8 C for ESP32-class MCUs.

    import edgebn
    compiled = edgebn.compile(model_or_pt2, calib, "build/digits", target="esp32s3")
    compiled.emulate(x); compiled.evaluate(x, labels); compiled.compare(x, qemu=True); compiled.bench()
    compiled.report; compiled.path

docs/API.md walks through it; errors are edgebn.EdgebnError and its subclasses.
"""
__version__ = "0.1.0"

from .errors import BudgetError, CalibrationError, EdgebnError, ImportError_, UnsupportedOpError  # noqa: E402

__all__ = ["compile", "load", "EdgebnError", "ImportError_", "UnsupportedOpError", "CalibrationError",
           "BudgetError", "__version__"]


def compile(model, calib, out_dir, target="qemu-rv32", **kwargs):  # noqa: A001 - mirrors the CLI verb
    """See edgebn.compiler.compile_model; imported lazily so the emulator never pulls in torch."""
    from .compiler import compile_model

    return compile_model(model, calib, out_dir, target=target, **kwargs)


def load(out_dir):
    """An earlier compile's output, for emulation: edgebn.load(OUT).emulate(x)."""
    from .compiler import CompiledModel

    return CompiledModel.load(out_dir)
