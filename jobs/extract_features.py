"""Spark job: dense descriptors -> coding -> spatial pyramid pooling, to Parquet feature shards.

    spark-submit --master 'local[*]' jobs/extract_features.py --feature-set NAME \
        --images IMAGES --codebooks CODEBOOKS --features FEATURES

Reads the image shards, runs the preset's whole extractor inside partitions
(``mapInArrow`` calling the kernels on batches of images) and writes
FEATURES/NAME/{train,val,test}/part-*.parquet plus a manifest; images that fail
to decode go to FEATURES/NAME/rejects. Output: docs/FORMATS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path


def parse_args(argv):
    from bowsvm.extract import add_extract_arguments

    p = argparse.ArgumentParser(prog="extract_features.py", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_extract_arguments(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    import pyarrow as pa
    from bowsvm.coding import Codebook, check_codebook
    from bowsvm.extract import (
        TASK_RESULT_DDL, check_image_shards, commit_task_output, encode_batch, feature_set_preset,
        feature_stats, image_shard_dir, maybe_inject_failure, rows_per_batch, write_task_output,
    )
    from bowsvm.io import (
        atomic_output_dir, parquet, read_manifest, require_manifest_match, write_json_atomic,
    )
    from bowsvm.io.atomic import prepare_target
    from bowsvm.spark import SparkProgress, build_session

    t0 = time.time()
    preset, phash = feature_set_preset(args.preset or args.feature_set)
    shards = image_shard_dir(args.images)
    images_manifest = read_manifest(args.images, stage="prepare")
    check_image_shards(args.images)
    cb_dir = Path(args.codebooks) / args.feature_set
    cb_manifest = read_manifest(cb_dir, stage="codebook")
    require_manifest_match(f"codebook {str(cb_dir)!r}", {"preset_hash": phash}, cb_manifest)
    codebook = Codebook.load(cb_dir)
    check_codebook(preset, codebook)
    out = Path(args.features) / args.feature_set
    inputs = [args.images, cb_dir]
    prepare_target(out, args.overwrite, "extract", inputs, "--features/NAME")

    batch = rows_per_batch(preset)
    spark = build_session("bowsvm-extract", {
        "spark.sql.execution.arrow.maxRecordsPerBatch": batch,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    })
    sc = spark.sparkContext
    sc._jsc.hadoopConfiguration().set(*parquet.SPARK_VERIFY_CONF)  # page CRCs of image shards
    t_started = time.time()
    cb_arrays = sc.broadcast((codebook.bases, codebook.pca_mean, codebook.pca_components))
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))

    with SparkProgress(spark, "extract"), atomic_output_dir(
            out, args.overwrite, "extract", inputs, "--features/NAME") as tmp:
        df = spark.read.parquet(str(shards)).select("id", "label", "split", "image")
        n_images = images_manifest["n_images"]
        n_part = args.partitions or max(3 * sc.defaultParallelism, math.ceil(n_images / 2000))
        # Rows per output file so a shard is about --shard-mb (estimated from the layout).
        dim = int(preset["output"]["dim"])
        if preset["output"]["layout"] == "dense":
            row_bytes = 4 * dim
        else:  # LCC: <= k non-zeros per descriptor per block, bounded by dim
            row_bytes = 8 * min(dim, preset["pooling"]["n_blocks"] * preset["coding"].get("k", 20) * 64)
        rows_per_file = max(100, int(args.shard_mb * 2**20 / max(1, row_bytes)))
        attempts = str(tmp / "_attempts")

        def encode_partition(batches):
            # Runs on executors: numba threads per task = spark.task.cpus (numba threads
            # x concurrent tasks <= cores). Features are written here, by pyarrow, and
            # never cross into the JVM; the task returns one small row per file.
            import numba
            from pyspark import TaskContext

            numba.set_num_threads(max(1, min(task_cpus, numba.config.NUMBA_NUM_THREADS)))
            maybe_inject_failure()
            ctx = TaskContext.get()
            cb = Codebook(*cb_arrays.value)
            yield from write_task_output((encode_batch(rb, preset, cb) for rb in batches), attempts,
                                         ctx.partitionId(), ctx.attemptNumber(), dim, rows_per_file)

        # Range partitions by id hold near-equal numbers of images (hash partitions of a
        # few hundred images differed by +-25%, and the job waits for the largest).
        with parquet.spark_read_errors("image shard"):
            results = (df.repartitionByRange(n_part, "id").sortWithinPartitions("id")
                       .mapInArrow(encode_partition, TASK_RESULT_DDL).collect())
        rejects = commit_task_output([r.asDict() for r in results], tmp / "_attempts", tmp)
        n_rejected = len(rejects)
        if rejects:
            (tmp / "rejects").mkdir()
            parquet.write_table(pa.Table.from_pylist(
                [{k: r[k] for k in ("id", "label", "split", "error")} for r in rejects]),
                tmp / "rejects" / "part-00000.parquet")
        stats = feature_stats(tmp, dim)
        wall = time.time() - t0
        n_done = sum(stats["counts"].values())
        if n_done + n_rejected != n_images:
            raise ValueError(
                f"extraction accounted for {n_done} feature vectors + {n_rejected} rejects, but "
                f"the image shards hold {n_images} images; nothing was written: check the "
                f"image shards in {str(shards)!r} (re-run `bowsvm prepare`)."
            )
        write_json_atomic(tmp / "manifest.json", {
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
            "images": str(Path(args.images).absolute()),
            "wall_seconds": round(wall, 3),
            "spark_start_seconds": round(t_started - t0, 3),
            "images_per_second": round(n_done / wall, 2) if wall > 0 else None,
            "partitions": n_part,
            "arrow_batch_rows": batch,
            "master": sc.master,
            "default_parallelism": sc.defaultParallelism,
        })
    spark.stop()
    print(f"[extract] wrote {n_done} feature vectors ({dim} dims, {preset['output']['layout']}) "
          f"and {n_rejected} rejects to {out} in {time.time() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    from bowsvm.spark import run_job

    run_job(main, "extract_features.py")
