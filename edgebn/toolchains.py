"""Where the emulated boards' compilers and QEMU come from (docs/TOOLCHAINS.md).

A board whose ``toolchain`` is "system" uses the tools on PATH (Debian packages). "cache" boards
(the ESP32 and ESP32-S3 cores) use only the cache that scripts/xtensa_toolchain.sh fills:
``${EDGEBN_CACHE:-~/.cache/edgebn}/toolchains/{xtensa-esp-elf,qemu-xtensa}/bin``, never a
same-named tool on PATH (Debian's qemu-system-xtensa lacks the esp32 cores).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import EdgebnError
from .targets import Board

__all__ = ["cache_dir", "tool_dirs", "find_tool"]

CACHE_BIN_DIRS = ("xtensa-esp-elf/bin", "qemu-xtensa/bin")


def cache_dir() -> Path:
    root = os.environ.get("EDGEBN_CACHE") or str(Path.home() / ".cache" / "edgebn")
    return Path(root) / "toolchains"


def tool_dirs(board: Board) -> list[Path] | None:
    """Directories searched for the board's tools; None means PATH."""
    if board.toolchain == "system":
        return None
    return [cache_dir() / d for d in CACHE_BIN_DIRS]


def find_tool(board: Board, tool: str) -> str:
    """Absolute path of ``tool`` for ``board``, or one clear error naming what provides it."""
    dirs = tool_dirs(board)
    path = shutil.which(tool) if dirs is None else \
        shutil.which(tool, path=os.pathsep.join(str(d) for d in dirs))
    if path is None:
        where = "on PATH" if dirs is None else f"in the toolchain cache {cache_dir()}"
        raise EdgebnError(f"{tool} not found {where}; the {board.name} board needs {board.packages}")
    return path
