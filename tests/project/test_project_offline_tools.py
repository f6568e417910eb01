"""edgebn.device.pio: tool-scons provisioning for offline PlatformIO, and failure causes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import SCons

from edgebn.device.pio import (OFFLINE_SETTINGS, failure_cause, prepare_offline,
                               provision_tool_scons, scons_package_version)
from edgebn.errors import EdgebnError


def installed_tool_scons(core):
    """What PlatformIO itself resolves for its core dependency tool-scons in CORE/packages."""
    from platformio.dependencies import get_core_dependencies
    from platformio.package.manager.tool import ToolPackageManager
    from platformio.package.meta import PackageSpec

    spec = PackageSpec(owner="platformio", name="tool-scons",
                       requirements=get_core_dependencies()["tool-scons"])
    return ToolPackageManager(str(core / "packages")).get_package(spec)


@pytest.mark.parametrize("scons, pio", [("4.11.1", "4.41101.0"), ("4.8.1", "4.40801.0"),
                                        ("4.5.2", "4.40502.0")])
def test_scons_release_maps_to_platformios_package_version(scons, pio):
    assert scons_package_version(scons) == pio


def test_provisioned_package_is_what_platformio_resolves_and_it_runs(tmp_path):
    path = provision_tool_scons(tmp_path)
    pkg = installed_tool_scons(tmp_path)
    assert pkg is not None and pkg.path == str(path)
    assert str(pkg.metadata.version) == scons_package_version(SCons.__version__)
    run = subprocess.run([sys.executable, str(path / "scons.py"), "--version"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and f"SCons: v{SCons.__version__}" in run.stdout, run.stdout + run.stderr


def test_provisioning_is_idempotent(tmp_path):
    first = provision_tool_scons(tmp_path)
    stamp = (first / "scons.py").stat().st_mtime_ns
    assert provision_tool_scons(tmp_path) == first
    assert (first / "scons.py").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "packages").iterdir()) == ["tool-scons"]


def fake_platformio_tool_scons(core, version):
    pkg = core / "packages" / "tool-scons"
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": "tool-scons", "version": version}))
    (pkg / ".piopm").write_text(json.dumps({
        "type": "tool", "name": "tool-scons", "version": version,
        "spec": {"owner": "platformio", "id": None, "name": "tool-scons",
                 "requirements": None, "uri": None}}))
    return pkg


def test_a_matching_tool_scons_platformio_installed_is_kept(tmp_path):
    theirs = fake_platformio_tool_scons(tmp_path, scons_package_version(SCons.__version__))
    assert provision_tool_scons(tmp_path) == theirs
    assert not (theirs / "scons.py").exists()  # untouched


def test_an_older_tool_scons_is_left_alone_and_ours_installed_beside_it(tmp_path):
    theirs = fake_platformio_tool_scons(tmp_path, "4.40801.0")
    ours = provision_tool_scons(tmp_path)
    assert ours.name == f"tool-scons@{scons_package_version(SCons.__version__)}"
    assert (theirs / ".piopm").is_file() and not (theirs / "scons.py").exists()
    assert installed_tool_scons(tmp_path).path == str(ours)


def test_prepare_offline_names_the_core_and_silences_phoning_home(tmp_path):
    env = prepare_offline(tmp_path / "core")
    assert env["PLATFORMIO_CORE_DIR"] == str((tmp_path / "core").resolve())
    assert env["PLATFORMIO_SETTING_ENABLE_TELEMETRY"] == "no"
    assert env["PLATFORMIO_DISABLE_UPGRADE_CHECK"] == "true"
    assert OFFLINE_SETTINGS.items() <= env.items()
    assert installed_tool_scons(tmp_path / "core") is not None


def test_unparseable_scons_version_is_an_error():
    with pytest.raises(EdgebnError, match="cannot map SCons version '4.11'"):
        scons_package_version("4.11")


@pytest.mark.parametrize("output, cause", [
    (["Compiling .pio/build/x/src/a.o",
      "src/a.c:3:5: error: unknown type name 'int9_t'",
      "*** [.pio/build/x/src/a.o] Error 1",
      "==== [FAILED] Took 0.4 seconds ===="],
     "src/a.c:3:5: error: unknown type name 'int9_t'"),
    (["Connecting........_____....._____",
      "A fatal error occurred: Failed to connect to ESP32: No serial data received.",
      "*** [upload] Error 2"],
     "Failed to connect to ESP32: No serial data received."),
    (["UnknownEnvNamesError: Unknown environment names 'x'. Valid names are 'qemu_rv32'"],
     "Unknown environment names 'x'. Valid names are 'qemu_rv32'"),
    (["Running firmware.elf in QEMU", "*** [upload] Error 3", "==== [FAILED] Took 1 s ===="],
     "[upload] Error 3"),
    # what `edgebn flash OUT --env esp32s3 --offline` prints on a machine that never had the
    # platform (PlatformIO retries for a minute first, too slow to rerun in the suite)
    (["Processing esp32s3 (platform: platformio/espressif32 @ ^6.9.0; board: esp32-s3-devkitc-1)",
      "Platform Manager: Installing platformio/espressif32 @ ^6.9.0", "HTTPClientError: "],
     "HTTPClientError while installing platformio/espressif32 @ ^6.9.0 (PlatformIO's registry "
     "unreachable?)"),
    (["everything fine"], None),
])
def test_failure_cause_picks_the_root_cause_line(output, cause):
    assert failure_cause(output) == cause
