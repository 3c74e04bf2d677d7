"""Feature shards: Parquet files of pooled image features, one folder per feature set.

Layout (see docs/FORMATS.md)::

    <features>/<name>/manifest.json     stage "extract" (or "compress"), dim, layout, classes, ...
    <features>/<name>/<split>/part-*.parquet
    <features>/<name>/pq.npz            layout "pq" only: the PQ codebook (bowsvm.io.pq)

Columns: ``id`` (string), ``label`` (int32), and either ``x``
(fixed_size_list<float32>[dim], layout "dense"), ``indices`` (list<int32>)
plus ``values`` (list<float32>) (layout "sparse"), or ``codes``
(fixed_size_list<uint8>[M], layout "pq", written by ``bowsvm compress``: the
reader decodes them to dense float32 rows with the feature set's codebook, so
training and scoring see a dense feature set).

The writer (schema, tables, shard entries, verification, value checks) comes
first; the reader that training and scoring stream from
(:class:`FeatureShards`, :func:`scan_split`, :func:`iter_chunks`,
:func:`read_ahead`) follows in its own section.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from bowsvm.io import parquet
from bowsvm.io.atomic import check_complete
from bowsvm.io.manifest import read_manifest
from bowsvm.io.pq import PQ_FILE, PQCodebook, decode_codes, read_pq_codebook
from bowsvm.io.store import Location, open_input, resolve

LAYOUTS = ("dense", "sparse", "pq")

#: Stages whose output is a feature set: extract, and compress (layout "pq").
FEATURE_STAGES = ("extract", "compress")

#: Largest |value| a feature may hold under per-block L2 normalisation, with
#: room for float32 rounding of the division by the norm.
L2_BOUND = 1.0 + 1e-5

#: Read buffer of the lean shard reader on a URI (:mod:`bowsvm.io.store`) instead of
#: 1 MB: one ranged request per 16 MB, not per 1 MB (docs/BENCHMARKS.md, issue 15 item 3).
REMOTE_READ_BUFFER = 16 << 20

#: Folders of a feature-set folder that are not splits.
NOT_SPLITS = ("rejects",)


def feature_schema(dim: int, layout: str, n_codes: int | None = None) -> pa.Schema:
    """The Arrow schema of a feature shard (``n_codes``: M, for layout "pq" only)."""
    if layout == "dense":
        return pa.schema([
            ("id", pa.string()),
            ("label", pa.int32()),
            ("x", pa.list_(pa.float32(), dim)),
        ])
    if layout == "sparse":
        return pa.schema([
            ("id", pa.string()),
            ("label", pa.int32()),
            ("indices", pa.list_(pa.int32())),
            ("values", pa.list_(pa.float32())),
        ])
    if layout == "pq":
        if n_codes is None or int(n_codes) < 1:
            raise ValueError(f"a pq feature-shard schema needs n_codes >= 1, got {n_codes!r}.")
        return pa.schema([
            ("id", pa.string()),
            ("label", pa.int32()),
            ("codes", pa.list_(pa.uint8(), int(n_codes))),
        ])
    raise ValueError(f"layout={layout!r} is not valid; expected one of {LAYOUTS}.")


def codes_to_table(ids, labels, codes) -> pa.Table:
    """A pq feature-shard table from ids, labels and (n, M) uint8 codes."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n, M = codes.shape
    c = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1), pa.uint8()), M)
    return pa.Table.from_arrays([pa.array([str(i) for i in ids], pa.string()),
                                 pa.array(np.asarray(labels, dtype=np.int32)), c],
                                schema=feature_schema(0, "pq", M))


def table_codes(table: pa.Table) -> np.ndarray:
    """The (n, M) uint8 codes of a pq feature-shard table (or batch)."""
    col = table.column("codes")
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_fixed_size_list(col.type) or col.type.value_type != pa.uint8():
        raise ValueError(f"column 'codes' is {col.type}, not fixed_size_list<uint8>[M]")
    M = col.type.list_size
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(table), M), dtype=np.uint8)


def check_codes(path, row0: int, codes: np.ndarray, pq: PQCodebook) -> None:
    """Raise if a batch of codes read from ``path`` does not fit the codebook ``pq``.

    Raises
    ------
    ValueError
        If there are not ``pq.n_codes`` codes per row, or a code is not below
        ``pq.n_centroids``; names the shard (and the row).
    """
    if codes.shape[1] != pq.n_codes:
        raise ValueError(
            f"shard {str(path)!r} holds {codes.shape[1]} codes per row, but the feature set's "
            f"PQ codebook has {pq.n_codes} sub-spaces; the folder mixes shards of different "
            f"compressions: re-run `bowsvm compress` for it.")
    if pq.n_centroids < 256 and codes.size:
        bad = np.flatnonzero((codes >= pq.n_centroids).any(axis=1))
        if bad.size:
            r = int(bad[0])
            raise ValueError(
                f"shard {str(path)!r} row {row0 + r} holds the code "
                f"{int(codes[r].max())}, but the PQ codebook has {pq.n_centroids} centroids "
                f"per sub-space; the shard is corrupt: re-run `bowsvm compress`.")


