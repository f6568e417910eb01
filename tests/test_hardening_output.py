"""Issue #7 / #11 part 4 / #13 failure 10: OUT is committed file by file against its manifest. A
directory that is not an earlier edgebn output is not written without --force (and the
cwd/home/root never); a file edgebn did not write, or one the user changed, is never deleted or
overwritten; a failing or interrupted compile leaves the previous OUT byte-identical and no temporary
directory behind; two compiles of one OUT cannot race."""
from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import edgebn
from hardening import EDGEBN, SmallNet
import edgebn.compiler as compiler
import edgebn.outdir as outdir
from edgebn.errors import EdgebnError



def tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("hard_out")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(SmallNet(3).eval(), (torch.zeros(1, 3, 8, 8),)), str(d / "m.pt2"))
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))
    bad = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    bad[3, 0, 0, 0] = np.nan
    np.save(d / "bad.npy", bad)
    return d


def _compile(env, out, calib="calib.npy", **kw):
    return edgebn.compile(str(env / "m.pt2"), str(env / calib), out, **kw)


def test_non_edgebn_directory_is_refused_without_force(env, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(EdgebnError, match="not an edgebn output.*--force"):
        _compile(env, out)
    assert tree(out) == {"notes.txt": hashlib.sha256(b"precious").hexdigest()}
    assert leftovers(tmp_path) == []
    compiled = _compile(env, out, force=True)     # --force writes beside the user's file, never over it
    assert (out / "notes.txt").read_text() == "precious" and (out / "edgebn.json").is_file()
    assert compiled.commit.kept_foreign == ["notes.txt"]
    assert leftovers(tmp_path) == []


def test_earlier_output_and_empty_dir_are_replaced_without_force(env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _compile(env, out)                      # empty directory: fine
    (out / "notes.txt").write_text("the user's")
    compiled = _compile(env, out)           # an earlier edgebn output: edgebn's files replaced, the rest kept
    assert (out / "notes.txt").read_text() == "the user's" and (out / "edgebn.json").is_file()
    assert compiled.commit.kept_foreign == ["notes.txt"]
    assert leftovers(tmp_path) == []


def test_file_at_out_is_refused_even_with_force(env, tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(EdgebnError, match="not a directory"):
        _compile(env, out, force=True)
    assert out.read_text() == "a file"


def test_cwd_and_its_parents_are_never_replaced(env, tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    (work / "train.py").write_text("# user code")
    monkeypatch.chdir(work)
    for target in (".", str(tmp_path)):
        with pytest.raises(EdgebnError, match="never writes its output there, even with --force"):
            _compile(env, target, force=True)
    assert (work / "train.py").read_text() == "# user code"
    assert leftovers(tmp_path) == [] and leftovers(work) == []


def test_failing_compile_leaves_previous_out_byte_identical(env, tmp_path):
    out = tmp_path / "out"
    _compile(env, out)
    before = tree(out)
    with pytest.raises(EdgebnError, match="NaN"):
        _compile(env, out, calib="bad.npy")
    assert tree(out) == before and leftovers(tmp_path) == []


def test_failure_after_writing_started_leaves_previous_out(env, tmp_path, monkeypatch):
    """A failure once the temporary OUT is half written (here: the project writer) removes it."""
    out = tmp_path / "out"
    _compile(env, out)
    before = tree(out)

    def fail(tmp, *a, **k):
        assert any(Path(tmp).iterdir())     # the temporary OUT really had files in it
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(compiler, "_write_project", fail)
    with pytest.raises(OSError, match="disk full"):
        _compile(env, out)
    assert tree(out) == before and leftovers(tmp_path) == []


def _wait_for(pred, proc, timeout=120.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


@pytest.fixture
def sigint_delivered():
    """SIGINT as an interactive shell delivers it: raising KeyboardInterrupt here, and at its default
    in the processes the test starts. A suite started in the background by a non-interactive shell
    (`make test &`) inherits SIGINT ignored, and Python then installs no handler for it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)    # a Popen preexec_fn
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("when", ["calibration", "writing"])
def test_sigint_leaves_previous_out_and_no_temp_dirs(env, tmp_path, when, sigint_delivered):
    """A real `edgebn compile` process gets SIGINT during calibration (a large calibration file) or
    once its temporary OUT exists: it exits 130 with one line, OUT is the old build byte for byte,
    and nothing .tmp-/.old- is left beside it."""
    out = tmp_path / "out"
    _compile(env, out)
    before = tree(out)
    big = tmp_path / "big.npy"
    n = 20_000 if when == "calibration" else 64
    np.save(big, np.random.default_rng(1).standard_normal((n, 3, 8, 8)).astype(np.float32))
    cmd = EDGEBN + ["compile", str(env / "m.pt2"), "--calib", str(big), "-o", str(out)]
    if when == "writing":
        cmd.append("-q")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_delivered)
    try:
        if when == "calibration":
            # tqdm's "calibrate" bar goes to stderr; read it byte by byte until calibration runs
            seen = ""
            while "calibrate" not in seen and proc.poll() is None:
                seen += proc.stderr.read(1)
            assert "calibrate" in seen
        else:
            assert _wait_for(lambda: any(".tmp-" in p.name for p in tmp_path.iterdir()), proc), \
                "the compile finished before its temporary OUT was seen"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "edgebn: interrupted" in err and "Traceback" not in err
    assert tree(out) == before
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# The manifest: the user's files survive every recompile (issue #11 part 4)

def manifest(out: Path) -> dict:
    import json
    return json.loads((out / outdir.MANIFEST_NAME).read_text())


def test_manifest_lists_every_file_edgebn_wrote_with_its_hash(env, tmp_path):
    out = tmp_path / "out"
    _compile(env, out)
    files = {k: v for k, v in tree(out).items() if k != outdir.MANIFEST_NAME}
    doc = manifest(out)
    assert doc["files"] == files and "pending" not in doc
    assert {"edgebn.json", "platformio.ini", "src/edgebn_harness.c"} <= set(files)


def test_recompile_keeps_user_files_and_user_edits(env, tmp_path):
    """The CLI: src/my_app.cpp and .vscode/ are untouched and named; an edited platformio.ini is
    kept with edgebn's version beside it; unchanged edgebn files are rewritten."""
    out = tmp_path / "out"
    _compile(env, out)
    (out / "src" / "my_app.cpp").write_text("// mine\n")
    (out / ".vscode").mkdir()
    (out / ".vscode" / "settings.json").write_text("{}")
    ini = (out / "platformio.ini").read_text()
    (out / "platformio.ini").write_text(ini + "\n; my monitor settings\n")
    (out / "edgebn.json").unlink()          # deleted edgebn files are simply written again
    r = subprocess.run(EDGEBN + ["compile", str(env / "m.pt2"), "--calib", str(env / "calib.npy"), "-o", str(out),
                                 "-q", "--calibration", "percentile"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "src" / "my_app.cpp").read_text() == "// mine\n"
    assert (out / ".vscode" / "settings.json").read_text() == "{}"
    assert (out / "platformio.ini").read_text().endswith("; my monitor settings\n")
    assert (out / "platformio.ini.edgebn-new").read_text() == ini
    assert (out / "edgebn.json").is_file()
    notes = [line for line in r.stderr.splitlines() if line.startswith("edgebn: note:")]
    assert len(notes) == 2, r.stderr
    assert "platformio.ini (new: platformio.ini.edgebn-new)" in notes[0]
    assert ".vscode/" in notes[1] and "src/my_app.cpp" in notes[1]
    doc = manifest(out)["files"]
    assert "platformio.ini" not in doc and "platformio.ini.edgebn-new" in doc and "src/my_app.cpp" not in doc

    # the user puts edgebn's version back: the side file is stale and goes, platformio.ini is edgebn's again
    (out / "platformio.ini").write_text(ini)
    compiled = _compile(env, out, calibration="percentile")
    assert not (out / "platformio.ini.edgebn-new").exists()
    assert "platformio.ini.edgebn-new" in compiled.commit.removed
    assert "platformio.ini" in manifest(out)["files"] and compiled.commit.kept_changed == []


def test_stale_edgebn_files_are_removed_unless_the_user_changed_them(env, tmp_path):
    """Files the last compile wrote and this one does not: removed when unchanged (their empty
    folders too), kept and named when the user edited them."""
    import json

    out = tmp_path / "out"
    _compile(env, out)
    (out / "src" / "old").mkdir()
    (out / "src" / "old" / "port_gone.c").write_text("int gone;\n")
    (out / "src" / "old_vectors.h").write_text("#define V 1\n")
    doc = manifest(out)
    doc["files"]["src/old/port_gone.c"] = hashlib.sha256(b"int gone;\n").hexdigest()
    doc["files"]["src/old_vectors.h"] = hashlib.sha256(b"#define V 0\n").hexdigest()   # since edited
    (out / outdir.MANIFEST_NAME).write_text(json.dumps(doc))
    compiled = _compile(env, out)
    assert not (out / "src" / "old").exists()
    assert (out / "src" / "old_vectors.h").read_text() == "#define V 1\n"
    assert compiled.commit.removed == ["src/old/port_gone.c"]
    assert compiled.commit.kept_stale == ["src/old_vectors.h"]
    assert "src/old_vectors.h" not in manifest(out)["files"]


def test_unchanged_files_are_not_rewritten(env, tmp_path):
    """Same model, same data: nothing is renamed over (PlatformIO's incremental build stays valid)."""
    out = tmp_path / "out"
    _compile(env, out)
    inodes = {p: (out / p).stat().st_ino for p in ("src/edgebn_harness.c", "platformio.ini")}
    compiled = _compile(env, out)
    assert {p: (out / p).stat().st_ino for p in inodes} == inodes
    assert "platformio.ini" in compiled.commit.unchanged


def test_commit_failing_half_way_leaves_whole_files_and_a_usable_manifest(env, tmp_path, monkeypatch):
    """A rename failing in the middle of the commit (the only step that changes OUT): every file is
    the old or the new version, whole; the manifest lists both hashes, so the next compile still
    recognises each file as edgebn's and keeps none as the user's."""
    out = tmp_path / "out"
    _compile(env, out)
    old = tree(out)
    real, calls = os.replace, []

    def flaky(src, dst):
        if ".out.tmp-" in str(src) and ".out.tmp-" not in str(dst):    # a move from staging into OUT
            calls.append(dst)
        if len(calls) == 4:
            raise OSError("rename failed (simulated)")
        return real(src, dst)

    monkeypatch.setattr(outdir.os, "replace", flaky)
    with pytest.raises(OSError, match="rename failed"):
        _compile(env, out, calibration="percentile")
    monkeypatch.setattr(outdir.os, "replace", real)
    assert leftovers(tmp_path) == []
    now = tree(out)
    assert any(now[k] != old[k] for k in old if k != outdir.MANIFEST_NAME)     # some files are new ...
    assert "pending" in manifest(out)
    compiled = _compile(env, out, calibration="percentile")
    assert compiled.commit.kept_changed == [] and compiled.commit.kept_foreign == []
    assert "pending" not in manifest(out)


def test_sigint_during_commit_is_delivered_after_it(env, tmp_path, monkeypatch, sigint_delivered):
    """SIGINT arriving while files move is held until the commit is complete: OUT is wholly new."""
    out = tmp_path / "out"
    _compile(env, out)
    real = os.replace

    def interrupting(src, dst):
        os.kill(os.getpid(), signal.SIGINT)
        return real(src, dst)

    monkeypatch.setattr(outdir.os, "replace", interrupting)
    with pytest.raises(KeyboardInterrupt):
        _compile(env, out, calibration="percentile")
    monkeypatch.setattr(outdir.os, "replace", real)
    doc = manifest(out)
    assert "pending" not in doc
    assert {k: v for k, v in tree(out).items() if k != outdir.MANIFEST_NAME} == doc["files"]
    assert leftovers(tmp_path) == []


def test_leftovers_of_a_killed_compile_are_removed_next_time(env, tmp_path):
    out = tmp_path / "out"
    _compile(env, out)
    (tmp_path / ".out.tmp-abcd1234").mkdir()
    (tmp_path / ".out.tmp-abcd1234" / "edgebn.json").write_text("{}")
    (tmp_path / ".out.old-4242").mkdir()                       # the pre-manifest swap's leftover
    (tmp_path / ".outer.tmp-abcd1234").mkdir()                  # another OUT's: not ours to remove
    _compile(env, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".outer.tmp-abcd1234", "out"]


def test_out_and_its_files_get_modes_from_the_umask(env, tmp_path):
    out = tmp_path / "new" / "out"
    previous = os.umask(0o027)
    try:
        _compile(env, out)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "src").stat().st_mode) == 0o750
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o640}


def test_second_compile_of_a_locked_out_is_refused_at_once(env, tmp_path):
    """Process A holds OUT (as a running compile does); `edgebn compile` of the same OUT in process
    B fails at once with one line, and OUT is untouched. Once A is done, B's compile works."""
    out = tmp_path / "out"
    _compile(env, out)
    before = tree(out)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from edgebn.outdir import OutputDir\n"
         f"with OutputDir({str(out)!r}):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cmd = EDGEBN + ["compile", str(env / "m.pt2"), "--calib", str(env / "calib.npy"), "-o", str(out), "-q"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [
            f"edgebn: error: {out} is being written by another edgebn compile; wait for it to finish "
            "(or choose another -o)"]
        assert tree(out) == before and leftovers(tmp_path) == []
    finally:
        holder.communicate("", timeout=60)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_failed_first_compile_removes_the_out_it_created(env, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EdgebnError, match="NaN"):
        _compile(env, out, calib="bad.npy")
    assert not out.exists() and leftovers(tmp_path) == []


def test_bench_update_report_keeps_the_report_edgebn_s(env, tmp_path):
    """`bench --update-report` rewrites report.json/html in OUT after the compile: the manifest
    follows, so the next compile replaces them instead of keeping them as the user's."""
    from edgebn.device.bench import record_cost_in_report

    out = tmp_path / "out"
    compiled = _compile(env, out)
    layers = [{"name": l["name"], "instructions": 100} for l in compiled.report["layers"]]
    record_cost_in_report(out, {"board": "qemu_rv32", "instructions": 100 * len(layers), "macs": 1,
                                "layers": layers})
    assert "cost" in (out / "report.json").read_text()
    assert manifest(out)["files"]["report.json"] == tree(out)["report.json"]
    compiled = _compile(env, out)
    assert compiled.commit.kept_changed == [] and "report.json" in compiled.commit.written
    assert not list(out.glob("*.edgebn-new"))


def test_recompile_from_inside_out_and_a_symlinked_out(env, tmp_path, monkeypatch):
    """`-o .` inside an earlier output is fine (nothing is swapped away any more); a symlink as OUT
    is refused, naming its target as the way out."""
    out = tmp_path / "out"
    _compile(env, out)
    monkeypatch.chdir(out)
    (out / "notes.txt").write_text("mine")
    compiled = _compile(env, ".")
    assert compiled.commit.kept_foreign == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    link = tmp_path / "link"
    link.symlink_to(out, target_is_directory=True)
    with pytest.raises(EdgebnError, match="is not a directory \\(a symlink: give its target as -o\\)"):
        _compile(env, link)
