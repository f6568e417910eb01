"""The docs held to the code where a mechanical check can: every `edgebn` command-line option is named
in README.md or docs/*.md, docs/OPERATORS.md's table names exactly the IR ops the registry has
(edgebn/ops/__init__.py), every torch.nn module README.md's operator table names goes through the
importer, and the repository files the docs name exist (and no path outside the
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


def _readme_module_names() -> set[str]:
    """The torch.nn module names in the first column of README.md's "Supported operators" table, with
    the table's shorthands spread out (`BatchNorm1d/2d/3d`, `MaxPool2d/1d`, `nn.Upsample`)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("| PyTorch | on the device |"))
    names: set[str] = set()
    for line in lines[head + 2:]:
        if not line.startswith("|"):
            break
        for tok in re.findall(r"`(?:nn\.)?([A-Z][A-Za-z0-9]*(?:/[0-9]d)*)`", line.split("|")[1]):
            stem, *alts = tok.split("/")
            names.add(stem)
            names |= {re.sub(r"[0-9]d$", alt, stem) for alt in alts}
    return names


def test_every_module_the_readme_table_names_imports():
    """Each torch.nn module README.md's operator table names goes through torch.export and edgebn's
    importer in a minimal net (the README's claim, held to the importer); a name added to the table
    without an entry here fails, so the check grows with the table."""
    import torch
    import torch.nn as nn

    from edgebn.importer import import_module
    from edgebn.passes import run_passes

    c2, c1, c3 = (lambda: nn.Conv2d(3, 4, 1)), (lambda: nn.Conv1d(3, 4, 1)), (lambda: nn.Conv3d(3, 4, 1))
    x2, x1, x3, xl = (1, 3, 8, 8), (1, 3, 16), (1, 3, 4, 8, 8), (1, 8)
    after2 = {m: (c2, lambda m=m: getattr(nn, m)(), x2) for m in
              ("ReLU", "ReLU6", "Hardtanh", "LeakyReLU", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh", "SiLU", "GELU",
               "Dropout", "Identity")}
    nets = {**after2,
            "Conv2d": (c2, nn.Identity, x2), "Conv1d": (c1, nn.Identity, x1), "Conv3d": (c3, nn.Identity, x3),
            "Linear": (lambda: nn.Linear(8, 4), nn.Identity, xl),
            "ConvTranspose2d": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), nn.Identity, x2),
            "BatchNorm1d": (lambda: nn.Linear(8, 4), lambda: nn.BatchNorm1d(4), xl),
            "BatchNorm2d": (c2, lambda: nn.BatchNorm2d(4), x2), "BatchNorm3d": (c3, lambda: nn.BatchNorm3d(4), x3),
            "MaxPool2d": (c2, lambda: nn.MaxPool2d(2), x2), "AvgPool2d": (c2, lambda: nn.AvgPool2d(2), x2),
            "MaxPool1d": (c1, lambda: nn.MaxPool1d(2), x1), "AvgPool1d": (c1, lambda: nn.AvgPool1d(2), x1),
            "AdaptiveAvgPool": (c2, lambda: nn.AdaptiveAvgPool2d(1), x2),
            "MaxPool3d": (c3, lambda: nn.MaxPool3d(2), x3), "AvgPool3d": (c3, lambda: nn.AvgPool3d(2), x3),
            "AdaptiveAvgPool3d": (c3, lambda: nn.AdaptiveAvgPool3d(1), x3),
            "ZeroPad2d": (c2, lambda: nn.ZeroPad2d(1), x2),
            "Softmax": (lambda: nn.Linear(8, 4), lambda: nn.Softmax(dim=1), xl),
            "LogSoftmax": (lambda: nn.Linear(8, 4), lambda: nn.LogSoftmax(dim=1), xl),
            "Upsample": (c2, lambda: nn.Upsample(scale_factor=2), x2)}
    named = _readme_module_names()
    assert len(named) >= 30 and {"Conv2d", "BatchNorm3d", "MaxPool1d", "Upsample"} <= named
    assert not named - set(nets), f"named in README.md's table, no check here: {sorted(named - set(nets))}"
    torch.manual_seed(0)
    for name in sorted(named):
        first, then, shape = nets[name]
        g = run_passes(import_module(nn.Sequential(first(), then()).eval(), torch.randn(shape)))
        assert g.nodes, name
