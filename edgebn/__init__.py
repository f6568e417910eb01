"""edgebn: compile BatchNorm CNNs from PyTorch into bit-exact int8 C for ESP32-class MCUs.

    import edgebn
    compiled = edgebn.compile(model_or_pt2, calib, "build/digits", target="esp32s3")
    compiled.emulate(x); compiled.report; compiled.path
"""
__version__ = "0.1.0"


def compile(model, calib, out_dir, target="qemu-rv32", **kwargs):  # noqa: A001 - mirrors the CLI verb
    """See edgebn.compiler.compile_model; imported lazily so the emulator never pulls in torch."""
    from .compiler import compile_model

    return compile_model(model, calib, out_dir, target=target, **kwargs)


def load(out_dir):
    """An earlier compile's output, for emulation: edgebn.load(OUT).emulate(x)."""
    from .compiler import CompiledModel

    return CompiledModel.load(out_dir)
