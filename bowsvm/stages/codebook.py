"""The codebook stage: a seeded descriptor sample of the train images -> K-means codebook or GMM.

    bowsvm codebook --feature-set NAME --images IMAGES --codebooks CODEBOOKS
    spark-submit jobs/learn_codebook.py --feature-set NAME --images IMAGES --codebooks CODEBOOKS

On Spark: the driver lists the train ids and picks the sample images
(:func:`choose_sample_images`, seeded per id), the executors draw up to
``--samples-per-image`` descriptors from each (:func:`sample_partition`, seeded
per (seed, id), so the sample does not depend on partitioning or retries), and
the driver stacks them in id order (:func:`stack_samples`), trims the sample to
``--n-samples`` and learns the codebook: locally with bowsvm's K-means
(:func:`bowsvm.coding.learn_codebook`, :func:`bowsvm.coding.kmeans.kmeans`) or, for large samples, with Spark MLlib
(:func:`mllib_codebook`). A Fisher vector preset (``coding.method = "fisher"``)
gets a diagonal GMM instead, fitted by EM on the driver on the same PCA'd sample
(:func:`bowsvm.coding.learn_gmm_codebook`, :func:`bowsvm.coding.fit_gmm`, seeded,
one ``[gmm] iteration`` line per EM iteration); ``--kmeans`` does not apply to it.
The PCA, K-means and EM math lives in :mod:`bowsvm.coding._codebook`. Output (CODEBOOKS/NAME, written atomically):
``codebook.npz`` + ``codebook.json`` (:class:`bowsvm.coding.Codebook`) and
``manifest.json`` (keys: docs/FORMATS.md, "Codebooks").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from bowsvm._validation import check_int
from bowsvm.io.image_shards import check_image_shards, image_shard_dir
from bowsvm.io import atomic_output_dir, parquet, read_manifest, write_json_atomic
from bowsvm.io.atomic import prepare_target
from bowsvm._seed import seeded_key
from bowsvm.presets import add_feature_set_arguments, feature_set_preset
from bowsvm.spark import SparkProgress

# bowsvm.coding (numba), bowsvm.io.features (scipy) and pyspark are imported inside the
# functions that use them: the CLI imports every stage module to build its parser.

NAME = "codebook"
ORDER = 20
JOB = "learn_codebook.py"
HELP = "sample descriptors from the train images and learn a feature set's codebook (Spark)"
DESCRIPTION = (
    "Sample dense descriptors (seeded per image) from the train split of the image shards, "
    "optionally reduce them with PCA, and learn the preset's codebook with K-means "
    "(bowsvm's Lloyd K-means locally, Spark MLlib KMeans for large samples), or for a Fisher "
    "vector preset its diagonal GMM by EM. Writes CODEBOOKS/NAME."
)

#: Iterations and initialisation of the MLlib K-means (recorded in the codebook's meta).
MLLIB_MAX_ITER = 30
MLLIB_INIT = "k-means||"


# --------------------------------------------------------------- options

def add_arguments(parser) -> None:
    """The codebook stage's options (the CLI's and jobs/learn_codebook.py's)."""
    add_feature_set_arguments(parser, "codebooks")
    parser.add_argument("--samples-per-image", type=int, default=None,
                        help="descriptors drawn per image (default: the preset's)")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="target size of the K-means sample (default: the preset's)")
    parser.add_argument("--kmeans", choices=("auto", "local", "minibatch", "mllib"), default="auto",
                        help="K-means engine: local (bowsvm's Lloyd passes on the nearest-basis "
                        "kernel, one progress line per pass), minibatch (scikit-learn's "
                        "MiniBatchKMeans), mllib (Spark MLlib KMeans), or auto (local, MLlib when "
                        "the sample has more than --mllib-threshold rows); a Fisher vector "
                        "preset's GMM is always fitted locally by EM (auto or local only)")
    parser.add_argument("--mllib-threshold", type=int, default=1_000_000,
                        help="sample size above which --kmeans auto uses MLlib")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the sample and K-means (default: the preset's random_state)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing codebook")


def _output(args) -> Path:
    return Path(args.codebooks) / args.feature_set


def sample_options(args, preset: dict) -> tuple[int, int, int]:
    """``(samples_per_image, n_samples, seed)``: the options, else the preset's (checked).

    Raises
    ------
    ValueError
        If ``--samples-per-image`` or ``--n-samples`` is below 1, or ``--seed``
        below 0.
    """
    cb = preset["codebook"]
    pick = lambda given, default: default if given is None else given  # noqa: E731
    return (check_int("--samples-per-image", pick(args.samples_per_image, cb["samples_per_image"]),
                      low=1),
            check_int("--n-samples", pick(args.n_samples, cb["n_samples"]), low=1),
            check_int("--seed", pick(args.seed, cb["random_state"]), low=0))


def check_arguments(args) -> None:
    """Check the options and refuse the output before Spark starts.

    Raises
    ------
    FileNotFoundError
        If the preset does not exist or ``--images`` is not a complete
        `bowsvm prepare` output.
    ValueError
        If an option is out of range, ``--kmeans`` names a K-means engine for a
        Fisher vector preset, an image shard is corrupt or truncated (named), or
        CODEBOOKS/NAME overlaps ``--images``.
    FileExistsError
        If CODEBOOKS/NAME exists and may not be replaced (``--overwrite``).
    """
    preset, _ = feature_set_preset(args.preset or args.feature_set)  # unknown preset: named
    sample_options(args, preset)
    engine_for(args, preset, 0)
    prepare_target(_output(args), args.overwrite, "codebook", [args.images], "--codebooks/NAME")
    check_image_shards(args.images)  # Spark would read a truncated shard as empty, silently


def engine_for(args, preset: dict, n_rows: int) -> str:
    """What learns the codebook: ``"gmm"`` (a Fisher vector preset), else the K-means engine.

    ``--kmeans auto`` is ``"mllib"`` above ``--mllib-threshold`` sample rows,
    else ``"local"``.

    Raises
    ------
    ValueError
        If ``--kmeans`` is ``minibatch`` or ``mllib`` for a Fisher vector preset.
    """
    if preset["coding"]["method"] == "fisher":
        if args.kmeans not in ("auto", "local"):
            raise ValueError(
                f"--kmeans {args.kmeans} does not apply to preset {preset['name']!r}: its "
                f"coding.method is 'fisher', whose codebook is a GMM fitted locally by EM; "
                f"leave --kmeans out (or pass auto or local).")
        return "gmm"
    if args.kmeans != "auto":
        return args.kmeans
    return "mllib" if n_rows > args.mllib_threshold else "local"


# --------------------------------------------------------------- partition functions

def choose_sample_images(ids, n_samples: int, samples_per_image: int, seed: int) -> set:
    """Ids of the train images to sample descriptors from (seeded, order-free).

    Enough images for ``n_samples`` descriptors at ``samples_per_image`` each:
    those with the smallest ``seeded_key(seed, id)``, whatever order ``ids`` is in.
    """
    n_images = max(1, -(-n_samples // max(1, samples_per_image)))
    ranked = sorted(ids, key=lambda i: (seeded_key(seed, i), i))
    return set(ranked[:n_images])


def sample_partition(rows, preset: dict, samples_per_image: int, seed: int):
    """Yield ``(id, float32 bytes, n, d)`` descriptor samples, one per image (on executors).

    ``rows`` are ``(id, encoded image bytes)``. The draw for an image depends
    only on (seed, id), so the sample does not depend on partitioning or
    retries. Undecodable images yield nothing (the extract stage records them).
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


def mllib_codebook(spark, X, n_bases: int, pca_dim, seed: int):
    """K-means with Spark MLlib on a distributed copy of the sample (PCA fitted locally).

    The PCA is fitted on a seeded subsample of at most 100 000 rows
    (:func:`bowsvm.coding.fit_pca`); K-means runs ``k-means||`` for 30 iterations.
    """
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
    km = KMeans(k=n_bases, seed=seed, maxIter=MLLIB_MAX_ITER, initMode=MLLIB_INIT, tol=1e-4)
    model = km.fit(df)
    centers = np.stack([np.asarray(c, np.float32) for c in model.clusterCenters()])
    return codebook_from_centers(centers, mean, comps, meta={
        "method": "spark.ml.KMeans", "n_samples": int(len(X)), "random_state": seed,
        "max_iter": MLLIB_MAX_ITER, "init": MLLIB_INIT})


# --------------------------------------------------------------- the stage

def run_spark(spark, args) -> int:
    """The driver's work: sample on the executors, K-means, write CODEBOOKS/NAME.

    Raises
    ------
    ValueError
        If ``--images`` has no train images, or fewer descriptors could be
        sampled than the preset has bases.
    """
    from pyspark.sql import functions as F

    from bowsvm.coding import learn_codebook, learn_gmm_codebook
    t0 = time.time()
    sc = spark.sparkContext
    spark_start = max(0.0, t0 - sc.startTime / 1000)  # the session, built by run_stage_job
    preset, phash = feature_set_preset(args.preset or args.feature_set)
    cb_conf = preset["codebook"]
    per_image, n_samples, seed = sample_options(args, preset)
    shards = image_shard_dir(args.images)
    images_manifest = read_manifest(args.images, stage="prepare")
    out = _output(args)

    sc._jsc.hadoopConfiguration().set(*parquet.SPARK_VERIFY_CONF)  # page CRCs of image shards
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
        bc = sc.broadcast(chosen)
        n_part = max(2 * sc.defaultParallelism, len(chosen) // 2000)
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
        engine = engine_for(args, preset, len(X))
        what = (f"GMM (EM) of {len(X)} x {X.shape[1]} descriptors with {n_bases} Gaussians"
                if engine == "gmm" else
                f"K-means ({engine}) of {len(X)} x {X.shape[1]} descriptors into {n_bases} bases")
        print(f"[codebook] {what}" + (f" after PCA to {pca_dim}" if pca_dim else ""),
              file=sys.stderr, flush=True)
        t_km = time.time()
        if engine == "gmm":
            cb = learn_gmm_codebook(X, n_bases, pca_dim=pca_dim, random_state=seed,
                                    max_iter=cb_conf["em_max_iter"], tol=cb_conf["em_tol"],
                                    var_floor=cb_conf["var_floor"], verbose=True)
        elif engine == "mllib":
            cb = mllib_codebook(spark, X, n_bases, pca_dim, seed)
        else:
            cb = learn_codebook(X, n_bases, pca_dim=pca_dim, random_state=seed,
                                method="minibatch" if engine == "minibatch" else "lloyd",
                                verbose=engine == "local")
        t_fit = round(time.time() - t_km, 3)
        if engine == "gmm":
            learned = {"method": "gmm", "kmeans": None, "log_likelihood": cb.gmm.log_likelihood,
                       "n_iter": cb.gmm.n_iter, "converged": cb.gmm.converged,
                       "em_seconds": t_fit}
        else:
            learned = {"method": "kmeans", "kmeans": engine, "kmeans_seconds": t_fit}
        cb.save(tmp)
        write_json_atomic(tmp / "manifest.json", {
            "stage": "codebook",
            "feature_set": args.feature_set,
            "preset": preset["name"],
            "preset_hash": phash,
            "codebook_hash": cb.hash,
            "n_bases": cb.n_bases, "dim": cb.dim, "input_dim": cb.input_dim,
            "pca_dim": pca_dim,
            **learned,
            "n_samples": int(len(X)), "n_sample_images": len(chosen),
            "samples_per_image": per_image, "seed": seed,
            "images": str(Path(args.images).absolute()),
            "images_classes": images_manifest["classes"],
            "seconds": round(time.time() - t0, 3),
            "spark_start_seconds": round(spark_start, 3),
        })
    print(f"[codebook] wrote {out} ({cb.n_bases} {'Gaussians' if cb.gmm else 'bases'}, "
          f"hash {cb.hash}) in "
          f"{time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return 0
