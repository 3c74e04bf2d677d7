"""Decision scores of a trained one-vs-all model on a split of a feature set.

Reads a model folder (stage "train": ``coef.npy`` (C, dim) float32,
``intercept.npy`` (C,) float32) and a feature-set folder (stage "extract"),
streams the split's shards in row batches, computes
``scores = X @ coef.T + intercept`` (float32, dense GEMM or CSR x dense), and
writes ``scores/NAME/SPLIT/`` atomically (docs/FORMATS.md, "Scores")::

    manifest.json    stage "score", feature_set, split, classes, n, dim,
                     preset_hash, model_hash, seconds
    scores.parquet   id (string), label (int32), scores (fixed_size_list<float32>[C])

Memory is O(batch_rows x (dim + C)) plus the model. Shards are decoded on a
background thread two batches ahead of the GEMM (Parquet decoding and BLAS
both release the GIL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from bowsvm._validation import check_array, check_int
from bowsvm.io import atomic_output_dir, content_hash, read_manifest
from bowsvm.io import parquet
from bowsvm.io.arrays import load_npy
from bowsvm.io.atomic import check_target
from bowsvm.io.features import (
    check_feature_values, iter_shard_batches, value_bound, verified_shard_files,
)

__all__ = [
    "LinearModel",
    "ScoreSet",
    "decision_scores",
    "load_model",
    "read_scores",
    "read_scores_file",
    "score_feature_set",
    "scores_schema",
    "scores_table",
    "write_scores",
]

SCORES_FILE = "scores.parquet"
DENSIFY_ABOVE = 0.05
# Score vectors are incompressible floats: no dictionary, no compression for them
# (5x faster writes than pyarrow's defaults, same size on disk).
PARQUET_OPTIONS = {
    "use_dictionary": False,
    "compression": {"id": "snappy", "label": "snappy", "scores": "none"},
}


@dataclass
class LinearModel:
    """A trained one-vs-all linear model as stored by ``bowsvm train``.

    Attributes
    ----------
    coef : ndarray of shape (C, dim), float32
    intercept : ndarray of shape (C,), float32
    classes : list of str
        Class names in label order.
    manifest : dict
        The model folder's manifest.
    path : Path or None
    """

    coef: np.ndarray
    intercept: np.ndarray
    classes: list
    manifest: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.coef.shape[0])


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


def load_model(folder) -> LinearModel:
    """Load and check a model folder written by ``bowsvm train``.

    Parameters
    ----------
    folder : str or Path
        ``models/NAME``.

    Returns
    -------
    LinearModel

    Raises
    ------
    FileNotFoundError
        If the folder is missing or incomplete.
    ValueError
        If the manifest is not a "train" manifest, an array file is corrupt or
        holds object arrays (names the file), or the arrays' shapes do not
        agree with each other or with the manifest's ``dim`` and ``classes``.
    """
    folder = Path(folder)
    m = read_manifest(folder, stage="train")
    coef = load_npy(folder / "coef.npy", "model file")
    intercept = load_npy(folder / "intercept.npy", "model file")
    if coef.ndim != 2 or intercept.ndim != 1 or coef.shape[0] != intercept.shape[0]:
        raise ValueError(
            f"model {str(folder)!r} is inconsistent: coef.npy has shape {coef.shape} and "
            f"intercept.npy has shape {intercept.shape}; expected (C, dim) and (C,). Retrain it."
        )
    classes = list(m.get("classes", []))
    if len(classes) != coef.shape[0]:
        raise ValueError(
            f"model {str(folder)!r} lists {len(classes)} classes in manifest.json but coef.npy "
            f"has {coef.shape[0]} rows; retrain it."
        )
    if "dim" in m and int(m["dim"]) != coef.shape[1]:
        raise ValueError(
            f"model {str(folder)!r}: manifest dim={m['dim']} but coef.npy has {coef.shape[1]} "
            f"columns; retrain it."
        )
    coef = check_array("coef", coef, ndim=2).astype(np.float32, copy=False)
    intercept = check_array("intercept", intercept, ndim=1).astype(np.float32, copy=False)
    return LinearModel(np.ascontiguousarray(coef), np.ascontiguousarray(intercept),
                       classes, m, folder)


def decision_scores(X, coef, intercept, coef_t=None) -> np.ndarray:
    """``X @ coef.T + intercept`` in float32 for a dense or CSR batch.

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix of shape (n, dim)
    coef : ndarray of shape (C, dim)
    intercept : ndarray of shape (C,)
    coef_t : ndarray of shape (dim, C), optional
        ``coef.T`` made C-contiguous, reused across batches for sparse input
        (scipy would otherwise copy the transposed view on every call).

    Returns
    -------
    ndarray of shape (n, C), float32, C-contiguous

    Raises
    ------
    ValueError
        If the dimensions disagree.

    Notes
    -----
    A CSR batch denser than ``DENSIFY_ABOVE`` (5 % non-zeros) is densified and
    multiplied by BLAS GEMM: measured here (dim 16384, C 1000, 1024 rows) the
    sparse product costs as much as GEMM at 5 % density and 8x more at 30 %
    (benchmarks/bench_score.py).
    """
    coef = np.asarray(coef, dtype=np.float32)
    intercept = np.asarray(intercept, dtype=np.float32)
    if X.shape[1] != coef.shape[1]:
        raise ValueError(
            f"features have dim {X.shape[1]} but the model has dim {coef.shape[1]}."
        )
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
        n = X.shape[0]
        if n and X.nnz > DENSIFY_ABOVE * n * X.shape[1]:
            S = X.toarray() @ coef.T
        else:
            if coef_t is None:
                coef_t = np.ascontiguousarray(coef.T)
            S = np.asarray(X @ coef_t, dtype=np.float32)
    else:
        S = np.asarray(X, dtype=np.float32) @ coef.T
    S += intercept[None, :]
    return np.ascontiguousarray(S, dtype=np.float32)


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
    from bowsvm.io import write_json_atomic

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


def _check_compatible(feat_m: dict, model: LinearModel, fdir: Path, mdir: Path) -> None:
    problems = []
    fdim = int(feat_m.get("dim", -1))
    if fdim != model.dim:
        problems.append(f"feature dim {fdim} != model dim {model.dim}")
    fcls = list(feat_m.get("classes", []))
    if fcls != model.classes:
        diff = _first_difference(fcls, model.classes)
        problems.append(
            f"class lists differ (features: {len(fcls)} classes, model: "
            f"{len(model.classes)} classes; {diff})"
        )
    fh, mh = feat_m.get("preset_hash"), model.manifest.get("preset_hash")
    if fh != mh:
        problems.append(f"preset_hash differs (features {fh!r}, model {mh!r})")
    fc, mc = feat_m.get("codebook_hash"), model.manifest.get("codebook_hash")
    if fc is not None and mc is not None and fc != mc:
        problems.append(f"codebook_hash differs (features {fc!r}, model {mc!r})")
    if problems:
        raise ValueError(
            f"model {str(mdir)!r} does not fit feature set {str(fdir)!r}: "
            + "; ".join(problems)
            + ". Train the model on this feature set (or pass the matching --models folder)."
        )


def _first_difference(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at index {i}: {x!r} vs {y!r}"
    return f"one list is a prefix of the other (lengths {len(a)} and {len(b)})"


def _batches(files, dim, batch_rows, bound):
    for f in files:
        row0 = 0
        for ids, labels, X in iter_shard_batches(f, dim, batch_rows):
            check_feature_values(f, row0, X, bound)
            row0 += len(ids)
            yield ids, labels, X


def score_feature_set(features_dir, models_dir, scores_dir, feature_set: str, split: str,
                      batch_rows: int = 4096, overwrite: bool = False) -> Path:
    """Score one split of one feature set and write ``scores_dir/NAME/SPLIT``.

    Parameters
    ----------
    features_dir, models_dir, scores_dir : str or Path
        Roots holding ``NAME/`` folders.
    feature_set : str
    split : str
        E.g. "val" or "test".
    batch_rows : int, default 4096
        Rows per streamed batch.
    overwrite : bool, default False

    Returns
    -------
    Path
        The written scores folder.

    Raises
    ------
    FileNotFoundError
        If the feature set, the split or the model is missing.
    FileExistsError
        If the output exists and ``overwrite`` is False, or it may not be
        replaced (not a complete score output; see :func:`bowsvm.io.atomic.check_target`).
    ValueError
        If the model does not match the features (dim, classes, preset hash, and
        codebook hash when both manifests record one), or the output is, contains
        or lies inside the feature or model folder; if the split's shards are
        not exactly the manifest's (missing, extra, duplicated, changed size,
        rows or SHA-256), are corrupt, or hold values the preset's
        normalisation does not allow (names the shard and row).
    """
    batch_rows = check_int("batch_rows", batch_rows, low=1)
    fdir = Path(features_dir) / feature_set
    mdir = Path(models_dir) / feature_set
    out = Path(scores_dir) / feature_set / split
    check_target(out, overwrite, "score", [fdir, mdir], "--scores/NAME/SPLIT")  # refuse early
    feat_m = read_manifest(fdir, stage="extract")
    model = load_model(mdir)
    _check_compatible(feat_m, model, fdir, mdir)
    files = verified_shard_files(fdir, feat_m, split)
    if not files:
        raise FileNotFoundError(
            f"feature set {str(fdir)!r} has no shards for split {split!r} "
            f"(looked for {str(fdir / split)}/*.parquet)."
        )
    from bowsvm.asgd.streaming import read_ahead
    from bowsvm.io import write_json_atomic

    t0 = time.perf_counter()
    C, dim = model.n_classes, model.dim
    n = 0
    coef_t = None
    with atomic_output_dir(out, overwrite, "score", [fdir, mdir], "--scores/NAME/SPLIT") as tmp:
        writer = parquet.writer(tmp / SCORES_FILE, scores_schema(C), **PARQUET_OPTIONS)
        try:
            for ids, labels, X in read_ahead(_batches(files, dim, batch_rows, value_bound(feat_m)),
                                             depth=2):
                if len(ids) == 0:
                    continue
                if sp.issparse(X) and coef_t is None:
                    coef_t = np.ascontiguousarray(model.coef.T)
                S = decision_scores(X, model.coef, model.intercept, coef_t)
                writer.write_table(scores_table(ids, labels, S))
                n += len(ids)
        finally:
            writer.close()
        manifest = {
            "stage": "score",
            "feature_set": feature_set,
            "split": split,
            "classes": model.classes,
            "n": n,
            "dim": dim,
            "layout": feat_m.get("layout"),
            "preset_hash": feat_m.get("preset_hash"),
            "model_hash": content_hash(model.manifest),
            "seconds": round(time.perf_counter() - t0, 4),
        }
        write_json_atomic(tmp / "manifest.json", manifest)
    return out
