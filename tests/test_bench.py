"""`edgebn bench`: the JSON record's shape, and instruction counts of a small fixed model held to
benchmarks/baseline.json (exact counts; more than 2% above the baseline is a regression)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from baseline_model import BASELINE, build_and_compile  # noqa: E402


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return build_and_compile(tmp_path_factory.mktemp("bench") / "out")


def test_bench_command_writes_table_and_json(out, tmp_path):
    from edgebn.device.bench import bench

    res = CliRunner().invoke(bench, [str(out), "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "b.json").read_text())
    assert rec["instructions"] > 0 and rec["macs"] > 0
    assert rec["macs"] == sum(l["macs"] for l in rec["layers"])
    # the per-layer counts come from a second (debug) run; the hook adds only a few instructions each
    assert 0 <= rec["layer_instructions_sum"] - rec["instructions"] < 200 * len(rec["layers"])
    assert rec["arena_bytes"] >= rec["arena_lower_bound"] > 0
    assert rec["flash_bytes"] == rec["model_object"]["text"] + rec["model_object"]["data"] > 0
    assert "total" in res.output and "conv2d_1x1" in res.output


def test_instruction_counts_within_two_percent_of_baseline(out):
    from edgebn.device.bench import bench_model

    base = json.loads(BASELINE.read_text())
    rec = bench_model(out, "fast")
    assert rec["macs"] == base["macs"]
    assert rec["instructions"] <= base["instructions"] * 1.02, (rec["instructions"], base["instructions"])
    for layer in rec["layers"]:
        assert layer["instructions"] <= base["layers"][layer["name"]] * 1.02, layer["name"]


def test_bench_on_the_esp32s3_core_json_and_baseline(out, tmp_path):
    """`edgebn bench OUT --board qemu_esp32s3` (issue #14): the SPEC section 3 record, bit-exact, and
    the counts held to benchmarks/baseline_xtensa.json like the RV32 ones."""
    from baseline_model import BASELINE_XTENSA
    from edgebn.device.bench import bench

    res = CliRunner().invoke(bench, [str(out), "--board", "qemu_esp32s3", "--json", str(tmp_path / "s3.json")])
    assert res.exit_code == 0, res.output
    assert "bit-exact" in res.output and "qemu_esp32s3" in res.output
    rec = json.loads((tmp_path / "s3.json").read_text())
    assert rec["board"] == "qemu_esp32s3" and rec["isa"] == "xtensa-lx7"
    assert rec["macs"] == sum(l["macs"] for l in rec["layers"]) and rec["bit_exact"] is True
    assert 0 <= rec["layer_instructions_sum"] - rec["instructions"] < 200 * len(rec["layers"])
    base = json.loads(BASELINE_XTENSA.read_text())
    assert rec["macs"] == base["macs"]
    assert rec["instructions"] <= base["instructions"] * 1.02, (rec["instructions"], base["instructions"])
    for layer in rec["layers"]:
        assert layer["instructions"] <= base["layers"][layer["name"]] * 1.02, layer["name"]


def test_compiled_model_bit_exact_on_the_lx106_core(out):
    """A real compiled model on the lx106 core, whose requantisation's 64-bit products and the
    harness's divisions go through the libgcc helpers the port supplies (compare --qemu --board)."""
    from edgebn.device import commands

    res = CliRunner().invoke(commands.compare, [str(out), "--qemu", "--board", "qemu_lx106", "--count", "3"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("3/3 inputs bit-exact, ")
    assert "instructions/inference (qemu-lx106)" in res.output


def test_bench_defaults_to_the_kernel_set_compile_wrote(out, tmp_path):
    """`bench` without --kernels measures what OUT holds: report.json `kernels.set` (compact where compile
    fell back from the int16-weight tiles), fast for an OUT without the record; a set this edgebn does not
    know is one clear error, not a silent fast run."""
    from edgebn.device.bench import compiled_kernel_set
    from edgebn.errors import EdgebnError

    assert compiled_kernel_set(out) == json.loads((out / "report.json").read_text())["kernels"]["set"] == "fast"
    other = tmp_path / "other"
    other.mkdir()
    assert compiled_kernel_set(other) == "fast"
    (other / "report.json").write_text(json.dumps({"kernels": {"set": "compact", "note": "x"}}))
    assert compiled_kernel_set(other) == "compact"
    (other / "report.json").write_text(json.dumps({"kernels": {"set": "turbo"}}))
    with pytest.raises(EdgebnError, match=r"kernel set 'turbo'.*pass --kernels"):
        compiled_kernel_set(other)


@pytest.fixture(scope="module")
def int16_out(tmp_path_factory):
    from int16_linear import INT16_LAYERS, build_and_compile

    return build_and_compile(tmp_path_factory.mktemp("int16") / "out", int16_layers=list(INT16_LAYERS))


@pytest.mark.parametrize("board", ["qemu_rv32", "qemu_esp32"])
def test_fast_int16_linear_counts_within_two_percent_of_benchmark(int16_out, board):
    """The fast int16x8 fully connected kernels (linear16_fast, linear16_fast_n on the ESP32 core) held
    to benchmarks/int16_linear.json, per layer, like the int8 baselines."""
    from edgebn.device.bench import bench_model
    from int16_linear import INT16_LAYERS, RECORD

    base = json.loads(RECORD.read_text())[board]["int16x8 fast"]
    rec = bench_model(int16_out, "fast", board=board)
    assert rec["bit_exact"] is True
    got = {l["name"]: l for l in rec["layers"]}
    for name in INT16_LAYERS:
        assert got[name]["kernel"] == base["layers"][name]["kernel"]
        assert got[name]["instructions"] <= base["layers"][name]["instructions"] * 1.02, name
    # the int16 tail's premise (compiler.TAIL_MAC_SHARE): the fast int16 linear costs about what the int8 one
    # does per MAC, far from the reference loop's 13-15
    assert got["linear"]["instructions"] / got["linear"]["macs"] < 4
