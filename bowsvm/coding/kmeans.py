"""K-means on the project's nearest-basis kernel: Lloyd passes over row batches.

The assignment step of K-means is the nearest-basis search of LCC and SV
coding (``knn_bases`` with k = 1: one augmented GEMM per block plus an exact
recomputation of the winner's distance), so it runs at the same fraction of
the machine's GEMM rate; the update step sums each cluster's rows in a serial
numba kernel (float64 accumulators). Rows come either from an array or from a
callable returning an iterator of row batches, so a sample that lives on disk
(Parquet, Arrow batches) never needs to be in memory at once.

Every draw comes from one seeded generator and every step is independent of
the BLAS (the kNN is exact), so two runs with the same seed and data give the
same centres bit for bit, whatever the thread count.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from bowsvm._validation import check_array, check_int, check_real
from bowsvm.coding import _kernels
from bowsvm.coding._encode import _knn

__all__ = ["KMeansResult", "kmeans"]

#: rows per assignment batch when the input is an array
_BATCH_ROWS = 65536

#: the coarse passes on the sample stop below this relative inertia change per
#: pass (a full pass costs n / coarse_size of them; tuned on 200,000 real
#: descriptors, docs/BENCHMARKS.md "Codebook K-means")
COARSE_TOL = 5e-3


@dataclass
class KMeansResult:
    """Result of :func:`kmeans`.

    Attributes
    ----------
    centers : (k, d) float32
    inertia : float
        Sum of squared distances of the rows to their nearest centre, measured
        in the last pass (before its update).
    n_iter : int
        Lloyd passes run over all rows (``history`` also lists the coarse ones).
    converged : bool
        True if the relative inertia change fell below ``tol``.
    history : list of dict
        Per pass (coarse ones first): ``iteration``, ``rows``, ``inertia``,
        ``seconds`` (since the start, initialisation included), ``empty``
        (clusters re-seeded).
    """

    centers: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    history: list = field(default_factory=list)


def _as_batches(X):
    """A callable returning an iterator of float32 row batches."""
    if callable(X):
        return X
    X = check_array("X", X, ndim=2, min_rows=1)
    X = np.ascontiguousarray(X, dtype=np.float32)

    def batches():
        for r0 in range(0, X.shape[0], _BATCH_ROWS):
            yield X[r0:r0 + _BATCH_ROWS]

    return batches


def _init_sample(batches, size, rng):
    """Up to ``size`` rows drawn uniformly without replacement, in row order.

    Each row gets a random key (drawn batch by batch from ``rng``: the keys do
    not depend on where the batches break) and the ``size`` smallest keys are
    kept, so an array and the same rows streamed in any batches give the
    same sample.
    """
    keep, keys = None, None
    for b in batches():
        b = np.ascontiguousarray(check_array("X batch", b, ndim=2), dtype=np.float32)
        if keep is not None and b.shape[1] != keep.shape[1]:
            raise ValueError(f"a batch of X has {b.shape[1]} columns, expected "
                             f"{keep.shape[1]}.")
        k = rng.random(b.shape[0])
        if keep is None:
            keep, keys = b, k
        else:
            keep, keys = np.concatenate([keep, b]), np.concatenate([keys, k])
        if keep.shape[0] > size:
            sel = np.sort(np.argpartition(keys, size - 1)[:size])
            keep, keys = keep[sel], keys[sel]
    if keep is None:
        raise ValueError("X holds no rows; K-means needs at least n_clusters rows.")
    return np.ascontiguousarray(keep), keys


def _kmeans_pp(S, k, rng):
    """k-means++ seeding (D^2 sampling, one candidate per step) on the sample S."""
    n = S.shape[0]
    first = int(rng.integers(n))
    u = rng.random(k)
    idx = np.empty(k, dtype=np.int64)
    _kernels.kmeanspp_indices(S, first, u, idx)
    return np.ascontiguousarray(S[idx], dtype=np.float32)


def kmeans(X, n_clusters, *, init="k-means++", random_state=0, max_iter=30, tol=1e-4,
           init_size=None, coarse_size=None, n_threads=None, verbose=False,
           max_seconds=None, target_inertia=None):
    """K-means clustering by Lloyd passes, assignments on the nearest-basis kernel.

    Parameters
    ----------
    X : (n, d) array_like, or a callable returning an iterator of (m, d) batches
        The rows. A callable is called once per pass (and once for the
        initialisation sample), so the rows can be streamed from disk; every
        call must yield the same rows in the same order.
    n_clusters : int
        k (at most the number of rows).
    init : "k-means++" or (k, d) array_like
        k-means++ seeding on a uniform sample of ``init_size`` rows, or the
        initial centres.
    random_state : int
        Seed of the initialisation sample and the k-means++ draws.
    max_iter : int
        Lloyd passes at most.
    tol : float
        Stop when the inertia improves by less than this fraction in a pass.
    init_size : int, optional
        Rows sampled for k-means++ seeding (default ``max(3 k, 10000)``, at most n).
    coarse_size : int, optional
        Before the passes over all rows, Lloyd passes (to a relative change of
        :data:`COARSE_TOL`, at most 20) run on a uniform sample of this many rows (default
        ``max(40 k, init_size)``, at most n); 0 skips them. The k-means++
        sample is a subset of it, drawn with the same keys.
    n_threads : int, optional
        Threads of the assignment step (see :func:`knn_bases`).
    verbose : bool
        Print one progress line per pass to stderr.
    max_seconds : float, optional
        Stop after the pass during which this much time has passed.
    target_inertia : float, optional
        Stop as soon as a pass measures an inertia at or below this (benchmarks).

    Returns
    -------
    KMeansResult

    Raises
    ------
    ValueError
        Fewer rows than clusters, NaN/Inf rows, rows of different widths, or
        bad parameters.

    Notes
    -----
    A cluster left empty by a pass is re-seeded with the row of that pass
    farthest from its centre (then the next farthest, ...), as scikit-learn's
    ``KMeans`` does. Centres are float32; sums are accumulated in float64.
    """
    n_clusters = check_int("n_clusters", n_clusters, low=1)
    seed = check_int("random_state", random_state, low=0)
    max_iter = check_int("max_iter", max_iter, low=1)
    tol = check_real("tol", tol, low=0.0)
    rng = np.random.default_rng(seed)
    batches = _as_batches(X)
    t0 = time.perf_counter()
    pp_size = max(3 * n_clusters, 10000) if init_size is None else init_size
    pp_size = check_int("init_size", pp_size, low=n_clusters)
    c_size = max(40 * n_clusters, pp_size) if coarse_size is None else coarse_size
    c_size = check_int("coarse_size", c_size, low=0)
    coarse = None
    if isinstance(init, str) or c_size:
        if isinstance(init, str) and init != "k-means++":
            raise ValueError(f"init={init!r} is not valid; pass 'k-means++' or a (k, d) array.")
        S, keys = _init_sample(batches, max(c_size, pp_size if isinstance(init, str) else 0), rng)
        S = check_array("X (sample)", S, ndim=2)
        if S.shape[0] < n_clusters:
            raise ValueError(
                f"n_clusters={n_clusters} exceeds the {S.shape[0]} rows of X; sample more "
                f"rows or use fewer clusters.")
        # (a sample holding every row would only repeat the full passes)
        if c_size and S.shape[0] >= max(c_size, pp_size if isinstance(init, str) else 0):
            coarse = S if c_size >= S.shape[0] else S[np.sort(np.argsort(keys)[:c_size])]
    if isinstance(init, str):
        pp = S if pp_size >= S.shape[0] else S[np.sort(np.argsort(keys)[:pp_size])]
        centers = _kmeans_pp(np.ascontiguousarray(pp, dtype=np.float32), n_clusters, rng)
        del pp
    else:
        centers = np.ascontiguousarray(check_array("init", init, ndim=2), dtype=np.float32)
        if centers.shape[0] != n_clusters:
            raise ValueError(f"init has {centers.shape[0]} rows but n_clusters={n_clusters}; "
                             f"pass one initial centre per cluster.")
    history = []
    state = {"it": 0, "t0": t0}
    if coarse is not None:
        # coarse passes on the uniform sample (in memory), then the full passes
        centers, _, _ = _passes(lambda: iter([coarse]), centers, "sample", 20, max(tol, COARSE_TOL),
                                None, None, n_threads, verbose, history, state)
        del coarse
    centers, inertia, converged = _passes(batches, centers, "all rows", max_iter, tol,
                                          max_seconds, target_inertia, n_threads, verbose,
                                          history, state)
    return KMeansResult(centers, float(inertia), state["full"], converged, history)


def _one_pass(batches, centers, n_threads):
    """Assign every row to its nearest centre; return (new centres, inertia, rows, empty)."""
    k, d = centers.shape
    sums = np.zeros((k, d), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    inertia = 0.0
    far_rows, far_d = [], []
    n_seen = 0
    for b in batches():
        b = check_array("X batch", b, ndim=2)
        if b.shape[1] != d:
            raise ValueError(f"a batch of X has {b.shape[1]} columns, expected {d}.")
        b = np.ascontiguousarray(b, dtype=np.float32)
        idx, dist = _knn(b, centers, 1, None, n_threads)
        _kernels.accumulate_rows(b, idx[:, 0], sums, counts)
        inertia += float(dist[:, 0].sum(dtype=np.float64))
        n_seen += b.shape[0]
        # the batch's farthest rows, kept for re-seeding empty clusters
        m = min(k, 256, b.shape[0])
        top = np.argpartition(-dist[:, 0], m - 1)[:m]
        far_rows.append(b[top])
        far_d.append(dist[top, 0])
    empty = np.flatnonzero(counts == 0)
    new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None],
                   centers).astype(np.float32)
    if empty.size:
        rows, dd = np.concatenate(far_rows), np.concatenate(far_d)
        order = np.lexsort((np.arange(dd.shape[0]), -dd))[:empty.size]
        new[empty[:order.size]] = rows[order]
    return np.ascontiguousarray(new), inertia, n_seen, int(empty.size)


def _passes(batches, centers, what, max_iter, tol, max_seconds, target_inertia, n_threads,
            verbose, history, state):
    """Lloyd passes until ``tol``, a target inertia, a time limit or ``max_iter``."""
    prev = inertia = np.inf
    converged = False
    state["full"] = 0
    for it in range(1, max_iter + 1):
        centers, inertia, n_seen, n_empty = _one_pass(batches, centers, n_threads)
        state["it"] += 1
        state["full"] = it
        elapsed = time.perf_counter() - state["t0"]
        history.append({"iteration": state["it"], "rows": n_seen, "inertia": inertia,
                        "seconds": round(elapsed, 3), "empty": n_empty})
        if verbose:
            change = "" if not np.isfinite(prev) else f" ({(inertia - prev) / prev:+.2%})"
            print(f"[kmeans] pass {it} on {what} ({n_seen} rows, {centers.shape[0]} clusters): "
                  f"inertia {inertia:.6g}{change}, {n_empty} empty re-seeded, {elapsed:.1f} s",
                  file=sys.stderr, flush=True)
        if target_inertia is not None and inertia <= target_inertia:
            break
        if np.isfinite(prev) and prev - inertia <= tol * prev and not n_empty:
            converged = True
            break
        if max_seconds is not None and elapsed >= max_seconds:
            break
        prev = inertia
    return centers, inertia, converged
