"""Issue #13 failure 9: compile stages are linear in the number of layers. The IR answers
producer/consumers/use_count from a name index and use-lists kept by its rewriting helpers
(edgebn/ir.py), `remove` sweeps its tombstones once, and the arena planner reads only the buffers
live at each step. No timed test: the work is counted (Python line events in edgebn's own code,
deterministic) at two depths, and a 10,000-layer net runs through the passes under a memory limit."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgebn.ir import Graph, Node

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from deep_compile import deep_graph  # noqa: E402


def _chain() -> Graph:
    return Graph(inputs=["x"], outputs=["d"], shapes={t: (1,) for t in "xabcd"},
                 nodes=[Node("a", "conv2d", ["x"]), Node("b", "batch_norm", ["a"]),
                        Node("c", "add", ["b", "b"]), Node("d", "add", ["c", "a"])],
                 torch_layouts={"x": "NF", "d": "NF"})


def test_index_answers_like_a_scan_through_every_rewrite():
    g = _chain()

    def scan(g):
        names = [n.name for n in g.nodes]
        return {t: ([n.name for n in g.nodes if t in n.inputs],
                    sum(n.inputs.count(t) for n in g.nodes) + g.outputs.count(t),
                    t if t in names else None) for t in ["x", *names, "z"]}

    def indexed(g):
        return {t: ([n.name for n in g.consumers(t)], g.use_count(t),
                    g.producer(t).name if g.producer(t) else None) for t in ["x", *[n.name for n in g.nodes], "z"]}

    assert indexed(g) == scan(g)
    assert g.consumers("b")[0].name == "c" and g.use_count("b") == 2
    g.remove(g.node("b"), "a")                   # c = a + a, d = c + a
    assert indexed(g) == scan(g) and [n.name for n in g.consumers("a")] == ["c", "d"]
    g.nodes.append(Node("e", "add", ["d", "x"]))      # appended directly, as the importer does
    g.outputs = ["e"]
    assert indexed(g) == scan(g)
    g.rename("c", "c2")
    assert indexed(g) == scan(g) and g.node("d").inputs == ["c2", "a"]
    with pytest.raises(KeyError):
        g.node("c")
    h = g.copy()                                 # a copy has its own index
    h.remove(h.node("d"), "c2")
    assert [n.name for n in g.nodes] == ["a", "c2", "d", "e"] and indexed(g) == scan(g)
    assert [n.name for n in h.nodes] == ["a", "c2", "e"] and indexed(h) == scan(h)
    assert h.node("e").inputs == ["c2", "x"]


def _edgebn_lines(fn) -> int:
    """Python lines executed in edgebn's own modules while fn() runs (loop iterations included)."""
    pkg = str(ROOT / "edgebn")
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if not frame.f_code.co_filename.startswith(pkg):
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def _stages(layers: int):
    from edgebn.calibrate import calibrate
    from edgebn.passes import run_passes
    from edgebn.plan import plan_arena
    from edgebn.quantize import assign_qparams, quantize_graph

    g = deep_graph(layers)
    calib = np.random.default_rng(0).standard_normal((2, 2, 2, 2))
    work = {}

    def passes():
        work["float"] = run_passes(g)

    def calib_quant_plan():
        ranges = calibrate(work["float"], calib, (1, 2, 2, 2), progress=False)
        plan_arena(quantize_graph(work["float"], assign_qparams(work["float"], ranges)))

    return _edgebn_lines(passes), _edgebn_lines(calib_quant_plan)


def test_passes_calibration_quantization_and_plan_do_linear_work():
    """Doubling the depth doubles the work (a scan per node, as fold_batchnorm's consumer lookup
    was, would quadruple it: 1,000 layers took 113 s)."""
    small, large = _stages(150), _stages(300)
    for stage, a, b in zip(("passes", "calibrate+quantize+plan"), small, large):
        assert 1.8 < b / a < 2.2, (stage, a, b)


_DEEP_UNDER_LIMIT = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    sys.path.insert(0, BENCH_DIR)
    import numpy as np
    from deep_compile import deep_graph
    from edgebn.calibrate import calibrate
    from edgebn.passes import run_passes
    from edgebn.plan import plan_arena
    from edgebn.quantize import assign_qparams, quantize_graph
    g = run_passes(deep_graph(10_000))
    assert len(g.nodes) == 10_000 and len(g.fold_log) == 10_000
    ranges = calibrate(g, np.random.default_rng(0).standard_normal((2, 2, 2, 2)), (1, 2, 2, 2), progress=False)
    plan = plan_arena(quantize_graph(g, assign_qparams(g, ranges)))
    print("ok", plan.arena_bytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


def test_ten_thousand_layers_fold_calibrate_quantize_and_plan_in_bounded_memory():
    """10,000 conv+BN layers through the stages that were quadratic, in a process limited to 1 GiB
    of address space (numpy and edgebn, no torch)."""
    code = _DEEP_UNDER_LIMIT.replace("MEMORY_LIMIT", str(1 << 30)).replace("BENCH_DIR", repr(str(ROOT / "benchmarks")))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    ok, arena, _peak_mib = r.stdout.split()
    assert ok == "ok" and int(arena) == 2 * 2 * 2 * 2      # two 2x2x2 int8 buffers ping-pong
