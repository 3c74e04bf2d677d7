"""The extract stage: image shards + codebook -> feature shards, inside Spark partitions.

    bowsvm extract --feature-set NAME --images IMAGES --codebooks CODEBOOKS --features FEATURES
    spark-submit jobs/extract_features.py --feature-set NAME --images IMAGES \
        --codebooks CODEBOOKS --features FEATURES

The image shards are range-partitioned by the SHA-256 of the id (rows in that
order within a task; :data:`ROW_ORDER`), so each feature shard holds the
classes in a fixed pseudo-random order instead of one class after another:
training streams shards chunk by chunk, and rows grouped by class cost 2-35
points of val top-1 in the first epochs (the many-class benchmark) (docs/BENCHMARKS.md, "Dual coordinate descent in bowsvm train"). Each task turns its Arrow
batches of image rows into feature rows (:func:`feature_batch`: decode, the
preset's coding pipeline :func:`bowsvm.coding.feature_vectors`) and writes them
itself with the one feature-shard writer (:class:`bowsvm.io.features.ShardWriter`),
one file series per split and task attempt (:func:`write_task_output`); the
driver keeps the files of successful attempts (:func:`commit_task_output`), so
a retried task can never leave a duplicate. Feature vectors never pass through
the JVM. An image that fails to decode, or that no patch fits
(:func:`bowsvm.coding.too_small`), becomes a row of FEATURES/NAME/rejects, not an
error. :func:`extract_local` runs the very same per-batch function in-process
(what the Spark path is tested against). Output (FEATURES/NAME, written
atomically): docs/FORMATS.md, "Feature shards".
"""

from __future__ import annotations

import functools
import math
import os
import posixpath
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bowsvm.io.image_shards import check_image_shards, image_shard_dir
from bowsvm.io import atomic_output_dir, parquet, read_manifest, require_manifest_match
from bowsvm.io.atomic import prepare_target
from bowsvm.io.manifest import write_manifest
from bowsvm.io.store import StoreOutput, absolute, resolve
from bowsvm.presets import add_feature_set_arguments, feature_set_preset
from bowsvm.spark import (  # noqa: F401
    FAIL_FIRST_ATTEMPT_ENV, SparkProgress, image_rows, maybe_inject_failure,
)

# bowsvm.coding (numba), bowsvm.io.features (scipy) and pyspark are imported inside the
# functions that use them: the CLI imports every stage module to build its parser.

NAME = "extract"
ORDER = 30
JOB = "extract_features.py"
HELP = "extract a feature set (descriptors -> coding -> pyramid pooling) to Parquet shards (Spark)"
DESCRIPTION = (
    "Run the preset's dense descriptors, LCC, super-vector or Fisher vector coding with its "
    "codebook, and "
    "spatial pyramid pooling on every image of the image shards, inside Spark partitions, and "
    "write FEATURES/NAME/{train,val,test}/part-*.parquet with a manifest. Images that fail to "
    "decode are recorded in FEATURES/NAME/rejects, not fatal."
)

#: Upper bound of one Arrow batch of feature rows (:func:`rows_per_batch`).
MAX_BATCH_BYTES = 64 * 2**20


# --------------------------------------------------------------- options

def add_arguments(parser) -> None:
    """The extract stage's options (the CLI's and jobs/extract_features.py's)."""
    add_feature_set_arguments(parser, "features")
    parser.add_argument("--features", required=True,
                        help="root folder of feature sets, or a URI (s3://bucket/prefix?"
                             "endpoint_override=HOST:PORT, hdfs://..., file:///...): "
                             "docs/SCALING.md")
    parser.add_argument("--shard-mb", type=float, default=128.0,
                        help="target size of one feature shard in MB")
    parser.add_argument("--partitions", type=int, default=None,
                        help="input partitions (default: enough for 3 tasks per core and "
                        "at most ~2000 images per task)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing features")


def _preset(args):
    return feature_set_preset(args.preset or args.feature_set)


def _output(args):
    return resolve(args.features) / args.feature_set  # a URI: a bowsvm.io.store.Location


def _codebook_dir(args) -> Path:
    return Path(args.codebooks) / args.feature_set


