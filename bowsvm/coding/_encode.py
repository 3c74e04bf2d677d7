"""Nearest-basis search, LCC codes and super-vector codes (validated public API)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from bowsvm._validation import check_array, check_choice, check_int, check_real
from bowsvm.coding import _kernels

__all__ = ["SVCodes", "knn_bases", "lcc_encode", "sv_encode", "svc_encode"]

#: working precision of the nearest-basis search ("auto": float32 unless an
#: input is float64)
_DTYPES = {"auto": None, "float32": np.float32, "float64": np.float64}

#: default LCC regulariser: C += beta * trace(C) * I. 1e-4 is the value of the
#: reference LLC code of Wang et al. (2010), LLC_coding_appr.m.
DEFAULT_BETA = 1e-4

#: default super-vector constant s. Descriptors are L2-normalised (norm 1);
#: the residuals z - b_k of a 512-1024 word codebook have norm ~0.3-0.6, so s
#: = 0.1 weights the "count" entry below a typical residual coordinate block
#: norm while keeping it visible to the SVM (tuned on Fashion-MNIST, see
#: docs/BENCHMARKS.md).
DEFAULT_S = 0.1


def _check_pair(Z, B, dtype):
    Z = check_array("Z", Z, ndim=2)
    B = check_array("B", B, ndim=2, min_rows=1)
    if Z.shape[1] != B.shape[1]:
        raise ValueError(
            f"Z has descriptors of dimension {Z.shape[1]} but the codebook B has "
            f"bases of dimension {B.shape[1]}; project the descriptors with the "
            f"codebook's PCA (Codebook.project) or use the matching codebook."
        )
    target = check_choice("dtype", dtype, _DTYPES)
    if target is None:
        target = np.result_type(Z.dtype, B.dtype)
    Z = np.ascontiguousarray(Z, dtype=target)
    B = np.ascontiguousarray(B, dtype=target)
    return Z, B


def _default_block(p: int) -> int:
    # one block of dot products (block x p) holds about 2^24 entries (64 MB in
    # float32): OpenBLAS needs tall blocks to run near its full-GEMM rate
    # (measured, p = 8192: 256 rows 55% of one big GEMM, 4096 rows 90%)
    return int(min(8192, max(256, (1 << 24) // max(p, 1))))


#: a call splits its descriptors over threads only when each thread gets at
#: least this many (below it the thread start-up is not worth it)
_MIN_ROWS_PER_THREAD = 1024

_controller = None

# One BLAS thread limit for all concurrent callers: the first call entering sets
# it, the last one leaving restores the original (nested threadpoolctl limits
# from several threads would otherwise restore each other's values).
_limit_lock = threading.Lock()
_limit_users = 0
_limit = None


def _blas_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


def _blas_threads() -> int:
    """Threads the BLAS library would use for one GEMM right now."""
    libs = _blas_controller().select(user_api="blas").lib_controllers
    return max((lib.num_threads for lib in libs), default=1)


@contextmanager
def _single_threaded_blas():
    global _limit_users, _limit
    with _limit_lock:
        if _limit_users == 0:
            _limit = _blas_controller().limit(limits=1, user_api="blas")
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                _limit.restore_original_limits()
                _limit = None


def _run_rows(n, n_threads, work):
    """Call ``work(r0, r1)`` on contiguous row ranges covering ``[0, n)``.

    With more than one thread, each range runs on its own Python thread with
    the BLAS library held to one thread (the GEMMs and numba kernels release
    the GIL). Measured at p = 8192 on 2 cores: 83-85% of one 2-thread GEMM's
    rate, against 63-65% for one thread of top-k scans behind 2-thread GEMMs.
    Every row is computed exactly as on one thread, so results do not depend
    on the thread count; each thread has its own GEMM block buffer.
    """
    if n_threads is None:
        n_threads = _blas_threads()
    t = min(n_threads, n // _MIN_ROWS_PER_THREAD)
    if t <= 1:
        work(0, n)
        return
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, n, t + 1).astype(np.int64)
    with _single_threaded_blas():
        with ThreadPoolExecutor(max_workers=t, thread_name_prefix="bowsvm-coding") as pool:
            futures = [
                pool.submit(work, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])
            ]
            for future in futures:
                future.result()


def _check_threads(n_threads):
    return None if n_threads is None else check_int("n_threads", n_threads, low=1)


class _Bases(NamedTuple):
    """Bases ready for the nearest-basis search (computed once per call)."""

    B: np.ndarray          # (p, d)
    Ba: np.ndarray         # (p, d + 1): [-2 B, ||b||^2]
    bnorm_max: float       # max ||b||
    nb2_max: float         # max of the stored ||b||^2 column
    unit: float            # unit roundoff of the working dtype


def _prepared_bases(B) -> _Bases:
    """``[-2 B, ||b||^2]``: one GEMM with ``[z, 1]`` gives ``||b||^2 - 2 z.b``."""
    p, d = B.shape
    Ba = np.empty((p, d + 1), dtype=B.dtype)
    np.multiply(B, -2, out=Ba[:, :d])
    Ba[:, d] = np.einsum("ij,ij->i", B, B)
    nb2 = float(Ba[:, d].max()) if p else 0.0
    bnorm = float(np.sqrt(np.einsum("ij,ij->i", B, B, dtype=np.float64).max())) if p else 0.0
    return _Bases(B, Ba, bnorm, nb2, float(np.finfo(B.dtype).eps) / 2)


def _knn_rows(Z, bases: _Bases, k, block, idx, val):
    """Fill ``idx``/``val`` (rows of Z) with the k nearest bases and their exact distances.

    Per block of ``block`` descriptors, one GEMM pre-selects and a numba kernel
    recomputes the candidates' distances in float64 (``_kernels.knn_exact_rows``),
    so the result does not depend on the block, the BLAS or the thread count.
    """
    n, d = Z.shape
    p = bases.Ba.shape[0]
    if block is None:
        block = _default_block(p)
    rows = min(block, max(n, 1))
    Za = np.empty((rows, d + 1), dtype=Z.dtype)
    Za[:, d] = 1
    G = np.empty((rows, p), dtype=Z.dtype)
    cand = np.empty(p, dtype=np.int64)
    BaT = bases.Ba.T
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        m = r1 - r0
        Za[:m, :d] = Z[r0:r1]
        np.matmul(Za[:m], BaT, out=G[:m])
        _kernels.knn_exact_rows(G[:m], Z[r0:r1], bases.B, bases.bnorm_max, bases.nb2_max,
                                bases.unit, k, idx[r0:r1], val[r0:r1], cand)


def _knn(Z, B, k, block, n_threads=None):
    """Unvalidated core of knn_bases; Z and B share one float dtype.

    One GEMM per block of descriptors gives ``||b||^2 - 2 z.b`` directly: the
    descriptors get a column of ones and the bases become ``[-2 B, ||b||^2]``
    (d + 1 columns cost the same GEMM time as d); the kernel then keeps the
    candidates within the GEMM's rounding bound of the k-th and ranks them by
    distances recomputed exactly.
    """
    n = Z.shape[0]
    bases = _prepared_bases(B)
    idx = np.empty((n, k), dtype=np.int64)
    val = np.empty((n, k), dtype=Z.dtype)

    def work(r0, r1):
        _knn_rows(Z[r0:r1], bases, k, block, idx[r0:r1], val[r0:r1])

    _run_rows(n, n_threads, work)
    return idx, val


def knn_bases(Z, B, k, *, block=None, dtype="auto", n_threads=None):
    """The ``k`` nearest bases of each descriptor (squared Euclidean distance).

    Uses the GEMM identity ``||z - b||^2 = ||z||^2 - 2 z.b + ||b||^2``: the
    descriptors are processed in blocks of ``block`` rows; for each block one
    matrix product (of ``[z, 1]`` with ``[-2 b, ||b||^2]``) gives
    ``||b||^2 - 2 z.b`` for all bases, then a numba kernel keeps the ``k``
    smallest per row (a bounded insertion sort: one comparison per basis for
    all but a few; measured 3x cheaper than ``np.argpartition``), widened by a
    rigorous bound on the GEMM's rounding error, and ranks those candidates by
    their distances recomputed in float64 (``||z - b||^2``, fixed order).
    The GEMM only pre-selects: indices and distances are exact and do not
    depend on the BLAS, the block size, the thread count or the CPU.

    Parameters
    ----------
    Z : (n, d) array_like
        Descriptors.
    B : (p, d) array_like
        Bases (codebook).
    k : int
        Number of neighbours, ``1 <= k <= p``.
    block : int, optional
        Descriptors per GEMM block. Default keeps the ``block x p`` product
        near 2^24 entries (between 256 and 8192 rows).
    dtype : {"auto", "float32", "float64"}
        Working precision. "auto" computes in float32 when both inputs are
        float32 and in float64 otherwise.
    n_threads : int, optional
        Threads to split the descriptors over (each runs its own single-
        threaded GEMMs). Default: the BLAS library's current thread count
        (set it with ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` or
        threadpoolctl). While a call runs on several threads it holds the
        BLAS library to one thread per call. Results do not depend on it.

    Returns
    -------
    indices : (n, k) int64
        Basis indices, nearest first; ties keep the lower index first.
    sqdist : (n, k) float32 or float64
        Squared distances ``||z - b||^2`` computed in float64 and rounded to
        the working dtype (so a descriptor equal to a basis gets exactly 0).

    Raises
    ------
    ValueError
        If the dimensions of Z and B differ, ``k`` is out of range, or an
        input holds NaN or Inf.
    TypeError
        If an input is not numeric or ``k`` is not an integer.

    Notes
    -----
    The ranking is that of the float64 distances of the (float32 or float64)
    inputs; ``dtype="float64"`` only changes the GEMM's precision (and the
    dtype of the returned distances), not the neighbours found.
    """
    Z, B = _check_pair(Z, B, dtype)
    k = _check_k(k, B.shape[0])
    if block is not None:
        block = check_int("block", block, low=1)
    return _knn(Z, B, k, block, _check_threads(n_threads))


def _check_k(k, p):
    k = check_int("k", k, low=1)
    if k > p:
        raise ValueError(
            f"k={k} exceeds the number of bases p={p}; pass k <= {p} or use a "
            f"larger codebook."
        )
    return k


def lcc_encode(Z, B, k=20, beta=DEFAULT_BETA, *, block=None, dtype="auto", n_threads=None):
    """Local coordinate coding (LCC) of descriptors over a codebook.

    For each descriptor ``z`` with its ``k`` nearest bases ``B_z`` (k x d),
    solves ``min ||z - B_z^T a||^2  s.t.  sum(a) = 1`` in closed form:
    ``Zs = B_z - z``, ``C = Zs Zs^T``, ``C += beta * trace(C) * I``,
    ``C w = 1`` (Cholesky in float64), ``a = w / sum(w)``; the code is ``a``
    scattered into a p-dimensional sparse row.

    Parameters
    ----------
    Z : (n, d) array_like
        Descriptors (already projected with the codebook's PCA if any).
    B : (p, d) array_like
        Bases.
    k : int, default 20
        Number of nearest bases per descriptor (the paper's kappa).
    beta : float, default 1e-4
        Trace regulariser (the value of Wang et al.'s LLC code). It makes
        ``C`` invertible when ``k > d`` and when bases are nearly collinear.
    block : int, optional
        Descriptors per GEMM block of the nearest-basis search.
    dtype : {"auto", "float32", "float64"}
        Working precision of the nearest-basis search and of the output.
    n_threads : int, optional
        Threads to split the descriptors over (each runs its own single-
        threaded GEMMs and solves). Default: the BLAS library's current thread count
        (set it with ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` or
        threadpoolctl). While a call runs on several threads it holds the
        BLAS library to one thread per call. Results do not depend on it.

    Returns
    -------
    codes : scipy.sparse.csr_matrix, shape (n, p)
        Exactly ``k`` stored entries per row (sorted column indices, int32),
        each row summing to 1; float32 for float32 input, float64 otherwise.

    Raises
    ------
    ValueError
        If the dimensions of Z and B differ, ``k > p`` or ``k < 1``,
        ``beta < 0``, or an input holds NaN or Inf.
    TypeError
        If an input is not numeric.

    Notes
    -----
    If ``trace(C) == 0`` (all k selected bases equal ``z``) the solution is
    not unique; the code is then ``1/k`` on each selected basis.

    References
    ----------
    Lin et al., "Large-scale image classification: fast feature extraction
    and SVM training", CVPR 2011, sec. 2. Wang et al., "Locality-constrained
    linear coding for image classification", CVPR 2010 (approximated LLC).
    Yu, Zhang and Gong, "Nonlinear learning using local coordinate coding",
    NIPS 2009.
    """
    Z, B = _check_pair(Z, B, dtype)
    p = B.shape[0]
    k = _check_k(k, p)
    beta = check_real("beta", beta, low=0.0)
    if block is not None:
        block = check_int("block", block, low=1)
    n_threads = _check_threads(n_threads)
    n = Z.shape[0]
    bases = _prepared_bases(B)
    cols = np.empty((n, k), dtype=np.int32)
    vals = np.empty((n, k), dtype=Z.dtype)

    def work(r0, r1):
        if r1 > r0:
            idx = np.empty((r1 - r0, k), dtype=np.int64)
            dist = np.empty((r1 - r0, k), dtype=Z.dtype)
            _knn_rows(Z[r0:r1], bases, k, block, idx, dist)
            _kernels.lcc_solve(Z[r0:r1], B, idx, beta, cols[r0:r1], vals[r0:r1])

    _run_rows(n, n_threads, work)
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64 if n * k >= 2**31 else np.int32)
    codes = sp.csr_matrix((vals.ravel(), cols.ravel(), indptr), shape=(n, p))
    codes.has_sorted_indices = True
    return codes


class SVCodes(NamedTuple):
    """Super-vector codes of a set of descriptors.

    Descriptor ``i`` has code block ``assign[i]`` equal to ``blocks[i]`` =
    ``[s, z_i - b_{assign[i]}]`` and zeros elsewhere; as a flat vector of
    ``n_bases * (d + 1)`` entries, block ``k`` occupies entries
    ``k*(d+1) .. (k+1)*(d+1) - 1`` (see :meth:`to_csr`).
    """

    assign: np.ndarray  # (n,) int64
    blocks: np.ndarray  # (n, d + 1) float
    n_bases: int

    def to_csr(self):
        """The codes as an (n, n_bases * (d + 1)) CSR matrix (one block per row)."""
        n, e = self.blocks.shape
        cols = (self.assign[:, None] * e + np.arange(e)[None, :]).ravel()
        indptr = np.arange(0, n * e + 1, e)
        return sp.csr_matrix(
            (self.blocks.ravel(), cols, indptr), shape=(n, self.n_bases * e)
        )


def sv_encode(Z, B, s=DEFAULT_S, *, block=None, dtype="auto", n_threads=None):
    """Super-vector (SV) codes: nearest basis and the block ``[s, z - b_k]``.

    Also available as :func:`svc_encode`, its name before issue 14 ("SV coding",
    not a support vector classifier).

    Parameters
    ----------
    Z : (n, d) array_like
        Descriptors (already projected with the codebook's PCA if any).
    B : (p, d) array_like
        Bases.
    s : float, default 0.1
        Constant first entry of each block (balances the zeroth-order "count"
        term against the residual; Zhou et al.'s ``s``).
    block : int, optional
        Descriptors per GEMM block of the nearest-basis search.
    dtype : {"auto", "float32", "float64"}
        Working precision.
    n_threads : int, optional
        Threads to split the descriptors over (each runs its own single-
        threaded GEMMs). Default: the BLAS library's current thread count
        (set it with ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` or
        threadpoolctl). While a call runs on several threads it holds the
        BLAS library to one thread per call. Results do not depend on it.

    Returns
    -------
    SVCodes
        ``assign`` (n,) int64 nearest basis, ``blocks`` (n, d + 1) with
        ``blocks[i] = [s, z_i - b_assign[i]]``, and ``n_bases = p``. The full
        code of descriptor i is a p(d+1) vector, zero outside block
        ``assign[i]`` (block-major: ``SVCodes.to_csr`` builds it).

    Raises
    ------
    ValueError
        If the dimensions of Z and B differ, ``s`` is negative or not finite,
        or an input holds NaN or Inf.

    References
    ----------
    Zhou, Yu, Zhang and Huang, "Image classification using super-vector
    coding of local image descriptors", ECCV 2010. Lin et al., CVPR 2011.
    """
    Z, B = _check_pair(Z, B, dtype)
    s = check_real("s", s, low=0.0)
    if block is not None:
        block = check_int("block", block, low=1)
    idx, _ = _knn(Z, B, 1, block, _check_threads(n_threads))
    assign = idx[:, 0]
    blocks = np.empty((Z.shape[0], Z.shape[1] + 1), dtype=Z.dtype)
    blocks[:, 0] = s
    np.subtract(Z, B[assign], out=blocks[:, 1:])
    return SVCodes(assign, blocks, B.shape[0])


#: The name :func:`sv_encode` had before issue 14, kept so existing code keeps working
#: ("svc" is super-vector coding here, not a support vector classifier).
svc_encode = sv_encode
