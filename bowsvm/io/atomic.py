"""Atomic output folders.

Every stage writes into a hidden temporary folder beside the target, then
writes ``manifest.json`` and the ``_SUCCESS`` marker, then renames the folder
into place. A crashed or killed run therefore leaves either nothing at the
target path or a ``.<name>.tmp-*`` folder that never looks complete. Readers
call :func:`check_complete`, which insists on the marker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"


def is_complete(path) -> bool:
    """True if ``path`` is a folder written completely by a bowsvm stage."""
    p = Path(path)
    return (p / SUCCESS).is_file() and (p / MANIFEST).is_file()


def check_complete(path, what: str = "input") -> Path:
    """Return ``path`` as a Path, or raise if it is not a complete stage output.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or lacks the ``_SUCCESS`` marker.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} folder {str(p)!r} does not exist; run the stage that writes it first.")
    if not is_complete(p):
        raise FileNotFoundError(
            f"{what} folder {str(p)!r} is incomplete (no {SUCCESS} marker or {MANIFEST}); "
            f"it was probably left by a failed or killed run: delete it and rerun that stage."
        )
    return p


def prepare_target(path, overwrite: bool) -> Path:
    """Refuse an existing target unless ``overwrite``; return the resolved path.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    p = Path(path).absolute()
    if p.exists() and not overwrite:
        raise FileExistsError(
            f"output {str(p)!r} already exists; pass --overwrite to replace it "
            f"or choose another output path."
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def atomic_output_dir(path, overwrite: bool = False):
    """Yield a temporary folder that becomes ``path`` only if the block succeeds.

    The caller writes its files (and the manifest) into the yielded folder.
    On success the ``_SUCCESS`` marker is written and the folder is renamed
    into place, replacing an old output when ``overwrite`` is set. On any
    exception the temporary folder is removed and the old output is untouched.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (checked before any work).
    """
    target = prepare_target(path, overwrite)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError(f"internal error: stage wrote no {MANIFEST} into {tmp}")
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
