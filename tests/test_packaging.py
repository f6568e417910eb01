"""The wheel ships templates/ and firmware/ (as edgebn.templates / edgebn.firmware) and every operator
package edgebn/ops/<op>/ with its .c.j2 kernels: every file of those trees is inside it, so an
installed edgebn can emit C and write the PlatformIO project."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tracked(tree: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", tree], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {line[len(tree) + 1:] for line in out.splitlines() if line}


def test_wheel_ships_every_template_and_firmware_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, text=True)
    (wheel,) = tmp_path.glob("edgebn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for tree in ("templates", "firmware"):
        files = _tracked(tree)
        assert files, tree
        missing = sorted(f for f in files if f"edgebn/{tree}/{f}" not in names)
        assert not missing, f"{tree}: not in the wheel: {missing}"
    ops = {f for f in _tracked("edgebn/ops") if f.endswith((".py", ".j2"))}
    assert any(f.endswith(".c.j2") for f in ops)
    missing = sorted(f for f in ops if f"edgebn/ops/{f}" not in names)
    assert not missing, f"edgebn/ops: not in the wheel: {missing}"
