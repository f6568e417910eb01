"""OUT's lifecycle: refuse the wrong folder, lock it, build beside it, commit file by file.

A compile never writes into OUT until the very end. It

1. refuses OUT if it is a file, the filesystem root, the home directory, the current directory or
   one of its parents (always), or a non-empty folder edgebn did not write (unless --force);
2. takes an advisory lock on OUT (flock on the OUT folder itself, created if missing): a second
   compile of the same OUT fails at once with "is being written by another edgebn compile" rather
   than racing the first; leftovers of a killed compile (".OUT.tmp-*" staging folders beside OUT,
   ".OUT.old-*" from edgebn before the manifest) are removed under that lock;
3. builds the whole new output in a staging folder ".OUT.tmp-XXXXXXXX" beside OUT;
4. commits it with SIGINT/SIGTERM held off, against OUT's manifest (`.edgebn-manifest.json`: every
   file the last compile wrote, with its SHA-256):
   - a new file, or one edgebn wrote last time and nobody changed since, is replaced by rename
     (a file whose content did not change is left alone, so PlatformIO does not rebuild it);
   - a file edgebn did not write, or one it wrote and the user changed, at a path the compile
     writes, is kept; edgebn's version goes beside it as `FILE.edgebn-new`;
   - a file the last compile wrote and this one does not ("stale") is removed if unchanged, kept
     if the user changed it;
   - every other file in OUT (src/my_app.cpp, .vscode/, .pio/) is not touched.
   Each file is renamed whole (fsynced first), so even a crash mid-commit leaves every file either
   the old or the new version; the manifest lists both hashes ("pending") while files move, so the
   next compile still recognises all of them as edgebn's.

What was kept is returned in a CommitResult and printed by the CLI, one line per kind.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import fsio
from .errors import EdgebnError

__all__ = ["MANIFEST_NAME", "NEW_SUFFIX", "CommitResult", "OutputDir", "signals_deferred", "is_edgebn_output"]

MANIFEST_NAME = ".edgebn-manifest.json"
MANIFEST_FORMAT = "edgebn-manifest/1"
NEW_SUFFIX = ".edgebn-new"
EDGEBN_JSON = "edgebn.json"
LIST_LIMIT = 8          # names shown per kind in the CLI's summary lines


@contextlib.contextmanager
def signals_deferred():
    """Block SIGINT/SIGTERM in this (main) thread for the duration; a signal that arrives meanwhile is
    delivered when the block ends. Elsewhere (other threads, no pthread_sigmask) a no-op."""
    import signal
    import threading

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# ---------------------------------------------------------------------------------------------
# The manifest

def read_manifest(out_dir: Path) -> dict[str, set[str]]:
    """{relative path: hashes edgebn wrote there}; {} for a folder without a (readable) manifest."""
    path = out_dir / MANIFEST_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        return {}
    known: dict[str, set[str]] = {}
    for section in ("files", "pending"):
        entries = doc.get(section) or {}
        if not isinstance(entries, dict):
            continue
        for rel, digests in entries.items():
            digests = [digests] if isinstance(digests, str) else digests
            if isinstance(rel, str) and isinstance(digests, list) and _safe_rel(rel):
                known.setdefault(rel, set()).update(d for d in digests if isinstance(d, str))
    return known


def _write_manifest(out_dir: Path, files: dict[str, str | list[str]], pending: dict[str, str] | None = None) -> None:
    doc = {"format": MANIFEST_FORMAT,
           "note": "files edgebn wrote here with their SHA-256; a recompile replaces only these, and only "
                   "while unchanged (docs/REFUSALS.md, 'The output directory')",
           "files": dict(sorted(files.items()))}
    if pending:
        doc["pending"] = dict(sorted(pending.items()))
    fsio.write_json(out_dir / MANIFEST_NAME, doc, trailing_newline=True)


def _safe_rel(rel: str) -> bool:
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts


def is_edgebn_output(path: Path) -> bool:
    if (path / MANIFEST_NAME).is_file() and read_manifest(path):
        return True
    from .artifact import FORMAT
    try:
        return json.loads((path / EDGEBN_JSON).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _tree(root: Path) -> dict[str, str]:
    """Every regular file under ROOT (no symlinks followed) as {relative posix path: sha256}."""
    files = {}
    for folder, dirs, names in os.walk(root):
        for name in names:
            p = Path(folder) / name
            if p.is_file() and not p.is_symlink():
                files[p.relative_to(root).as_posix()] = fsio.file_sha256(p)
    return files


def _listing(root: Path) -> list[str]:
    out = []
    for folder, dirs, names in os.walk(root):
        for name in names:
            out.append((Path(folder) / name).relative_to(root).as_posix())
    return out


# ---------------------------------------------------------------------------------------------
# Refusals, the lock, leftovers

def _never_replace(out_dir: Path) -> str | None:
    cwd = Path.cwd().resolve()
    real = out_dir.resolve()
    if real == Path(real.anchor):
        return "the filesystem root"
    if real == Path.home().resolve():
        return "the home directory"
    if real == cwd or real in cwd.parents:
        return "the current directory or one of its parents"
    return None


def check_output(out_dir, force: bool) -> Path:
    """Refuse an OUT that is a file, or a non-empty folder that is not an earlier edgebn output
    (without force; with force, still the root, home, current folder or one of its parents: a stray
    `-o ~` must not scatter a project among the user's files). Returns OUT as an absolute path."""
    out_dir = Path(os.path.abspath(out_dir))
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        hint = " (a symlink: give its target as -o)" if out_dir.is_symlink() and out_dir.is_dir() else ""
        raise EdgebnError(f"{out_dir} exists and is not a directory{hint}")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_edgebn_output(out_dir):
        if not force:
            raise EdgebnError(f"{out_dir} exists and is not an edgebn output; choose another -o or pass --force "
                              "(which keeps every file already there)")
        why = _never_replace(out_dir)
        if why:
            raise EdgebnError(f"{out_dir} is {why}; edgebn never writes its output there, even with --force")
    return out_dir


def _leftover_patterns(name: str) -> list[re.Pattern]:
    n = re.escape(name)
    return [re.compile(rf"^\.{n}\.tmp-[A-Za-z0-9_]{{8}}$"), re.compile(rf"^\.{n}\.old-\d+$")]


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


# ---------------------------------------------------------------------------------------------
# The commit

@dataclass
class CommitResult:
    """What a commit did to OUT, relative paths."""

    written: list[str] = field(default_factory=list)      # created or replaced
    unchanged: list[str] = field(default_factory=list)    # same bytes as before: not touched
    removed: list[str] = field(default_factory=list)      # stale edgebn files, unchanged: removed
    kept_changed: list[str] = field(default_factory=list)   # yours or changed by you, at a path edgebn
                                                            # writes: kept, edgebn's version in X.edgebn-new
    kept_stale: list[str] = field(default_factory=list)   # edgebn wrote it last time, you changed it: kept
    kept_foreign: list[str] = field(default_factory=list)  # not edgebn's (folders shown as "dir/"): untouched

    def messages(self) -> list[str]:
        """One line per kind of kept file, for the terminal (empty when nothing of the user's is there)."""
        def names(items):
            shown = ", ".join(items[:LIST_LIMIT])
            return shown + (f" and {len(items) - LIST_LIMIT} more" if len(items) > LIST_LIMIT else "")
        lines = []
        if self.kept_changed:
            lines.append(f"kept {len(self.kept_changed)} file(s) you added or changed where edgebn writes, "
                         f"its new version beside each: "
                         f"{names([f'{rel} (new: {rel}{NEW_SUFFIX})' for rel in self.kept_changed])}")
        if self.kept_stale:
            lines.append(f"kept {len(self.kept_stale)} file(s) an earlier compile wrote and you changed "
                         f"(this compile no longer writes them): {names(self.kept_stale)}")
        if self.kept_foreign:
            lines.append(f"kept what edgebn did not write: {names(self.kept_foreign)}")
        return lines


def _is_plain_dir_chain(out_dir: Path, rel: str) -> str | None:
    """The first parent of OUT/rel (below OUT) that exists but is not a real folder, else None."""
    p = out_dir
    for part in Path(rel).parts[:-1]:
        p = p / part
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            return p.relative_to(out_dir).as_posix()
    return None


def _collapse_foreign(foreign: list[str], edgebn_paths) -> list[str]:
    """Name each foreign file by its highest folder that holds nothing of edgebn's ("dir/")."""
    edgebn_dirs = set()
    for rel in edgebn_paths:
        parts = Path(rel).parts
        for i in range(1, len(parts)):
            edgebn_dirs.add("/".join(parts[:i]))
    shown = set()
    for rel in foreign:
        parts = Path(rel).parts
        entry = rel
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix not in edgebn_dirs:
                entry = prefix + "/"
                break
        shown.add(entry)
    return sorted(shown)


def _plan(out_dir: Path, staged: dict[str, str], known: dict[str, set[str]]):
    """Decide, before touching anything, where each staged file goes and what is removed."""
    moves: list[tuple[str, str]] = []          # (staged rel, destination rel)
    final: dict[str, str] = {}                 # the new manifest
    result = CommitResult()
    for rel, digest in sorted(staged.items()):
        bad = _is_plain_dir_chain(out_dir, rel)
        if bad:
            raise EdgebnError(f"{out_dir / bad} is a symlink or a file where edgebn writes the folder "
                              f"{bad}/; edgebn does not write through it: move it away")
        dst = out_dir / rel
        if not os.path.lexists(dst):
            moves.append((rel, rel))
            final[rel] = digest
            continue
        current = fsio.file_sha256(dst) if dst.is_file() and not dst.is_symlink() else None
        if current == digest:
            result.unchanged.append(rel)
            final[rel] = digest
        elif current is not None and current in known.get(rel, ()):
            moves.append((rel, rel))
            final[rel] = digest
        else:
            side = rel + NEW_SUFFIX
            side_path = out_dir / side
            if os.path.lexists(side_path):
                side_now = fsio.file_sha256(side_path) if side_path.is_file() and not side_path.is_symlink() \
                    else None
                if side_now is None or (side_now not in known.get(side, ()) and side_now != digest):
                    raise EdgebnError(f"{side_path} exists and is not edgebn's; edgebn keeps your {rel} and "
                                      f"needs that name for its own version: move one of them away")
            result.kept_changed.append(rel)
            if side_path.is_file() and fsio.file_sha256(side_path) == digest:
                final[side] = digest
            else:
                moves.append((rel, side))
                final[side] = digest
    stale = []
    for rel, digests in sorted(known.items()):
        if rel in final or rel in staged:
            continue
        path = out_dir / rel
        if not os.path.lexists(path):
            continue
        if path.is_file() and not path.is_symlink() and fsio.file_sha256(path) in digests:
            stale.append(rel)
        else:
            result.kept_stale.append(rel)
    edgebn_paths = set(final) | set(known)
    foreign = [rel for rel in _listing(out_dir)
               if rel != MANIFEST_NAME and rel not in edgebn_paths and rel not in staged
               and not rel.endswith(fsio.TEMP_SUFFIX)]
    result.kept_foreign = _collapse_foreign(foreign, edgebn_paths | set(staged))
    return moves, stale, final, result


class OutputDir:
    """`with OutputDir(out, force) as od:` checks and locks OUT; `od.staging()` is the folder to
    build in; `od.commit()` moves it into OUT. Leaving the block without a commit (an error, Ctrl-C)
    removes the staging folder and, if this compile created OUT, OUT again: the previous OUT is
    byte-identical."""

    def __init__(self, out_dir, force: bool = False):
        self.path = check_output(out_dir, force)
        self._fd: int | None = None
        self._created = False
        self._staging: Path | None = None
        self.result: CommitResult | None = None

    # -- the lock --------------------------------------------------------------------------------
    def __enter__(self) -> "OutputDir":
        with signals_deferred():
            for _ in range(10):
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    os.mkdir(self.path)
                    self._created = True
                except FileExistsError:
                    pass
                except OSError as e:
                    raise EdgebnError(f"cannot create {self.path}: {e.strerror}") from e
                self._fd = _try_lock(self.path)
                if self._fd is not None:
                    break
            else:
                raise EdgebnError(f"{self.path}: cannot lock it (it keeps being replaced)")
        self._remove_leftovers()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        with signals_deferred():
            try:
                if self._staging is not None:
                    _remove_tree(self._staging)
                    self._staging = None
                if self._created and self.result is None:
                    with contextlib.suppress(OSError):
                        self.path.rmdir()       # only if still empty: never anyone's files
            finally:
                if self._fd is not None:
                    os.close(self._fd)          # releases the flock
                    self._fd = None

    def _remove_leftovers(self) -> None:
        patterns = _leftover_patterns(self.path.name)
        for entry in self.path.parent.iterdir():
            if any(p.match(entry.name) for p in patterns):
                _remove_tree(entry)
        for entry in self.path.iterdir():
            if entry.name.endswith(fsio.TEMP_SUFFIX) and entry.is_file():
                entry.unlink()

    # -- staging and commit ------------------------------------------------------------------------
    def staging(self) -> Path:
        if self._staging is None:
            with signals_deferred():
                self._staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        return self._staging

    def commit(self) -> CommitResult:
        """Move the staged build into OUT (see the module docstring); returns what it did."""
        if self._fd is None or self._staging is None:
            raise RuntimeError("commit() needs the lock and a staging folder")
        staging = self._staging
        out = self.path
        staged = _tree(staging)
        if MANIFEST_NAME in staged:
            raise EdgebnError(f"the build wrote {MANIFEST_NAME} itself; that name is the manifest's")
        with signals_deferred():
            known = read_manifest(out)
            moves, stale, final, result = _plan(out, staged, known)
            mode = fsio.umask_mode()
            dir_mode = fsio.umask_mode(0o777)
            touched = {out}
            # every file the new manifest names is recognised as edgebn's even if we stop half way
            _write_manifest(out, {rel: sorted(d) for rel, d in known.items()}, pending=final)
            for src_rel, dst_rel in moves:
                src, dst = staging / src_rel, out / dst_rel
                os.chmod(src, mode)
                fsio.fsync_file(src)
                dst.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
                os.replace(src, dst)
                touched.add(dst.parent)
                result.written.append(dst_rel)
            for rel in stale:
                path = out / rel
                path.unlink()
                result.removed.append(rel)
                touched.add(path.parent)
                _prune_empty(path.parent, out)
            for folder in touched:
                if folder.is_dir():
                    fsio.fsync_dir(folder)
            _write_manifest(out, final)
            self.result = result
            _remove_tree(staging)
            self._staging = None
        return result


def _try_lock(path: Path) -> int | None:
    """flock(LOCK_EX|LOCK_NB) on the folder PATH; its fd, or None if PATH was replaced meanwhile.
    A lock held by another process is an EdgebnError (a concurrent compile is refused, not awaited:
    it would overwrite the first one's result anyway)."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise EdgebnError(f"{path} is being written by another edgebn compile; wait for it to finish "
                              "(or choose another -o)") from None
        raise
    # the folder may have been removed (a failed first compile) between open and flock
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def update_files(out_dir, files: dict[str, bytes]) -> None:
    """Rewrite files of an existing OUT after its compile (`bench --update-report`): under OUT's
    lock, each whole or not at all. A file that was edgebn's stays edgebn's in the manifest, with
    its new hash, so the next compile still replaces it."""
    out = Path(os.path.abspath(out_dir))
    fd = _try_lock(out)
    if fd is None:
        raise EdgebnError(f"{out} changed while edgebn was opening it; try again")
    try:
        with signals_deferred():
            known = read_manifest(out)
            tracked = (out / MANIFEST_NAME).is_file()
            for rel, data in files.items():
                path = out / rel
                mine = not os.path.lexists(path) or (
                    path.is_file() and not path.is_symlink() and fsio.file_sha256(path) in known.get(rel, ()))
                fsio.write_bytes(path, data)
                if mine:
                    known[rel] = {hashlib.sha256(data).hexdigest()}
            if tracked:
                _write_manifest(out, {rel: sorted(d)[0] if len(d) == 1 else sorted(d) for rel, d in known.items()})
    finally:
        os.close(fd)


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove FOLDER and its parents up to (not including) STOP while they are empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent

