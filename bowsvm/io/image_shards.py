"""Image shards: the prepare stage's output, its writer beside its readers.

Layout (docs/FORMATS.md, "Image shards")::

    IMAGES/manifest.json                 stage "prepare"
    IMAGES/shards/part-*.parquet         SHARD_COLUMNS
    IMAGES/rejects/part-*.parquet        REJECT_COLUMNS

The shards are written by Spark (:func:`write_image_shards`, called by
:mod:`bowsvm.stages.prepare`), whose Parquet writer adds page CRCs; the readers
check the manifest and every footer before a Spark job trusts them (Spark reads
a shard whose footer is cut off as an empty file, silently).

At a URI (:mod:`bowsvm.io.store`: an object store, HDFS) the Spark tasks write
the shards themselves with pyarrow (no Hadoop connector), one file per task
attempt under the final prefix, and the manifest commit lists exactly the
winners; readers take the shards from that list (:func:`check_image_shards`)
and Spark jobs read them through pyarrow too (:func:`bowsvm.spark.image_rows`).
"""

from __future__ import annotations

from pathlib import Path

from bowsvm.io import parquet
from bowsvm.io.manifest import read_manifest
from bowsvm.io.store import Location, StoreOutput, listed_files, resolve

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


def shard_schema(columns=SHARD_COLUMNS):
    """The Arrow schema of image-shard rows (of ``columns``), as Spark's DDL types map."""
    import pyarrow as pa

    types = {"string": pa.string(), "int": pa.int32(), "binary": pa.binary()}
    ddl = dict(part.split() for part in SHARD_DDL.split(", "))
    return pa.schema([(c, types[ddl[c]]) for c in columns])


def write_image_shards(df, folder, n_files: int) -> None:
    """Write a Spark DataFrame of image rows as ``folder/shards/part-*.parquet``.

    ``df`` must hold (at least) :data:`SHARD_COLUMNS`; they are written in that
    order, in ``n_files`` files (``coalesce``). ``folder`` may be a URI output
    (:class:`bowsvm.io.store.StoreOutput`): see :func:`_write_task_files`.
    """
    if isinstance(folder, StoreOutput):
        _write_task_files(df.select(*SHARD_COLUMNS).coalesce(max(1, int(n_files))), folder)
        return
    df.select(*SHARD_COLUMNS).coalesce(max(1, int(n_files))).write.parquet(
        str(Path(folder) / "shards"))


def _write_task_files(df, out: StoreOutput) -> None:
    """Each Spark task writes its rows to ``shards/part-PPPPP.RUN.aT.parquet`` with pyarrow.

    ``T`` is the task attempt's id, unique within the Spark application.

    Only the rows of the winning attempts come back to the driver (Spark keeps
    one result per task), which registers their files with the commit; the
    run's other files are deleted by it.
    """
    import pyarrow as pa

    root, run, schema = out.root, out.run, shard_schema()

    def write(batches):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        # taskAttemptId: unique in the application, also across retried stages
        path = root / "shards" / f"part-{ctx.partitionId():05d}.{run}.a{ctx.taskAttemptId()}.parquet"
        w, n = None, 0
        for rb in batches:
            if w is None:
                w = parquet.writer(path, schema)
            w.write_table(pa.Table.from_batches([rb]).cast(schema))
            n += rb.num_rows
        if w is not None:
            w.close()
            yield pa.RecordBatch.from_pylist([{"path": f"shards/{path.name}", "n": n}])

    for r in df.mapInArrow(write, "path string, n long").collect():
        out.commit(root / r.path)


def write_rejects(df, folder) -> None:
    """Write a Spark DataFrame of :data:`REJECT_COLUMNS` as ``folder/rejects`` (one file)."""
    if isinstance(folder, StoreOutput):  # one small table: written by the driver
        import pyarrow as pa

        rows = [r.asDict() for r in df.select(*REJECT_COLUMNS).collect()]
        path = folder / "rejects" / folder.tagged("part-00000.parquet")
        parquet.write_table(pa.Table.from_pylist(rows, schema=pa.schema(
            [(c, pa.string()) for c in REJECT_COLUMNS])), path)
        folder.commit(path)
        return
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
    return resolve(images) / "shards"  # a URI: a Location, never listed


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
    shards = image_shard_dir(images)
    if isinstance(shards, Location):  # the files the manifest lists, not a listing
        files = [shards.parent / p for p in listed_files(m) if p.startswith("shards/")]
    else:
        files = sorted(shards.glob("*.parquet"))
    n = sum(parquet.open_file(f, "image shard").metadata.num_rows for f in files)
    if "n_images" in m and n != int(m["n_images"]):
        raise ValueError(
            f"the image shards in {str(image_shard_dir(images))!r} hold {n} rows but "
            f"{str(resolve(images) / 'manifest.json')!r} records n_images={m['n_images']}; a shard "
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