def load_feature_set_codebook(args, preset: dict, phash: str):
    """The codebook of CODEBOOKS/NAME, checked against the preset.

    Raises
    ------
    FileNotFoundError
        If CODEBOOKS/NAME is not a complete `bowsvm codebook` output.
    ValueError
        If it was learned for another preset (``preset_hash``), its files are
        corrupt, or its sizes do not fit the preset.
    """
    from bowsvm.coding import Codebook, check_codebook

    cb_dir = _codebook_dir(args)
    cb_manifest = read_manifest(cb_dir, stage="codebook")
    require_manifest_match(f"codebook {str(cb_dir)!r}", {"preset_hash": phash}, cb_manifest)
    codebook = Codebook.load(cb_dir)
    check_codebook(preset, codebook)
    return codebook


def check_arguments(args) -> None:
    """Check the options, the inputs and the output before Spark starts.

    Raises
    ------
    FileNotFoundError
        If the preset does not exist, or ``--images`` / CODEBOOKS/NAME is not a
        complete output of its stage.
    ValueError
        If an image shard is corrupt or truncated (named), the codebook does
        not fit the preset, or FEATURES/NAME overlaps an input.
    FileExistsError
        If FEATURES/NAME exists and may not be replaced (``--overwrite``).
    """
    preset, phash = _preset(args)  # unknown preset: named
    prepare_target(_output(args), args.overwrite, "extract", [args.images, _codebook_dir(args)],
                   "--features/NAME")
    check_image_shards(args.images)  # Spark would read a truncated shard as empty, silently
    load_feature_set_codebook(args, preset, phash)


