"""JSON manifests and content hashes.

Each stage output folder holds ``manifest.json``: what the stage was, what it
was built from (with hashes), the options it used, and its counts. A stage
refuses inputs whose manifest does not match what it expects.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bowsvm.io.atomic import MANIFEST, atomic_file


def content_hash(obj) -> str:
    """A short stable SHA-256 hash of a JSON-able object or of bytes."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
    else:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def write_json_atomic(path, obj) -> None:
    """Write JSON to ``path`` atomically (:func:`bowsvm.io.atomic.atomic_file`)."""
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")


def write_manifest(out, obj) -> None:
    """Write a stage's manifest into the output :func:`bowsvm.io.atomic_output_dir` yielded.

    A local temporary folder gets ``manifest.json`` now (:func:`write_json_atomic`);
    a URI output (:class:`bowsvm.io.store.StoreOutput`) keeps it until its
    commit, which writes it with the list of committed files.
    """
    from bowsvm.io.store import StoreOutput

    if isinstance(out, StoreOutput):
        out.manifest = json.loads(json.dumps(obj, default=_json_default))
    else:
        write_json_atomic(Path(out) / MANIFEST, obj)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def read_manifest(folder, stage: str | None = None) -> dict:
    """Read ``folder/manifest.json``; check its ``stage`` field if given.

    Raises
    ------
    FileNotFoundError
        If the folder or its manifest is missing or incomplete.
    ValueError
        If the manifest belongs to a different stage.
    """
    from bowsvm.io import store
    from bowsvm.io.atomic import check_complete

    folder = check_complete(folder, what=stage or "input")
    if isinstance(folder, store.Location):
        m = store.read_json(folder / MANIFEST)
    else:
        with open(folder / MANIFEST) as f:
            m = json.load(f)
    if stage is not None and m.get("stage") != stage:
        raise ValueError(
            f"{str(folder)!r} holds the output of stage {m.get('stage')!r}, expected "
            f"{stage!r}; pass the folder written by `bowsvm {stage}`."
        )
    return m


def require_manifest_match(what: str, expected: dict, found: dict) -> None:
    """Raise ValueError naming every key whose value differs.

    Raises
    ------
    ValueError
        If any key of ``expected`` has a different value in ``found``.
    """
    diffs = [
        f"{k}: expected {expected[k]!r}, found {found.get(k)!r}"
        for k in expected
        if found.get(k) != expected[k]
    ]
    if diffs:
        raise ValueError(
            f"{what} does not match what this stage expects ("
            + "; ".join(diffs)
            + "); rebuild it from the same inputs or pass the matching folder."
        )