def features_to_table(ids, labels, X, layout: str | None = None) -> pa.Table:
    """Build a feature-shard table from ids, labels and a dense or CSR matrix."""
    ids = pa.array([str(i) for i in ids], pa.string())
    labels = pa.array(np.asarray(labels, dtype=np.int32))
    if layout is None:
        layout = "sparse" if sp.issparse(X) else "dense"
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not valid; expected one of {LAYOUTS}.")
    if layout == "dense":
        Xd = X.toarray() if sp.issparse(X) else np.asarray(X)
        Xd = np.ascontiguousarray(Xd, dtype=np.float32)
        n, d = Xd.shape
        x = pa.FixedSizeListArray.from_arrays(pa.array(Xd.reshape(-1)), d)
        return pa.Table.from_arrays([ids, labels, x], schema=feature_schema(d, "dense"))
    Xs = sp.csr_matrix(X, dtype=np.float32)
    Xs.sort_indices()
    offsets = pa.array(Xs.indptr.astype(np.int32))
    ind = pa.ListArray.from_arrays(offsets, pa.array(Xs.indices.astype(np.int32)))
    val = pa.ListArray.from_arrays(offsets, pa.array(Xs.data.astype(np.float32)))
    return pa.Table.from_arrays([ids, labels, ind, val], schema=feature_schema(Xs.shape[1], "sparse"))


def table_to_features(table: pa.Table, dim: int, pq: PQCodebook | None = None):
    """Inverse of :func:`features_to_table`: (ids, labels, X) with X float32.

    X is a C-contiguous ndarray for dense shards and a CSR matrix for sparse
    ones. A pq table (``codes``) is decoded with ``pq`` (required then), its
    codes checked first (:func:`check_codes`).

    Raises
    ------
    ValueError
        If a pq table comes without ``pq``, or its codes do not fit it.
    """
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    labels = table.column("label").to_numpy().astype(np.int64)
    n = table.num_rows
    if "codes" in table.column_names:
        if pq is None:
            raise ValueError("a pq feature-shard table (column 'codes') needs its PQ codebook "
                             "to be decoded.")
        codes = table_codes(table)
        check_codes("(table)", 0, codes, pq)
        return ids, labels, decode_codes(codes, pq, np.empty((n, pq.dim), dtype=np.float32))
    if "x" in table.column_names:
        return ids, labels, dense_rows(table, dim)
    ind_col = table.column("indices").combine_chunks()
    val_col = table.column("values").combine_chunks()
    indptr = ind_col.offsets.to_numpy().astype(np.int64)
    indptr = indptr - indptr[0]
    indices = ind_col.flatten().to_numpy().astype(np.int32)
    values = val_col.flatten().to_numpy().astype(np.float32)
    X = sp.csr_matrix((values, indices, indptr), shape=(n, dim))
    return ids, labels, X


def dense_rows(table, dim: int) -> np.ndarray:
    """The (n, dim) float32 rows of a dense table's (or batch's) ``x`` column, C-contiguous."""
    col = table.column("x")
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(table), dim), dtype=np.float32)


def shard_files(folder, split: str) -> list[Path]:
    """Sorted Parquet files of one split of a feature-set folder.

    A URI feature set (:class:`bowsvm.io.store.Location`) is not listed: its
    files are the ones its manifest's ``shards`` entries name for the split.
    """
    if isinstance(folder, Location):
        entries = read_manifest(folder).get("shards") or []
        return [folder / e["path"] for e in sorted(entries, key=lambda e: e["path"])
                if e.get("split") == split]
    d = Path(folder) / split
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


# --------------------------------------------------------------- the writer

