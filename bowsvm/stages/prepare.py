"""Stage ``prepare``: an image tree or Fashion-MNIST IDX files -> Parquet image shards.

The whole ingest stage: its options, the driver's plan (which files, which
classes survive, which train images are held out as val), the per-partition
transform (:func:`normalize_partition`: read, decode, orient, 8-bit, downsize,
re-encode, by :func:`bowsvm.io.images.normalize_image`, the first steps of the
one image path) and the manifest. ``jobs/prepare_images.py`` runs
:func:`run_spark` under spark-submit.

Every input file ends up either as a row of the image shards or as a row of the
rejects table with its path and reason; :func:`check_counts` asserts that the two
add up. Output: docs/FORMATS.md, "Image shards" (:mod:`bowsvm.io.image_shards`).
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from bowsvm._seed import seeded_key
from bowsvm._validation import check_int
from bowsvm.io.atomic import atomic_output_dir, prepare_target
from bowsvm.io.image_shards import REJECTS_DDL, write_image_shards, write_rejects
from bowsvm.io.images import (
    DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, FASHION_MNIST_CLASSES, LAYOUTS, UnusableFile,
    detect_layout, encode_gray_png, find_idx_pair, load_idx_dataset, normalize_image,
    read_image_file, scan_tree,
)
from bowsvm.io.manifest import write_manifest

NAME = "prepare"
ORDER = 10
JOB = "prepare_images.py"
HELP = "ingest an image tree or Fashion-MNIST IDX files into Parquet image shards (Spark)"
DESCRIPTION = (
    "Decode, orient, convert and downsize every image of an ImageNet-style folder tree "
    "(CLASS/.../file, optionally under train/ val/ test/) or of the Fashion-MNIST IDX files, "
    "and write Parquet image shards plus a rejects table and a manifest. Bad files never stop "
    "the job: each ends up in the rejects table with its reason."
)

# Reject reasons decided before decoding (by the driver).
REASON_NO_CLASS = "not inside a class folder"
REASON_NO_SPLIT = "not inside a split folder (train/, val/, test/) of a --layout split tree"
REASON_LIMIT = "skipped: over --limit-per-class {limit}"
REASON_DROPPED = "class dropped: {n} usable image(s) in train, fewer than --min-per-class {m}"

#: Rows of :func:`normalize_partition` (Spark DDL).
DECODED_DDL = ("id string, source string, class_name string, split string, ok boolean, "
               "reason string, orig_width int, orig_height int, width int, height int, "
               "image binary")


# --------------------------------------------------------------- options

def add_arguments(parser) -> None:
    """The stage's options (shared by jobs/prepare_images.py and `bowsvm prepare`)."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="root of an ImageNet-style tree: CLASS/.../image, "
                     "optionally under train/, val/, test/")
    src.add_argument("--fashion-mnist", metavar="DIR",
                     help="folder of the (Fashion-)MNIST IDX files, gzip or not "
                     "(Debian: /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--output", required=True,
                        help="output folder for the image shards, or a URI (s3://..., "
                             "hdfs://...: docs/SCALING.md)")
    parser.add_argument("--max-side", type=int, default=500,
                        help="downsize so the longer side is at most this many pixels")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="tree layout: 'split' (train/ val/ test/ at the top), 'flat' (class "
                        "folders at the top) or 'auto' (split if every top-level folder is a split "
                        "name, flat if none is; a mix is refused)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="reject images with more pixels than this (decompression bombs)")
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES,
                        help="reject files larger than this many bytes without reading them")
    parser.add_argument("--val-per-class", type=int, default=0,
                        help="hold out this many train images per class as the val split (seeded)")
    parser.add_argument("--min-per-class", type=int, default=1,
                        help="drop classes with fewer usable train images than this (reported)")
    parser.add_argument("--limit-per-class", type=int, default=None,
                        help="keep at most this many images per class and split (quick runs)")
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg",
                        help="encoding of re-encoded tree images (IDX images are always PNG)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--shard-mb", type=float, default=128.0,
                        help="target size of one Parquet image shard in MB")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val hold-out and limits")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output folder")


def _inputs(args) -> list:
    return [args.input, args.fashion_mnist]


