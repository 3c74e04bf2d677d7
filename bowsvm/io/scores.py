"""Score folders: the decision scores of one feature set on one split (``bowsvm score``).

Layout (docs/FORMATS.md, "Scores")::

    <scores>/<name>/<split>/scores.parquet   id (string), label (int32),
                                             scores (fixed_size_list<float32>[C])
    <scores>/<name>/<split>/manifest.json    stage "score" (keys: docs/FORMATS.md)

The score stage streams batches into :func:`scores_table` rows itself (inside
an atomic folder, with :data:`PARQUET_OPTIONS`); :func:`write_scores` writes a
whole folder from arrays at once. :func:`read_scores` reads a folder back as a
:class:`ScoreSet`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from bowsvm.io import parquet
from bowsvm.io.atomic import atomic_output_dir
from bowsvm.io.manifest import read_manifest, write_json_atomic

__all__ = [
    "PARQUET_OPTIONS",
    "SCORES_FILE",
    "ScoreSet",
    "read_scores",
    "read_scores_file",
    "scores_schema",
    "scores_table",
    "write_scores",
]

SCORES_FILE = "scores.parquet"

#: Score vectors are incompressible floats: no dictionary, no compression for
#: them (5x faster writes than pyarrow's defaults, same size on disk).
PARQUET_OPTIONS = {
    "use_dictionary": False,
    "compression": {"id": "snappy", "label": "snappy", "scores": "none"},
}


@dataclass
class ScoreSet:
    """Scores of one feature set on one split.

    Attributes
    ----------
    ids : ndarray of shape (n,), object (str)
    labels : ndarray of shape (n,), int64
    scores : ndarray of shape (n, C), float32
    classes : list of str
    manifest : dict
    """

    ids: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    classes: list
    manifest: dict = field(default_factory=dict)


def scores_schema(n_classes: int) -> pa.Schema:
    """Arrow schema of ``scores.parquet``."""
    return pa.schema([
        ("id", pa.string()),
        ("label", pa.int32()),
        ("scores", pa.list_(pa.float32(), n_classes)),
    ])


def scores_table(ids, labels, scores) -> pa.Table:
    """Build a scores table (id, label, scores) from arrays."""
    S = np.ascontiguousarray(scores, dtype=np.float32)
    n, C = S.shape
    col = pa.FixedSizeListArray.from_arrays(pa.array(S.reshape(-1)), C)
    return pa.Table.from_arrays(
        [pa.array([str(i) for i in ids], pa.string()),
         pa.array(np.asarray(labels, dtype=np.int32)), col],
        schema=scores_schema(C),
    )


def write_scores(folder, ids, labels, scores, manifest: dict, overwrite: bool = False) -> Path:
    """Write a complete scores folder (``scores.parquet`` + manifest) atomically.

    Raises
    ------
    FileExistsError
        If ``folder`` exists and ``overwrite`` is False.
    """
    with atomic_output_dir(folder, overwrite=overwrite) as tmp:
        parquet.write_table(scores_table(ids, labels, scores), tmp / SCORES_FILE, **PARQUET_OPTIONS)
        write_json_atomic(tmp / "manifest.json", manifest)
    return Path(folder)


def read_scores(folder) -> ScoreSet:
    """Read a scores folder written by ``bowsvm score``.

    Raises
    ------
    FileNotFoundError
        If the folder is missing or incomplete.
    ValueError
        If the table's width does not match the manifest's class list.
    """
    folder = Path(folder)
    m = read_manifest(folder, stage="score")
    ids, labels, S = read_scores_file(folder / SCORES_FILE, len(m["classes"]))
    return ScoreSet(ids, labels, S, list(m["classes"]), m)


def read_scores_file(path, n_classes: int):
    """Read one scores Parquet file: (ids, labels int64, scores (n, C) float32).

    Raises
    ------
    ValueError
        If the file is corrupt or truncated (page checksums are verified), or
        the stored score vectors do not have ``n_classes`` entries.
    """
    t = parquet.read_table(path, "scores file")
    n = t.num_rows
    ids = np.asarray(t.column("id").to_pylist(), dtype=object)
    labels = t.column("label").to_numpy().astype(np.int64)
    flat = t.column("scores").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if flat.size != n * n_classes:
        raise ValueError(
            f"{str(path)!r} holds {flat.size} score values for {n} rows but {n_classes} "
            f"classes were expected; rescore it."
        )
    S = np.ascontiguousarray(flat.reshape(n, n_classes), dtype=np.float32)
    return ids, labels, S
