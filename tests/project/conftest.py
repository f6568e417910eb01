"""Fixtures for the generated PlatformIO project tests (tests/project/)."""
from __future__ import annotations

import os

import pytest

from edgebn.device.pio import prepare_offline

# Any attempt by PlatformIO to reach the network fails at once instead of succeeding on a connected
# developer machine: the offline tests then prove the build needs no network.
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "NO_PROXY": "", "no_proxy": ""}


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