def check_arguments(args) -> None:
    """Validate the options and inputs and refuse the output, before any work (and Spark).

    Checks ranges, that ``--input`` is a folder whose layout is not ambiguous
    (:func:`bowsvm.io.images.detect_layout`, top level only), that
    ``--fashion-mnist`` holds the train and t10k IDX files, and that
    ``--output`` may be written (:func:`bowsvm.io.atomic.prepare_target`).

    Raises
    ------
    ValueError
        Naming the option, the value and the valid range; or an ambiguous tree;
        or an ``--output`` that is (inside) an input.
    FileNotFoundError
        If ``--input`` is not a folder or ``--fashion-mnist`` lacks an IDX file.
    FileExistsError
        If ``--output`` exists and ``--overwrite`` is not given.
    """
    check_int("--max-side", args.max_side, low=8)
    check_int("--max-pixels", args.max_pixels, low=64)
    check_int("--max-file-bytes", args.max_file_bytes, low=1)
    check_int("--val-per-class", args.val_per_class, low=0)
    check_int("--min-per-class", args.min_per_class, low=1)
    if args.limit_per_class is not None:
        check_int("--limit-per-class", args.limit_per_class, low=1)
    check_int("--quality", args.quality, low=1, high=100)
    if not args.shard_mb > 0:
        raise ValueError(f"--shard-mb={args.shard_mb} must be > 0.")
    if args.input is not None:
        detect_layout(args.input, args.layout)
    else:
        if not Path(args.fashion_mnist).is_dir():
            raise FileNotFoundError(
                f"--fashion-mnist {args.fashion_mnist!r} is not a folder; pass the folder of the "
                f"Fashion-MNIST IDX files (Debian: /usr/share/datasets/fashion-mnist).")
        for prefix in ("train", "t10k"):
            find_idx_pair(args.fashion_mnist, prefix)
    prepare_target(args.output, args.overwrite, NAME, _inputs(args), "--output")


# --------------------------------------------------------------- the plan (driver)

@dataclass(frozen=True)
class Record:
    """One input to decode: a file of a tree, or raw pixels of an IDX file."""

    id: str
    source: str
    class_name: str | None
    split: str
    pixels: bytes | None = None   # IDX: raw uint8 pixels
    shape: tuple | None = None    # IDX: (height, width)


def build_records(args):
    """The inputs as Records, the rejects decided before decoding, and a source summary.

    Returns
    -------
    records : list of Record
        To decode.
    pre_rejects : list of (Record, reason)
        Files outside a class folder or (split tree) outside a split folder.
    source_info : dict
        ``kind`` ("idx" | "tree"), ``n_input``, and ``class_order`` (IDX) or
        ``has_split_level`` and ``layout`` (tree).
    """
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


def apply_limit(records: list[Record], limit: int | None, seed: int):
    """Keep at most ``limit`` records per (split, class), chosen by seeded key.

    Returns ``(kept, rejected)`` where rejected is a list of (record, reason).
    """
    if not limit:
        return list(records), []
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.split, r.class_name)].append(r)
    keep_ids = set()
    for recs in groups.values():
        recs = sorted(recs, key=lambda r: (seeded_key(seed, r.id), r.id))
        keep_ids.update(r.id for r in recs[:limit])
    kept = [r for r in records if r.id in keep_ids]
    reason = REASON_LIMIT.format(limit=limit)
    return kept, [(r, reason) for r in records if r.id not in keep_ids]


def plan_classes(train_counts: dict[str, int], all_classes, min_per_class: int):
    """Decide which classes survive ``--min-per-class`` (counted on usable train images).

    ``all_classes`` is either a set (label order = sorted names) or a sequence
    whose order is the label order (e.g. Fashion-MNIST's own label indices).

    Returns ``(classes, dropped)``: the surviving class names in label order
    and a dict of dropped class -> its usable train count.
    """
    classes, dropped = [], {}
    ordered = sorted(all_classes) if isinstance(all_classes, (set, frozenset)) else list(all_classes)
    for c in ordered:
        n = int(train_counts.get(c, 0))
        if n < min_per_class:
            dropped[c] = n
        else:
            classes.append(c)
    return classes, dropped


def plan_holdout(train_ids_by_class: dict[str, list[str]], val_per_class: int, seed: int) -> set[str]:
    """Ids moved from train to val: ``val_per_class`` per class, chosen by seeded key.

    At least one image per class stays in train; a class with too few images
    gives up all but one.
    """
    out: set[str] = set()
    if val_per_class <= 0:
        return out
    for ids in train_ids_by_class.values():
        ranked = sorted(ids, key=lambda i: (seeded_key(seed, i), i))
        out.update(ranked[:min(val_per_class, max(0, len(ranked) - 1))])
    return out


def check_counts(n_input: int, n_images: int, n_rejected: int) -> None:
    """Every input is accounted for exactly once.

    Raises
    ------
    RuntimeError
        If the counts do not add up (a bug: no input may be lost).
    """
    if n_input != n_images + n_rejected:
        raise RuntimeError(
            f"internal error: {n_input} input files but {n_images} images + "
            f"{n_rejected} rejects; refusing to write an output that loses files.")


def reason_histogram(reasons) -> dict[str, int]:
    """Counts of reject reasons, with per-file detail stripped after the first colon."""
    return dict(Counter(r.split(":")[0] for r in reasons).most_common())


# --------------------------------------------------------------- the partition function

