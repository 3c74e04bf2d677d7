"""TRANSITIONAL (issue 14): the image-shard checks, until H1's ``bowsvm.io.image_shards``.

Everything else that lived here moved to :mod:`bowsvm.stages.codebook` and
:mod:`bowsvm.stages.extract` (and ``too_small`` to :mod:`bowsvm.coding`);
``image_shard_dir`` and ``check_image_shards`` move to
``bowsvm.io.image_shards``, and this module is deleted at integration.
"""

from __future__ import annotations

from pathlib import Path

from bowsvm.io import parquet, read_manifest

__all__ = ["check_image_shards", "image_shard_dir"]


def image_shard_dir(images) -> Path:
    """The shards folder of a complete `bowsvm prepare` output (checked)."""
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
