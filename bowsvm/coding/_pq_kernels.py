"""Numba kernels of product quantization: arrays in, arrays out, nothing else.

`bowsvm.coding.pq` validates and prepares the arrays (C-contiguous, the
centroids transposed and scaled for the GEMM form) and splits rows over threads;
decoding is a gather and needs no kernel (`bowsvm.io.pq.decode_codes`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Serial and without fastmath, like the selection kernels of `_kernels`: the
# winner is decided by distances summed in a fixed order, so it is exact.


@njit(cache=True, nogil=True)
def pq_encode_rows(X, C, CT, cnorm, cmax, codes, g):  # pragma: no cover
    """Nearest centroid of every sub-vector of X: GEMM-form pre-selection, exact winner.

    Per row and sub-space ``m`` (dimensions ``m s .. m s + w - 1``, ``w = min(s,
    dim - m s)``), ``g_k = ||c_k||^2 - 2 x . c_k`` is accumulated in float64 for
    all ``K`` centroids at once (rank-1 updates over the ``w`` dimensions: the
    GEMM form, vectorised over centroids). Every centroid whose ``g_k`` lies
    within a rigorous rounding bound of the smallest is a candidate; its squared
    distance ``sum_t (x_t - c_kt)^2`` is recomputed in float64 in a fixed order
    and the smallest wins, the lower index on ties. The result is the argmin of
    those direct distances, whatever the CPU.

    Parameters
    ----------
    X : (n, dim) float32 or float64
    C : (M, K, s) float32
        Centroids (padded entries 0).
    CT : (M, s, K) float64
        ``-2 C`` with the last two axes swapped.
    cnorm : (M, K) float64
        ``||c_k||^2`` per sub-space.
    cmax : (M,) float64
        ``max_k ||c_k||`` per sub-space.
    codes : (n, M) uint8
        Receives the codes.
    g : (K,) float64
        Scratch.
    """
    n, dim = X.shape
    M, K, s = C.shape
    u = 2.0 ** -53
    for i in range(n):
        for m in range(M):
            j0 = m * s
            w = min(s, dim - j0)
            for k in range(K):
                g[k] = cnorm[m, k]
            xx = 0.0
            for t in range(w):
                xt = np.float64(X[i, j0 + t])
                xx += xt * xt
                for k in range(K):
                    g[k] += xt * CT[m, t, k]
            gmin = g[0]
            for k in range(1, K):
                if g[k] < gmin:
                    gmin = g[k]
            # |computed g_k - exact g_k| <= (s + 2) u (||c||^2 + 2 |x.c|) (sums of
            # s + 1 terms, ||c||^2 itself summed); doubled, and twice that as the gap
            cm = cmax[m]
            err = 2.0 * (s + 2) * u * (cm * cm + 2.0 * np.sqrt(xx) * cm + xx)
            lim = gmin + 2.0 * err
            best = 0
            bd = np.inf
            for k in range(K):
                if g[k] <= lim:
                    d = 0.0
                    for t in range(w):
                        diff = np.float64(X[i, j0 + t]) - np.float64(C[m, k, t])
                        d += diff * diff
                    if d < bd:
                        bd = d
                        best = k
            codes[i, m] = best
