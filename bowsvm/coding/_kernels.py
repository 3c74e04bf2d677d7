"""Numba kernels for coding and pooling: arrays in, arrays out, nothing else.

No validation, logging or configuration here: `bowsvm.coding` checks shapes,
dtypes and options and hands these kernels C-contiguous arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Kernels are serial on purpose: parallelism comes from processes (one Spark
# task per core, see docs/DESIGN.md "keep numba threads x concurrent tasks <=
# cores") or, inside one process, from `bowsvm.coding` running row chunks on
# Python threads (the search and solve kernels release the GIL). Measured
# here with other work running: a prange version of the top-k scan spent
# 2-20x the CPU time of the serial one (threads waiting on each other on an
# oversubscribed machine) and was no faster in wall time.

# fastmath is set in one place. The selection and pooling kernels compare and
# add in a fixed order, so they stay exact; the LCC solve may reassociate the
# dot products (differences at the 1e-12 level of float64 accumulation).
_FASTMATH = {"contract", "arcp", "nsz", "reassoc"}

# rows per chunk (scratch buffers are allocated once per chunk)
_CHUNK = 64


@njit(cache=True, nogil=True)
def knn_exact_rows(D, Z, B, bnorm_max, nb2_max, unit, k, idx_out, val_out, cand):  # pragma: no cover
    """The k nearest bases of each row of Z, exactly, from a GEMM's approximate distances.

    The GEMM values ``D[i, j]`` (``||b_j||^2 - 2 z_i . b_j`` as some BLAS rounded
    them) only pre-select: every basis whose GEMM value lies within a rigorous
    rounding bound of the k-th smallest is a candidate, its squared distance is
    recomputed as ``sum_t (z_t - b_t)^2`` in float64 in a fixed order, and the k
    smallest recomputed distances win (ties: lower basis index first). The
    result therefore depends only on Z and B: not on the BLAS, its block shape,
    its thread count or the CPU.

    Parameters
    ----------
    D : (m, p) float32 or float64
        One GEMM block of ``[z, 1] . [-2 b, ||b||^2]``.
    Z : (m, d) same dtype
        The block's descriptors.
    B : (p, d) same dtype
        Bases.
    bnorm_max, nb2_max : float
        ``max_j ||b_j||`` and ``max_j`` of the stored ``||b_j||^2`` column.
    unit : float
        Unit roundoff of the GEMM's dtype (2^-24 for float32, 2^-53 for float64).
    k : int
    idx_out : (m, k) int64
    val_out : (m, k) same dtype as D
        Receive the indices and the recomputed squared distances, nearest first.
    cand : (p,) int64
        Scratch (candidate indices).

    Notes
    -----
    Bound: any summation order of the (d + 1)-term dot product errs by at most
    ``gamma_{d+1} sum |terms|`` with ``gamma_n = n u / (1 - n u)``, and the
    stored ``||b||^2`` by ``gamma_d ||b||^2`` (Higham, "Accuracy and Stability of
    Numerical Algorithms", 3.1). With ``E = 4 (d + 2) u (2 ||z|| max||b|| +
    2 max||b||^2)`` (twice those bounds, plus the float64 recomputation's own
    error), every one of the true k nearest has a GEMM value at most the k-th
    smallest GEMM value + E, so the candidate set always contains them.
    """
    m, p = D.shape
    d = Z.shape[1]
    kv = np.empty(k, dtype=np.float64)
    ki = np.empty(k, dtype=np.int64)
    cv = np.empty(p, dtype=np.float64)
    ev = np.empty(k, dtype=np.float64)
    ei = np.empty(k, dtype=np.int64)
    for i in range(m):
        row = D[i]
        zn = 0.0
        for t in range(d):
            zt = np.float64(Z[i, t])
            zn += zt * zt
        zn = np.sqrt(zn)
        err = 4.0 * (d + 2) * unit * (2.0 * zn * bnorm_max + 2.0 * nb2_max)
        err += 1e-12 * (zn + bnorm_max) * (zn + bnorm_max)
        # one pass: the k smallest GEMM values (bounded insertion sort), and aside
        # every value that was, or might still end, within err of the k-th smallest
        # (displaced entries and near misses); one compare per basis for most
        for j in range(k):
            _insert_sorted(kv, ki, j, np.float64(row[j]), j)
        lim = kv[k - 1] + err
        c = 0
        for j in range(k, p):
            v = np.float64(row[j])
            if v <= lim:
                if v < kv[k - 1]:
                    cand[c] = ki[k - 1]
                    cv[c] = kv[k - 1]
                    c += 1
                    _insert_sorted(kv, ki, k - 1, v, j)
                    lim = kv[k - 1] + err
                else:
                    cand[c] = j
                    cv[c] = v
                    c += 1
        # recompute the candidates' distances exactly; keep the k smallest,
        # ties by lower index
        n_e = 0
        for a in range(k + c):
            if a < k:
                j = ki[a]
            else:
                if cv[a - k] > lim:
                    continue
                j = cand[a - k]
            s = 0.0
            for t in range(d):
                diff = np.float64(Z[i, t]) - np.float64(B[j, t])
                s += diff * diff
            if n_e < k:
                _insert_lex(ev, ei, n_e, s, j)
                n_e += 1
            elif s < ev[k - 1] or (s == ev[k - 1] and j < ei[k - 1]):
                _insert_lex(ev, ei, k - 1, s, j)
        for a in range(k):
            idx_out[i, a] = ei[a]
            val_out[i, a] = ev[a]


@njit(cache=True, inline="always")
def _insert_lex(vals, idx, t, v, j):  # pragma: no cover - numba
    """Insert (v, j) into ``vals[:t + 1]`` ordered by (value, index), dropping ``vals[t]``."""
    while t > 0 and (vals[t - 1] > v or (vals[t - 1] == v and idx[t - 1] > j)):
        vals[t] = vals[t - 1]
        idx[t] = idx[t - 1]
        t -= 1
    vals[t] = v
    idx[t] = j


@njit(cache=True, inline="always")
def _insert_sorted(vals, idx, t, v, j):  # pragma: no cover - numba
    """Insert (v, j) into the ascending ``vals[:t + 1]``, dropping ``vals[t]``;
    equal values keep the earlier (lower-index) entry first."""
    while t > 0 and vals[t - 1] > v:
        vals[t] = vals[t - 1]
        idx[t] = idx[t - 1]
        t -= 1
    vals[t] = v
    idx[t] = j


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def lcc_solve(Z, B, idx, beta, idx_out, val_out):  # pragma: no cover - numba
    """Closed-form LCC/LLC weights for each descriptor, CSR-ready.

    For descriptor z and its bases B_z = B[idx[i]] (k x d): Zs = B_z - z,
    C = Zs Zs^T, C += beta trace(C) I, solve C w = 1 (Cholesky, float64),
    a = w / sum(w). If trace(C) == 0 (every selected basis equals z) or the
    factorisation meets a non-positive pivot, a = 1/k (documented fallback).

    Parameters
    ----------
    Z : (n, d) float32 or float64
    B : (p, d) same dtype
    idx : (n, k) int64
        Selected basis indices per descriptor.
    beta : float
    idx_out : (n, k) int32
        Receives the indices sorted ascending (CSR column order).
    val_out : (n, k) float32 or float64
        Receives the weights in the same order.
    """
    n, d = Z.shape
    k = idx.shape[1]
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for c in range(n_chunks):
        Zs = np.empty((k, d), dtype=np.float64)
        C = np.empty((k, k), dtype=np.float64)
        w = np.empty(k, dtype=np.float64)
        ord_idx = np.empty(k, dtype=np.int64)
        r0 = c * _CHUNK
        r1 = min(n, r0 + _CHUNK)
        for i in range(r0, r1):
            for a in range(k):
                ba = idx[i, a]
                for t in range(d):
                    Zs[a, t] = np.float64(B[ba, t]) - np.float64(Z[i, t])
            # lower triangle of C = Zs Zs^T; four dot products at a time give
            # four independent accumulator chains (one chain is FMA-latency bound)
            tr = 0.0
            for a in range(k):
                b = 0
                while b + 4 <= a + 1:
                    s0 = 0.0
                    s1 = 0.0
                    s2 = 0.0
                    s3 = 0.0
                    for t in range(d):
                        za = Zs[a, t]
                        s0 += za * Zs[b, t]
                        s1 += za * Zs[b + 1, t]
                        s2 += za * Zs[b + 2, t]
                        s3 += za * Zs[b + 3, t]
                    C[a, b] = s0
                    C[a, b + 1] = s1
                    C[a, b + 2] = s2
                    C[a, b + 3] = s3
                    b += 4
                while b <= a:
                    s = 0.0
                    for t in range(d):
                        s += Zs[a, t] * Zs[b, t]
                    C[a, b] = s
                    b += 1
                tr += C[a, a]
            ok = tr > 0.0
            if ok:
                reg = beta * tr
                for a in range(k):
                    C[a, a] += reg
                # Cholesky, lower triangle in place
                for a in range(k):
                    s = C[a, a]
                    for t in range(a):
                        s -= C[a, t] * C[a, t]
                    if not s > 0.0:
                        ok = False
                        break
                    s = np.sqrt(s)
                    C[a, a] = s
                    for b in range(a + 1, k):
                        u = C[b, a]
                        for t in range(a):
                            u -= C[b, t] * C[a, t]
                        C[b, a] = u / s
            if ok:
                # forward: L y = 1
                for a in range(k):
                    s = 1.0
                    for t in range(a):
                        s -= C[a, t] * w[t]
                    w[a] = s / C[a, a]
                # backward: L^T w = y
                for a in range(k - 1, -1, -1):
                    s = w[a]
                    for t in range(a + 1, k):
                        s -= C[t, a] * w[t]
                    w[a] = s / C[a, a]
                tot = 0.0
                for a in range(k):
                    tot += w[a]
                if not (tot != 0.0 and np.isfinite(tot)):
                    ok = False
                else:
                    for a in range(k):
                        w[a] /= tot
            if not ok:
                for a in range(k):
                    w[a] = 1.0 / k
            # sort (index, weight) pairs by index: insertion sort, k is small
            for a in range(k):
                ord_idx[a] = a
            for a in range(1, k):
                cur = ord_idx[a]
                t = a
                while t > 0 and idx[i, ord_idx[t - 1]] > idx[i, cur]:
                    ord_idx[t] = ord_idx[t - 1]
                    t -= 1
                ord_idx[t] = cur
            for a in range(k):
                idx_out[i, a] = idx[i, ord_idx[a]]
                val_out[i, a] = w[ord_idx[a]]


@njit(cache=True)
def max_pool_csr(indptr, indices, data, block_of, n_in_block, out, seen):  # pragma: no cover
    """Max pooling of sparse codes over pyramid blocks.

    The max runs over the dense codes: a basis that some descriptor of the
    block did not select contributes an implicit 0.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the (n, p) codes
    block_of : (n, L) int64
        Block id of each descriptor at each pyramid level.
    n_in_block : (n_blocks,) int64
        Descriptors per block.
    out : (n_blocks, p) float, zero on entry; receives the pooled codes
    seen : (n_blocks, p) int64, zero on entry (scratch: selections per entry)
    """
    n, L = block_of.shape
    for i in range(n):
        for lev in range(L):
            bl = block_of[i, lev]
            for q in range(indptr[i], indptr[i + 1]):
                j = indices[q]
                v = data[q]
                if seen[bl, j] == 0 or v > out[bl, j]:
                    out[bl, j] = v
                seen[bl, j] += 1
    n_blocks, p = out.shape
    for bl in range(n_blocks):
        nb = n_in_block[bl]
        for j in range(p):
            s = seen[bl, j]
            if s > 0 and s < nb and out[bl, j] < 0:
                out[bl, j] = 0


@njit(cache=True)
def sv_pool(assign, blocks, block_of, n_in_block, out, counts):  # pragma: no cover
    """Super-vector pooling: out[b, k] = sum_{i in b, k} beta_i / sqrt(N_b n_bk).

    This is (1/N_b) sum_k (1/sqrt(w_bk)) sum_{i in k} beta_i with
    w_bk = n_bk / N_b and beta_i = [s, z_i - b_k] (Zhou et al. 2010; Lin et
    al. 2011).

    Parameters
    ----------
    assign : (n,) int64 nearest basis of each descriptor
    blocks : (n, d + 1) the code blocks [s, z_i - b_k]
    block_of : (n, L) int64
    n_in_block : (n_blocks,) int64
    out : (n_blocks, p, d + 1) float64, zero on entry
    counts : (n_blocks, p) int64, zero on entry
    """
    n, L = block_of.shape
    e = blocks.shape[1]
    for i in range(n):
        kk = assign[i]
        for lev in range(L):
            bl = block_of[i, lev]
            counts[bl, kk] += 1
            for t in range(e):
                out[bl, kk, t] += blocks[i, t]
    n_blocks, p = counts.shape
    for bl in range(n_blocks):
        nb = n_in_block[bl]
        for kk in range(p):
            c = counts[bl, kk]
            if c > 0:
                f = 1.0 / np.sqrt(np.float64(nb) * np.float64(c))
                for t in range(e):
                    out[bl, kk, t] *= f


@njit(cache=True)
def block_ids(centers, h, w, rows, cols, ids, counts):  # pragma: no cover - numba
    """Pyramid block of each descriptor at each level (see _pooling.block_ids).

    Parameters
    ----------
    centers : (n, 2) float64 (x, y)
    h, w : float image size
    rows, cols : (L,) int64 grid sizes per level
    ids : (n, L) int64, receives global block ids (levels in order, cells row-major)
    counts : (n_blocks,) int64, zero on entry; receives descriptors per block
    """
    n = centers.shape[0]
    L = rows.shape[0]
    for i in range(n):
        x = centers[i, 0]
        y = centers[i, 1]
        off = 0
        for lev in range(L):
            nr = rows[lev]
            nc = cols[lev]
            r = np.int64(np.floor(y * nr / h))
            c = np.int64(np.floor(x * nc / w))
            r = min(max(r, 0), nr - 1)
            c = min(max(c, 0), nc - 1)
            b = off + r * nc + c
            ids[i, lev] = b
            counts[b] += 1
            off += nr * nc


@njit(cache=True, nogil=True)
def accumulate_rows(X, labels, sums, counts):  # pragma: no cover - numba
    """K-means update sums: ``sums[labels[i]] += X[i]`` (float64), ``counts[labels[i]] += 1``.

    Parameters
    ----------
    X : (n, d) float32 or float64
    labels : (n,) int64 in [0, k)
    sums : (k, d) float64, updated in place
    counts : (k,) int64, updated in place
    """
    n, d = X.shape
    for i in range(n):
        c = labels[i]
        counts[c] += 1
        for t in range(d):
            sums[c, t] += np.float64(X[i, t])


@njit(cache=True, nogil=True)
def kmeanspp_indices(S, first, u, out):  # pragma: no cover - numba
    """k-means++ seeding (D^2 sampling) of ``out.shape[0]`` rows of S.

    Parameters
    ----------
    S : (n, d) float32 or float64
    first : int
        Index of the first centre (drawn by the caller).
    u : (k,) float64 in [0, 1)
        One uniform draw per further centre (``u[0]`` is unused).
    out : (k,) int64
        Receives the chosen row indices.

    Notes
    -----
    Squared distances to the nearest chosen centre are kept in float64 and
    updated by direct differences (no BLAS), so the draw depends only on S and u.
    When every row coincides with a chosen centre, the row ``floor(u n)`` is taken.
    """
    n, d = S.shape
    k = out.shape[0]
    d2 = np.empty(n, dtype=np.float64)
    out[0] = first
    for i in range(n):
        s = 0.0
        for t in range(d):
            diff = np.float64(S[i, t]) - np.float64(S[first, t])
            s += diff * diff
        d2[i] = s
    for c in range(1, k):
        tot = 0.0
        for i in range(n):
            tot += d2[i]
        if tot > 0.0:
            target = u[c] * tot
            acc = 0.0
            j = n - 1
            for i in range(n):
                acc += d2[i]
                if acc > target:
                    j = i
                    break
        else:
            j = min(n - 1, np.int64(u[c] * n))
        out[c] = j
        for i in range(n):
            s = 0.0
            for t in range(d):
                diff = np.float64(S[i, t]) - np.float64(S[j, t])
                s += diff * diff
            if s < d2[i]:
                d2[i] = s


# ---- Fisher vectors ---------------------------------------------------------

@njit(cache=True, nogil=True)
def fisher_sparse_stats(G, A, block_of, S):  # pragma: no cover - numba
    """Fisher statistics from sparse posteriors: S[b, k] += G[i, k] * A[i].

    Parameters
    ----------
    G : (n, K) float32
        Posteriors, mostly exact zeros (thresholded).
    A : (n, e) float32
        ``[x^2, x, 1]`` rows of the same descriptors.
    block_of : (n, L) int64
        Pyramid block of each descriptor at each level (see block_ids).
    S : (n_blocks, K, e) float64, zero on entry
        Receives ``[S2, S1, S0]`` per block and component.

    Notes
    -----
    Rows, components and levels are visited in index order and the sums
    are float64, so the result does not depend on any BLAS library.
    """
    n, K = G.shape
    e = A.shape[1]
    L = block_of.shape[1]
    for i in range(n):
        for k in range(K):
            g = np.float64(G[i, k])
            if g != 0.0:
                for lev in range(L):
                    b = block_of[i, lev]
                    for t in range(e):
                        S[b, k, t] += g * A[i, t]