def shard_table(table, dim: int, n_codes: int | None = None) -> pa.Table:
    """The feature-shard table (:func:`feature_schema`) of rows that carry its columns.

    ``table`` is a pyarrow Table or RecordBatch with ``id``, ``label`` and
    either ``x`` (list<float32> of ``dim`` values, or already fixed size),
    ``indices`` + ``values``, or ``codes`` (``n_codes`` uint8 each); other columns (the extract stage's ``split`` and
    ``error``) are dropped, and the columns are cast (safely) to the format's
    types, e.g. ``x`` from list<float32> to the fixed-size list.

    Raises
    ------
    ValueError
        If a column of the format is missing, or a column cannot be cast to its
        type (an ``x`` row without ``dim`` values, a label beyond int32).
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    layout = ("dense" if "x" in table.column_names else
              "pq" if "codes" in table.column_names else "sparse")
    if layout == "pq" and n_codes is None:
        n_codes = getattr(table.schema.field("codes").type, "list_size", None)
    schema = feature_schema(dim, layout, n_codes)
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise ValueError(f"a feature-shard table needs the columns {schema.names}; "
                         f"{missing} missing from {table.column_names}.")
    t = table.select(schema.names)
    if t.schema != schema:
        try:
            t = t.cast(schema)  # safe casts only: no overflow, no truncation
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ValueError(f"feature rows of schema ({t.schema.to_string(show_schema_metadata=False)}"
                             .replace("\n", ", ") + f") do not fit the {layout} feature-shard "
                             f"format of dim={dim} (ids strings, labels int32, "
                             + ("x dim float32 values" if layout == "dense" else
                                f"codes {n_codes} uint8 values" if layout == "pq" else
                                "indices int32, values float32") + f"): {exc}") from None
    return t


class ShardWriter:
    """The one writer of feature shards: tables in, Parquet files of at most N rows out.

    Parameters
    ----------
    path : path or callable
        The file to write, or ``path(k)`` giving the k-th file (k = 0, 1, ...)
        of a series; a new file is started every ``rows_per_file`` rows. A
        path may be a URI or a :class:`bowsvm.io.store.Location` (any
        ``pyarrow.fs`` file system).
    dim : int
    layout : {"dense", "sparse", "pq"}
    rows_per_file : int, optional
        None: one file, however many rows.
    n_codes : int, optional
        Codes per row (M), layout "pq" only.

    A series' files are created on the first row they get (no empty files);
    a single ``path`` is written even with no rows. Files are written
    with page checksums (:func:`bowsvm.io.parquet.writer`) and closed by
    :meth:`close` (or leaving the ``with`` block). The bytes depend only on
    the rows written, in order, and on where the files break.

    Attributes
    ----------
    files : list of (Path or Location, int)
        Every file closed so far and its rows, in the order written.
    """

    def __init__(self, path, dim: int, layout: str, rows_per_file: int | None = None,
                 n_codes: int | None = None):
        self._single = not callable(path)
        self._path_of = (lambda k, p=resolve(path): p) if self._single else path
        self.dim = int(dim)
        self.n_codes = n_codes
        self.schema = feature_schema(self.dim, layout, n_codes)
        self.layout = layout
        self.rows_per_file = rows_per_file
        self.files: list[tuple[Path, int]] = []
        self._writer = self._file = None
        self._rows = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.files.append((self._file, self._rows))
            self._writer = None

    def write(self, table) -> None:
        """Append rows: a table (or batch) accepted by :func:`shard_table`.

        Raises
        ------
        ValueError
            If the rows are not of this writer's layout and dimension.
        """
        t = shard_table(table, self.dim, self.n_codes)
        if t.schema != self.schema:
            raise ValueError(f"feature rows of schema {t.schema} do not fit this {self.layout} "
                             f"shard writer of dim {self.dim} ({self.schema}).")
        start = 0
        while start < t.num_rows or (self._single and self._writer is None and not self.files):
            full = self.rows_per_file is not None and self._rows >= self.rows_per_file
            if self._writer is None or full:
                k = len(self.files) + (self._writer is not None)
                self._close_file()
                self._file = resolve(self._path_of(k))
                self._file.parent.mkdir(parents=True, exist_ok=True)
                self._writer = parquet.writer(self._file, self.schema)
                self._rows = 0
            take = t.num_rows - start
            if self.rows_per_file is not None:
                take = min(take, self.rows_per_file - self._rows)
            self._writer.write_table(t.slice(start, take))
            self._rows += take
            start += take

    def close(self) -> list[tuple[Path, int]]:
        """Close the open file; return :attr:`files`."""
        if self._single and self._writer is None and not self.files:
            self.write(self.schema.empty_table())
        self._close_file()
        return self.files


def attempt_file(folder, partition: int, attempt: int, k: int, run: str | None = None):
    """File ``k`` of a Spark task attempt's shard series: ``folder/part-PPPPP-KKK.aA.parquet``.

    Each attempt writes its own files (a :class:`ShardWriter` series), so a
    failed attempt can never clobber a good one; the driver keeps only the
    files named by the successful attempts (the extract stage's feature shards,
    the codebook stage's descriptor sample). The tasks pass Spark's
    ``TaskContext.taskAttemptId()``, unique within the application, not
    ``attemptNumber()``: that restarts at 0 when a stage is re-attempted (after a
    lost executor's shuffle output, ``FetchFailed``), while a task of the earlier
    stage attempt may still be writing the same partition. Under a URI output (no rename,
    :mod:`bowsvm.io.store`) the files stay where they are written and carry
    the run's tag, ``part-PPPPP-KKK.RUN.aA.parquet``, so no run overwrites
    another's; ``folder`` is then a Location.
    """
    tag = f".{run}" if run else ""
    return resolve(folder) / f"part-{partition:05d}-{k:03d}{tag}.a{attempt}.parquet"


def committed_name(path) -> str:
    """The name an :func:`attempt_file` keeps once committed: ``part-PPPPP-KKK.parquet``."""
    return Path(path).name.split(".a")[0] + ".parquet"


def write_shard(path, ids, labels, X, layout: str | None = None) -> None:
    """Write one feature shard from ids, labels and a dense or CSR matrix.

    The same writer as the extract stage's (:class:`ShardWriter`), for tests,
    benchmarks and local tools.
    """
    t = features_to_table(ids, labels, X, layout)
    dim = t.schema.field("x").type.list_size if "x" in t.column_names else X.shape[1]
    with ShardWriter(path, dim, "dense" if "x" in t.column_names else "sparse") as w:
        w.write(t)


def iter_shard_batches(path, dim: int, batch_rows: int = 4096, lean: bool = False,
                       pq: PQCodebook | None = None):
    """Yield (ids, labels, X) batches of at most ``batch_rows`` rows from one shard.

    Page checksums are verified; a corrupt or truncated file raises a
    ValueError naming it (:mod:`bowsvm.io.parquet`). ``lean`` reads with no
    pre-buffering, a 1 MB buffer and no decode threads (less peak memory).
    The rows of a pq shard are decoded with ``pq`` (float32, dense) after
    their codes are checked (:func:`check_codes`).
    """
    for ids, labels, X in iter_shard_codes(path, dim, batch_rows, lean, pq):
        if pq is not None:
            X = decode_codes(X, pq, np.empty((len(ids), pq.dim), dtype=np.float32))
        yield ids, labels, X


def iter_shard_codes(path, dim: int, batch_rows: int = 4096, lean: bool = False,
                     pq: PQCodebook | None = None):
    """:func:`iter_shard_batches` without the decode: a pq shard's X is its (n, M) codes.

    With ``pq`` the shard must be a pq shard whose codes fit it (checked, the
    shard named); without, it must not be one.
    """
    fopts = {"pre_buffer": False, "buffer_size": 1 << 20} if lean else {}
    if lean and isinstance(path, Location):  # fewer, larger requests to an object store
        fopts["buffer_size"] = REMOTE_READ_BUFFER
    row0 = 0
    for rb in parquet.iter_batches(path, "feature shard", file_options=fopts,
                                   batch_size=batch_rows, use_threads=not lean):
        t = pa.Table.from_batches([rb])
        has_codes = "codes" in t.column_names
        if has_codes and pq is None:
            raise ValueError(f"shard {str(path)!r} holds PQ codes (column 'codes'); read it "
                             f"through its feature set, whose {PQ_FILE} decodes them.")
        if pq is not None and not has_codes:
            raise ValueError(f"shard {str(path)!r} has no column 'codes' but the feature set "
                             f"is product-quantized (layout 'pq'); re-run `bowsvm compress`.")
        if not has_codes:
            yield table_to_features(t, dim)
            continue
        ids = np.asarray(t.column("id").to_pylist(), dtype=object)
        labels = t.column("label").to_numpy().astype(np.int64)
        try:
            codes = table_codes(t)
        except (ValueError, AttributeError, pa.ArrowException) as exc:
            raise ValueError(f"shard {str(path)!r} holds codes that are not a fixed number "
                             f"of uint8 per row ({exc}); re-run `bowsvm compress`.") from None
        check_codes(path, row0, codes, pq)
        row0 += len(ids)
        yield ids, labels, codes


# --------------------------------------------------------------- shard entries

def file_sha256(path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MB chunks."""
    h = hashlib.sha256()
    with open_input(path, stream=True) as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def split_names(folder) -> list[str]:
    """The split folders of a feature-set folder (not hidden, not ``rejects``)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")) and p.name not in NOT_SPLITS)


def shard_entries(folder, files=None) -> list[dict]:
    """The manifest's ``shards`` list for a complete feature-set folder.

    One entry per ``SPLIT/*.parquet`` file, sorted by path: ``split``, ``path``
    (relative to ``folder``, with ``/``), ``rows`` (from the Parquet footer),
    ``bytes`` and ``sha256`` (of the whole file). ``files`` (``SPLIT/NAME``
    paths under ``folder``) gives the shards instead of listing the folder:
    a URI output is never listed.

    Raises
    ------
    ValueError
        If a shard's footer cannot be read (names the file).
    """
    folder = resolve(folder)
    if files is None:
        files = [f.relative_to(folder).as_posix()
                 for split in split_names(folder) for f in shard_files(folder, split)]
    out = []
    for rel in sorted(files, key=lambda r: r.split("/", 1)):  # by split, then name
        split, f = rel.split("/", 1)[0], folder / rel
        rows = parquet.open_file(f, "feature shard").metadata.num_rows
        out.append({"split": split, "path": rel, "rows": int(rows),
                    "bytes": int(f.stat().st_size), "sha256": file_sha256(f)})
    return out


def verified_shard_files(folder, manifest: dict, split: str, *, check_hash: bool = True) -> list[Path]:
    """The shards of ``split``, checked against the manifest's ``shards`` entries.

    The files on disk must be exactly the manifest's for that split (same
    names), each with the recorded size and footer row count, and (with
    ``check_hash``) the recorded SHA-256.

    Returns
    -------
    list of Path, sorted by name (empty if the manifest lists none for the split).

    Raises
    ------
    ValueError
        If the manifest has no ``shards`` entries (written before they were
        recorded: re-extract), lists a path twice, a listed shard is missing, a
        file on disk is not listed (a copy of a listed one is said so), or its
        size, rows or hash differ. Every message names the shard.
    """
    folder = resolve(folder)
    mpath = str(folder / "manifest.json")
    entries = manifest.get("shards")
    if not isinstance(entries, list):
        raise ValueError(
            f"feature-set manifest {mpath!r} has no per-shard entries ('shards'); it was "
            f"written by an older bowsvm that did not record them, so its shards cannot be "
            f"verified: re-extract the feature set (`bowsvm extract ... --overwrite`)."
        )
    seen: set = set()
    for e in entries:
        if e["path"] in seen:
            raise ValueError(f"feature-set manifest {mpath!r} lists shard {e['path']!r} twice; "
                             f"re-extract the feature set.")
        seen.add(e["path"])
    listed = {e["path"]: e for e in entries if e.get("split") == split}
    if isinstance(folder, Location):  # a URI output is never listed: unlisted objects are not read
        on_disk = {p: folder / p for p in listed if (folder / p).is_file()}
    else:
        on_disk = {f.relative_to(folder).as_posix(): f for f in shard_files(folder, split)}
    missing = sorted(set(listed) - set(on_disk))
    if missing:
        raise ValueError(
            f"shard {str(folder / missing[0])!r} is listed in {mpath!r} but missing from disk"
            + (f" ({len(missing)} missing in all)" if len(missing) > 1 else "")
            + "; restore it or re-extract the feature set."
        )
    extra = sorted(set(on_disk) - set(listed))
    if extra:
        f = on_disk[extra[0]]
        size = f.stat().st_size
        twin = [p for p, e in listed.items() if e["bytes"] == size and e["sha256"] == file_sha256(f)]
        why = f" (a duplicate of {twin[0]!r})" if twin else ""
        raise ValueError(
            f"file {str(f)!r} is not a shard listed in {mpath!r}{why}; remove it (it would be "
            f"read as extra rows) or re-extract the feature set."
        )
    for rel in sorted(listed):
        e, f = listed[rel], on_disk[rel]
        size = f.stat().st_size
        if size != e["bytes"]:
            raise ValueError(f"shard {str(f)!r} has {size} bytes but {mpath!r} records "
                             f"{e['bytes']}; the file was changed or truncated: re-extract it.")
        rows = parquet.open_file(f, "feature shard").metadata.num_rows
        if rows != e["rows"]:
            raise ValueError(f"shard {str(f)!r} holds {rows} rows but {mpath!r} records "
                             f"{e['rows']}; re-extract the feature set.")
        if check_hash and file_sha256(f) != e["sha256"]:
            raise ValueError(f"shard {str(f)!r} does not match the SHA-256 recorded in {mpath!r}; "
                             f"its bytes were changed: re-extract the feature set.")
    return [on_disk[p] for p in sorted(listed)]


# --------------------------------------------------------------- value checks

def value_bound(manifest: dict) -> float | None:
    """Largest |feature value| the feature set's preset allows, or None for no bound.

    With per-block L2 normalisation (``preset_config.pooling.normalize`` is
    ``"l2"``, or ``"improved"``: a Fisher vector's signed square root, then L2)
    every value lies in [-1, 1]; :data:`L2_BOUND` allows for float32 rounding.
    """
    pooling = (manifest.get("preset_config") or {}).get("pooling") or {}
    return L2_BOUND if pooling.get("normalize") in ("l2", "improved") else None


def check_feature_values(path, row0: int, X, bound: float | None) -> None:
    """Raise if a batch read from ``path`` holds NaN/Inf or values beyond ``bound``.

    ``row0`` is the batch's first row within the shard (rows are named
    ``row0 + r``, in stored order).

    Raises
    ------
    ValueError
        Naming the shard, the row and the offending value.
    """
    data = X.data if sp.issparse(X) else X
    if not data.size:
        return
    bad = ~np.isfinite(data)
    if bound is not None:
        with np.errstate(invalid="ignore"):
            bad |= np.abs(data) > bound
    if not bad.any():
        return
    if sp.issparse(X):
        k = int(np.flatnonzero(bad)[0])
        r = int(np.searchsorted(X.indptr, k, side="right") - 1)
        v = float(X.data[k])
    else:
        r, c = (int(i) for i in np.argwhere(bad)[0])
        v = float(X[r, c])
    if not np.isfinite(v):
        raise ValueError(f"shard {str(path)!r} row {row0 + r} holds NaN or Inf features; "
                         f"re-extract that shard.")
    raise ValueError(
        f"shard {str(path)!r} row {row0 + r} holds the value {v:.6g}, outside [-{bound:g}, "
        f"{bound:g}], which the preset's per-block L2 normalisation allows; the shard is "
        f"corrupt: re-extract the feature set."
    )


# =============================================================================
# Reader: a feature set's shards, checked and streamed in chunks (train, score)
# =============================================================================

#: Chunk buffers alive at once: the trainer's, the read-ahead one, and the
#: one being decoded (Arrow batch + NumPy copy + shuffled copy).
_CHUNK_COPIES = 5

#: Decoded Parquet row groups alive at once (the trainer's and the read-ahead's).
_ROW_GROUP_COPIES = 2


@dataclass
class FeatureShards:
    """A feature-set folder opened for reading: its manifest and what readers need.

    Attributes
    ----------
    name : str
        The feature set's name (its folder's name).
    folder : Path or bowsvm.io.store.Location
        ``<features>/<name>`` (a Location when ``<features>`` is a URI).
    manifest : dict
        The folder's manifest (stage "extract", or "compress" for layout "pq").
    dim : int
    layout : {"dense", "sparse", "pq"}
    classes : list of str
        Class names in label order.
    preset_hash : str or None
    """

    name: str
    folder: Path
    manifest: dict
    dim: int
    layout: str
    classes: list
    preset_hash: str | None
    _pq: PQCodebook | None = field(default=None, repr=False)

    def pq_codebook(self) -> PQCodebook | None:
        """The PQ codebook of a pq feature set (loaded and checked once), else None.

        ``pq.npz`` must match the SHA-256 and the sizes the manifest's ``pq``
        entry records (:func:`bowsvm.io.pq.read_pq_codebook`).

        Raises
        ------
        FileNotFoundError
            If ``pq.npz`` is missing.
        ValueError
            If it is corrupt, changed, or does not fit the manifest (names the file).
        """
        if self.layout != "pq":
            return None
        if isinstance(self.folder, Location):
            raise ValueError(f"feature set {str(self.folder)!r} is product-quantized (layout 'pq'); "
                             f"pq feature sets are read from local folders only: run `bowsvm "
                             f"compress` with a local --output-features folder.")
        if self._pq is None:
            e = self.manifest["pq"]
            self._pq = read_pq_codebook(
                self.folder / e["file"], sha256=e["sha256"],
                expect={"dim": self.dim, "dims_per_code": e["dims_per_code"],
                        "n_codes": e["n_codes"], "n_centroids": e["n_centroids"]})
        return self._pq


@dataclass
class SplitInfo:
    """The shards of one split, their row counts and the class counts."""

    split: str
    files: list
    rows: list
    counts: np.ndarray
    bound: float | None = None  # largest |value| the preset allows (None: no bound)
    pq: PQCodebook | None = None  # layout "pq": the codebook that decodes the shards
    runs: int = 0  # runs of equal labels in stored order, summed over the shards

    def grouped_by_class(self) -> bool:
        """True if the rows come in runs of one class far longer than a random order gives.

        A random order of these class counts has about ``1 + (n - 1)(1 - sum p_k^2)``
        runs of equal labels; fewer than half of that means class after class
        (feature sets extracted before extract ordered rows by a hash of the id).
        """
        n = self.n
        if n < 100:
            return False
        p = self.counts / max(self.counts.sum(), 1)
        return self.runs < 0.5 * (1 + (n - 1) * (1 - float((p * p).sum())))

    @property
    def n(self) -> int:
        return int(sum(self.rows))


def read_feature_manifest(folder) -> dict:
    """The manifest of a feature-set folder: of stage "extract" or "compress".

    Raises
    ------
    FileNotFoundError
        If the folder is missing or incomplete.
    ValueError
        If the manifest is from another stage.
    """
    check_complete(folder, what="extract")  # (the message every stage gave before compress)
    m = read_manifest(folder)
    if m.get("stage") not in FEATURE_STAGES:
        raise ValueError(
            f"{str(folder)!r} holds the output of stage {m.get('stage')!r}, expected "
            f"'extract' (or 'compress'); pass the folder written by `bowsvm extract` or "
            f"`bowsvm compress`."
        )
    return m


def open_feature_set(features_root, name: str) -> FeatureShards:
    """Read and check ``<features_root>/<name>/manifest.json`` (stage "extract" or "compress").

    Only the manifest is read; a pq feature set's codebook is loaded by
    :meth:`FeatureShards.pq_codebook` (:func:`scan_split` calls it).

    Raises
    ------
    FileNotFoundError
        If the folder is missing or incomplete.
    ValueError
        If the manifest is from another stage or lacks dim/layout/classes (or,
        for layout "pq", its ``pq`` entry).
    """
    folder = resolve(features_root) / name  # a URI: a Location (bowsvm.io.store)
    m = read_feature_manifest(folder)
    missing = [k for k in ("dim", "layout", "classes") if k not in m]
    if missing:
        raise ValueError(
            f"feature-set manifest {str(folder / 'manifest.json')!r} lacks {missing}; "
            f"re-run `bowsvm extract` for it."
        )
    if m["layout"] not in LAYOUTS:
        raise ValueError(f"feature set {name!r} has layout {m['layout']!r}; expected one of "
                         f"{', '.join(LAYOUTS)}.")
    if m["layout"] == "pq":
        e = m.get("pq")
        keys = ("file", "sha256", "dims_per_code", "n_codes", "n_centroids")
        if not isinstance(e, dict) or any(k not in e for k in keys) or e["file"] != PQ_FILE:
            raise ValueError(
                f"feature-set manifest {str(folder / 'manifest.json')!r} has layout 'pq' but "
                f"no complete 'pq' entry ({', '.join(keys)}; file {PQ_FILE!r}); re-run `bowsvm compress` for it.")
    return FeatureShards(name, folder, m, int(m["dim"]), m["layout"], list(m["classes"]),
                         m.get("preset_hash"))


def scan_split(fs: FeatureShards, split: str, *, require_all_classes: bool = False,
               check_hash: bool = True) -> SplitInfo:
    """Check every shard of a split against the manifest, its schema and labels.

    The shards on disk must be exactly the manifest's ``shards`` entries for
    the split, with their recorded sizes, row counts and (with ``check_hash``)
    SHA-256 (:func:`verified_shard_files`); feature data is otherwise not
    decoded here. For a pq feature set the codebook is loaded and checked
    (:meth:`FeatureShards.pq_codebook`; its values against the preset's bound,
    which then holds for every decoded row) and every shard's ``codes`` column
    must be ``fixed_size_list<uint8>[M]`` with the codebook's M.

    Raises
    ------
    ValueError
        If the manifest has no shard entries, a shard is missing, extra,
        changed or corrupt, the split has no rows, a shard's dimension, layout
        (codes per row for pq) or preset hash differs from the manifest, the PQ
        codebook is missing, changed or corrupt, a label is outside the class
        list, or (with ``require_all_classes``, i.e. for training) a class has
        no example or there are fewer than 2 classes.
    """
    files = verified_shard_files(fs.folder, fs.manifest, split, check_hash=check_hash)
    pq = fs.pq_codebook()
    bound = value_bound(fs.manifest)
    if pq is not None and bound is not None and np.abs(pq.centroids).max(initial=0) > bound:
        raise ValueError(
            f"PQ codebook {str(fs.folder / PQ_FILE)!r} holds values beyond {bound:g}, which the "
            f"preset's per-block L2 normalisation allows; re-run `bowsvm compress`.")
    C = len(fs.classes)
    counts = np.zeros(C, dtype=np.int64)
    rows, runs = [], 0
    for f in files:
        pf = parquet.open_file(f, "feature shard")
        schema = pf.schema_arrow
        if fs.layout == "dense":
            if "x" not in schema.names:
                raise ValueError(f"shard {str(f)!r} has no column 'x' but the feature set is dense.")
            size = getattr(schema.field("x").type, "list_size", None)
            if size is None and pf.metadata.num_rows:  # variable list (Spark): first row
                first = next(parquet.iter_batches(f, "feature shard", batch_size=1, columns=["x"]))
                size = len(first.column(0)[0])
            if size is not None and size != fs.dim:
                raise ValueError(
                    f"shard {str(f)!r} has feature dimension {size}, but the manifest says "
                    f"dim={fs.dim}; the folder mixes shards of different feature sets: re-extract it."
                )
        elif fs.layout == "pq":
            t = schema.field("codes").type if "codes" in schema.names else None
            if t is None or not pa.types.is_fixed_size_list(t) or t.value_type != pa.uint8():
                raise ValueError(f"shard {str(f)!r} has no column 'codes' of "
                                 f"fixed_size_list<uint8> but the feature set is pq "
                                 f"(found {t}); re-run `bowsvm compress`.")
            if t.list_size != pq.n_codes:
                raise ValueError(
                    f"shard {str(f)!r} holds {t.list_size} codes per row, but the feature "
                    f"set's PQ codebook has {pq.n_codes} sub-spaces; the folder mixes shards "
                    f"of different compressions: re-run `bowsvm compress` for it.")
        elif not {"indices", "values"} <= set(schema.names):
            raise ValueError(f"shard {str(f)!r} lacks 'indices'/'values' but the feature set is sparse.")
        meta = schema.metadata or {}
        ph = meta.get(b"preset_hash")
        if ph is not None and fs.preset_hash is not None and ph.decode() != fs.preset_hash:
            raise ValueError(
                f"shard {str(f)!r} was built with preset hash {ph.decode()!r}, but the manifest "
                f"says {fs.preset_hash!r}; re-extract the feature set."
            )
        lab = parquet.read_table(f, "feature shard", columns=["label"]).column("label").to_numpy()
        bad = np.flatnonzero((lab < 0) | (lab >= C))
        if bad.size:
            raise ValueError(
                f"shard {str(f)!r} row {int(bad[0])} has label {int(lab[bad[0]])}, outside the "
                f"class list of {C} classes in the manifest; re-extract the feature set."
            )
        counts += np.bincount(lab, minlength=C)
        rows.append(int(lab.shape[0]))
        runs += int(lab.shape[0] > 0) + int(np.count_nonzero(lab[1:] != lab[:-1]))
    info = SplitInfo(split, files, rows, counts, bound, pq, runs)
    if require_all_classes and C < 2:
        raise ValueError(
            f"feature set {fs.name!r} has {C} class ({fs.classes}); a one-vs-all classifier "
            f"needs at least 2 classes (it would score top-1 1.0 without learning anything): "
            f"prepare the images with two or more classes."
        )
    if info.n == 0:
        raise ValueError(
            f"split {split!r} of feature set {fs.name!r} is empty (no rows in "
            f"{str(fs.folder / split)!r}); extract it first."
        )
    if require_all_classes and (counts == 0).any():
        empty = [fs.classes[i] for i in np.flatnonzero(counts == 0)[:10]]
        raise ValueError(
            f"split {split!r} of feature set {fs.name!r} has no example of class(es) "
            f"{empty}; every class needs training examples."
        )
    return info


#: Share of the memory budget that shards read side by side (``iter_chunks(mix=...)``),
#: each holding decoded row groups, may take.
MIX_BUDGET_FRACTION = 0.5


def _largest_row_group(info: SplitInfo) -> int:
    """Bytes of the split's largest decoded row group (footers read once per SplitInfo)."""
    if "_largest_rg" not in info.__dict__:
        metas = [parquet.open_file(f, "feature shard").metadata for f in info.files]
        info.__dict__["_largest_rg"] = max(
            (md.row_group(i).total_byte_size for md in metas for i in range(md.num_row_groups)),
            default=0)
    return info.__dict__["_largest_rg"]


def shards_per_chunk(info: SplitInfo, budget_bytes: int) -> int:
    """How many shards a training chunk draws its rows from (``iter_chunks(mix=...)``).

    As many as :data:`MIX_BUDGET_FRACTION` of the budget holds at
    ``_ROW_GROUP_COPIES`` decoded row groups of the split's largest each, at
    least 1 and at most the number of shards. :func:`rows_per_chunk` takes
    those row groups off the budget.
    """
    rg = _largest_row_group(info)
    k = int(MIX_BUDGET_FRACTION * budget_bytes) // max(_ROW_GROUP_COPIES * rg, 1)
    return int(max(1, min(len(info.files), k)))


def rows_per_chunk(fs: FeatureShards, info: SplitInfo, budget_bytes: int) -> int:
    """Rows per chunk so that every chunk buffer alive at once fits the budget.

    Counted per row: the chunk buffers alive at once (``_CHUNK_COPIES`` of
    them) and a validation chunk's scores. Counted once: pyarrow decodes a
    whole Parquet row group at a time, so ``_ROW_GROUP_COPIES`` times the
    largest row group of the split, per shard read side by side
    (:func:`shards_per_chunk`), is taken off the budget first (if that
    leaves less than a quarter of the budget, a quarter is used and a warning
    says so), and so is a pq feature set's codebook (held for the whole run).
    A pq row counts as its decoded float32 row plus its codes: the chunks the
    trainer holds are decoded. The weights (2 x C x dim x 4 bytes) come on top
    of the budget.

    Raises
    ------
    ValueError
        If the budget does not hold one row.
    """
    if fs.layout == "dense":
        row_bytes = fs.dim * 4 + 64
    elif fs.layout == "pq":  # decoded chunk + the codes (Arrow and NumPy copies)
        row_bytes = fs.dim * 4 + 2 * (info.pq.n_codes if info.pq else fs.dim) + 64
    else:  # estimate non-zeros per row from the first shard's first rows
        nnz = []
        for _, _, X in iter_shard_batches(info.files[0], fs.dim, 256):
            nnz.append(X.nnz / max(X.shape[0], 1))
            break
        row_bytes = int(max(nnz[0] if nnz else 1.0, 1.0) * 12) + 64
    rg = _largest_row_group(info)
    room = (budget_bytes - _ROW_GROUP_COPIES * rg * shards_per_chunk(info, budget_bytes)
            - (info.pq.nbytes if info.pq is not None else 0))
    if room < budget_bytes // 4:
        warnings.warn(
            f"the shards' Parquet row groups (up to {rg} bytes, decoded whole)"
            + (f" and the PQ codebook ({info.pq.nbytes} bytes)" if info.pq is not None else "")
            + f" leave little of the {budget_bytes}-byte memory budget for chunks; peak memory will exceed "
            f"the budget: raise --memory-budget or write shards with smaller row groups.",
            stacklevel=2)
        room = budget_bytes // 4
    # Scores of a validation chunk (rows x C float32, plus a copy) count too.
    rows = room // (_CHUNK_COPIES * row_bytes + 8 * len(fs.classes))
    if rows < 1:
        raise ValueError(
            f"memory budget of {budget_bytes} bytes is too small for one row of "
            f"{row_bytes} bytes; raise --memory-budget."
        )
    return int(rows)


def _checked_batches(path, dim, rows, pq=None):
    """Lean :func:`iter_shard_codes` of one shard; a row of the wrong length is named.

    Lean reading (no pre-buffering, a 1 MB read buffer, no decode threads)
    measured about 50 MB less peak RSS per 65 MB row group. Parquet row
    groups are still decoded whole, so a shard's row-group size adds to the
    memory budget (:func:`rows_per_chunk`).
    """
    it = iter_shard_codes(path, dim, rows, lean=True, pq=pq)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except ValueError as exc:
            if str(path) in str(exc):  # corrupt file, already named
                raise
            # a dense row of another length cannot be reshaped
            raise ValueError(
                f"shard {str(path)!r} holds feature rows whose length is not dim={dim} "
                f"({exc}); re-extract that shard."
            ) from None
        yield item


def iter_chunks(info: SplitInfo, dim: int, rows: int, rng=None, with_index: bool = False,
                mix: int = 1):
    """Yield ``(path, labels, X)`` chunks of at most ``rows`` rows, checked.

    With ``rng``, shard order and the rows of each chunk are shuffled from it;
    without, files and rows come in stored order. ``with_index``: yield
    ``(path, labels, X, index)``, ``index`` (int64) the rows' positions in the
    split (shards in ``info.files`` order, rows in stored order); the chunks
    are the same.

    ``mix``: read that many shards side by side (the next ``mix`` of the
    shard order): each chunk takes ``rows // mix`` rows from each of them, in
    that order, before the shuffle, so a chunk mixes the classes of ``mix``
    shards (extract writes shards of neighbouring images, often one class
    after another). Each shard read at once holds one decoded row group
    (:func:`shards_per_chunk`). ``path`` is then the first of the chunk's
    shards. ``mix=1`` reads one shard at a time.

    A pq split (``info.pq``) yields dense float32 chunks decoded on the fly:
    the codes are shuffled, then decoded (a gather, so the chunk equals the
    decoded rows shuffled, bit for bit, with one float32 copy instead of two).
    Its values need no check: every decoded value is a centroid value, checked
    once by :func:`scan_split`.

    Raises
    ------
    ValueError
        If a chunk holds NaN/Inf or a value beyond ``info.bound`` (names the
        shard and row), a sparse index outside ``[0, dim)``, a pq shard's
        codes do not fit the codebook (names the shard), or a shard is
        corrupt (page checksum, truncation; names the shard).
    """
    order = rng.permutation(len(info.files)) if rng is not None else range(len(info.files))
    order = list(order)
    starts = np.concatenate([[0], np.cumsum(info.rows, dtype=np.int64)])
    mix = max(1, int(mix))
    for w in range(0, len(order), mix):
        window = order[w:w + mix]
        per = max(1, rows // len(window))
        readers = {fi: _checked_batches(info.files[fi], dim, per, info.pq) for fi in window}
        row0 = dict.fromkeys(window, 0)
        while readers:
            parts = []
            for fi in window:
                if fi not in readers:
                    continue
                item = next(readers[fi], None)
                if item is None:
                    del readers[fi]
                    continue
                _, labels, X = item
                path, n = info.files[fi], labels.shape[0]
                if info.pq is None:
                    check_feature_values(path, row0[fi], X, info.bound)
                    if sp.issparse(X) and X.nnz and (X.indices.min() < 0 or
                                                     X.indices.max() >= dim):
                        raise ValueError(
                            f"shard {str(path)!r} has a feature index outside [0, {dim}).")
                parts.append((labels, X, np.arange(starts[fi] + row0[fi],
                                                   starts[fi] + row0[fi] + n, dtype=np.int64)))
                row0[fi] += n
            if not parts:
                break
            if len(parts) == 1:
                labels, X, index = parts[0]
            else:
                labels = np.concatenate([p[0] for p in parts])
                X = (sp.vstack([p[1] for p in parts], format="csr") if sp.issparse(parts[0][1])
                     else np.concatenate([p[1] for p in parts]))
                index = np.concatenate([p[2] for p in parts])
            n = labels.shape[0]
            if rng is not None:  # pq: codes are shuffled before decoding (one float32 copy)
                perm = rng.permutation(n)
                X = X[perm]
                labels = labels[perm]
                index = index[perm]
            if info.pq is not None:
                X = decode_codes(X, info.pq, np.empty((n, dim), dtype=np.float32))
            path = info.files[window[0]]
            yield (path, labels, X, index) if with_index else (path, labels, X)


def first_rows(info: SplitInfo, dim: int, rows: int, n: int):
    """``(labels, X)`` of the first ``min(n, info.n)`` rows in stored order (checked)."""
    labels, Xs, got = [], [], 0
    for _, lab, X in iter_chunks(info, dim, min(rows, n)):
        take = min(n - got, lab.shape[0])
        labels.append(lab[:take])
        Xs.append(X[:take])
        got += take
        if got >= n:
            break
    X = sp.vstack(Xs, format="csr") if sp.issparse(Xs[0]) else np.concatenate(Xs)
    return np.concatenate(labels), X


def read_ahead(gen, depth: int = 1):
    """Run a generator on a background thread, ``depth`` items ahead; re-raise its errors.

    Parquet decoding releases the GIL, so the next chunk is read while the
    consumer (a GEMM, a training pass) works on the current one.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", done))
        except BaseException as exc:  # handed to the consumer
            q.put(("error", exc))

    th = threading.Thread(target=work, name="bowsvm-read-ahead", daemon=True)
    th.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "item":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        stop.set()
        th.join(timeout=5)
