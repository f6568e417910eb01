"""Where the shipped templates/ and firmware/ live, from a checkout or from an installed wheel."""
from __future__ import annotations

from pathlib import Path

__all__ = ["templates_dir", "firmware_dir", "ops_dir"]

_REPO = Path(__file__).resolve().parent.parent


def _find(package: str, repo_dir: str) -> Path:
    local = _REPO / repo_dir
    if local.is_dir():
        return local
    from importlib.resources import files

    return Path(str(files(package)))


def templates_dir() -> Path:
    return _find("edgebn.templates", "templates")


def firmware_dir() -> Path:
    return _find("edgebn.firmware", "firmware")


def ops_dir() -> Path:
    """edgebn/ops/: each operator package holds its own .c.j2 kernels."""
    return Path(__file__).resolve().parent / "ops"
