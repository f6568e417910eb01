"""The docs held to the code where a mechanical check can: every `edgebn` command-line option is named
in README.md or docs/*.md, docs/OPERATORS.md's table names exactly the IR ops the registry has
(edgebn/ops/__init__.py), and the repository files the docs name exist (and no path outside the
repository is named), so a flag, an op or a file added, renamed or removed shows up here."""
from __future__ import annotations

import re
from pathlib import Path

import click

from edgebn.cli import main
from edgebn.ops import OPS

ROOT = Path(__file__).resolve().parents[1]


def _docs() -> str:
    return "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_every_cli_option_is_documented():
    text = _docs()
    flags = [(name, next(o for o in p.opts if o.startswith("--"))) for name, cmd in sorted(main.commands.items())
             for p in cmd.params if isinstance(p, click.Option)]
    missing = [f"edgebn {name} {flag}" for name, flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", text)]
    assert len(main.commands) >= 6 and len(flags) > 40
    assert not missing, f"options no doc names: {missing}"


def _ir_op_column() -> set[str]:
    """The backticked names in the 'IR op (module)' column of docs/OPERATORS.md's table, without the
    package folders (`conv2d/`)."""
    lines = (ROOT / "docs" / "OPERATORS.md").read_text().splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("|") and "IR op" in l)
    col = [c.strip() for c in lines[head].split("|")].index("IR op (module)")
    names: set[str] = set()
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        names |= {n for n in re.findall(r"`([a-z0-9_]+)`", line.split("|")[col])}
    return names


def test_operator_table_names_every_registered_op():
    documented = _ir_op_column()
    text = (ROOT / "docs" / "OPERATORS.md").read_text()
    # requantize is never imported from PyTorch (the int8 <-> int16 boundary): named in the text, not the table
    internal = {name for name in OPS if f"`{name}` op (not imported from PyTorch)" in text}
    assert internal == {"requantize"}
    assert set(OPS) - internal <= documented, f"registered, not in the table: {sorted(set(OPS) - internal - documented)}"
    assert documented <= set(OPS), f"in the table, not registered: {sorted(documented - set(OPS))}"


def test_repository_paths_the_docs_name_exist():
    """Every file of the repository README.md and docs/*.md name (tests/..., edgebn/..., benchmarks/...,
    examples/..., scripts/...; tests/f.py::test_x names a test in f) exists, but for the worked example's
    op of docs/ADDING_AN_OPERATOR.md (edgebn/ops/flip/, written there to show how an op is added)."""
    text = _docs()
    paths = set(re.findall(r"\b((?:tests|edgebn|benchmarks|examples|scripts)/[\w/.-]+\.(?:py|sh|md|j2|json))", text))
    assert len(paths) > 50
    missing = sorted(p for p in paths if not (ROOT / p).exists() and not p.startswith("edgebn/ops/flip/"))
    assert not missing, f"named in the docs, not in the repository: {missing}"
    outside = sorted({m for p in [*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("*.md")]
                      for m in re.findall(r"(?<![\w.~])/(?:tmp|work|home|root)/[\w/.-]*", p.read_text())})
    assert not outside, f"paths outside the repository in the docs: {outside}"
    named = re.findall(r"\b(tests/[\w/]+\.py)::(\w+)", text)
    gone = [f"{f}::{t}" for f, t in named if f"def {t}(" not in (ROOT / f).read_text()]
    assert named and not gone, f"tests the docs name that do not exist: {gone}"
