"""examples/digits/run.py --qat on a small budget: QAT fine-tuning raises the int8 logit SQNR over
edgebn's PTQ, keeps top-1 equal to float, and the compiled QAT model equals the QAT module's integer
forward on every output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_digits_qat_example(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "digits" / "run.py"), "--out", str(tmp_path / "d"),
                          "--qat", "--qat-epochs", "2", "--json", str(tmp_path / "fig.json")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    fig = json.loads((tmp_path / "fig.json").read_text())
    assert fig["qat_bit_exact"] is True
    assert fig["qat_top1"] == fig["float_top1"]
    # QAT raises the all-int8 model it starts from (SPEC's recipe); the default PTQ, with its int16 tail
    # and minmax + AdaRound on digits, is above 2 epochs of QAT (docs/QAT.md)
    assert fig["qat_sqnr_db"] > fig["ptq_spec_sqnr_db"] + 0.3, fig
    assert "QAT module == compiled emulator on every output: yes" in res.stdout
