"""Fixtures for the generated PlatformIO project tests (tests/project/)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from project_fixtures import NO_NETWORK

from edgebn.device.pio import prepare_offline


@pytest.fixture(scope="session")
def pio_core(tmp_path_factory):
    """A project-local PlatformIO core dir with tool-scons provisioned from the scons package."""
    core = tmp_path_factory.mktemp("pio-core")
    prepare_offline(core)
    return core


@pytest.fixture
def offline_env(pio_core, monkeypatch):
    """os.environ as an air-gapped machine's: PlatformIO's core in pio_core, no network."""
    for key, value in {**prepare_offline(pio_core), **NO_NETWORK}.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


@pytest.fixture(scope="session")
def compiled_out(tmp_path_factory):
    """A real `edgebn compile` output (small BN-CNN, default env qemu_rv32): the emitter's model,
    the real harness and write_project's project. Tests that change it work on a copy."""
    import torch
    from torch import nn

    import edgebn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    calib = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    out = tmp_path_factory.mktemp("compiled") / "out"
    edgebn.compile(model, calib, out, target="qemu-rv32",
                   example_input=torch.from_numpy(calib[:1]), model_name="tiny_bn_cnn")
    return out
