"""Atomic output folders, and the rules for replacing one.

Every stage writes into a hidden temporary folder beside the target, then
writes ``manifest.json`` and the ``_SUCCESS`` marker, then renames the folder
into place. A crashed or killed run therefore leaves either nothing at the
target path or a ``.<name>.tmp-*`` folder that never looks complete. Readers
call :func:`check_complete`, which insists on the marker.

What a stage may write over (:func:`prepare_target`, checked before any heavy
work and again just before the swap):

- nothing at the path, or an empty folder: always;
- a complete output of the SAME bowsvm stage (``manifest.json`` whose ``stage``
  is the writing stage, and ``_SUCCESS``): only with ``--overwrite``;
- anything else is refused: a file, a symlink, a folder not written by bowsvm
  (or written by another stage, or left incomplete), the working directory or
  a folder containing it, the home folder, ``/``;
- and never a path that equals, contains or lies inside one of the stage's
  inputs (symlinks resolved): ``prepare --input T --output T`` or
  ``fuse --out .`` with the scores under ``.`` are refused.

Stale temporaries: each temporary folder holds a small ``_WRITER.json`` (pid,
host, start time) until just before the swap. When a stage starts writing
NAME it removes the ``.NAME.tmp-*`` siblings whose writer ran on this host
and is no longer alive (or that have no writer file and are more than
:data:`STALE_NO_WRITER_SECONDS` old: left by an older bowsvm, or by a kill in
the instant between writing the marker and the rename), and the
``.NAME.old-*`` siblings (the previous output, renamed aside during a swap)
when NAME itself exists. Each removal is printed on stderr. Temporaries of a
live process, or of another host, are left alone and reported.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

from bowsvm.io import store
from bowsvm.io.store import is_uri

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
#: Inside a temporary output folder while it is being written: pid, host, start.
WRITER = "_WRITER.json"
#: A temporary folder without a writer file is stale once it is this old (s).
STALE_NO_WRITER_SECONDS = 3600.0


def is_complete(path) -> bool:
    """True if ``path`` is a folder written completely by a bowsvm stage."""
    if is_uri(path):
        try:
            store.check_complete(store.resolve(path))
        except FileNotFoundError:
            return False
        return True
    p = Path(path)
    return (p / SUCCESS).is_file() and (p / MANIFEST).is_file()


def check_complete(path, what: str = "input") -> Path:
    """Return ``path`` as a Path, or raise if it is not a complete stage output.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or lacks the ``_SUCCESS`` marker. A URI
        (:mod:`bowsvm.io.store`) is checked by reading the two names, not by listing.
    """
    if is_uri(path):
        return store.check_complete(store.resolve(path), what)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} folder {str(p)!r} does not exist; run the stage that writes it first.")
    if not is_complete(p):
        raise FileNotFoundError(
            f"{what} folder {str(p)!r} is incomplete (no {SUCCESS} marker or {MANIFEST}); "
            f"it was probably left by a failed or killed run: delete it and rerun that stage."
        )
    return p


def output_stage(path) -> str | None:
    """The ``stage`` of a complete bowsvm output folder, else None."""
    p = Path(path)
    if not p.is_dir() or not is_complete(p):
        return None
    try:
        with open(p / MANIFEST) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    stage = m.get("stage") if isinstance(m, dict) else None
    return stage if isinstance(stage, str) and stage else None


def _resolved(path) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _relation(a: Path, b: Path) -> str | None:
    """How resolved path ``a`` relates to resolved path ``b``."""
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "lies inside"
    return None


_ELSEWHERE = "choose another output path"
_FIX = f"{_ELSEWHERE}, or delete it yourself if you are sure it is not needed"


def check_inputs(target, inputs=(), option: str = "output") -> None:
    """Refuse an output path that equals, contains or lies inside an input.

    Parameters
    ----------
    target : str or Path
        The output path (file or folder).
    inputs : iterable of str or Path or None
        The paths the stage reads; None entries are skipped. Symlinks are
        resolved on both sides.
    option : str
        How the output is named in the message (e.g. ``--out``).

    Raises
    ------
    ValueError
        If the target and an input overlap.
    """
    if is_uri(target):  # an object-store output overlaps only an input on the same store
        t = str(store.resolve(target)).rstrip("/")
        for inp in inputs:
            i = str(store.resolve(inp)).rstrip("/") if inp is not None and is_uri(inp) else None
            if i is not None and (t == i or t.startswith(i + "/") or i.startswith(t + "/")):
                raise ValueError(f"{option} {t!r} overlaps the input {i!r}; a stage never writes "
                                 f"over or into its own inputs: {_ELSEWHERE} outside every input.")
        return
    r = _resolved(target)
    for inp in inputs:
        if inp is None or is_uri(inp):  # a local output cannot overlap a URI input
            continue
        rel = _relation(r, _resolved(inp))
        if rel is not None:
            raise ValueError(
                f"{option} {str(target)!r} {rel} the input {str(inp)!r}"
                + (f" (both are {str(r)!r} once symlinks are resolved)" if rel == "is" else "")
                + f"; a stage never writes over or into its own inputs: {_ELSEWHERE} "
                f"outside every input."
            )


def _protected(r: Path) -> str | None:
    """What a resolved path is, if no stage may ever replace it."""
    if r == Path(r.anchor):
        return "the root folder"
    with contextlib.suppress(RuntimeError, KeyError, OSError):
        if r == _resolved(Path.home()):
            return "the home folder"
    cwd = _resolved(os.getcwd())
    if r == cwd:
        return "the working directory"
    if r in cwd.parents:
        return "a folder containing the working directory"
    return None


def check_target(path, overwrite: bool, stage: str | None = None, inputs=(),
                 option: str = "output") -> Path:
    """Check that a stage may write the folder ``path``; return it absolute.

    See the module docstring for the rules.

    Parameters
    ----------
    path : str or Path
        The output folder.
    overwrite : bool
        Whether an existing output of the same stage may be replaced.
    stage : str or None
        The writing stage (the ``stage`` field of its manifest). None accepts
        a complete output of any stage (library and test use only).
    inputs : iterable of str or Path or None
        The paths the stage reads (see :func:`check_inputs`).
    option : str
        How the output is named in messages (``--output``, ``--out``, ...).

    Raises
    ------
    ValueError
        If ``path`` overlaps an input.
    FileExistsError
        If ``path`` exists and may not be replaced.

    A URI is checked by :func:`bowsvm.io.store.check_target` (the same rules
    on the objects under the prefix) and returned as a Location.
    """
    check_inputs(path, inputs, option)
    if is_uri(path):
        loc = store.resolve(path)
        store.check_target(loc, overwrite, stage, option)
        return loc
    p = Path(os.path.abspath(os.fspath(path)))
    r = _resolved(p)
    what = _protected(r)
    if what is not None:
        raise FileExistsError(f"{option} {str(path)!r} is {what} ({str(r)!r}); a stage replaces "
                              f"its whole output folder, so {_ELSEWHERE} (a new "
                              f"sub-folder, e.g. {str(Path(path) / 'out')!r}).")
    if p.is_symlink():
        raise FileExistsError(f"{option} {str(path)!r} is a symbolic link (to {str(r)!r}); bowsvm "
                              f"does not replace links: {_ELSEWHERE}, pass the real folder, or remove the link.")
    if not p.exists():
        return p
    if not p.is_dir():
        raise FileExistsError(f"{option} {str(path)!r} exists and is not a folder; "
                              f"{_FIX}.")
    try:
        empty = not any(p.iterdir())
    except OSError as exc:
        raise FileExistsError(f"{option} {str(path)!r} exists and cannot be listed ({exc}); "
                              f"{_FIX}.") from None
    if empty:
        return p  # an empty folder: nothing to lose
    found = output_stage(p)
    if found is None:
        raise FileExistsError(
            f"{option} {str(path)!r} exists and is not a complete bowsvm output (it lacks "
            f"a {MANIFEST} naming its stage, or the {SUCCESS} marker), so --overwrite will "
            f"not delete it; {_FIX}."
        )
    if stage is not None and found != stage:
        raise FileExistsError(
            f"{option} {str(path)!r} holds the output of `bowsvm {found}`, not of "
            f"`bowsvm {stage}`, so --overwrite will not replace it; {_FIX}."
        )
    if not overwrite:
        raise FileExistsError(
            f"output {str(p)!r} already exists; pass --overwrite to replace it "
            f"or choose another output path."
        )
    return p


def prepare_target(path, overwrite: bool, stage: str | None = None, inputs=(),
                   option: str = "output") -> Path:
    """Refuse a target that may not be written (:func:`check_target`); make its parent.

    Called by every CLI command in its preflight (before Spark or any heavy
    work starts) and again by :func:`atomic_output_dir`.

    Returns
    -------
    Path
        The absolute target path.

    Raises
    ------
    ValueError
        If ``path`` overlaps an input.
    FileExistsError
        If ``path`` exists and may not be replaced.
    """
    p = check_target(path, overwrite, stage, inputs, option)
    p.parent.mkdir(parents=True, exist_ok=True)  # a Location: only on a local file system
    return p


def check_file_target(path, inputs=(), option: str = "output") -> Path:
    """Check an output FILE (report, predict ``--out``); return it absolute.

    An existing regular file is replaced (these commands always did); a
    folder, link or special file is refused, and so is a path that equals,
    contains or lies inside an input.

    Raises
    ------
    ValueError
        If ``path`` overlaps an input.
    FileExistsError
        If ``path`` exists and is not a regular file.
    """
    p = Path(os.path.abspath(os.fspath(path)))
    check_inputs(path, inputs, option)
    if p.is_symlink() or (p.exists() and not p.is_file()):
        raise FileExistsError(f"{option} {str(path)!r} exists and is not a regular file "
                              f"(a folder, link or special file); {_FIX}.")
    return p


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        pass
    with contextlib.suppress(OSError, IndexError):
        # /proc/PID/stat: "pid (comm) STATE ...": a killed writer no one reaped is Z
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    return True


def _host() -> str:
    return socket.gethostname()


def _say(msg: str) -> None:
    print(f"[bowsvm] {msg}", file=sys.stderr, flush=True)


def clean_stale(target) -> list[Path]:
    """Remove stale temporaries of ``target`` left by killed runs; return them.

    See the module docstring for which ones count as stale. Every removal,
    and every temporary left because its writer may be alive, is printed.
    """
    target = Path(os.path.abspath(os.fspath(target)))
    parent = target.parent
    if not parent.is_dir():
        return []
    removed = []
    host = _host()
    for tmp in sorted(parent.glob(f".{glob.escape(target.name)}.tmp-*")):
        if tmp.is_symlink() or not tmp.is_dir():
            continue
        reason = None
        try:
            w = json.loads((tmp / WRITER).read_text())
            pid, whost = int(w["pid"]), str(w["host"])
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                age = time.time() - tmp.stat().st_mtime
                if age > STALE_NO_WRITER_SECONDS:
                    reason = f"no writer recorded, {age / 3600:.1f} h old"
            if reason is None:
                _say(f"left {tmp} (no writer recorded, younger than "
                     f"{STALE_NO_WRITER_SECONDS / 3600:g} h: may still be in use)")
                continue
        except (OSError, ValueError, KeyError, TypeError):
            _say(f"left {tmp} (unreadable {WRITER}): delete it yourself if no run is writing it")
            continue
        if reason is None:
            if whost != host:
                _say(f"left {tmp} (written by pid {pid} on host {whost!r}, cannot tell from "
                     f"here whether it still runs)")
                continue
            if _pid_alive(pid):
                _say(f"left {tmp} (its writer, pid {pid}, is still running)")
                continue
            reason = f"its writer, pid {pid} on this host, is no longer running"
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            removed.append(tmp)
            _say(f"removed stale temporary folder {tmp} ({reason})")
    for old in sorted(parent.glob(f".{glob.escape(target.name)}.old-*")):
        if old.is_symlink() or not old.is_dir():
            continue
        if not target.exists():
            _say(f"left {old}: it is the previous {target.name!r} of a run killed while "
                 f"swapping outputs; rename it to {str(target)!r} to get it back, or delete it")
            continue
        shutil.rmtree(old, ignore_errors=True)
        if not old.exists():
            removed.append(old)
            _say(f"removed stale folder {old} (an old output renamed aside by a run killed "
                 f"while swapping; {target.name!r} itself is in place)")
    return removed


@contextlib.contextmanager
def atomic_output_dir(path, overwrite: bool = False, stage: str | None = None, inputs=(),
                      option: str = "output"):
    """Yield a temporary folder that becomes ``path`` only if the block succeeds.

    The caller writes its files (and the manifest) into the yielded folder.
    On success the ``_SUCCESS`` marker is written and the folder is renamed
    into place, replacing an old output when ``overwrite`` is set and the old
    output may be replaced (:func:`check_target`, checked on entry and again
    just before the swap). On any exception the temporary folder is removed
    and the old output is untouched. Stale temporaries of ``path`` left by
    killed runs are removed on entry (:func:`clean_stale`).

    Parameters
    ----------
    path : str or Path
    overwrite : bool
    stage : str or None
        The writing stage; the manifest written into the folder must say the
        same. None: taken from that manifest at the swap.
    inputs : iterable of str or Path or None
        The paths the stage reads.
    option : str
        How the output is named in messages.

    Raises
    ------
    ValueError
        If ``path`` overlaps an input, or the manifest's stage is not ``stage``.
    FileExistsError
        If ``path`` may not be written (checked before any work).
    RuntimeError
        If the block wrote no manifest (a bug in the stage).

    A URI ``path`` is written by :func:`bowsvm.io.store.manifest_output_dir`
    (no rename: the manifest commits), which yields a
    :class:`bowsvm.io.store.StoreOutput` instead of a folder; stages hand it
    their manifest with :func:`bowsvm.io.manifest.write_manifest`.
    """
    inputs = [i for i in inputs if i is not None]
    if is_uri(path):
        check_inputs(path, inputs, option)
        with store.manifest_output_dir(store.resolve(path), overwrite, stage, option) as out:
            yield out
        return
    target = prepare_target(path, overwrite, stage, inputs, option)
    clean_stale(target)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        (tmp / WRITER).write_text(json.dumps({"pid": os.getpid(), "host": _host(),
                                              "started": time.time()}))
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError(f"internal error: stage wrote no {MANIFEST} into {tmp}")
        with open(tmp / MANIFEST) as f:
            written = json.load(f).get("stage")
        if stage is not None and written != stage:
            raise ValueError(f"internal error: stage {stage!r} wrote a manifest of stage "
                             f"{written!r} into {tmp}")
        # the target may have changed while we worked: check it again before the swap
        check_target(target, overwrite, written if stage is None else stage, inputs, option)
        (tmp / WRITER).unlink()
        (tmp / SUCCESS).write_text("")
        _fsync_dir(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb"):
    """Write one file atomically: ``with atomic_file(p) as f: f.write(...)``.

    The data goes to a hidden temporary file beside ``path`` (same folder, so
    the rename is atomic), which is flushed, fsynced, made world-readable and
    renamed over ``path`` only when the block succeeds; on any error it is
    removed and ``path`` is left as it was. The one file-level twin of
    :func:`atomic_output_dir`: every single file bowsvm writes outside an
    atomic folder (JSON, ``.npz``, HTML, CSV) goes through it.
    """
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