def normalize_partition(records, max_side: int, max_pixels: int, fmt: str, quality: int,
                        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
    """Decode and re-encode a partition of :class:`Record` (the Spark map step).

    Only regular files of at most ``max_file_bytes`` are read
    (:func:`bowsvm.io.images.read_image_file`: a FIFO, device, socket or a
    symlink to one is never opened for reading, so nothing can block).

    Yields plain tuples ``(id, source, class_name, split, ok, reason, orig_width,
    orig_height, width, height, image)`` (:data:`DECODED_DDL`); failures carry
    ``ok=False`` and a reason, never an exception.
    """
    import numpy as np

    from bowsvm.spark import maybe_inject_failure

    maybe_inject_failure()
    for r in records:
        if r.pixels is not None:
            arr = np.frombuffer(r.pixels, dtype=np.uint8).reshape(r.shape)
            h, w = r.shape
            yield (r.id, r.source, r.class_name, r.split, True, None, w, h, w, h,
                   encode_gray_png(arr))
            continue
        try:
            raw = read_image_file(r.source, max_file_bytes)
        except UnusableFile as exc:
            yield (r.id, r.source, r.class_name, r.split, False, str(exc), 0, 0, 0, 0, None)
            continue
        res = normalize_image(raw, max_side=max_side, max_pixels=max_pixels, fmt=fmt, quality=quality)
        yield (r.id, r.source, r.class_name, r.split, res.data is not None, res.reason,
               res.orig_width, res.orig_height, res.width, res.height, res.data)


# --------------------------------------------------------------- the driver

def run_spark(spark, args) -> int:
    """The stage on a Spark session (after :func:`check_arguments`).

    Lists the inputs on the driver, decodes them in partitions, plans classes,
    labels and the val hold-out on the driver (ids only), then writes the
    shards, the rejects table and the manifest into one atomic folder.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from bowsvm.spark import SparkProgress

    t0 = time.time()
    records, pre_rejects, source_info = build_records(args)
    records, limit_rejects = apply_limit(records, args.limit_per_class, args.seed)
    pre_rejects += limit_rejects
    print(f"[prepare] {source_info['n_input']} input files; {len(records)} to decode, "
          f"{len(pre_rejects)} rejected before decoding", file=sys.stderr, flush=True)

    sc = spark.sparkContext
    per_slice = 1000 if source_info["kind"] == "idx" else 200
    n_slices = max(2 * sc.defaultParallelism, math.ceil(len(records) / per_slice), 1)
    opts = (args.max_side, args.max_pixels, args.format, args.quality, args.max_file_bytes)
    with SparkProgress(spark, NAME), atomic_output_dir(
            args.output, args.overwrite, NAME, _inputs(args), "--output") as tmp:
        rdd = sc.parallelize(records, n_slices).mapPartitions(
            lambda it: normalize_partition(it, *opts))
        decoded = spark.createDataFrame(rdd, DECODED_DDL).persist(StorageLevel.DISK_ONLY)
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
                  .withColumn("split", F.col("final_split")))
        write_image_shards(images, tmp, n_out)

        dropped_df = decoded.filter(F.col("ok") & F.col("class_name").isin(list(dropped) or [""]))
        dropped_df = dropped_df.select(F.col("source").alias("path"), F.lit(None).cast("string").alias("reason"),
                                       "split", "class_name")
        reason_rows = [(r.source, reason, r.split, r.class_name) for r, reason in pre_rejects]
        decode_fail = decoded.filter(~F.col("ok")).select(
            F.col("source").alias("path"), "reason", "split", "class_name")
        rejects = decode_fail.unionByName(spark.createDataFrame(reason_rows, REJECTS_DDL))
        if dropped:
            dropped_reason = F.create_map(*[x for c, n in dropped.items() for x in (
                F.lit(c), F.lit(REASON_DROPPED.format(n=n, m=args.min_per_class)))])
            rejects = rejects.unionByName(dropped_df.withColumn("reason", dropped_reason[F.col("class_name")]))
        rejects = rejects.coalesce(1).persist(StorageLevel.DISK_ONLY)
        write_rejects(rejects, tmp)
        reasons = [r.reason for r in rejects.select("reason").collect()]
        decoded.unpersist()

        n_images = len(assign)
        n_dropped = sum(dropped.values())
        check_counts(source_info["n_input"], n_images, len(reasons))
        write_manifest(tmp, {
            "stage": NAME,
            "classes": classes,
            "counts": {s: dict(sorted(c.items())) for s, c in sorted(counts.items())},
            "n_input_files": source_info["n_input"],
            "n_images": n_images,
            "n_rejected": len(reasons),  # rows of the rejects table, skipped ones included
            "n_skipped_by_limit": len(limit_rejects),
            "n_bad_files": len(reasons) - len(limit_rejects) - n_dropped,
            "reject_reasons": reason_histogram(reasons),
            "dropped_classes": dropped,
            "n_shards": n_out,
            "source": {**source_info, "path": args.fashion_mnist or args.input},
            "options": {k: v for k, v in vars(args).items() if k not in ("overwrite", "output")},
            "seconds": round(time.time() - t0, 3),
        })
    print(f"[prepare] wrote {n_images} images in {n_out} shard(s) to {args.output} in "
          f"{time.time() - t0:.1f} s; rejects table: {len(reasons)} files ("
          f"{len(reasons) - len(limit_rejects) - n_dropped} bad, "
          f"{len(limit_rejects)} over --limit-per-class, {n_dropped} in dropped classes)",
          file=sys.stderr, flush=True)
    return 0
