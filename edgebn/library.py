"""The model as a library: its name (--name), the names of its files and C symbols.

Every C symbol, macro and file of a compiled model carries its name, so several models link into one
firmware: `--name kws` gives lib/kws/ with kws_model.h, kws_model.c, kws_ops.h, `kws_run`,
`KWS_INPUT_SIZE`. SPEC section 4's names are the name "edgebn_model": edgebn_model.h,
`edgebn_model_run`, `EDGEBN_MODEL_INPUT_SIZE` (docs/LIBRARY.md).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import EdgebnError

__all__ = ["LibraryNames", "SPEC4_NAME", "ARENA_ALIGN", "check_name", "default_name"]

SPEC4_NAME = "edgebn_model"
# A caller's arena (NAME_run_with_arena) starts on this boundary; the internal one is aligned alike.
ARENA_ALIGN = 16
MAX_NAME = 40

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
def check_name(name: str) -> str:
    """A --name: a lowercase C identifier (letters, digits, single underscores). It is only ever a
    prefix (kws_run, KWS_INPUT_SIZE), so C keywords are fine."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise EdgebnError(f"--name {name!r}: must be a lowercase C identifier (a-z first, then a-z, 0-9, _), "
                          "e.g. kws or digits_v2")
    if len(name) > MAX_NAME:
        raise EdgebnError(f"--name {name!r}: longer than {MAX_NAME} characters")
    if "__" in name or name.endswith("_"):
        raise EdgebnError(f"--name {name!r}: no double or trailing underscore (reserved in C and C++)")
    return name


def default_name(source) -> str:
    """The name a checkpoint file or a model class gives when --name is not passed, sanitised to a
    valid --name: 'Digits-Net v2.pt2' -> digits_net_v2, class DigitsNet -> digits_net."""
    text = str(source)
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text).lower()
    text = re.sub(r"[^a-z0-9]+", "_", text).strip("_")
    text = re.sub(r"_+", "_", text)[:MAX_NAME].strip("_")
    if not text:
        text = "model"
    if not text[0].isalpha():
        text = "m_" + text
    return check_name(text)


@dataclass(frozen=True)
class LibraryNames:
    """The C prefix and file names of one compiled model."""

    prefix: str      # C symbols: PREFIX_run, PREFIX_quantize_input, ...
    macro: str       # macros: MACRO_INPUT_SIZE, ...
    base: str        # base.h / base.c
    ops_header: str  # the private fixed-point helpers header

    @classmethod
    def for_name(cls, name: str) -> "LibraryNames":
        check_name(name)
        base = name if name == "model" or name.endswith("_model") else f"{name}_model"
        return cls(prefix=name, macro=name.upper(), base=base, ops_header=f"{name}_ops.h")

    @property
    def header(self) -> str:
        return f"{self.base}.h"

    @property
    def source(self) -> str:
        return f"{self.base}.c"


def load_labels(labels) -> list[str]:
    """--labels: a labels.txt path (one label per line, blank lines at the end ignored) or a sequence."""
    from pathlib import Path

    if isinstance(labels, (str, bytes)) or hasattr(labels, "__fspath__"):
        path = Path(labels)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise EdgebnError(f"{path}: cannot read labels ({str(e).splitlines()[0]})") from None
        items = text.rstrip("\r\n").splitlines() if text.strip() else []
        where = str(path)
    else:
        items, where = [str(v) for v in labels], "labels"
    items = [v.rstrip("\r") for v in items]
    if not items:
        raise EdgebnError(f"{where}: no labels")
    if any(not v.strip() for v in items):
        raise EdgebnError(f"{where}: label {[i for i, v in enumerate(items) if not v.strip()][0]} is empty")
    return items


# ---------------------------------------------------------------------------------------------
# The library folder and the example applications around it

EXAMPLES_DIR = "examples"            # OUT/examples/: the example applications beside the library
IDF_EXAMPLE = "esp-idf"              # OUT/examples/esp-idf/: an ESP-IDF project (main/)
PIO_EXAMPLE = "platformio"           # OUT/examples/platformio/: a PlatformIO project (Arduino)


