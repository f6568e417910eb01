"""How compile time and memory scale with depth (issue #13 failure 9): a chain of N 1x1 conv + BN
layers (2 channels, 2x2 image) built directly as an edgebn IR graph (torch.export of 10,000 layers
takes longer than the compile itself: about a minute per 1,000 layers here), compiled end to end
(passes, calibration, quantization, arena plan, C, project, report, commit).

    python benchmarks/deep_compile.py [--no-stack] 1000 2000 4000 10000

prints one line per depth: the seconds of each compile stage, the total, and the process's peak
RSS so far (ru_maxrss). Linear passes show as a constant seconds-per-layer. --no-stack leaves out
the report's stack measurement, which compiles the generated C with the host gcc -O2 (about 8 KB
of C per layer of this model: gcc's time, not edgebn's, dominates a deep compile).
"""
from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgebn.ir import Graph, Node


def deep_graph(layers: int, channels: int = 2, hw: int = 2, seed: int = 0) -> Graph:
    """x -> (conv1x1 -> batch_norm) * layers, NCHW input (1, channels, hw, hw)."""
    rng = np.random.default_rng(seed)
    nodes, shapes, prev = [], {"x": (hw, hw, channels)}, "x"
    for i in range(layers):
        conv, bn = f"conv{i}", f"bn{i}"
        # near-identity weights keep activations in range through any depth
        w = np.eye(channels)[:, None, None, :] * 0.9 + rng.normal(0, 0.05, (channels, 1, 1, channels))
        nodes.append(Node(conv, "conv2d", [prev], {"stride": (1, 1), "padding": (0, 0, 0, 0),
                                                   "dilation": (1, 1), "groups": 1, "act": None},
                          {"weight": w, "bias": rng.normal(0, 0.05, channels)}))
        nodes.append(Node(bn, "batch_norm", [conv], {"eps": 1e-5, "affine": True},
                          {"mean": rng.normal(0, 0.05, channels), "var": 1 + rng.uniform(0, 0.1, channels),
                           "gamma": 1 + rng.normal(0, 0.05, channels), "beta": rng.normal(0, 0.05, channels)}))
        shapes[conv] = shapes[bn] = (hw, hw, channels)
        prev = bn
    return Graph(inputs=["x"], outputs=[prev], nodes=nodes, shapes=shapes,
                 torch_layouts={"x": "NCHW", prev: "NCHW"})


def main(depths: list[int], stack: bool = True) -> None:
    import edgebn
    import edgebn.compiler

    if not stack:
        edgebn.compiler._stack_report = lambda *args: {"stack_bytes": None, "stack_note": "not measured"}

    calib = np.random.default_rng(1).standard_normal((8, 2, 2, 2)).astype(np.float32)
    for n in depths:
        g = deep_graph(n)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            compiled = edgebn.compile(g, calib, Path(tmp) / "out", model_name="deep", progress=False)
            total = time.perf_counter() - t0
        stages = ", ".join(f"{k} {v:.2f}" for k, v in compiled.timings.items())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{n} layers: {total:.1f} s ({total / n * 1000:.2f} ms/layer; {stages}); peak RSS {peak:.0f} MiB",
              flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main([int(a) for a in args if a != "--no-stack"] or [1000, 2000], stack="--no-stack" not in args)
