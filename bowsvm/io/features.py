"""Feature shards: Parquet files of pooled image features, one folder per feature set.

Layout (see docs/FORMATS.md)::

    <features>/<name>/manifest.json     stage "extract", dim, layout, classes, ...
    <features>/<name>/<split>/part-*.parquet

Columns: ``id`` (string), ``label`` (int32), and either ``x``
(fixed_size_list<float32>[dim], layout "dense") or ``indices`` (list<int32>)
plus ``values`` (list<float32>) (layout "sparse").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

LAYOUTS = ("dense", "sparse")


def feature_schema(dim: int, layout: str) -> pa.Schema:
    """The Arrow schema of a feature shard."""
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
    raise ValueError(f"layout={layout!r} is not valid; expected one of {LAYOUTS}.")


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


def table_to_features(table: pa.Table, dim: int):
    """Inverse of :func:`features_to_table`: (ids, labels, X) with X float32.

    X is a C-contiguous ndarray for dense shards and a CSR matrix for sparse ones.
    """
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    labels = table.column("label").to_numpy().astype(np.int64)
    n = table.num_rows
    if "x" in table.column_names:
        col = table.column("x").combine_chunks()
        flat = col.flatten().to_numpy(zero_copy_only=False)
        X = np.ascontiguousarray(flat.reshape(n, dim), dtype=np.float32)
        return ids, labels, X
    ind_col = table.column("indices").combine_chunks()
    val_col = table.column("values").combine_chunks()
    indptr = ind_col.offsets.to_numpy().astype(np.int64)
    indptr = indptr - indptr[0]
    indices = ind_col.flatten().to_numpy().astype(np.int32)
    values = val_col.flatten().to_numpy().astype(np.float32)
    X = sp.csr_matrix((values, indices, indptr), shape=(n, dim))
    return ids, labels, X


def shard_files(folder, split: str) -> list[Path]:
    """Sorted Parquet files of one split of a feature-set folder."""
    d = Path(folder) / split
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


def write_shard(path, ids, labels, X, layout: str | None = None) -> None:
    """Write one feature shard (used by tests and local tools; Spark writes its own)."""
    pq.write_table(features_to_table(ids, labels, X, layout), path)


def iter_shard_batches(path, dim: int, batch_rows: int = 4096):
    """Yield (ids, labels, X) batches of at most ``batch_rows`` rows from one shard."""
    pf = pq.ParquetFile(path)
    for rb in pf.iter_batches(batch_size=batch_rows):
        yield table_to_features(pa.Table.from_batches([rb]), dim)
