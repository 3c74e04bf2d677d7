"""Image shards: the prepare stage's output, its writer beside its readers.

Layout (docs/FORMATS.md, "Image shards")::

    IMAGES/manifest.json                 stage "prepare"
    IMAGES/shards/part-*.parquet         SHARD_COLUMNS
    IMAGES/rejects/part-*.parquet        REJECT_COLUMNS

The shards are written by Spark (:func:`write_image_shards`, called by
:mod:`bowsvm.stages.prepare`), whose Parquet writer adds page CRCs; the readers
check the manifest and every footer before a Spark job trusts them (Spark reads
a shard whose footer is cut off as an empty file, silently).
"""

from __future__ import annotations

from pathlib import Path

from bowsvm.io import parquet
from bowsvm.io.manifest import read_manifest

__all__ = ["SHARD_COLUMNS", "SHARD_DDL", "REJECT_COLUMNS", "REJECTS_DDL", "write_image_shards",
           "write_rejects", "image_shard_dir", "check_image_shards", "image_shard_files"]

#: Columns of an image shard, in stored order (Spark types in the DDL).
SHARD_COLUMNS = ("id", "label", "class_name", "split", "orig_width", "orig_height", "width",
                 "height", "image", "source")
SHARD_DDL = ("id string, label int, class_name string, split string, orig_width int, "
             "orig_height int, width int, height int, image binary, source string")
#: Columns of the rejects table: one row per input file that is not an image shard row.
REJECT_COLUMNS = ("path", "reason", "split", "class_name")
REJECTS_DDL = "path string, reason string, split string, class_name string"


def write_image_shards(df, folder, n_files: int) -> None:
    """Write a Spark DataFrame of image rows as ``folder/shards/part-*.parquet``.

    ``df`` must hold (at least) :data:`SHARD_COLUMNS`; they are written in that
    order, in ``n_files`` files (``coalesce``).
    """
    df.select(*SHARD_COLUMNS).coalesce(max(1, int(n_files))).write.parquet(
        str(Path(folder) / "shards"))


def write_rejects(df, folder) -> None:
    """Write a Spark DataFrame of :data:`REJECT_COLUMNS` as ``folder/rejects`` (one file)."""
    df.select(*REJECT_COLUMNS).coalesce(1).write.parquet(str(Path(folder) / "rejects"))


def image_shard_dir(images) -> Path:
    """The shards folder of a complete `bowsvm prepare` output (checked).

    Raises
    ------
    FileNotFoundError
        If ``images`` is not a complete `bowsvm prepare` output.
    ValueError
        If its manifest is another stage's.
    """
    read_manifest(images, stage="prepare")
    return Path(images) / "shards"


def check_image_shards(images) -> list[Path]:
    """The image shards of a `bowsvm prepare` folder, their footers read and counted.

    Spark silently reads a Parquet file whose footer is cut off as an empty
    file (measured: pyspark 4.x), so the codebook and extract stages check
    every shard's footer here, before Spark starts.

    Raises
    ------
    FileNotFoundError
        If the folder is not a complete `bowsvm prepare` output.
    ValueError
        If a shard is corrupt or truncated (names it), or the shards' rows do
        not add up to the manifest's ``n_images``.
    """
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


def image_shard_files(images) -> list:
    """Parquet image shards of a ``bowsvm prepare`` folder (unchecked; may be empty).

    ``bowsvm prepare`` writes them to ``images/shards/part-*.parquet``;
    ``images/part-*.parquet`` (docs/FORMATS.md) is accepted too.
    """
    root = Path(images)
    return sorted(root.glob("part-*.parquet")) + sorted((root / "shards").glob("part-*.parquet"))
