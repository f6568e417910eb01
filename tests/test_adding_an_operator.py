"""docs/ADDING_AN_OPERATOR.md's worked example is the whole recipe: a copy of edgebn plus exactly the
doc's two files (edgebn/ops/flip/__init__.py, flip.c.j2) and its one registry line compiles a model
using torch.flip into C that builds with -Werror and equals the emulator on every int8, and the op
reaches the report and the ONNX export without any other edit."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ADDING_AN_OPERATOR.md"

SCRIPT = r'''
import sys
import numpy as np
import torch
from torch import nn
import edgebn
from edgebn.ops import OPS

assert "flip" in OPS and edgebn.__file__.startswith(sys.argv[1]), edgebn.__file__


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.b = nn.Conv2d(4, 3, 3)

    def forward(self, x):
        return self.b(torch.flip(self.a(x), [3]))


torch.manual_seed(0)
model = Net().eval()
calib = np.random.default_rng(0).standard_normal((16, 2, 6, 7)).astype(np.float32)
c = edgebn.compile(model, calib, sys.argv[2], example_input=torch.zeros(1, 2, 6, 7), force=True)
assert [r["op"] for r in c.report["layers"]] == ["conv2d", "flip", "conv2d"], c.report["layers"]
x = np.random.default_rng(1).integers(-128, 128, (20, 6, 7, 2), dtype=np.int8)
np.save(sys.argv[3], x)
np.save(sys.argv[4], c.emulator.run(x))
with torch.no_grad():
    ref = model(torch.from_numpy(calib[:4])).numpy()
got = c.emulate(calib[:4])
err = float(((got - ref) ** 2).sum() / (ref ** 2).sum())
assert err < 1e-2, err
from edgebn.onnx_export import export_qdq
export_qdq(sys.argv[2])
'''


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_documented_example_is_one_folder_and_one_line(tmp_path):
    (py,) = [b for b in _blocks("python") if 'name="flip"' in b]
    (c_src,) = [b for b in _blocks("c") if "layer.fn" in b]
    line = "from . import flip  # noqa: F401,E402"
    assert f"`{line}`" in DOC.read_text()

    tree = tmp_path / "tree"
    for d in ("edgebn", "templates", "firmware"):
        shutil.copytree(ROOT / d, tree / d, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "edgebn" / "ops" / "flip").mkdir()
    (tree / "edgebn" / "ops" / "flip" / "__init__.py").write_text(py)
    (tree / "edgebn" / "ops" / "flip" / "flip.c.j2").write_text(c_src)
    registry = tree / "edgebn" / "ops" / "__init__.py"
    registry.write_text(registry.read_text().replace("\n__all__", f"{line}\n\n__all__", 1))

    out, x, y = tmp_path / "out", tmp_path / "x.npy", tmp_path / "y.npy"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tree), str(out), str(x), str(y)], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]

    import numpy as np

    from helpers import build_host, run_host

    exe = build_host(out, tmp_path / "run")
    xs, want = np.load(x), np.load(y)
    got = run_host(exe, xs, want[0].size)
    assert np.array_equal(got, want.reshape(len(xs), -1))
