"""Checked Parquet I/O: page checksums on write and read, errors that name the file.

Every Parquet file bowsvm writes with pyarrow (feature shards, scores, fused
scores, rejects tables) goes through :func:`write_table` or :func:`writer`,
which add a CRC-32 to every data page (``write_page_checksum=True``). Every
reader goes through :func:`open_file`, :func:`read_table` or
:func:`iter_batches`, which verify those checksums
(``page_checksum_verification=True``) and turn pyarrow's anonymous errors
("Parquet magic bytes not found", "CRC checksum verification failed",
corrupt snappy data, ...) into one :class:`ValueError` that names the file.

Files written without checksums (by Spark, or by older bowsvm versions) are
still read; pyarrow verifies only the pages that carry a checksum.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bowsvm.io.store import Location, open_input

__all__ = ["WRITE_OPTIONS", "READ_OPTIONS", "SPARK_VERIFY_CONF", "named_errors", "open_file",
           "read_table", "iter_batches", "spark_read_errors", "write_table", "writer"]

#: Options added to every pyarrow Parquet write.
WRITE_OPTIONS = {"write_page_checksum": True}

#: Options added to every pyarrow Parquet read.
READ_OPTIONS = {"page_checksum_verification": True}

#: Hadoop setting that makes Spark's Parquet reader (parquet-java) verify page CRCs.
SPARK_VERIFY_CONF = ("parquet.page.verify-checksum.enabled", "true")

_SPARK_READ_FAILURE = re.compile(r"Encountered error while reading file (\S+?)\.?\s+(?:SQLSTATE|$)",
                                 re.MULTILINE)


@contextmanager
def named_errors(path, what: str = "Parquet file"):
    """Re-raise pyarrow/OS read errors as one ValueError naming ``path``.

    ``FileNotFoundError`` passes through unchanged (it names the file already).

    Raises
    ------
    ValueError
        ``"<what> '<path>' is corrupt or truncated (<cause>); ..."``.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, EOFError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{what} {str(path)!r} is corrupt or truncated ({type(exc).__name__}: {msg}); "
            f"delete it and re-run the stage that wrote it."
        ) from exc


@contextmanager
def spark_read_errors(what: str = "Parquet file"):
    """Re-raise a Spark job failure that names an unreadable input file as one ValueError.

    Spark reports a corrupt Parquet input (bad page CRC, corrupt compressed
    data) as a Java stack trace under "[FAILED_READ_FILE] Encountered error
    while reading file PATH"; this keeps PATH and the first cause line.
    Other exceptions pass through unchanged.

    Raises
    ------
    ValueError
        ``"<what> '<path>' is corrupt or truncated (...)"``.
    """
    try:
        yield
    except Exception as exc:  # py4j / pyspark errors: matched on their text
        text = str(exc)
        m = _SPARK_READ_FAILURE.search(text)
        if m is None:
            raise
        path = m.group(1).removeprefix("file://")
        causes = [ln.strip() for ln in text.splitlines()
                  if ln.strip().startswith("Caused by:") and "reading file" not in ln]
        cause = causes[-1].removeprefix("Caused by:").strip() if causes else "unreadable"
        raise ValueError(
            f"{what} {path!r} is corrupt or truncated (Spark: {cause}); delete it and re-run "
            f"the stage that wrote it."
        ) from None


def open_file(path, what: str = "Parquet file", **kwargs) -> pq.ParquetFile:
    """``pq.ParquetFile(path)`` with page checksums verified; reads the footer.

    Reads made later through the returned object (``read``, ``iter_batches``)
    are not wrapped: use :func:`read_table` / :func:`iter_batches`, or wrap
    them in :func:`named_errors`.
    """
    with named_errors(path, what):
        return pq.ParquetFile(open_input(path), **READ_OPTIONS, **kwargs)


def read_table(path, what: str = "Parquet file", columns=None, **kwargs) -> pa.Table:
    """Read a whole Parquet file (or one with ``columns``), checksums verified."""
    with named_errors(path, what):
        return pq.read_table(open_input(path), columns=columns, **READ_OPTIONS, **kwargs)


def iter_batches(path, what: str = "Parquet file", *, file_options=None, **kwargs):
    """Yield the record batches of a Parquet file, checksums verified, errors named.

    ``file_options`` go to ``pq.ParquetFile`` (e.g. ``pre_buffer``,
    ``buffer_size``), the other keywords to ``ParquetFile.iter_batches``.
    """
    pf = open_file(path, what, **(file_options or {}))
    it = pf.iter_batches(**kwargs)
    while True:
        with named_errors(path, what):
            try:
                rb = next(it)
            except StopIteration:
                return
        yield rb


def write_table(table: pa.Table, path, **kwargs) -> None:
    """``pq.write_table`` with a checksum on every page (``path``: a local path or a Location)."""
    if isinstance(path, Location):
        path.parent.mkdir()
        kwargs["filesystem"], path = path.fs, path.path
    pq.write_table(table, path, **WRITE_OPTIONS, **kwargs)


def writer(path, schema: pa.Schema, **kwargs) -> pq.ParquetWriter:
    """``pq.ParquetWriter`` with a checksum on every page (``path``: a local path or a Location).

    On an object store the file appears, whole, when the writer is closed.
    """
    if isinstance(path, Location):
        return pq.ParquetWriter(path.path, schema, filesystem=path.fs, **WRITE_OPTIONS, **kwargs)
    return pq.ParquetWriter(Path(path), schema, **WRITE_OPTIONS, **kwargs)
