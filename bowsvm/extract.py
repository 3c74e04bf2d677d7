"""Codebook sampling and feature extraction over image shards, free of Spark.

``jobs/learn_codebook.py`` and ``jobs/extract_features.py`` call these inside
partitions (``mapPartitions`` / ``mapInArrow``); :func:`extract_local` runs the
very same functions in-process, which is what the Spark path is tested against.
Nothing here raises on a bad image: the row carries an ``error`` instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from bowsvm.io import parquet
from bowsvm._seed import seeded_key

# Test-only fault injection: when set, the first attempt of every even-numbered
# task of the extraction job raises, so tests can check that retried output is
# identical to a clean run's.
FAIL_FIRST_ATTEMPT_ENV = "BOWSVM_TEST_FAIL_FIRST_ATTEMPT"

MAX_BATCH_BYTES = 64 * 2**20


def feature_set_preset(preset_name_or_path):
    """The resolved preset dict and its hash."""
    from bowsvm.presets import load_preset, preset_hash

    preset = load_preset(preset_name_or_path)
    return preset, preset_hash(preset)


def image_shard_dir(images) -> Path:
    """The shards folder of a complete `bowsvm prepare` output (checked)."""
    from bowsvm.io import read_manifest

    read_manifest(images, stage="prepare")
    return Path(images) / "shards"


def check_image_shards(images) -> list[Path]:
    """The image shards of a `bowsvm prepare` folder, their footers read and counted.

    Spark silently reads a Parquet file whose footer is cut off as an empty
    file (measured: pyspark 4.x), so the extraction checks every shard's
    footer itself, before Spark starts.

    Raises
    ------
    FileNotFoundError
        If the folder is not a complete `bowsvm prepare` output.
    ValueError
        If a shard is corrupt or truncated (names it), or the shards' rows do
        not add up to the manifest's ``n_images``.
    """
    from bowsvm.io import read_manifest

    m = read_manifest(images, stage="prepare")
    files = sorted(image_shard_dir(images).glob("*.parquet"))
    n = sum(parquet.open_file(f, "image shard").metadata.num_rows for f in files)
    if "n_images" in m and n != int(m["n_images"]):
        raise ValueError(
            f"the image shards in {str(image_shard_dir(images))!r} hold {n} rows but "
            f"{str(Path(images) / 'manifest.json')!r} records n_images={m['n_images']}; a shard "
            f"is missing or extra: re-run `bowsvm prepare`."
        )
    return files


def rows_per_batch(preset: dict) -> int:
    """Images per Arrow batch so that one output batch stays within ~64 MB."""
    dim = int(preset["output"]["dim"])
    return int(np.clip(MAX_BATCH_BYTES // (4 * dim), 8, 1024))


# --------------------------------------------------------------- codebook sample

def choose_sample_images(ids, n_samples: int, samples_per_image: int, seed: int) -> set:
    """Ids of the train images to sample descriptors from (seeded, order-free)."""
    n_images = max(1, -(-n_samples // max(1, samples_per_image)))
    ranked = sorted(ids, key=lambda i: (seeded_key(seed, i), i))
    return set(ranked[:n_images])


def sample_partition(rows, preset: dict, samples_per_image: int, seed: int):
    """Yield ``(id, float32 bytes, n, d)`` descriptor samples, one per image.

    The draw for an image depends only on (seed, id), so the sample does not
    depend on partitioning or retries. Undecodable images yield nothing.
    """
    from bowsvm.coding import sample_descriptors
    from bowsvm.io.images import decode_image

    for image_id, data in rows:
        try:
            gray = decode_image(data, max_side=preset["max_side"])
        except Exception:
            continue
        X = sample_descriptors(gray, preset, samples_per_image, seeded_key(seed, image_id))
        if X.shape[0]:
            yield image_id, X.astype(np.float32).tobytes(), int(X.shape[0]), int(X.shape[1])


def stack_samples(rows) -> np.ndarray:
    """Concatenate sample rows (sorted by id, so the order is reproducible)."""
    rows = sorted(rows, key=lambda r: r[0])
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.concatenate([np.frombuffer(b, np.float32).reshape(n, d) for _, b, n, d in rows])


# --------------------------------------------------------------- extraction

def output_schema(preset: dict) -> pa.Schema:
    """Arrow schema of an encoded batch (before splitting by split and error)."""
    base = [("id", pa.string()), ("label", pa.int32()), ("split", pa.string()),
            ("error", pa.string())]
    if preset["output"]["layout"] == "dense":
        return pa.schema(base + [("x", pa.list_(pa.float32()))])
    return pa.schema(base + [("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))])


def too_small(gray: np.ndarray, preset: dict) -> str | None:
    """Why an image is too small for the preset (no patch fits), or None.

    A dense patch grid has ``(side - patch) // step + 1`` positions per axis,
    none when a side is shorter than the patch; an image below the preset's
    smallest patch would pool no descriptor at all and become the all-zero
    vector, so extraction rejects it instead.
    """
    p = min(preset["descriptors"]["patch_sizes"])
    h, w = gray.shape[:2]
    if h >= p and w >= p:
        return None
    return (f"image too small: {w}x{h} px after decoding, below the preset's smallest patch "
            f"of {p}x{p} px (no descriptor fits; it would become an all-zero feature vector)")


def encode_batch(batch: pa.RecordBatch, preset: dict, codebook) -> pa.RecordBatch:
    """Features of one batch of image-shard rows (columns id, label, split, image).

    Images that fail to decode, or are smaller than the preset's smallest
    patch (:func:`too_small`), get an ``error`` and empty vectors.
    """
    from bowsvm.coding import encode_images
    from bowsvm.io.images import decode_image

    ids = batch.column("id").to_pylist()
    labels = batch.column("label").to_pylist()
    splits = batch.column("split").to_pylist()
    data = batch.column("image").to_pylist()
    grays, ok, errors = [], [], []
    for d in data:
        try:
            g = decode_image(d, max_side=preset["max_side"])
        except Exception as exc:  # recorded per image, never fatal
            ok.append(False)
            errors.append(f"undecodable image: {type(exc).__name__}: {exc}")
            continue
        why = too_small(g, preset)
        ok.append(why is None)
        errors.append(why)
        if why is None:
            grays.append(g)
    results = encode_images(grays, preset, codebook) if grays else []
    it = iter(results)
    dense = preset["output"]["layout"] == "dense"
    dim = int(preset["output"]["dim"])
    vecs = [next(it) if good else (np.zeros(0, np.float32) if dense else
                                   (np.zeros(0, np.int32), np.zeros(0, np.float32)))
            for good in ok]
    cols = [pa.array(ids, pa.string()), pa.array(labels, pa.int32()),
            pa.array(splits, pa.string()), pa.array(errors, pa.string())]
    if dense:
        lens = [dim if good else 0 for good in ok]
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        flat = np.concatenate(vecs).astype(np.float32) if vecs else np.zeros(0, np.float32)
        cols.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)))
    else:
        lens = [v[0].shape[0] for v in vecs]
        offsets = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
        ind = np.concatenate([v[0] for v in vecs]).astype(np.int32) if vecs else np.zeros(0, np.int32)
        val = np.concatenate([v[1] for v in vecs]).astype(np.float32) if vecs else np.zeros(0, np.float32)
        cols += [pa.ListArray.from_arrays(offsets, pa.array(ind)),
                 pa.ListArray.from_arrays(offsets, pa.array(val))]
    return pa.RecordBatch.from_arrays(cols, schema=output_schema(preset))


def maybe_inject_failure() -> None:
    """Raise on the first attempt of even-numbered tasks when the test variable is set."""
    import os

    if os.environ.get(FAIL_FIRST_ATTEMPT_ENV):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None and ctx.attemptNumber() == 0 and ctx.partitionId() % 2 == 0:
            raise RuntimeError(f"injected failure ({FAIL_FIRST_ATTEMPT_ENV}) in task "
                               f"{ctx.partitionId()} attempt 0")


def extract_local(images, preset, codebook, splits=None, batch_rows: int | None = None):
    """In-process extraction of an image-shard folder: ``{split: (ids, labels, X)}``.

    The same per-batch function as the Spark job, without Spark; rows sorted by id.
    """
    from bowsvm.coding import stack_features

    preset = feature_set_preset(preset)[0] if not isinstance(preset, dict) else preset
    batch_rows = batch_rows or rows_per_batch(preset)
    out: dict[str, list] = {}
    for f in sorted(image_shard_dir(images).glob("*.parquet")):
        for rb in parquet.iter_batches(f, "image shard", batch_size=batch_rows,
                                       columns=["id", "label", "split", "image"]):
            res = encode_batch(rb, preset, codebook).to_pylist()
            for r in res:
                if r["error"] is None and (splits is None or r["split"] in splits):
                    out.setdefault(r["split"], []).append(r)
    dim = int(preset["output"]["dim"])
    result = {}
    for split, rows in out.items():
        rows.sort(key=lambda r: r["id"])
        if preset["output"]["layout"] == "dense":
            vecs = [np.asarray(r["x"], np.float32) for r in rows]
        else:
            vecs = [(np.asarray(r["indices"], np.int32), np.asarray(r["values"], np.float32))
                    for r in rows]
        result[split] = (np.array([r["id"] for r in rows], dtype=object),
                         np.array([r["label"] for r in rows], dtype=np.int64),
                         stack_features(vecs, dim, preset["output"]["layout"]))
    return result


def feature_stats(folder: Path, dim: int) -> dict:
    """Rows per split, bytes on disk, per-shard entries, and the mean non-zeros per row.

    ``shards`` is :func:`bowsvm.io.features.shard_entries` (path, rows, bytes,
    SHA-256 of every shard); the mean non-zeros come from the first shard.
    """
    from bowsvm.io.features import shard_entries, split_names, table_to_features

    entries = shard_entries(folder)
    counts = {s: 0 for s in split_names(folder)}
    for e in entries:
        counts[e["split"]] += e["rows"]
    nbytes, files = sum(e["bytes"] for e in entries), len(entries)
    nnz = None
    for split in ("train", *sorted(counts)):
        fs = sorted((folder / split).glob("*.parquet")) if split in counts else []
        if fs:
            t = parquet.read_table(fs[0], "feature shard")
            if t.num_rows:
                _, _, X = table_to_features(t, dim)
                nnz = float((X.getnnz() if hasattr(X, "getnnz") else np.count_nonzero(X)) / t.num_rows)
                break
    return {"counts": counts, "bytes_on_disk": nbytes, "n_shards": files, "shards": entries,
            "mean_nnz": nnz, "density": (nnz / dim) if nnz is not None else None}


# --------------------------------------------------------------- task output commit

# What each extraction task returns to the driver: one row per file it wrote, one per
# rejected image. Feature vectors never pass through the JVM.
TASK_RESULT_DDL = "kind string, split string, path string, n long, id string, label int, error string"
TASK_RESULT_SCHEMA = pa.schema([("kind", pa.string()), ("split", pa.string()), ("path", pa.string()),
                                ("n", pa.int64()), ("id", pa.string()), ("label", pa.int32()),
                                ("error", pa.string())])


def shard_table(batch: pa.RecordBatch, dim: int) -> pa.Table:
    """The feature-shard table (docs/FORMATS.md) of the good rows of an encoded batch."""
    t = pa.Table.from_batches([batch]).drop(["split", "error"])
    if "x" in t.column_names:
        t = t.set_column(t.column_names.index("x"), "x", t.column("x").cast(pa.list_(pa.float32(), dim)))
    return t


def write_task_output(batches, attempts_dir, partition: int, attempt: int, dim: int,
                      rows_per_file: int):
    """Write a task's encoded batches as Parquet shards; yield the task's result rows.

    Files go to ``attempts_dir/SPLIT/part-PPPPP-K.aA.parquet``, one series per split,
    a new file every ``rows_per_file`` rows. Each attempt writes its own files, so a
    failed attempt can never clobber a good one; the driver keeps only the files
    named by successful attempts (:func:`commit_task_output`). The content depends
    only on the partition's rows, so a retried task writes identical bytes on the same
    kind of machine (the PCA projection is a BLAS GEMM, whose rounding depends on the
    CPU and the BLAS thread count; the nearest-basis search does not).
    """
    import pyarrow.compute as pc

    writers: dict[str, list] = {}  # split -> [writer, path, rows, k]
    results = []

    def close(split):
        w, path, n, _ = writers[split]
        w.close()
        results.append({"kind": "file", "split": split, "path": str(path), "n": n})

    for rb in batches:
        t_all = pa.Table.from_batches([rb])
        bad = pc.invert(pc.is_null(t_all.column("error")))
        for r in t_all.filter(bad).select(["id", "label", "split", "error"]).to_pylist():
            results.append({"kind": "reject", **r})
        good = t_all.filter(pc.invert(bad))
        for split in sorted(set(good.column("split").to_pylist())):
            part = shard_table(good.filter(pc.equal(good.column("split"), split)).combine_chunks()
                               .to_batches()[0], dim)
            start = 0
            while start < part.num_rows:
                st = writers.get(split)
                if st is None or st[2] >= rows_per_file:
                    k = 0 if st is None else st[3] + 1
                    if st is not None:
                        close(split)
                    path = Path(attempts_dir) / split / f"part-{partition:05d}-{k:03d}.a{attempt}.parquet"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    st = writers[split] = [parquet.writer(path, part.schema), path, 0, k]
                take = min(part.num_rows - start, rows_per_file - st[2])
                st[0].write_table(part.slice(start, take))
                st[2] += take
                start += take
    for split in sorted(writers):
        close(split)
    if results:
        yield pa.RecordBatch.from_pylist(results, schema=TASK_RESULT_SCHEMA)


def commit_task_output(results: list[dict], attempts_dir: Path, out: Path) -> list[dict]:
    """Move the files of successful attempts to ``out/SPLIT/part-PPPPP-K.parquet``.

    ``results`` are the rows the job collected (Spark returns only those of the
    successful attempt of each task). Returns the rejected rows.
    """
    import shutil

    for r in results:
        if r["kind"] == "file":
            src = Path(r["path"])
            dst = out / r["split"] / (src.name.split(".a")[0] + ".parquet")
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    shutil.rmtree(attempts_dir, ignore_errors=True)  # failed attempts' leftovers
    return [r for r in results if r["kind"] == "reject"]


# --------------------------------------------------------------- job options

def _add_feature_set_arguments(parser, writes: str) -> None:
    parser.add_argument("--feature-set", required=True,
                        help=f"feature-set name; {writes} written to {writes.upper().split()[0]}/NAME")
    parser.add_argument("--preset", default=None,
                        help="preset name or TOML path (default: the feature-set name)")
    parser.add_argument("--images", required=True, help="image shards folder (bowsvm prepare)")
    parser.add_argument("--codebooks", required=True,
                        help="root folder of codebooks (CODEBOOKS/NAME is the feature set's)")


def add_codebook_arguments(parser) -> None:
    """Options of jobs/learn_codebook.py (shared with `bowsvm codebook`)."""
    _add_feature_set_arguments(parser, "codebooks are")
    parser.add_argument("--samples-per-image", type=int, default=None,
                        help="descriptors drawn per image (default: the preset's)")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="target size of the K-means sample (default: the preset's)")
    parser.add_argument("--kmeans", choices=("auto", "local", "mllib"), default="auto",
                        help="K-means engine: local MiniBatchKMeans, Spark MLlib KMeans, or "
                        "auto (MLlib when the sample has more than --mllib-threshold rows)")
    parser.add_argument("--mllib-threshold", type=int, default=1_000_000,
                        help="sample size above which --kmeans auto uses MLlib")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the sample and K-means (default: the preset's random_state)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing codebook")


def add_extract_arguments(parser) -> None:
    """Options of jobs/extract_features.py (shared with `bowsvm extract`)."""
    _add_feature_set_arguments(parser, "features are")
    parser.add_argument("--features", required=True, help="root folder of feature sets")
    parser.add_argument("--shard-mb", type=float, default=128.0,
                        help="target size of one feature shard in MB")
    parser.add_argument("--partitions", type=int, default=None,
                        help="input partitions (default: enough for 3 tasks per core and "
                        "at most ~2000 images per task)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing features")
