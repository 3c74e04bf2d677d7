"""The ingest stage's logic, free of Spark: planning and per-partition transforms.

``jobs/prepare_images.py`` wires these into a Spark job. Every input file ends
up either as a row of the image shards or as a row of the rejects table with
its path and reason; :func:`check_counts` asserts that the two add up.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass

from bowsvm.io.images import (
    DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, LAYOUTS, UnusableFile, encode_gray_png,
    normalize_image, read_image_file,
)

# Reject reasons decided before decoding (by the driver).
REASON_NO_CLASS = "not inside a class folder"
REASON_NO_SPLIT = "not inside a split folder (train/, val/, test/) of a --layout split tree"
REASON_LIMIT = "skipped: over --limit-per-class {limit}"
REASON_DROPPED = "class dropped: {n} usable image(s) in train, fewer than --min-per-class {m}"


@dataclass(frozen=True)
class Record:
    """One input to decode: a file of a tree, or raw pixels of an IDX file."""

    id: str
    source: str
    class_name: str | None
    split: str
    pixels: bytes | None = None   # IDX: raw uint8 pixels
    shape: tuple | None = None    # IDX: (height, width)


def seeded_key(seed: int, key: str) -> int:
    """A stable pseudo-random 64-bit integer for (seed, key): order-independent draws."""
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")


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


def normalize_partition(records, max_side: int, max_pixels: int, fmt: str, quality: int,
                        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES):
    """Decode and re-encode a partition of :class:`Record` (the Spark map step).

    Only regular files of at most ``max_file_bytes`` are read
    (:func:`bowsvm.io.images.read_image_file`: a FIFO, device, socket or a
    symlink to one is never opened for reading, so nothing can block).

    Yields plain tuples ``(id, source, class_name, split, ok, reason, orig_width,
    orig_height, width, height, image)``; failures carry ``ok=False`` and a
    reason, never an exception.
    """
    for r in records:
        if r.pixels is not None:
            import numpy as np

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


def add_job_arguments(parser) -> None:
    """Options of the ingest job (shared by jobs/prepare_images.py and `bowsvm prepare`)."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="root of an ImageNet-style tree: CLASS/.../image, "
                     "optionally under train/, val/, test/")
    src.add_argument("--fashion-mnist", metavar="DIR",
                     help="folder of the (Fashion-)MNIST IDX files, gzip or not "
                     "(Debian: /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--output", required=True, help="output folder for the image shards")
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


def check_job_arguments(args) -> None:
    """Validate the ingest options and inputs before any work starts (and before Spark).

    Checks ranges, that ``--input`` is a folder whose layout is not ambiguous
    (:func:`bowsvm.io.images.detect_layout`, top level only) and that
    ``--fashion-mnist`` holds the train and t10k IDX files.

    Raises
    ------
    ValueError
        Naming the option, the value and the valid range; or an ambiguous tree.
    FileNotFoundError
        If ``--input`` is not a folder or ``--fashion-mnist`` lacks an IDX file.
    """
    from bowsvm._validation import check_int
    from bowsvm.io.images import detect_layout, find_idx_pair

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
        from pathlib import Path

        if not Path(args.fashion_mnist).is_dir():
            raise FileNotFoundError(
                f"--fashion-mnist {args.fashion_mnist!r} is not a folder; pass the folder of the "
                f"Fashion-MNIST IDX files (Debian: /usr/share/datasets/fashion-mnist).")
        for prefix in ("train", "t10k"):
            find_idx_pair(args.fashion_mnist, prefix)
