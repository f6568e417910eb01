"""Fixtures of the model-library tests (tests/library/): small compiled models under --name."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib_models import LABELS, compile_small  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """`tiny`: 3 x 8 x 8 input, with class labels."""
    return compile_small(tmp_path_factory.mktemp("tiny") / "out", "tiny", seed=1, labels=LABELS)


@pytest.fixture(scope="session")
def kws(tmp_path_factory):
    """`kws`: a second, different model (1 x 8 x 8 input, other weights), no labels."""
    return compile_small(tmp_path_factory.mktemp("kws") / "out", "kws", seed=2, channels=1)
