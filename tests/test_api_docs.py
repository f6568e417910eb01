"""docs/API.md is a notebook-style walkthrough of the Python API: its ```python blocks run here, in
order, in one namespace, in a temporary working directory (they compile, emulate, evaluate, compare
on the emulated board and bench). A block that raises fails the test with its number."""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_api_walkthrough_runs(tmp_path, monkeypatch, capsys):
    blocks = code_blocks(DOC.read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_walkthrough"}
    for i, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"docs/API.md block {i}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - name the failing block
            raise AssertionError(f"docs/API.md block {i} failed: {type(e).__name__}: {e}") from e
    out = capsys.readouterr().out
    assert "refused:" in out and "64 calibration samples" in out
    assert (tmp_path / "build" / "shapes" / "lib" / "shapes" / "shapes_model.h").is_file()


def test_package_exports_the_error_classes():
    import edgebn
    from edgebn import errors

    for name in ("EdgebnError", "ImportError_", "UnsupportedOpError", "CalibrationError", "BudgetError"):
        assert getattr(edgebn, name) is getattr(errors, name) and name in edgebn.__all__
        assert issubclass(getattr(edgebn, name), edgebn.EdgebnError)
