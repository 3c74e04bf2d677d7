"""Spatial pyramid pooling of descriptor codes (validated public API)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bowsvm._validation import check_array, check_choice, check_grids, check_int
from bowsvm.coding import _kernels
from bowsvm.coding._encode import SVCodes

__all__ = ["pyramid_blocks", "spm_pool", "block_ids"]

_POOLINGS = {"auto": "auto", "max": "max", "sv": "sv"}
_NORMALIZE = {"l2": "l2", "none": "none"}
_OUTPUTS = {"dense": "dense", "sparse": "sparse"}


def pyramid_blocks(grids) -> int:
    """Number of pooling blocks of a pyramid: sum of rows * cols."""
    return sum(r * c for r, c in check_grids(grids))


def block_ids(centers, shape, grids):
    """Block id of each descriptor at each pyramid level.

    Blocks are numbered level by level in the order of ``grids``; within a
    grid of ``(rows, cols)`` cells, row-major (top to bottom, then left to
    right). A centre (x, y) falls in cell ``row = floor(y * rows / h)``,
    ``col = floor(x * cols / w)``, clipped to the grid.

    Returns
    -------
    ids : (n, L) int64
    counts : (n_blocks,) int64
        Descriptors per block.
    """
    grids = check_grids(grids)
    centers = np.ascontiguousarray(centers, dtype=np.float64)
    return _block_ids(centers, shape, np.array(grids, dtype=np.int64).reshape(-1, 2))


def _block_ids(centers, shape, grid_arr):
    n_blocks = int((grid_arr[:, 0] * grid_arr[:, 1]).sum())
    ids = np.empty((centers.shape[0], grid_arr.shape[0]), dtype=np.int64)
    counts = np.zeros(n_blocks, dtype=np.int64)
    _kernels.block_ids(centers, float(shape[0]), float(shape[1]),
                       np.ascontiguousarray(grid_arr[:, 0]), np.ascontiguousarray(grid_arr[:, 1]),
                       ids, counts)
    return ids, counts


def spm_pool(
    codes,
    centers,
    shape,
    grids=((1, 1), (3, 3)),
    *,
    pooling="auto",
    normalize="l2",
    output="dense",
):
    """Pool descriptor codes over a spatial pyramid into one image vector.

    Parameters
    ----------
    codes : scipy.sparse matrix (n, p) or SVCodes
        LCC codes (from :func:`lcc_encode`) or super-vector codes (from
        :func:`sv_encode`).
    centers : (n, 2) array_like
        Descriptor centres (x, y) in pixels.
    shape : (h, w)
        Image size the centres refer to.
    grids : list of (rows, cols)
        Pyramid levels, e.g. ``[(1, 1), (3, 3)]`` (10 blocks) or
        ``[(1, 1), (2, 2), (3, 1)]`` (8 blocks; ``(3, 1)`` is three
        horizontal bands).
    pooling : {"auto", "max", "sv"}
        "max": per block, the max over the block's descriptors of each code
        entry (of the dense codes: an entry some descriptor did not select
        counts as 0). "sv": the super-vector weighted average
        ``(1/N) sum_k (1/sqrt(w_k)) sum_{i in k} [s, z_i - b_k]`` with ``w_k``
        the fraction of the block's N descriptors assigned to basis k.
        "auto": "max" for sparse codes, "sv" for SVCodes.
    normalize : {"l2", "none"}
        "l2" scales each block to unit L2 norm (all-zero blocks stay zero).
    output : {"dense", "sparse"}
        Return a dense vector or its non-zero entries.

    Returns
    -------
    x : (n_blocks * D,) ndarray, if ``output="dense"``
        Block-major: block ``b`` (numbered as in :func:`block_ids`) holds
        entries ``b*D .. (b+1)*D - 1``, with ``D = p`` for LCC and
        ``D = p (d + 1)`` for SV (basis-major inside a block: basis k at
        ``k (d+1)``, its s entry first). float32 for float32 codes.
    (indices, values) : (int32 (m,), float (m,)), if ``output="sparse"``
        The non-zero entries of the same vector, indices ascending.

    An empty descriptor set gives the all-zero vector (or empty arrays).

    Raises
    ------
    ValueError
        Bad option names, shapes that disagree, or non-finite centres.
    TypeError
        If ``codes`` is neither a sparse matrix nor SVCodes.

    References
    ----------
    Lazebnik, Schmid and Ponce, "Beyond bags of features", CVPR 2006.
    Lin et al., CVPR 2011; Zhou et al., ECCV 2010 (SV pooling).
    """
    pooling = check_choice("pooling", pooling, _POOLINGS)
    normalize = check_choice("normalize", normalize, _NORMALIZE)
    output = check_choice("output", output, _OUTPUTS)
    grids = check_grids(grids)
    if isinstance(codes, SVCodes):
        kind = "sv"
        n = codes.blocks.shape[0]
    elif sp.issparse(codes):
        kind = "max"
        n = codes.shape[0]
    else:
        raise TypeError(
            f"codes must be a scipy.sparse matrix (LCC codes) or SVCodes, got "
            f"{type(codes).__name__}; build them with lcc_encode or sv_encode."
        )
    if pooling == "auto":
        pooling = kind
    if pooling != kind:
        raise ValueError(
            f"pooling={pooling!r} does not fit {'SVCodes' if kind == 'sv' else 'sparse codes'}; "
            f"use pooling={kind!r} (or 'auto')."
        )
    centers = check_array("centers", centers, ndim=2)
    if centers.shape != (n, 2):
        raise ValueError(
            f"centers must have shape ({n}, 2) to match {n} codes, got {centers.shape}."
        )
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"shape must be (h, w) with positive sides, got {shape!r}.")
    if kind == "max":
        codes = sp.csr_matrix(codes)
        if not np.isfinite(codes.data).all():
            raise ValueError("codes contain NaN or Inf; check the descriptors and codebook.")
        return pool_csr_arrays(codes.indptr, codes.indices, codes.data, codes.shape[1],
                               centers, shape, grids, normalize, output)
    blocks = check_array("codes.blocks", codes.blocks, ndim=2)
    p = check_int("codes.n_bases", codes.n_bases, low=1)
    assign = np.ascontiguousarray(codes.assign, dtype=np.int64)
    if assign.shape != (n,) or (n and (assign.min() < 0 or assign.max() >= p)):
        raise ValueError(f"codes.assign must be ({n},) basis indices in [0, {p}).")
    return pool_sv_arrays(assign, blocks, p, centers, shape, grids, normalize, output)


def _finish(out, dt, normalize, output):
    if normalize == "l2":
        norms = np.sqrt(np.einsum("ij,ij->i", out, out))
        nz = norms > 0
        out[nz] /= norms[nz, None]
    x = out.astype(dt).ravel()
    if output == "dense":
        return x
    nzi = np.flatnonzero(x)
    return nzi.astype(np.int32), x[nzi]


def pool_csr_arrays(indptr, indices, data, p, centers, shape, grids, normalize, output):
    """Unvalidated max pooling of CSR code arrays (the fast path of spm_pool).

    ``indptr`` may start at an offset (rows sliced out of a bigger batch).
    """
    grid_arr = np.asarray(grids, dtype=np.int64).reshape(-1, 2)
    ids, counts = _block_ids(np.ascontiguousarray(centers, dtype=np.float64), shape, grid_arr)
    n_blocks = counts.shape[0]
    dt = np.float32 if data.dtype == np.float32 else np.float64
    out = np.zeros((n_blocks, p), dtype=np.float64)
    seen = np.zeros((n_blocks, p), dtype=np.int64)
    _kernels.max_pool_csr(
        np.asarray(indptr, dtype=np.int64), indices, data, ids, counts, out, seen,
    )
    return _finish(out, dt, normalize, output)


def pool_sv_arrays(assign, blocks, p, centers, shape, grids, normalize, output):
    """Unvalidated super-vector pooling (the fast path of spm_pool)."""
    grid_arr = np.asarray(grids, dtype=np.int64).reshape(-1, 2)
    ids, counts = _block_ids(np.ascontiguousarray(centers, dtype=np.float64), shape, grid_arr)
    n_blocks = counts.shape[0]
    dt = np.float32 if blocks.dtype == np.float32 else np.float64
    e = blocks.shape[1]
    out3 = np.zeros((n_blocks, p, e), dtype=np.float64)
    cnt = np.zeros((n_blocks, p), dtype=np.int64)
    _kernels.sv_pool(assign, blocks, ids, counts, out3, cnt)
    return _finish(out3.reshape(n_blocks, p * e), dt, normalize, output)
