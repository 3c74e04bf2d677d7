"""Spark job: sample descriptors from the train images and learn a feature set's codebook.

    spark-submit --master 'local[*]' jobs/learn_codebook.py --feature-set NAME \
        --images IMAGES --codebooks CODEBOOKS

Sampling is seeded per image id (independent of partitioning). K-means runs locally
(MiniBatchKMeans) or, for large samples, with Spark MLlib. Output: docs/FORMATS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parse_args(argv):
    from bowsvm.extract import add_codebook_arguments

    p = argparse.ArgumentParser(prog="learn_codebook.py", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_codebook_arguments(p)
    return p.parse_args(argv)


def mllib_codebook(spark, X, n_bases, pca_dim, seed):
    """K-means with Spark MLlib on a distributed copy of the sample (PCA fitted locally)."""
    import numpy as np
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.linalg import Vectors

    from bowsvm.coding import codebook_from_centers, fit_pca

    mean = comps = None
    if pca_dim:
        rng = np.random.default_rng(seed)
        sub = X[rng.choice(len(X), size=min(len(X), 100_000), replace=False)]
        mean, comps = fit_pca(sub, pca_dim)
        X = (X - mean) @ comps.T
    n_part = max(2 * spark.sparkContext.defaultParallelism, len(X) // 50_000)
    df = spark.createDataFrame([(Vectors.dense(r.astype(float)),) for r in X], ["features"],
                               ).repartition(n_part)
    km = KMeans(k=n_bases, seed=seed, maxIter=30, initMode="k-means||", tol=1e-4)
    model = km.fit(df)
    centers = np.stack([np.asarray(c, np.float32) for c in model.clusterCenters()])
    return codebook_from_centers(centers, mean, comps, meta={
        "method": "spark.ml.KMeans", "n_samples": int(len(X)), "random_state": seed,
        "max_iter": 30, "init": "k-means||"})


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    import numpy as np
    from pyspark.sql import functions as F

    from bowsvm._validation import check_int
    from bowsvm.coding import learn_codebook
    from bowsvm.extract import (
        check_image_shards, choose_sample_images, feature_set_preset, image_shard_dir,
        sample_partition, stack_samples,
    )
    from bowsvm.io import atomic_output_dir, parquet, read_manifest, write_json_atomic
    from bowsvm.io.atomic import prepare_target
    from bowsvm.spark import SparkProgress, build_session

    t0 = time.time()
    preset, phash = feature_set_preset(args.preset or args.feature_set)
    cb_conf = preset["codebook"]
    per_image = check_int("--samples-per-image", args.samples_per_image
                          if args.samples_per_image is not None else cb_conf["samples_per_image"], low=1)
    n_samples = check_int("--n-samples", args.n_samples if args.n_samples is not None
                          else cb_conf["n_samples"], low=1)
    seed = check_int("--seed", args.seed if args.seed is not None else cb_conf["random_state"], low=0)
    shards = image_shard_dir(args.images)
    images_manifest = read_manifest(args.images, stage="prepare")
    check_image_shards(args.images)  # Spark would read a truncated shard as empty, silently
    out = Path(args.codebooks) / args.feature_set
    prepare_target(out, args.overwrite, "codebook", [args.images], "--codebooks/NAME")

    spark = build_session("bowsvm-codebook")
    spark.sparkContext._jsc.hadoopConfiguration().set(*parquet.SPARK_VERIFY_CONF)
    with SparkProgress(spark, "codebook"), atomic_output_dir(
            out, args.overwrite, "codebook", [args.images], "--codebooks/NAME") as tmp, \
            parquet.spark_read_errors("image shard"):
        df = spark.read.parquet(str(shards)).filter(F.col("split") == "train")
        ids = [r.id for r in df.select("id").collect()]
        if not ids:
            raise ValueError(f"{args.images!r} has no train images; a codebook is learned on train.")
        chosen = choose_sample_images(ids, n_samples, per_image, seed)
        print(f"[codebook] sampling up to {per_image} descriptors from each of {len(chosen)} of "
              f"{len(ids)} train images", file=sys.stderr, flush=True)
        bc = spark.sparkContext.broadcast(chosen)
        n_part = max(2 * spark.sparkContext.defaultParallelism, len(chosen) // 2000)
        rows = (df.select("id", "image").rdd.filter(lambda r: r.id in bc.value)
                .map(lambda r: (r.id, bytes(r.image))).repartition(n_part)
                .mapPartitions(lambda it: sample_partition(it, preset, per_image, seed)).collect())
        X = stack_samples(rows)
        if len(X) > n_samples:  # trim to the target, seeded
            X = X[np.sort(np.random.default_rng(seed).choice(len(X), n_samples, replace=False))]
        n_bases = cb_conf["n_bases"]
        if len(X) < n_bases:
            raise ValueError(
                f"only {len(X)} descriptors could be sampled but the preset wants {n_bases} bases; "
                f"add images, raise --samples-per-image, or use a smaller codebook.")
        pca_dim = cb_conf["pca_dim"] or None
        engine = args.kmeans if args.kmeans != "auto" else (
            "mllib" if len(X) > args.mllib_threshold else "local")
        print(f"[codebook] K-means ({engine}) of {len(X)} x {X.shape[1]} descriptors into "
              f"{n_bases} bases" + (f" after PCA to {pca_dim}" if pca_dim else ""),
              file=sys.stderr, flush=True)
        t_km = time.time()
        if engine == "mllib":
            cb = mllib_codebook(spark, X, n_bases, pca_dim, seed)
        else:
            cb = learn_codebook(X, n_bases, pca_dim=pca_dim, random_state=seed)
        cb.save(tmp)
        write_json_atomic(tmp / "manifest.json", {
            "stage": "codebook",
            "feature_set": args.feature_set,
            "preset": preset["name"],
            "preset_hash": phash,
            "codebook_hash": cb.hash,
            "n_bases": cb.n_bases, "dim": cb.dim, "input_dim": cb.input_dim,
            "pca_dim": pca_dim,
            "kmeans": engine,
            "n_samples": int(len(X)), "n_sample_images": len(chosen),
            "samples_per_image": per_image, "seed": seed,
            "images": str(Path(args.images).absolute()),
            "images_classes": images_manifest["classes"],
            "kmeans_seconds": round(time.time() - t_km, 3),
            "wall_seconds": round(time.time() - t0, 3),
        })
    spark.stop()
    print(f"[codebook] wrote {out} ({cb.n_bases} bases, hash {cb.hash}) in "
          f"{time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    from bowsvm.spark import run_job

    run_job(main, "learn_codebook.py")
