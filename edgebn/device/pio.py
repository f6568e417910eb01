"""Running PlatformIO from edgebn, including with no network at all.

PlatformIO downloads its build engine (the core package `tool-scons`) on first use. Air-gapped build
machines cannot, so `prepare_offline` provisions that package from the SCons Python package that is
installed beside edgebn (PyPI `scons`), in the exact on-disk form PlatformIO's package manager
recognises: a folder with `scons.py`, `package.json` and a `.piopm` record naming owner
`platformio`. Together with a dev-platform that needs no registry packages (the emulated board,
referenced as `platform = symlink://...`), `pio run -e qemu_rv32` then never touches the network.
The real-board envs still need PlatformIO's registry once (docs/OFFLINE.md).
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from ..errors import EdgebnError

__all__ = [
    "OFFLINE_SETTINGS",
    "PioResult",
    "default_core_dir",
    "failure_cause",
    "pio_command",
    "prepare_offline",
    "provision_tool_scons",
    "run_pio",
    "scons_package_version",
]

# Settings that stop PlatformIO from phoning home (telemetry, "new version" check).
OFFLINE_SETTINGS: Mapping[str, str] = {
    "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "no",
    "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
}

_PROVISIONED_MARK = ".edgebn-provisioned"
_LAUNCHER = '''\
"""SCons launcher written by edgebn (edgebn/device/pio.py) in place of PlatformIO's tool-scons."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from SCons.Script.Main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
'''


def scons_package_version(scons_version: str) -> str:
    """PlatformIO's version for an SCons release: 4.11.1 -> 4.41101.0 (major.(4 MM PP).0)."""
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", scons_version)
    if not match:
        raise EdgebnError(f"cannot map SCons version {scons_version!r} to a PlatformIO tool-scons version")
    major, minor, patch = (int(g) for g in match.groups())
    return f"{major}.{major}{minor:02d}{patch:02d}.0"


def _tool_scons_requirement() -> str:
    """The tool-scons version range the installed PlatformIO Core asks for."""
    try:
        from platformio.dependencies import get_core_dependencies
    except ImportError:
        raise EdgebnError(
            "PlatformIO is not installed in this Python environment (pip install platformio==6.2.0)"
        ) from None
    return get_core_dependencies()["tool-scons"]


def default_core_dir() -> Path:
    """The core dir PlatformIO itself would use: $PLATFORMIO_CORE_DIR or ~/.platformio."""
    env = os.environ.get("PLATFORMIO_CORE_DIR")
    return Path(env) if env else Path.home() / ".platformio"


def provision_tool_scons(core_dir: Path) -> Path:
    """Make `tool-scons` available in CORE_DIR/packages from the installed `scons` package.

    Idempotent: a tool-scons that already satisfies PlatformIO's requirement (ours, or one PlatformIO
    downloaded itself) is kept. Returns the package folder.
    """
    requirement = _tool_scons_requirement()  # first: says so if PlatformIO is not installed
    try:
        import SCons
    except ImportError:
        raise EdgebnError("the SCons Python package is missing (pip install scons==4.11.1)") from None
    import semantic_version  # PlatformIO's own dependency
    from platformio.package.manager.tool import ToolPackageManager
    from platformio.package.meta import PackageSpec

    version = scons_package_version(SCons.__version__)
    spec = PackageSpec(owner="platformio", name="tool-scons", requirements=requirement)
    if semantic_version.Version(version) not in spec.requirements:
        raise EdgebnError(
            f"installed SCons {SCons.__version__} (tool-scons {version}) does not satisfy PlatformIO's "
            f"tool-scons {requirement}; install the SCons release PlatformIO expects"
        )

    packages_dir = Path(core_dir) / "packages"
    existing = ToolPackageManager(str(packages_dir)).get_package(spec)
    if existing is not None:
        return Path(existing.path)

    target = packages_dir / "tool-scons"
    if target.exists() and not (target / _PROVISIONED_MARK).exists():
        # Someone else's tool-scons of another version: PlatformIO's own naming for a second copy.
        target = packages_dir / f"tool-scons@{version}"
    staging = target.with_name(target.name + ".edgebn-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(Path(SCons.__file__).parent, staging / "SCons",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (staging / "scons.py").write_text(_LAUNCHER, encoding="utf-8")
    (staging / "package.json").write_text(json.dumps({
        "name": "tool-scons",
        "version": version,
        "description": f"SCons {SCons.__version__} from PyPI, provisioned by edgebn for offline builds",
        "homepage": "https://scons.org",
        "license": "MIT",
    }, indent=2), encoding="utf-8")
    (staging / ".piopm").write_text(json.dumps({
        "type": "tool",
        "name": "tool-scons",
        "version": version,
        "spec": {"owner": "platformio", "id": None, "name": "tool-scons",
                 "requirements": requirement, "uri": None},
    }), encoding="utf-8")
    (staging / _PROVISIONED_MARK).write_text(f"scons {SCons.__version__}\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def prepare_offline(core_dir: Path | None = None) -> dict[str, str]:
    """Provision tool-scons into CORE_DIR and return the environment variables for an offline pio.

    The returned mapping is meant to be laid over os.environ: it names the core dir explicitly so the
    pio process uses exactly the one that was provisioned.
    """
    core_dir = Path(core_dir) if core_dir is not None else default_core_dir()
    core_dir.mkdir(parents=True, exist_ok=True)
    provision_tool_scons(core_dir)
    return {"PLATFORMIO_CORE_DIR": str(core_dir.resolve()), **OFFLINE_SETTINGS}


def pio_command() -> list[str]:
    """How to start PlatformIO: the one installed with this Python first, then `pio` on PATH."""
    try:
        import platformio  # noqa: F401
    except ImportError:
        found = shutil.which("pio") or shutil.which("platformio")
        if not found:
            raise EdgebnError("PlatformIO not found: pip install platformio==6.2.0") from None
        return [found]
    return [sys.executable, "-m", "platformio"]


class PioResult:
    """Exit code and the last lines PlatformIO printed (for a one-line cause on failure)."""

    def __init__(self, returncode: int, tail: Sequence[str], stopped: bool = False,
                 timed_out: bool = False):
        self.returncode = returncode
        self.tail = list(tail)
        self.stopped = stopped      # run_pio ended it because stop_when matched
        self.timed_out = timed_out  # run_pio ended it because it outlived its timeout

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def cause(self) -> str:
        """PlatformIO's own failure message, reduced to one line."""
        return failure_cause(self.tail) or f"PlatformIO exited with status {self.returncode}"


# Where PlatformIO and the tools it runs state why they failed, most telling first. Each pattern's
# group 1 is the cause; the first line matching the earliest pattern wins (root causes come first).
_CAUSE_PATTERNS = (
    re.compile(r"^(\S.*?:\d+(?::\d+)?: (?:fatal )?error: .+)$"),   # compiler: src/x.c:3:5: error: ...
    re.compile(r"^A fatal error occurred: (.+)$"),                 # esptool: Failed to connect ...
    re.compile(r"^([A-Z]\w*(?:Error|Exception)):\s*(.*)$"),         # PlatformIO: UnknownEnvNamesError: ...
    re.compile(r"^Error: (.+)$"),                                  # click, builders: Error: ...
    re.compile(r"^.*undefined reference to (.+)$"),                # linker
    re.compile(r"^\*\*\* (\[.*\] .+)$"),                           # SCons: *** [upload] Error 1
)
_INSTALLING = re.compile(r"^(?:Platform|Tool|Library) Manager: Installing (.+)$")


def failure_cause(lines: Iterable[str]) -> str | None:
    """The most telling error line in PlatformIO's output, or None when it printed none.

    A PlatformIO exception with no message (HTTPClientError when the registry is unreachable) is
    named by its class, plus the package PlatformIO was installing when it happened.
    """
    lines = [line.strip() for line in lines if line.strip()]
    for pattern in _CAUSE_PATTERNS:
        for index, line in enumerate(lines):
            match = pattern.match(line)
            if not match:
                continue
            if pattern.groups == 2:  # "ClassName: message"
                cause = match.group(2) or match.group(1)
                installing = [m.group(1) for m in map(_INSTALLING.match, lines[:index]) if m]
                if not match.group(2) and installing:
                    cause += f" while installing {installing[-1]} (PlatformIO's registry unreachable?)"
            else:
                cause = match.group(1)
            return " ".join(cause.split())
    return None


def run_pio(project_dir: Path, args: Sequence[str], *, offline: bool = False,
            core_dir: Path | None = None, stream=None, env: Mapping[str, str] | None = None,
            stop_when: Callable[[str], bool] | None = None,
            timeout: float | None = None) -> PioResult:
    """Run `pio ARGS` in PROJECT_DIR, streaming its output line by line to STREAM (stdout).

    offline=True provisions tool-scons into CORE_DIR (default: PlatformIO's own) and disables
    telemetry and update checks. PlatformIO itself is never told to use the network: envs whose
    platform or packages are not installed fail with PlatformIO's "could not find" message.

    stop_when(line) returning True ends the run right after that line (PlatformIO and everything it
    started, e.g. QEMU, are stopped; `stopped` is set). timeout (seconds) ends a run that takes
    longer the same way, with `timed_out` set. PlatformIO gets no stdin: nothing here is
    interactive.
    """
    project_dir = Path(project_dir)
    if not (project_dir / "platformio.ini").is_file():
        raise EdgebnError(f"{project_dir} is not a PlatformIO project (no platformio.ini)")
    stream = stream if stream is not None else sys.stdout
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    if offline:
        child_env.update(prepare_offline(core_dir))
    elif core_dir is not None:
        child_env["PLATFORMIO_CORE_DIR"] = str(Path(core_dir).resolve())
    # Plain, unbuffered output: we relay it, and parse its last lines for the cause.
    child_env.setdefault("PLATFORMIO_DISABLE_PROGRESSBAR", "true")
    child_env["PYTHONUNBUFFERED"] = "1"

    cmd = [*pio_command(), *args]  # pio takes its project dir from the working directory
    try:
        # Its own session, so that stopping it also stops SCons and whatever SCons started.
        proc = subprocess.Popen(cmd, cwd=project_dir, env=child_env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1, start_new_session=True)
    except OSError as exc:
        raise EdgebnError(f"cannot start PlatformIO ({cmd[0]}): {exc.strerror}") from None

    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    tail: list[str] = []
    stopped = timed_out = False
    try:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                timed_out = True
                break
            if line is None:
                break
            stream.write(line)
            stream.flush()
            tail.append(line)
            del tail[:-60]
            if stop_when is not None and stop_when(line):
                stopped = True
                break
    finally:
        if proc.poll() is None:
            _stop_group(proc)
        reader.join(timeout=5)
        proc.stdout.close()
    return PioResult(proc.wait(), tail, stopped=stopped, timed_out=timed_out)


def _stop_group(proc: subprocess.Popen) -> None:
    """End PlatformIO's process group (started by run_pio): SIGTERM, then SIGKILL after 5 s."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
