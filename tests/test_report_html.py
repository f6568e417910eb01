"""report.html, end to end: written on every compile, self-contained (no http(s) references, no
scripts), with the per-layer table, the two inline SVG plots, the fold log and the warnings."""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import numpy as np
import torch
from torch import nn

import edgebn


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.urls, self.stack, self.tables, self._row, self._cell = [], [], [], [], None, None
        self.errors = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href") and v:
                self.urls.append(v)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append((self._cell or "").strip())
            self._cell = None
        elif tag == "tr" and self.tables:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _net():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.BatchNorm2d(8),                      # no conv right before it: kept affine
                      nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        m[5].running_var[3] = 1e-7                            # fold blow-up: a warning in the report
    return m.eval()


def test_report_html_end_to_end(tmp_path):
    x = np.random.default_rng(0).normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    c = edgebn.compile(_net(), x, tmp_path / "out", example_input=torch.zeros(1, 3, 8, 8), force=True,
                       calibration="percentile")
    page = (c.path / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    # self-contained: no network references, no scripts, no external files
    assert not re.search(r"https?://", page.replace('xmlns="http://www.w3.org/2000/svg"', ""))
    p = _Collect()
    p.feed(page)
    assert "script" not in p.tags and "link" not in p.tags and "img" not in p.tags
    assert p.urls == []
    # the two plots, inline
    assert page.count("<svg") == 2 and "SQNR per layer" in page and "bytes live at each step" in page
    # the per-layer table: one row per layer, with its SQNR as in report.json
    layer_table = next(t for t in p.tables if t and t[0][:2] == ["layer", "kernel"])
    rows = layer_table[1:]
    assert [r[0] for r in rows] == [r["name"] for r in c.report["layers"]]
    sq_col = layer_table[0].index("SQNR dB")
    for r, rep in zip(rows, c.report["layers"]):
        if isinstance(rep["sqnr_db"], float):
            assert float(r[sq_col]) == round(rep["sqnr_db"], 1)
    # every bar of the SQNR plot is a layer with a finite SQNR
    bars = re.findall(r"<title>([^<:]+): [-\d.,]+ dB</title>", page)
    assert bars == [r["name"] for r in c.report["layers"] if isinstance(r["sqnr_db"], float)]
    # the fold log: every BN with its action and reason
    fold_table = next(t for t in p.tables if t and t[0][:2] == ["BatchNorm", "action"])
    assert len(fold_table) - 1 == len(c.report["fold_log"]) == 3
    assert {r[1] for r in fold_table[1:]} >= {"folded", "kept-affine"}
    for r, f in zip(fold_table[1:], c.report["fold_log"]):
        assert r[0] == f["bn"] and r[3] == f["reason"]
    # warnings and compile options are shown
    assert any("after folding BatchNorm" in w for w in c.report["warnings"])
    for w in c.report["warnings"]:
        assert html.escape(w) in page
    assert "percentile" in page and c.report["quantization"]["samples"] == 64


def test_report_html_is_rewritten_on_every_compile(tmp_path):
    x = np.random.default_rng(0).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "out"
    a = edgebn.compile(_net(), x, out, example_input=torch.zeros(1, 3, 8, 8), force=True)
    first = (out / "report.html").read_text()
    b = edgebn.compile(_net(), x * 3, out, example_input=torch.zeros(1, 3, 8, 8), force=True, weight_method="mse")
    second = (out / "report.html").read_text()
    assert a.emulator.model_hash != b.emulator.model_hash
    assert f"0x{b.emulator.model_hash:08x}" in second and f"0x{b.emulator.model_hash:08x}" not in first
