"""Product quantization of feature vectors: sub-space K-means, one byte per sub-vector.

A feature vector of ``dim`` values is cut into ``M = ceil(dim / s)`` sub-vectors
of ``s`` dimensions (``s = dims_per_code``, 8 by default); each sub-space gets
its own codebook of ``K <= 256`` centroids, learned by the project's K-means
(:func:`bowsvm.coding.kmeans.kmeans`) on a sample of rows, and a vector is
stored as the ``M`` indices of its nearest centroids (uint8). With s = 8 and
float32 features that is 32 bytes of features in 1 byte of codes. Training
decodes each chunk back to float32 (:func:`pq_decode`, the same function the
feature-shard reader uses).

Padding: when ``s`` does not divide ``dim``, the last sub-space has ``w = dim -
(M - 1) s`` real dimensions. Its K-means runs on those ``w`` columns and its
centroids are stored with ``s - w`` trailing zeros, so the record keeps one
(M, K, s) array; encoding ignores the padding and decoding drops it.

Every draw comes from one seeded generator (one K-means seed per sub-space,
drawn in order from ``default_rng(seed)``), K-means is BLAS-independent and the
encoder decides winners by exactly recomputed distances, so two runs with the
same data and seed give the same bits, whatever the thread count.

References
----------
H. Jegou, M. Douze, C. Schmid, "Product quantization for nearest neighbor
search", IEEE TPAMI 33(1), 2011.
J. Sanchez, F. Perronnin, "High-dimensional signature compression for
large-scale image classification", CVPR 2011 (PQ-compressed Fisher vectors,
decoded on the fly by the SGD trainer).
"""

from __future__ import annotations

import time

import numpy as np

from bowsvm._validation import check_array, check_int
from bowsvm.coding import _pq_kernels
from bowsvm.coding._encode import _blas_threads, _check_threads
from bowsvm.coding.kmeans import kmeans
from bowsvm.io.pq import MAX_CENTROIDS, PQCodebook, decode_codes, make_codebook, n_codes_for

__all__ = ["PQCodebook", "fit_pq", "make_codebook", "pq_decode", "pq_encode"]

#: K-means passes per sub-space by default (sub-spaces of 8 dimensions settle fast)
DEFAULT_MAX_ITER = 20

#: a call splits its rows over threads only when each thread gets this many
_MIN_ROWS_PER_THREAD = 16


def fit_pq(X, dims_per_code=8, n_centroids=256, seed=0, max_iter=DEFAULT_MAX_ITER,
           n_threads=None, progress=None) -> PQCodebook:
    """Learn a product quantizer: K-means in every sub-space of the rows of X.

    Parameters
    ----------
    X : (n, dim) array_like
        Training rows (a sample of the feature set's train split), used as
        float32 (the centroids' precision).
    dims_per_code : int, default 8
        Dimensions per sub-space ``s`` (1 <= s <= dim).
    n_centroids : int, default 256
        Centroids per sub-space ``K`` (1..256: a code is one byte); at most n.
    seed : int, default 0
        Seeds the K-means of every sub-space (one seed each, drawn in order).
    max_iter : int, default 20
        Lloyd passes per sub-space at most.
    n_threads : int, optional
        Threads of each K-means' assignment step.
    progress : callable, optional
        Called as ``progress(m_done, M, seconds)`` after each sub-space.

    Returns
    -------
    PQCodebook
        ``centroids`` (M, K, s) float32, ``dim``, ``dims_per_code``.

    Raises
    ------
    TypeError
        If X is not numeric, or an integer option is not an integer.
    ValueError
        If X is not 2-D, holds NaN/Inf or fewer rows than ``n_centroids``, or an
        option is out of range.

    Notes
    -----
    A sub-space with fewer distinct sub-vectors than K gets duplicate
    centroids (K-means re-seeds empty clusters); codes then use the lower index.
    """
    X = check_array("X", X, ndim=2, min_rows=1)
    n, dim = X.shape
    s = check_int("dims_per_code", dims_per_code, low=1)
    if s > dim:
        raise ValueError(f"dims_per_code={s} exceeds the feature dimension {dim}; pass "
                         f"dims_per_code <= {dim} (e.g. 8).")
    K = check_int("n_centroids", n_centroids, low=1, high=MAX_CENTROIDS)
    seed = check_int("seed", seed, low=0)
    max_iter = check_int("max_iter", max_iter, low=1)
    n_threads = _check_threads(n_threads)
    if n < K:
        raise ValueError(f"X has {n} rows but n_centroids={K}; K-means needs at least "
                         f"n_centroids rows: sample more rows or lower n_centroids.")
    X = np.ascontiguousarray(X, dtype=np.float32)
    M = n_codes_for(dim, s)
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=M)
    C = np.zeros((M, K, s), dtype=np.float32)
    t0 = time.perf_counter()
    for m in range(M):
        j0 = m * s
        w = min(s, dim - j0)
        r = kmeans(np.ascontiguousarray(X[:, j0:j0 + w]), K, random_state=int(seeds[m]),
                   max_iter=max_iter, n_threads=n_threads)
        C[m, :, :w] = r.centers
        if progress is not None:
            progress(m + 1, M, time.perf_counter() - t0)
    return make_codebook(C, dim, s)