def rows_per_batch(preset: dict) -> int:
    """Images per Arrow batch so that one batch of feature rows stays within ~64 MB."""
    dim = int(preset["output"]["dim"])
    return int(np.clip(MAX_BATCH_BYTES // (4 * dim), 8, 1024))


def rows_per_file(preset: dict, shard_mb: float) -> int:
    """Rows per feature shard so that a shard is about ``shard_mb`` (estimated from the layout).

    Dense rows take 4 dim bytes; sparse (LCC) rows at most 8 bytes per non-zero,
    with <= k non-zeros per descriptor per block, bounded by dim. At least 100.
    """
    dim = int(preset["output"]["dim"])
    if preset["output"]["layout"] == "dense":
        row_bytes = 4 * dim
    else:
        row_bytes = 8 * min(dim, preset["pooling"]["n_blocks"] * preset["coding"].get("k", 20) * 64)
    return max(100, int(shard_mb * 2**20 / max(1, row_bytes)))


def spark_conf(args) -> dict:
    """Session defaults: Arrow batches of :func:`rows_per_batch` rows for ``mapInArrow``."""
    preset, _ = _preset(args)
    return {"spark.sql.execution.arrow.maxRecordsPerBatch": rows_per_batch(preset),
            "spark.sql.execution.arrow.pyspark.enabled": "true"}


# --------------------------------------------------------------- per batch

def feature_batch_schema(preset: dict) -> pa.Schema:
    """Arrow schema of :func:`feature_batch`'s output (before splitting by split and error)."""
    base = [("id", pa.string()), ("label", pa.int32()), ("split", pa.string()),
            ("error", pa.string())]
    if preset["output"]["layout"] == "dense":
        return pa.schema(base + [("x", pa.list_(pa.float32()))])
    return pa.schema(base + [("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))])


def feature_batch(batch: pa.RecordBatch, preset: dict, codebook) -> pa.RecordBatch:
    """Feature rows of one batch of image-shard rows (columns id, label, split, image).

    Each image is decoded and run through the preset's coding pipeline
    (:func:`bowsvm.coding.feature_vectors`, coding batched across the images).
    Images that fail to decode, or are smaller than the preset's smallest
    patch (:func:`bowsvm.coding.too_small`), get an ``error`` and empty vectors.
    Schema: :func:`feature_batch_schema`.
    """
    from bowsvm.coding import feature_vectors, too_small
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
    results = feature_vectors(grays, preset, codebook) if grays else []
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
    return pa.RecordBatch.from_arrays(cols, schema=feature_batch_schema(preset))


# --------------------------------------------------------------- task output commit

# What each extraction task returns to the driver: one row per file it wrote, one per
# rejected image. Feature vectors never pass through the JVM.
TASK_RESULT_DDL = "kind string, split string, path string, n long, id string, label int, error string"
TASK_RESULT_SCHEMA = pa.schema([("kind", pa.string()), ("split", pa.string()), ("path", pa.string()),
                                ("n", pa.int64()), ("id", pa.string()), ("label", pa.int32()),
                                ("error", pa.string())])


def write_task_output(batches, attempts_dir, partition: int, attempt: int, dim: int,
                      rows_per_file: int, run: str | None = None):
    """Write a task's feature batches as feature shards; yield the task's result rows.

    Files go to ``attempts_dir/SPLIT/part-PPPPP-K.aA.parquet``, one
    :class:`bowsvm.io.features.ShardWriter` series per split, a new file every
    ``rows_per_file`` rows. Each attempt writes its own files, so a failed
    attempt can never clobber a good one; the driver keeps only the files named
    by successful attempts (:func:`commit_task_output`). Under a URI output
    ``attempts_dir`` is the output's own prefix (a Location) and the names carry
    the run tag ``run`` (:func:`bowsvm.io.features.attempt_file`). The content depends
    only on the partition's rows, so a retried task writes identical bytes on
    the same kind of machine (the PCA projection is a BLAS GEMM, whose rounding
    depends on the CPU and the BLAS thread count; the nearest-basis search does not).
    """
    import pyarrow.compute as pc

    from bowsvm.io.features import ShardWriter, attempt_file

    writers: dict[str, ShardWriter] = {}
    results = []
    for rb in batches:
        t_all = pa.Table.from_batches([rb])
        bad = pc.invert(pc.is_null(t_all.column("error")))
        for r in t_all.filter(bad).select(["id", "label", "split", "error"]).to_pylist():
            results.append({"kind": "reject", **r})
        good = t_all.filter(pc.invert(bad))
        layout = "dense" if "x" in good.column_names else "sparse"
        for split in sorted(set(good.column("split").to_pylist())):
            if split not in writers:
                writers[split] = ShardWriter(
                    functools.partial(attempt_file, resolve(attempts_dir) / split, partition,
                                      attempt, run=run),
                    dim, layout, rows_per_file)
            writers[split].write(good.filter(pc.equal(good.column("split"), split)).combine_chunks())
    for split in sorted(writers):
        for path, n in writers[split].close():
            results.append({"kind": "file", "split": split, "path": str(path), "n": n})
    if results:
        yield pa.RecordBatch.from_pylist(results, schema=TASK_RESULT_SCHEMA)


def commit_task_output(results: list[dict], attempts_dir: Path, out) -> list[dict]:
    """Move the files of successful attempts to ``out/SPLIT/part-PPPPP-K.parquet``.

    ``results`` are the rows the job collected (Spark returns only those of the
    successful attempt of each task). Returns the rejected rows. A URI output
    (``out`` a :class:`bowsvm.io.store.StoreOutput`) is not renamed: each file
    is registered where the task wrote it, and the commit lists exactly those
    (the run's other files, of failed or losing attempts, are deleted then).
    """
    from bowsvm.io.features import committed_name

    for r in results:
        if r["kind"] == "file" and isinstance(out, StoreOutput):
            out.commit(out / r["split"] / posixpath.basename(r["path"]))
        elif r["kind"] == "file":
            src = Path(r["path"])
            dst = out / r["split"] / committed_name(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    if not isinstance(out, StoreOutput):
        shutil.rmtree(attempts_dir, ignore_errors=True)  # failed attempts' leftovers
    return [r for r in results if r["kind"] == "reject"]


def extract_partition(batches, cb_arrays, preset: dict, attempts_dir, dim: int,
                      rows_per_file: int, task_cpus: int, run: str | None = None):
    """The ``mapInArrow`` function of the stage (on executors): batches in, result rows out.

    ``cb_arrays`` is the broadcast :meth:`bowsvm.coding.Codebook.arrays` (bases,
    PCA, a GMM's weights and variances: what the features depend on). Numba
    threads per task = ``spark.task.cpus`` (numba threads x concurrent tasks <=
    cores). Features are written here, by pyarrow (:func:`write_task_output`).
    """
    import numba
    from pyspark import TaskContext

    from bowsvm.coding import Codebook

    numba.set_num_threads(max(1, min(task_cpus, numba.config.NUMBA_NUM_THREADS)))
    maybe_inject_failure()
    ctx = TaskContext.get()
    cb = Codebook(**cb_arrays.value)
    yield from write_task_output((feature_batch(rb, preset, cb) for rb in batches), attempts_dir,
                                 ctx.partitionId(), ctx.taskAttemptId(), dim, rows_per_file, run)


def feature_stats(folder, dim: int, files=None) -> dict:
    """Rows per split, bytes on disk, per-shard entries, and the mean non-zeros per row.

    ``shards`` is :func:`bowsvm.io.features.shard_entries` (path, rows, bytes,
    SHA-256 of every shard; of ``files``, ``SPLIT/NAME`` paths, when given:
    a URI output is not listed); the mean non-zeros come from the first shard.
    """
    from bowsvm.io.features import shard_entries, table_to_features

    entries = shard_entries(folder, files)
    counts: dict = {}
    for e in entries:
        counts[e["split"]] = counts.get(e["split"], 0) + e["rows"]
    nbytes, n_files = sum(e["bytes"] for e in entries), len(entries)
    nnz = None
    for split in ("train", *sorted(counts)):
        fs = [e["path"] for e in entries if e["split"] == split]
        if fs:
            t = parquet.read_table(folder / fs[0], "feature shard")
            if t.num_rows:
                _, _, X = table_to_features(t, dim)
                nnz = float((X.getnnz() if hasattr(X, "getnnz") else np.count_nonzero(X)) / t.num_rows)
                break
    return {"counts": counts, "bytes_on_disk": nbytes, "n_shards": n_files, "shards": entries,
            "mean_nnz": nnz, "density": (nnz / dim) if nnz is not None else None}


# --------------------------------------------------------------- the stage

def run_spark(spark, args) -> int:
    """The driver's work: extract on the executors, commit, write FEATURES/NAME.

    Raises
    ------
    ValueError
        If the feature rows plus rejects do not add up to the image shards'
        ``n_images`` (nothing is written), or Spark could not read an image
        shard (named).
    """
    t0 = time.time()
    sc = spark.sparkContext
    spark_start = max(0.0, t0 - sc.startTime / 1000)  # the session, built by run_stage_job
    preset, phash = _preset(args)
    shards = image_shard_dir(args.images)
    images_manifest = read_manifest(args.images, stage="prepare")
    codebook = load_feature_set_codebook(args, preset, phash)
    out = _output(args)
    inputs = [args.images, _codebook_dir(args)]
    batch = rows_per_batch(preset)
    dim = int(preset["output"]["dim"])
    per_file = rows_per_file(preset, args.shard_mb)

    sc._jsc.hadoopConfiguration().set(*parquet.SPARK_VERIFY_CONF)  # page CRCs of image shards
    cb_arrays = sc.broadcast(codebook.arrays())
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    with SparkProgress(spark, "extract"), atomic_output_dir(
            out, args.overwrite, "extract", inputs, "--features/NAME") as tmp:
        df = image_rows(spark, args.images, ("id", "label", "split", "image"))
        n_images = images_manifest["n_images"]
        n_part = args.partitions or max(3 * sc.defaultParallelism, math.ceil(n_images / 2000))
        # a URI output has no rename: tasks write under its prefix, names tagged with the run
        run = tmp.run if isinstance(tmp, StoreOutput) else None
        attempts = tmp.root if run else str(tmp / "_attempts")

        def partition_fn(batches):
            return extract_partition(batches, cb_arrays, preset, attempts, dim, per_file, task_cpus,
                                     run)

        # Range partitions hold near-equal numbers of images (hash partitions of a few
        # hundred images differed by +-25%, and the job waits for the largest); ranges of
        # the id's SHA-256 mix the classes (ROW_ORDER).
        from pyspark.sql import functions as F

        with parquet.spark_read_errors("image shard"):
            results = (df.withColumn(ROW_ORDER, F.sha2(F.col("id"), 256))
                       .repartitionByRange(n_part, ROW_ORDER).sortWithinPartitions(ROW_ORDER)
                       .drop(ROW_ORDER)
                       .mapInArrow(partition_fn, TASK_RESULT_DDL).collect())
        rejects = commit_task_output([r.asDict() for r in results], tmp / "_attempts", tmp)
        n_rejected = len(rejects)
        if rejects:
            rej = tmp / "rejects" / (tmp.tagged("part-00000.parquet") if run else "part-00000.parquet")
            rej.parent.mkdir()
            parquet.write_table(pa.Table.from_pylist(
                [{k: r[k] for k in ("id", "label", "split", "error")} for r in rejects]), rej)
            if run:
                tmp.commit(rej)
        committed = [f for f in tmp.files if not f.startswith("rejects/")] if run else None
        stats = feature_stats(tmp.root if run else tmp, dim, committed)
        n_done = sum(stats["counts"].values())
        if n_done + n_rejected != n_images:
            raise ValueError(
                f"extraction accounted for {n_done} feature vectors + {n_rejected} rejects, but "
                f"the image shards hold {n_images} images; nothing was written: check the "
                f"image shards in {str(shards)!r} (re-run `bowsvm prepare`)."
            )
        seconds = time.time() - t0
        write_manifest(tmp, {
            "stage": "extract",
            "feature_set": args.feature_set,
            "preset": preset["name"],
            "preset_hash": phash,
            "preset_config": preset,
            "codebook_hash": codebook.hash,
            "dim": dim,
            "layout": preset["output"]["layout"],
            "classes": images_manifest["classes"],
            "counts": stats["counts"],
            "n_rejected": n_rejected,
            "n_shards": stats["n_shards"],
            "shards": stats["shards"],
            "bytes_on_disk": stats["bytes_on_disk"],
            "mean_nnz": stats["mean_nnz"],
            "density": stats["density"],
            "images": absolute(args.images),
            "seconds": round(seconds, 3),
            "spark_start_seconds": round(spark_start, 3),
            "images_per_second": round(n_done / seconds, 2) if seconds > 0 else None,
            "partitions": n_part,
            "arrow_batch_rows": batch,
            "master": sc.master,
            "default_parallelism": sc.defaultParallelism,
        })
    print(f"[extract] wrote {n_done} feature vectors ({dim} dims, {preset['output']['layout']}) "
          f"and {n_rejected} rejects to {out} in {time.time() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return 0


# --------------------------------------------------------------- in-process twin

#: The column extract orders image rows by: the hex SHA-256 of the id (Spark's ``sha2``).
ROW_ORDER = "_row_order"


def row_order_key(image_id: str) -> str:
    """The key extract orders rows by (Spark's ``sha2(id, 256)``): classes come mixed."""
    import hashlib

    return hashlib.sha256(str(image_id).encode("utf-8")).hexdigest()


def extract_local(images, preset, codebook, splits=None, batch_rows: int | None = None):
    """In-process extraction of an image-shard folder: ``{split: (ids, labels, X)}``.

    The same per-batch function as the Spark stage (:func:`feature_batch`),
    without Spark; rows in the stage's order (:func:`row_order_key`), rejects left out.
    """
    from bowsvm.coding import stack_features

    preset = feature_set_preset(preset)[0] if not isinstance(preset, dict) else preset
    batch_rows = batch_rows or rows_per_batch(preset)
    out: dict[str, list] = {}
    for f in sorted(image_shard_dir(images).glob("*.parquet")):
        for rb in parquet.iter_batches(f, "image shard", batch_size=batch_rows,
                                       columns=["id", "label", "split", "image"]):
            for r in feature_batch(rb, preset, codebook).to_pylist():
                if r["error"] is None and (splits is None or r["split"] in splits):
                    out.setdefault(r["split"], []).append(r)
    dim = int(preset["output"]["dim"])
    result = {}
    for split, rows in out.items():
        rows.sort(key=lambda r: row_order_key(r["id"]))
        if preset["output"]["layout"] == "dense":
            vecs = [np.asarray(r["x"], np.float32) for r in rows]
        else:
            vecs = [(np.asarray(r["indices"], np.int32), np.asarray(r["values"], np.float32))
                    for r in rows]
        result[split] = (np.array([r["id"] for r in rows], dtype=object),
                         np.array([r["label"] for r in rows], dtype=np.int64),
                         stack_features(vecs, dim, preset["output"]["layout"]))
    return result
