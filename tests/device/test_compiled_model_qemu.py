"""A real model through the whole chain: a small conv+BN+ReLU+linear net exported with
torch.export, `edgebn compile`, then `edgebn compare --qemu` bit-exact on the emulated board, and
every layer of a debug run equal to the emulator's."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgebn.device import protocol as P
from edgebn.device.compare import ModelMismatch, compare_on_link, random_inputs
from edgebn.device.qemu import qemu_link
from edgebn.device.selftest import selftest_header, selftest_inputs
from edgebn.emulator import Emulator

EDGEBN = [sys.executable, "-m", "edgebn"]


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    work = tmp_path_factory.mktemp("tinynet")
    torch.manual_seed(0)
    model = TinyNet()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.2)
    model.eval()
    pt2 = work / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 8, 8),)), str(pt2))
    rng = np.random.default_rng(0)
    np.save(work / "calib.npy", rng.normal(0, 1, (64, 3, 8, 8)).astype(np.float32))
    np.save(work / "x.npy", rng.normal(0, 1, (12, 3, 8, 8)).astype(np.float32))
    out = work / "out"
    res = subprocess.run(EDGEBN + ["compile", str(pt2), "--calib", str(work / "calib.npy"),
                                   "-o", str(out), "--target", "qemu-rv32", "-q"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return work, out


def test_compare_qemu_cli_bit_exact(compiled):
    work, out = compiled
    res = subprocess.run(EDGEBN + ["compare", str(out), "--qemu", "--inputs", str(work / "x.npy"),
                                   "--json", str(work / "compare.json")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("12/12 inputs bit-exact, ") and "instructions/inference (qemu-rv32)" in last
    record = json.loads((work / "compare.json").read_text())
    emu = Emulator.load(out)
    assert record["ok"] and record["model_hash"] == f"0x{emu.model_hash:08x}"
    assert record["selftest"] == "PASS" and min(record["instructions"]) > 1000


def test_debug_layers_equal_the_emulator(compiled):
    _, out = compiled
    emu = Emulator.load(out)
    x = selftest_inputs(emu, 2, seed=5)
    _, layers = emu.run(x, return_layers=True)
    with qemu_link(out / "lib" / "edgebn_model", selftest_header(emu, selftest_inputs(emu))) as link:
        info = link.sync()
        assert info.model_hash == emu.model_hash and info.num_layers == len(layers)
        assert info.selftest == P.SelftestStatus.PASS
        for i in range(len(x)):
            r = link.run(x[i].tobytes(), debug=True)
            assert [l.index for l in r.layers] == list(range(len(layers)))
            for got, (name, want) in zip(r.layers, layers):
                assert got.output == want[i].astype(np.int8).tobytes(), name
                assert got.instret > 0
            assert r.output == emu.run(x[i:i + 1]).tobytes()


def test_compare_refuses_the_board_of_another_model(compiled, tmp_path):
    """OUT's emulator against a board built from a different OUT (same sizes, other weights)."""
    _, out = compiled
    emu = Emulator.load(out)
    other = tmp_path / "other"
    shutil.copytree(out / "lib" / "edgebn_model", other)
    header = (other / "edgebn_model.h").read_text()
    h = f"0x{emu.model_hash:08x}"
    assert h in header.lower()
    (other / "edgebn_model.h").write_text(header.replace(header[header.lower().index(h):][:10],
                                                         "0x0badf00d"))
    class OtherEmu:  # the other board's self-test vectors must match its own hash
        model_hash = 0x0BADF00D
        input_shape, packed_output_size = emu.input_shape, emu.packed_output_size
        run_packed = staticmethod(emu.run_packed)

    with qemu_link(other, selftest_header(OtherEmu, selftest_inputs(emu))) as link:
        with pytest.raises(ModelMismatch, match=f"board runs model 0x0badf00d but .* holds model {h}"):
            compare_on_link(link, emu, random_inputs(emu, 2), out=out, progress=False)
