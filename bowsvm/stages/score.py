"""Stage ``score``: decision scores of a trained one-vs-all model on a split of a feature set.

Reads a model folder (stage "train", :mod:`bowsvm.io.models`) and a feature-set
folder (stage "extract", or "compress": a pq set's rows are decoded as they
are read; :mod:`bowsvm.io.features`), streams the split's shards
in row batches, computes ``scores = X @ coef.T + intercept`` (float32,
:func:`bowsvm.asgd.core.decision_scores`), and writes ``scores/NAME/SPLIT/``
atomically (:mod:`bowsvm.io.scores`; keys of its manifest: docs/FORMATS.md,
"Scores").

Memory is O(batch_rows x (dim + C)) plus the model. Shards are decoded on a
background thread two batches ahead of the GEMM (Parquet decoding and BLAS
both release the GIL). NumPy, numba and pyarrow are imported inside the
functions: every ``bowsvm`` start-up imports this module.
"""

from __future__ import annotations

import time
from pathlib import Path

from bowsvm._validation import check_int
from bowsvm.io.atomic import check_target
from bowsvm.io.store import resolve

NAME = "score"
ORDER = 60
HELP = "decision scores (X @ coef.T + b) of a feature set's model on val or test"
DESCRIPTION = (
    "Stream the feature shards of one split through the feature set's trained model and "
    "write scores/NAME/SPLIT/{scores.parquet,manifest.json} (id, label, scores float32[C]). "
    "Refuses a model whose dim, class list or preset hash differs from the features'."
)


def add_arguments(p) -> None:
    """The options of ``bowsvm score``."""
    p.add_argument("--feature-set", required=True, help="feature-set name (folder under --features and --models)")
    p.add_argument("--split", required=True, help="split to score, e.g. val or test")
    p.add_argument("--features", default="features",
                   help="root of the feature-set folders, or a URI (docs/SCALING.md)")
    p.add_argument("--models", default="models", help="root of the model folders")
    p.add_argument("--scores", default="scores", help="root of the score folders to write")
    p.add_argument("--batch-rows", type=int, default=4096, help="rows per streamed batch")
    p.add_argument("--overwrite", action="store_true", help="replace existing scores")


def _paths(features_dir, models_dir, scores_dir, feature_set: str, split: str):
    fdir = resolve(features_dir) / feature_set  # a URI: a bowsvm.io.store.Location
    return fdir, Path(models_dir) / feature_set, Path(scores_dir) / feature_set / split


def check_arguments(args) -> None:
    """Validate ``--batch-rows`` and refuse a scores folder that may not be written.

    Raises
    ------
    ValueError
        If ``--batch-rows`` is below 1, or the output is, contains or lies
        inside the feature or model folder.
    FileExistsError
        If the output exists (without ``--overwrite``) or is not a score output.
    """
    check_int("batch_rows", args.batch_rows, low=1)
    fdir, mdir, out = _paths(args.features, args.models, args.scores, args.feature_set, args.split)
    check_target(out, args.overwrite, "score", [fdir, mdir], "--scores/NAME/SPLIT")


def run(args) -> int:
    """``bowsvm score``."""
    check_arguments(args)
    out = score_feature_set(args.features, args.models, args.scores, args.feature_set,
                            args.split, batch_rows=args.batch_rows, overwrite=args.overwrite)
    from bowsvm.io import read_manifest

    m = read_manifest(out, stage="score")
    print(f"wrote {m['n']} x {len(m['classes'])} scores to {out} ({m['seconds']:.2f} s)")
    return 0


def _check_compatible(feat_m: dict, model, fdir: Path, mdir: Path) -> None:
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


def _batches(files, dim, batch_rows, bound, pq=None):
    from bowsvm.io.features import check_feature_values, iter_shard_batches

    for f in files:
        row0 = 0
        for ids, labels, X in iter_shard_batches(f, dim, batch_rows, pq=pq):
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
    import numpy as np
    import scipy.sparse as sp

    from bowsvm.asgd.core import decision_scores
    from bowsvm.io import atomic_output_dir, content_hash, parquet, write_json_atomic
    from bowsvm.io.features import open_feature_set, read_ahead, value_bound, verified_shard_files
    from bowsvm.io.models import load_model
    from bowsvm.io.scores import PARQUET_OPTIONS, SCORES_FILE, scores_schema, scores_table

    t0 = time.perf_counter()
    batch_rows = check_int("batch_rows", batch_rows, low=1)
    fdir, mdir, out = _paths(features_dir, models_dir, scores_dir, feature_set, split)
    check_target(out, overwrite, "score", [fdir, mdir], "--scores/NAME/SPLIT")  # refuse early
    fs = open_feature_set(features_dir, feature_set)  # stage extract, or compress (pq)
    feat_m = fs.manifest
    model = load_model(mdir)
    _check_compatible(feat_m, model, fdir, mdir)
    files = verified_shard_files(fdir, feat_m, split)
    pq = fs.pq_codebook()  # None unless the set is product-quantized: then rows are decoded
    if not files:
        raise FileNotFoundError(
            f"feature set {str(fdir)!r} has no shards for split {split!r} "
            f"(looked for {str(fdir / split)}/*.parquet)."
        )
    C, dim = model.n_classes, model.dim
    n = 0
    coef_t = None
    with atomic_output_dir(out, overwrite, "score", [fdir, mdir], "--scores/NAME/SPLIT") as tmp:
        writer = parquet.writer(tmp / SCORES_FILE, scores_schema(C), **PARQUET_OPTIONS)
        try:
            for ids, labels, X in read_ahead(_batches(files, dim, batch_rows, value_bound(feat_m),
                                                      pq), depth=2):
                if len(ids) == 0:
                    continue
                if sp.issparse(X) and coef_t is None:
                    coef_t = np.ascontiguousarray(model.coef.T)
                S = decision_scores(X, model.coef, model.intercept, coef_t)
                writer.write_table(scores_table(ids, labels, S))
                n += len(ids)
        finally:
            writer.close()
        write_json_atomic(tmp / "manifest.json", {
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
        })
    return out