@dataclass(frozen=True)
class LibraryInfo:
    """What the library metadata and the examples say about the model."""

    names: LibraryNames
    model_name: str
    version: str
    total_macs: int
    arena_bytes: int
    input_size: int
    output_sizes: tuple[int, ...]   # int8 elements of each output, in the model's order
    input_layout: str
    has_labels: bool
    example_input: object      # float32 array, one input in PyTorch layout (batch axis dropped)
    example_class: int         # the emulator's argmax of (the first) output for it
    idf_target: str = "esp32s3"
    external_libraries: tuple = ()   # emit.graph_external_libraries: outside kernel libraries (ESP-NN)

    @property
    def example_name(self) -> str:
        return f"{self.names.prefix}_classify"

    @property
    def example_input_header(self) -> str:
        return f"{self.names.prefix}_example_input.h"

    def _malloc_note(self) -> str:
        if not self.external_libraries:
            return "no malloc"
        where = ", ".join(f"{lib['name']} on the {'/'.join(lib['idf_targets'])}" for lib in self.external_libraries)
        return f"no malloc (with {where}: its scratch, once)"

    def context(self) -> dict:
        n = self.names
        one_line = " ".join(str(self.model_name).split())
        return {
            "p": n.prefix, "P": n.macro, "header": n.header, "source": n.source, "model_name": one_line,
            "version": self.version, "lib_version": self.version, "total_macs": self.total_macs,
            "arena_bytes": self.arena_bytes, "input_size": self.input_size,
            "output_size": "+".join(map(str, self.output_sizes)), "num_outputs": len(self.output_sizes),
            # the functions for (the first) output: a model with several outputs numbers them
            "dequantize0": "dequantize_output" if len(self.output_sizes) == 1 else "dequantize_output0",
            "argmax0": "argmax" if len(self.output_sizes) == 1 else "argmax_output0",
            "input_layout": self.input_layout, "has_labels": self.has_labels,
            "example_name": self.example_name, "example_input_header": self.example_input_header,
            "example_class": self.example_class, "idf_target": self.idf_target,
            "external_libraries": list(self.external_libraries),
            "description": (f"{n.prefix}: int8 model {one_line} compiled by edgebn {self.version}, plain C99, "
                            f"{self._malloc_note()}, {self.total_macs} MACs, bit-exact with edgebn's emulator"),
        }


def _render(env, template: str, ctx: dict, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(env.get_template(template).render(ctx), encoding="utf-8")


def write_library(lib_dir, info: LibraryInfo) -> None:
    """The metadata around the emitted C in lib/NAME/ (ESP-IDF component, Arduino and PlatformIO
    library), its README, the example input and the Arduino example sketch."""
    from pathlib import Path

    from .emit import environment

    lib_dir = Path(lib_dir)
    env = environment()
    ctx = info.context()
    ctx["example_values"] = info.example_input
    for template, name in (("library/library.json.j2", "library.json"),
                           ("library/library.properties.j2", "library.properties"),
                           ("library/CMakeLists.txt.j2", "CMakeLists.txt"),
                           ("library/idf_component.yml.j2", "idf_component.yml"),
                           ("library/README.md.j2", "README.md")):
        _render(env, template, ctx, lib_dir / name)
    _render(env, "examples/example_input.h.j2", ctx, lib_dir / info.example_input_header)
    _render(env, "examples/classify.ino.j2", ctx, lib_dir / "examples" / info.example_name / f"{info.example_name}.ino")


def write_examples(out_dir, info: LibraryInfo, pio_envs=(), left_out=()) -> None:
    """OUT/examples/: an ESP-IDF project (main/main.c) and a PlatformIO project building the
    library's Arduino example. pio_envs: edgebn.project.env_for records (name, description, platform,
    board, flash_chip_mib, memory_type, defines: the boards the model fits, with their module's
    PlatformIO settings); left_out: records with name and reason."""
    from pathlib import Path

    from .emit import environment

    root = Path(out_dir) / EXAMPLES_DIR
    env = environment()
    ctx = info.context()
    idf = root / IDF_EXAMPLE
    _render(env, "examples/idf_project.cmake.j2", ctx, idf / "CMakeLists.txt")
    _render(env, "examples/idf_main.cmake.j2", ctx, idf / "main" / "CMakeLists.txt")
    _render(env, "examples/idf_main.c.j2", ctx, idf / "main" / "main.c")
    pio = dict(ctx, envs=list(pio_envs), left_out=list(left_out),
               src_dir=f"../../lib/{info.names.prefix}/examples/{info.example_name}", lib_dir="../../lib")
    _render(env, "examples/platformio.ini.j2", pio, root / PIO_EXAMPLE / "platformio.ini")
