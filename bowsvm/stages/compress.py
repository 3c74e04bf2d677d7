"""Stage ``compress``: a feature set -> its product-quantized twin (layout "pq").

Fits a PQ codebook (:func:`bowsvm.coding.pq.fit_pq`: K-means per sub-space of
``--dims-per-code`` dimensions) on a uniform sample of ``--sample`` rows of the
train split, then encodes every shard of every split, shard by shard and
``--batch-rows`` rows at a time, into ``OUTPUT/NAME/SPLIT/<the same file
name>`` (columns id, label, codes: docs/FORMATS.md, "Product-quantized feature
shards"), beside ``pq.npz`` and the manifest. Shards map one to one and keep
their rows in order, so a model trained on the pq set sees the decoded rows in
the order and chunks it would see them in a dense set holding them.

``bowsvm train`` and ``bowsvm score`` read the result like any feature set: the
reader decodes each chunk to dense float32 on the fly (:mod:`bowsvm.io.features`).

Memory: the sample (rows x dim x 4 bytes) while fitting, then one batch of
rows (and its codes) at a time. The output folder is written atomically
(:func:`bowsvm.io.atomic.atomic_output_dir`); ``--overwrite`` replaces only an
earlier output of this stage. NumPy and pyarrow are imported inside the
functions: every ``bowsvm`` start-up imports this module.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from bowsvm._validation import check_int
from bowsvm.io.atomic import check_target

NAME = "compress"
ORDER = 40
HELP = "product-quantize a feature set (1 byte per --dims-per-code dims) for out-of-core training"
DESCRIPTION = (
    "Fit a product quantizer (K-means per sub-space of --dims-per-code dimensions, "
    "--n-centroids centroids each) on a sample of the train split of FEATURES/NAME, encode "
    "every split shard by shard, and write OUTPUT-FEATURES/NAME (layout 'pq': one uint8 code "
    "per sub-space, the codebook in pq.npz). bowsvm train and bowsvm score read it like any "
    "feature set, decoding each chunk on the fly."
)

#: Print a fitting progress line every this many seconds (and at the end).
_FIT_PROGRESS_SECONDS = 10.0


def add_arguments(p) -> None:
    """The options of ``bowsvm compress``."""
    p.add_argument("--feature-set", required=True, metavar="NAME", help="feature set to compress")
    p.add_argument("--features", default="features", metavar="DIR",
                   help="root folder holding the dense (or sparse) DIR/NAME/")
    p.add_argument("--output-features", required=True, metavar="DIR2",
                   help="root folder to write DIR2/NAME/ (the pq feature set) into")
    p.add_argument("--dims-per-code", type=int, default=8, metavar="S",
                   help="feature dimensions per one-byte code (sub-space size)")
    p.add_argument("--n-centroids", type=int, default=256, metavar="K",
                   help="centroids per sub-space (at most 256)")
    p.add_argument("--sample", type=int, default=10000, metavar="N",
                   help="train rows to fit the codebook on (all of them if fewer); "
                        "held in memory as rows x dim x 4 bytes")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the K-means")
    p.add_argument("--max-iter", type=int, default=20, help="K-means passes per sub-space at most")
    p.add_argument("--batch-rows", type=int, default=1024, metavar="N",
                   help="rows encoded at a time (and rows per Parquet row group written)")
    p.add_argument("--n-jobs", type=int, default=None, help="threads; unset means all")
    p.add_argument("--overwrite", action="store_true", help="replace an existing compressed set")
    p.add_argument("--quiet", action="store_true", help="do not print progress lines")


def _paths(features, output_features, name: str):
    return Path(features) / name, Path(output_features) / name


def check_arguments(args) -> None:
    """Validate the options and refuse an output that may not be written.

    Reads the source feature set's manifest only (no shard is opened).

    Raises
    ------
    ValueError
        On a bad option value (names the option), a source that is already
        product-quantized, ``--dims-per-code`` above its dimension,
        ``--n-centroids`` above its train rows, or an output overlapping it.
    FileNotFoundError
        If the source feature set is missing or incomplete.
    FileExistsError
        If the output exists (without ``--overwrite``) or is not a compress output.
    """
    from bowsvm.io.features import open_feature_set

    s = check_int("--dims-per-code", args.dims_per_code, low=1)
    K = check_int("--n-centroids", args.n_centroids, low=1, high=256)
    check_int("--sample", args.sample, low=1)
    check_int("--seed", args.seed, low=0)
    check_int("--max-iter", args.max_iter, low=1)
    check_int("--batch-rows", args.batch_rows, low=1)
    if args.n_jobs is not None:
        check_int("--n-jobs", args.n_jobs, low=1)
    src, out = _paths(args.features, args.output_features, args.feature_set)
    fs = open_feature_set(args.features, args.feature_set)
    if fs.layout == "pq":
        raise ValueError(f"feature set {str(src)!r} is already product-quantized (layout 'pq'); "
                         f"compress the dense feature set it was made from.")
    if s > fs.dim:
        raise ValueError(f"--dims-per-code={s} exceeds the feature dimension {fs.dim} of "
                         f"{str(src)!r}; pass at most {fs.dim} (e.g. 8).")
    n_train = (fs.manifest.get("counts") or {}).get("train")
    if isinstance(n_train, int) and min(n_train, args.sample) < K:
        raise ValueError(f"--n-centroids={K} exceeds the {min(n_train, args.sample)} train rows "
                         f"the codebook would be fitted on (--sample {args.sample}, "
                         f"{n_train} in the train split); K-means needs at least one row per "
                         f"centroid: lower --n-centroids or raise --sample.")
    check_target(out, args.overwrite, NAME, [src], "--output-features/NAME")


def run(args) -> int:
    """``bowsvm compress``."""
    check_arguments(args)
    out = compress_feature_set(
        args.features, args.output_features, args.feature_set, dims_per_code=args.dims_per_code,
        n_centroids=args.n_centroids, sample=args.sample, seed=args.seed, max_iter=args.max_iter,
        batch_rows=args.batch_rows, n_threads=args.n_jobs, overwrite=args.overwrite,
        quiet=args.quiet)
    from bowsvm.io import read_manifest

    m = read_manifest(out, stage=NAME)
    src = m["source"]
    print(f"wrote {sum(m['counts'].values())} rows ({m['pq']['n_codes']} codes each) to {out}: "
          f"{m['bytes_on_disk']} bytes on disk against {src['bytes_on_disk']} "
          f"({src['bytes_on_disk'] / max(m['bytes_on_disk'], 1):.1f}x smaller), sample relative "
          f"error {m['pq']['sample_relative_error']:.4g}, {m['seconds']:.1f} s")
    return 0


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"[compress] {msg}", file=sys.stderr, flush=True)


def _dense(X):
    import numpy as np

    return np.ascontiguousarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)


def _sample_rows(info, dim: int, picks, bound, batch_rows: int):
    """The rows of the split ``info`` at the sorted indices ``picks`` (stored order), dense."""
    import numpy as np

    from bowsvm.io.features import check_feature_values, iter_shard_batches

    S = np.empty((picks.shape[0], dim), dtype=np.float32)
    got, base = 0, 0
    for f, rows in zip(info.files, info.rows):
        if got == picks.shape[0]:
            break
        if rows == 0 or picks[got] >= base + rows:
            base += rows
            continue
        row0 = 0
        for _, _, X in iter_shard_batches(f, dim, batch_rows, lean=True):
            check_feature_values(f, row0, X, bound)
            n = X.shape[0]
            hi = int(np.searchsorted(picks, base + row0 + n))
            if hi > got:
                S[got:hi] = _dense(X[picks[got:hi] - base - row0])
                got = hi
            row0 += n
        base += rows
    return S


def compress_feature_set(features, output_features, name: str, *, dims_per_code: int = 8,
                         n_centroids: int = 256, sample: int = 10000, seed: int = 0,
                         max_iter: int = 20, batch_rows: int = 1024, n_threads=None,
                         overwrite: bool = False, quiet: bool = True) -> Path:
    """Product-quantize ``features/NAME`` into ``output_features/NAME``; return the folder.

    See the module docstring; the options are those of ``bowsvm compress``.

    Raises
    ------
    FileNotFoundError
        If the source feature set (or a split's shard) is missing.
    FileExistsError
        If the output may not be written (see :func:`bowsvm.io.atomic.check_target`).
    ValueError
        On a bad option, a source already product-quantized, shards that are
        not exactly the manifest's, corrupt, or hold values the preset does not
        allow (names the shard), or fewer train rows than centroids.
    """
    import numpy as np

    from bowsvm.coding.pq import fit_pq, pq_decode, pq_encode
    from bowsvm.io import atomic_output_dir, content_hash, write_json_atomic
    from bowsvm.io.features import (
        ShardWriter, check_feature_values, codes_to_table, iter_shard_batches, open_feature_set,
        scan_split, shard_entries, split_names, value_bound, verified_shard_files,
    )
    from bowsvm.io.pq import PQ_FILE, write_pq_codebook

    t0 = time.perf_counter()
    src, out = _paths(features, output_features, name)
    check_target(out, overwrite, NAME, [src], "--output-features/NAME")  # refuse early
    fs = open_feature_set(features, name)
    if fs.layout == "pq":
        raise ValueError(f"feature set {str(src)!r} is already product-quantized (layout 'pq'); "
                         f"compress the dense feature set it was made from.")
    batch_rows = check_int("--batch-rows", batch_rows, low=1)
    sample = check_int("--sample", sample, low=1)
    bound = value_bound(fs.manifest)
    train = scan_split(fs, "train")
    rng = np.random.default_rng(check_int("--seed", seed, low=0))
    k = min(sample, train.n)
    picks = np.sort(rng.choice(train.n, size=k, replace=False))
    pq_seed = int(rng.integers(0, 2**31 - 1))
    _say(quiet, f"sampling {k} of {train.n} train rows ({k * fs.dim * 4 / 2**20:.1f} MB)")
    S = _sample_rows(train, fs.dim, picks, bound, batch_rows)
    if k < n_centroids:
        raise ValueError(f"--n-centroids={n_centroids} exceeds the {k} train rows sampled; "
                         f"K-means needs at least one row per centroid: lower --n-centroids.")
    last = [time.perf_counter()]

    def progress(m, M, sec):
        if m == M or time.perf_counter() - last[0] >= _FIT_PROGRESS_SECONDS:
            last[0] = time.perf_counter()
            _say(quiet, f"PQ fit: {m}/{M} sub-spaces ({dims_per_code} dims, {n_centroids} "
                        f"centroids each), {sec:.1f} s")

    t_fit = time.perf_counter()
    pq = fit_pq(S, dims_per_code=dims_per_code, n_centroids=n_centroids, seed=pq_seed,
                max_iter=max_iter, n_threads=n_threads, progress=progress)
    fit_seconds = time.perf_counter() - t_fit
    R = pq_decode(pq_encode(S, pq, n_threads=n_threads), pq)
    num = float(np.square(R - S, dtype=np.float64).sum())
    den = float(np.square(S, dtype=np.float64).sum())
    rel_err = num / den if den > 0 else 0.0
    del S, R
    splits, jobs = [], []
    for split in split_names(src):
        if split == "train":
            files = train.files
        elif sum(e["rows"] for e in fs.manifest["shards"] if e.get("split") == split):
            files = scan_split(fs, split).files  # schemas, labels, hashes: as training checks
        else:  # a split of empty shards: verified, and mapped to empty pq shards
            files = verified_shard_files(src, fs.manifest, split)
        if files:
            splits.append(split)
            jobs += [(split, f) for f in files]
    counts = {sp: 0 for sp in splits}
    enc_rows, enc_seconds = 0, 0.0
    with atomic_output_dir(out, overwrite, NAME, [src], "--output-features/NAME") as tmp:
        sha = write_pq_codebook(tmp / PQ_FILE, pq)
        for i, (split, f) in enumerate(jobs, 1):
            ts = time.perf_counter()
            dst = tmp / split / f.name
            rows = 0
            with ShardWriter(dst, fs.dim, "pq", n_codes=pq.n_codes) as w:
                for ids, labels, X in iter_shard_batches(f, fs.dim, batch_rows, lean=True):
                    check_feature_values(f, rows, X, bound)
                    w.write(codes_to_table(ids, labels, pq_encode(_dense(X), pq,
                                                                  n_threads=n_threads)))
                    rows += len(ids)
            sec = time.perf_counter() - ts
            counts[split] += rows
            enc_rows, enc_seconds = enc_rows + rows, enc_seconds + sec
            _say(quiet, f"shard {i}/{len(jobs)} {split}/{f.name}: {rows} rows, "
                        f"{os.path.getsize(f)} -> {os.path.getsize(dst)} bytes, {sec:.1f} s"
                        + (f" ({rows / sec:.0f} rows/s)" if sec > 0 else ""))
        entries = shard_entries(tmp)
        src_bytes = int(sum(e["bytes"] for e in fs.manifest["shards"]))
        manifest = {k_: fs.manifest[k_] for k_ in ("preset", "preset_hash", "preset_config",
                                                    "codebook_hash", "images", "n_rejected")
                    if k_ in fs.manifest}
        manifest.update({
            "stage": NAME,
            "feature_set": name,
            "dim": fs.dim,
            "layout": "pq",
            "classes": fs.classes,
            "counts": counts,
            "n_shards": len(entries),
            "shards": entries,
            "bytes_on_disk": int(sum(e["bytes"] for e in entries)) + (tmp / PQ_FILE).stat().st_size,
            "mean_nnz": None,
            "density": None,
            "source": {"folder": str(src.absolute()), "layout": fs.layout,
                       "manifest_hash": content_hash(fs.manifest), "bytes_on_disk": src_bytes},
            "pq": {"file": PQ_FILE, "sha256": sha, "bytes": (tmp / PQ_FILE).stat().st_size,
                   "dims_per_code": pq.dims_per_code, "n_codes": pq.n_codes,
                   "n_centroids": pq.n_centroids, "sample_rows": int(k), "seed": int(seed),
                   "max_iter": int(max_iter), "sample_relative_error": rel_err,
                   "fit_seconds": round(fit_seconds, 3)},
            "encode_rows_per_second": round(enc_rows / enc_seconds, 1) if enc_seconds > 0 else None,
            "seconds": round(time.perf_counter() - t0, 3),
        })
        write_json_atomic(tmp / "manifest.json", manifest)
    return out
