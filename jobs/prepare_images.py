"""Spark job: ingest an image tree or Fashion-MNIST IDX files into Parquet image shards.

Run with plain spark-submit (or `bowsvm prepare`, which does exactly that)::

    spark-submit --master 'local[*]' jobs/prepare_images.py --fashion-mnist DIR --output OUT

Output layout: docs/FORMATS.md, "Image shards".
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict


def parse_args(argv):
    from bowsvm.prepare import add_job_arguments, check_job_arguments

    p = argparse.ArgumentParser(prog="prepare_images.py", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_job_arguments(p)
    args = p.parse_args(argv)
    check_job_arguments(args)
    return args


def build_records(args):
    """Driver side: list inputs as Records, plus the rejects decided before decoding."""
    from bowsvm.io.images import FASHION_MNIST_CLASSES, find_idx_pair, load_idx_dataset, scan_tree
    from bowsvm.prepare import REASON_NO_CLASS, REASON_NO_SPLIT, Record

    if args.fashion_mnist:
        data = load_idx_dataset(args.fashion_mnist)
        records = []
        for split, (images, labels) in data.items():
            src = str(find_idx_pair(args.fashion_mnist, "train" if split == "train" else "t10k")[0])
            for i in range(len(images)):
                records.append(Record(
                    id=f"{split}-{i:05d}", source=f"{src}#{i}",
                    class_name=FASHION_MNIST_CLASSES[int(labels[i])], split=split,
                    pixels=images[i].tobytes(), shape=images[i].shape))
        return records, [], {"kind": "idx", "n_input": len(records),
                             "class_order": list(FASHION_MNIST_CLASSES)}
    files, has_split = scan_tree(args.input, args.layout)
    records, pre = [], []
    for f in files:
        r = Record(id=f.rel, source=f.path, class_name=f.class_name, split=f.split)
        if f.split is None:
            pre.append((r, REASON_NO_SPLIT))
        elif f.class_name is None:
            pre.append((r, REASON_NO_CLASS))
        else:
            records.append(r)
    return records, pre, {
        "kind": "tree", "n_input": len(files), "has_split_level": has_split,
        "layout": "split" if has_split else "flat"}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from bowsvm.io import atomic_output_dir, write_json_atomic
    from bowsvm.io.atomic import prepare_target
    from bowsvm.prepare import (
        REASON_DROPPED, apply_limit, check_counts, normalize_partition,
        plan_classes, plan_holdout, reason_histogram,
    )
    from bowsvm.spark import SparkProgress, build_session

    inputs = [args.input, args.fashion_mnist]
    prepare_target(args.output, args.overwrite, "prepare", inputs, "--output")  # before any work
    t0 = time.time()
    records, pre_rejects, source_info = build_records(args)
    records, limit_rejects = apply_limit(records, args.limit_per_class, args.seed)
    pre_rejects += limit_rejects
    print(f"[prepare] {source_info['n_input']} input files; {len(records)} to decode, "
          f"{len(pre_rejects)} rejected before decoding", file=sys.stderr, flush=True)

    spark = build_session("bowsvm-prepare")
    sc = spark.sparkContext
    decoded_schema = T.StructType([
        T.StructField("id", T.StringType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("class_name", T.StringType(), True),
        T.StructField("split", T.StringType(), False),
        T.StructField("ok", T.BooleanType(), False),
        T.StructField("reason", T.StringType(), True),
        T.StructField("orig_width", T.IntegerType(), False),
        T.StructField("orig_height", T.IntegerType(), False),
        T.StructField("width", T.IntegerType(), False),
        T.StructField("height", T.IntegerType(), False),
        T.StructField("image", T.BinaryType(), True),
    ])
    per_slice = 1000 if source_info["kind"] == "idx" else 200
    n_slices = max(2 * sc.defaultParallelism, math.ceil(len(records) / per_slice), 1)
    opts = (args.max_side, args.max_pixels, args.format, args.quality, args.max_file_bytes)
    with SparkProgress(spark, "prepare"), atomic_output_dir(
            args.output, args.overwrite, "prepare", inputs, "--output") as tmp:
        rdd = sc.parallelize(records, n_slices).mapPartitions(
            lambda it: normalize_partition(it, *opts))
        decoded = spark.createDataFrame(rdd, decoded_schema).persist(StorageLevel.DISK_ONLY)
        good = decoded.filter("ok").select(
            "id", "class_name", "split", F.length("image").alias("nbytes")).collect()

        # Plan classes, labels and the val hold-out on the driver (small data: ids only).
        train_ids = defaultdict(list)
        for row in good:
            if row.split == "train":
                train_ids[row.class_name].append(row.id)
        all_classes = source_info.pop("class_order", None) or {r.class_name for r in records}
        classes, dropped = plan_classes({c: len(v) for c, v in train_ids.items()},
                                        all_classes, args.min_per_class)
        label_of = {c: i for i, c in enumerate(classes)}
        held_out = plan_holdout({c: train_ids[c] for c in classes}, args.val_per_class, args.seed)
        assign, counts, total_bytes = [], defaultdict(lambda: defaultdict(int)), 0
        for row in good:
            if row.class_name in label_of:
                split = "val" if row.id in held_out else row.split
                assign.append((row.id, label_of[row.class_name], split))
                counts[split][row.class_name] += 1
                total_bytes += row.nbytes
        assign_df = spark.createDataFrame(assign, "id string, label int, final_split string")

        n_out = max(1, math.ceil(total_bytes / (args.shard_mb * 2**20)))
        images = (decoded.filter("ok").join(F.broadcast(assign_df), "id")
                  .select("id", "label", "class_name", F.col("final_split").alias("split"),
                          "orig_width", "orig_height", "width", "height", "image", "source"))
        images.coalesce(n_out).write.parquet(str(tmp / "shards"))

        dropped_df = decoded.filter(F.col("ok") & F.col("class_name").isin(list(dropped) or [""]))
        dropped_df = dropped_df.select(F.col("source").alias("path"), F.lit(None).cast("string").alias("reason"),
                                       "split", "class_name")
        reason_rows = [(r.source, reason, r.split, r.class_name) for r, reason in pre_rejects]
        decode_fail = decoded.filter(~F.col("ok")).select(
            F.col("source").alias("path"), "reason", "split", "class_name")
        rejects = decode_fail.unionByName(
            spark.createDataFrame(reason_rows, "path string, reason string, split string, class_name string"))
        if dropped:
            dropped_reason = F.create_map(*[x for c, n in dropped.items() for x in (
                F.lit(c), F.lit(REASON_DROPPED.format(n=n, m=args.min_per_class)))])
            rejects = rejects.unionByName(dropped_df.withColumn("reason", dropped_reason[F.col("class_name")]))
        rejects = rejects.coalesce(1).persist(StorageLevel.DISK_ONLY)
        rejects.write.parquet(str(tmp / "rejects"))
        reasons = [r.reason for r in rejects.select("reason").collect()]
        decoded.unpersist()

        n_images = len(assign)
        check_counts(source_info["n_input"], n_images, len(reasons))
        manifest = {
            "stage": "prepare",
            "classes": classes,
            "counts": {s: dict(sorted(c.items())) for s, c in sorted(counts.items())},
            "n_input_files": source_info["n_input"],
            "n_images": n_images,
            "n_rejected": len(reasons),  # rows of the rejects table, skipped ones included
            "n_skipped_by_limit": len(limit_rejects),
            "n_bad_files": len(reasons) - len(limit_rejects) - sum(dropped.values()),
            "reject_reasons": reason_histogram(reasons),
            "dropped_classes": dropped,
            "n_shards": n_out,
            "source": {**source_info, "path": args.fashion_mnist or args.input},
            "options": {k: v for k, v in vars(args).items() if k not in ("overwrite", "output")},
            "wall_seconds": round(time.time() - t0, 3),
        }
        write_json_atomic(tmp / "manifest.json", manifest)
    spark.stop()
    print(f"[prepare] wrote {n_images} images in {n_out} shard(s) to {args.output} in "
          f"{time.time() - t0:.1f} s; rejects table: {len(reasons)} files ("
          f"{len(reasons) - len(limit_rejects) - sum(dropped.values())} bad, "
          f"{len(limit_rejects)} over --limit-per-class, {sum(dropped.values())} in dropped classes)",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    from bowsvm.spark import run_job

    run_job(main, "prepare_images.py")