def _check_pq(pq) -> PQCodebook:
    if not isinstance(pq, PQCodebook):
        raise TypeError(f"pq must be a PQCodebook (from fit_pq or make_codebook), got "
                        f"{type(pq).__name__}.")
    return pq


def pq_encode(X, pq, n_threads=None) -> np.ndarray:
    """Codes of the rows of X: the nearest centroid of each sub-vector.

    Parameters
    ----------
    X : (n, dim) array_like
        float32 stays float32, other dtypes become float64.
    pq : PQCodebook
    n_threads : int, optional
        Threads to split the rows over (default: the BLAS thread count).

    Returns
    -------
    codes : (n, M) uint8

    Raises
    ------
    TypeError
        If X is not numeric or ``pq`` is not a PQCodebook.
    ValueError
        If X is not 2-D, holds NaN/Inf, or its width is not ``pq.dim``.

    Notes
    -----
    Squared Euclidean distances in the GEMM form ``||c||^2 - 2 x.c`` (float64,
    in the kernel, not the BLAS) pre-select; the candidates within a rigorous
    rounding bound of the smallest are ranked by ``sum_t (x_t - c_t)^2``
    recomputed in float64 in a fixed order; ties keep the lower centroid index.
    """
    pq = _check_pq(pq)
    X = check_array("X", X, ndim=2)
    if X.shape[1] != pq.dim:
        raise ValueError(f"X has {X.shape[1]} columns but the PQ codebook encodes "
                         f"dim={pq.dim}; pass features of the feature set it was fitted on.")
    n_threads = _check_threads(n_threads)
    C = pq.centroids
    C64 = C.astype(np.float64)
    CT = np.ascontiguousarray(np.transpose(-2.0 * C64, (0, 2, 1)))
    cnorm = np.ascontiguousarray(np.einsum("mks,mks->mk", C64, C64))
    cmax = np.sqrt(cnorm.max(axis=1))
    n = X.shape[0]
    codes = np.empty((n, pq.n_codes), dtype=np.uint8)

    def work(r0, r1):
        g = np.empty(pq.n_centroids, dtype=np.float64)
        _pq_kernels.pq_encode_rows(X[r0:r1], C, CT, cnorm, cmax, codes[r0:r1], g)

    t = _blas_threads() if n_threads is None else n_threads
    t = min(t, n // _MIN_ROWS_PER_THREAD)
    if t <= 1:
        work(0, n)
        return codes
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, n, t + 1).astype(np.int64)
    with ThreadPoolExecutor(max_workers=t, thread_name_prefix="bowsvm-pq") as pool:
        for f in [pool.submit(work, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]:
            f.result()
    return codes


def pq_decode(codes, pq, out=None) -> np.ndarray:
    """The float32 vectors that ``codes`` name: each sub-vector its centroid.

    Parameters
    ----------
    codes : (n, M) array_like of integers
        Each in ``[0, pq.n_centroids)``.
    pq : PQCodebook
    out : (n, dim) float32 ndarray, C-contiguous, optional
        Filled and returned.

    Returns
    -------
    X : (n, dim) float32

    Raises
    ------
    TypeError
        If ``codes`` is not an integer array, ``pq`` is not a PQCodebook, or
        ``out`` is not a float32 ndarray.
    ValueError
        If ``codes`` is not 2-D with ``pq.n_codes`` columns, a code is outside
        ``[0, n_centroids)``, or ``out`` has the wrong shape or is not C-contiguous.
    """
    pq = _check_pq(pq)
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise TypeError(f"codes must be an integer array (uint8), got dtype {c.dtype}.")
    if c.ndim != 2 or c.shape[1] != pq.n_codes:
        raise ValueError(f"codes has shape {c.shape}; expected (n, {pq.n_codes}): one code per "
                         f"sub-space of the PQ codebook.")
    if c.size and (c.min() < 0 or c.max() >= pq.n_centroids):
        bad = np.argwhere((c < 0) | (c >= pq.n_centroids))[0]
        raise ValueError(f"codes[{bad[0]}, {bad[1]}] = {int(c[tuple(bad)])} is outside "
                         f"[0, {pq.n_centroids}): the codebook has {pq.n_centroids} centroids "
                         f"per sub-space.")
    c = np.ascontiguousarray(c, dtype=np.uint8)
    n = c.shape[0]
    if out is None:
        out = np.empty((n, pq.dim), dtype=np.float32)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32:
            raise TypeError(f"out must be a float32 ndarray, got "
                            f"{getattr(out, 'dtype', type(out).__name__)}.")
        if out.shape != (n, pq.dim) or not out.flags.c_contiguous:
            raise ValueError(f"out has shape {out.shape} (C-contiguous: "
                             f"{out.flags.c_contiguous}); expected a C-contiguous ({n}, "
                             f"{pq.dim}) array.")
    return decode_codes(c, pq, out)
