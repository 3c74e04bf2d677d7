"""Improved Fisher vectors over a spatial pyramid (validated public API).

For the N descriptors x_i of one pooling block and a diagonal GMM (weights
w_k, means mu_k, standard deviations sigma_k, see :mod:`bowsvm.coding.gmm`):

* posteriors gamma_ik: softmax over k of ``log w_k + log N(x_i | mu_k,
  sigma_k)``; the log-densities are one GEMM, ``[x^2, x, 1]`` (N x (2D+1))
  times ``[-1/(2 sigma^2); mu/sigma^2; const_k]`` ((2D+1) x K);
* sufficient statistics by a second GEMM, ``gamma^T [x^2, x, 1]`` = [S2, S1,
  S0] (K x (2D+1)) per block;
* ``G_mu_k = (S1_k - mu_k S0_k) / (N sqrt(w_k) sigma_k)``,
  ``G_sigma_k = (S2_k - 2 mu_k S1_k + (mu_k^2 - sigma_k^2) S0_k) / (N
  sqrt(2 w_k) sigma_k^2)`` and optionally ``G_w_k = (S0_k - N w_k) / (N
  sqrt(w_k))``;
* improved FV: signed square root, then L2, per block.

Layout
------
Block-major as :func:`bowsvm.coding.spm_pool` (blocks numbered by
:func:`bowsvm.coding.block_ids`: levels in the order given, cells row-major).
Inside a block of ``E = 2 K D (+ K)`` entries: G_mu (K x D, component-major:
component k at ``k D``), then G_sigma (K x D), then G_w (K) if
``weights_gradient``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bowsvm._validation import check_array, check_bool, check_choice, check_grids, check_real
from bowsvm.coding import _kernels
from bowsvm.coding._pooling import _block_ids, _finish
from bowsvm.coding.gmm import GMM, _log_density_matrix

__all__ = ["fisher_posteriors", "fisher_vector", "fisher_vector_dim", "fisher_vectors"]

_OUTPUTS = {"dense": "dense", "sparse": "sparse"}

#: a scalar multiply-add in the sparse statistics kernel is taken to cost this
#: many GEMM multiply-adds (the kernel runs when it does less work than that)
_SPARSE_RATIO = 8

#: rows per piece of the statistics GEMM (see _stats_gemm)
_STATS_ROWS = 128


class _Prepared(NamedTuple):
    """A GMM in standardised coordinates, ready for the GEMMs (float32 W)."""

    W: np.ndarray  # (2D+1, K) float32 log-density matrix
    shift: np.ndarray  # (D,) float32 mixture mean
    inv_scale: np.ndarray  # (D,) float32 1 / mixture std
    w: np.ndarray  # (K,) float64
    mu: np.ndarray  # (K, D) float64, standardised
    var: np.ndarray  # (K, D) float64, standardised
    sigma: np.ndarray  # (K, D) float64


def _prepare(gmm: GMM) -> _Prepared:
    """Standardise the mixture: x' = (x - m) / s with the mixture's mean and std.

    The Fisher vector is invariant to a per-dimension affine change of
    coordinates ((x - mu)/sigma and the posteriors do not change), and the
    float32 GEMM of the log-densities loses less to cancellation on centred,
    unit-scale data.
    """
    w = gmm.weights.astype(np.float64)
    mu = gmm.means.astype(np.float64)
    var = gmm.variances.astype(np.float64)
    m = w @ mu
    s = np.sqrt(w @ var + w @ ((mu - m) ** 2))
    mu_s = (mu - m) / s
    var_s = var / (s * s)
    W = np.ascontiguousarray(_log_density_matrix(w, mu_s, var_s), dtype=np.float32)
    return _Prepared(
        W,
        m.astype(np.float32),
        (1.0 / s).astype(np.float32),
        w,
        mu_s,
        var_s,
        np.sqrt(var_s),
    )


def _check_gmm(gmm):
    if not isinstance(gmm, GMM):
        raise TypeError(
            f"gmm must be a bowsvm.coding.GMM, got {type(gmm).__name__}; fit one with "
            f"fit_gmm or build GMM(weights, means, variances)."
        )
    return gmm


def _check_Z(Z, D, name="Z"):
    Z = check_array(name, Z, ndim=2)
    if Z.shape[1] != D:
        raise ValueError(
            f"{name} has descriptors of dimension {Z.shape[1]} but the GMM has dimension "
            f"{D}; project the descriptors with the codebook's PCA or use the matching GMM."
        )
    return np.ascontiguousarray(Z, dtype=np.float32)


def _check_image(Z, centers, shape, D, prefix=""):
    Z = _check_Z(Z, D, f"{prefix}Z")
    centers = check_array(f"{prefix}centers", centers, ndim=2)
    if centers.shape != (Z.shape[0], 2):
        raise ValueError(
            f"{prefix}centers must have shape ({Z.shape[0]}, 2) to match {Z.shape[0]} "
            f"descriptors, got {centers.shape}."
        )
    try:
        shape = tuple(float(v) for v in shape)
    except (TypeError, ValueError):
        raise TypeError(f"{prefix}shape must be (h, w), got {shape!r}.") from None
    if len(shape) != 2 or not min(shape) > 0 or not np.isfinite(shape).all():
        raise ValueError(f"{prefix}shape must be (h, w) with positive sides, got {shape!r}.")
    return Z, np.ascontiguousarray(centers, dtype=np.float64), shape


def _check_threshold(threshold):
    return check_real("threshold", threshold, low=0.0, high=1.0)


def _augmented(Z, prep, out):
    """``out = [x'^2, x', 1]`` with x' = (x - shift) * inv_scale (float32)."""
    D = Z.shape[1]
    xs = out[:, D:2 * D]
    np.subtract(Z, prep.shift, out=xs)
    xs *= prep.inv_scale
    np.multiply(xs, xs, out=out[:, :D])
    out[:, 2 * D] = 1


def _softmax_rows(L, threshold):
    """Posteriors from log-densities, in place (float32).

    The row max is subtracted before exp (the largest entry becomes exactly
    1, so row sums are >= 1). With ``threshold > 0``, posteriors below it
    are set to 0 (entries equal to the row's largest, exactly 1 after the
    shift, are always kept) and the row renormalised.
    """
    mx = L.max(axis=1, keepdims=True)
    if not np.isfinite(mx).all():
        i = int(np.flatnonzero(~np.isfinite(mx[:, 0]))[0])
        raise ValueError(
            f"descriptor {i} lies too far from the GMM: its float32 log-densities "
            f"overflow; check the descriptors' scale (project them with the codebook's "
            f"PCA) or refit the GMM on descriptors like these."
        )
    L -= mx
    np.exp(L, out=L)
    s = L.sum(axis=1, keepdims=True)
    if threshold > 0:
        L[(L < threshold * s) & (L < 1)] = 0
        s = L.sum(axis=1, keepdims=True)
    L *= 1 / s


def _posteriors(Z, prep, threshold):
    n, D = Z.shape
    A = np.empty((n, 2 * D + 1), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
        _augmented(Z, prep, A)
        G = A @ prep.W
    _softmax_rows(G, threshold)
    return A, G


def _stats_gemm(G, A, out):
    """``out += G^T A`` (float64 out) by float32 GEMMs over ``_STATS_ROWS``-row pieces.

    One GEMM with the rows as its long inner dimension (K x n times
    n x (2D+1)) ran 2-3.5x slower than the same product in 128-row pieces
    in this OpenBLAS (single thread, K = 256, n = 667-3000: 3.4-57 ms
    against 1.7-17 ms; docs/BENCHMARKS.md has the floors both ways). The
    pieces depend only on the rows given, and their float64 sum runs in
    piece order.
    """
    n = G.shape[0]
    tmp = np.empty((G.shape[1], A.shape[1]), dtype=np.float32)
    for r0 in range(0, n, _STATS_ROWS):
        r1 = min(n, r0 + _STATS_ROWS)
        np.matmul(G[r0:r1].T, A[r0:r1], out=tmp)
        out += tmp


def _cell_stats(G, A, counts, off, n_cells, S):
    """S[off + c] = G_c^T A_c for each cell c of one level (rows sorted by cell)."""
    bounds = np.concatenate([[0], np.cumsum(counts[off:off + n_cells])])
    for c in range(n_cells):
        a, b = bounds[c], bounds[c + 1]
        if b > a:
            _stats_gemm(G[a:b], A[a:b], S[off + c])


def _image_stats(Z, centers, shape, grid_arr, prep, threshold):
    """Per-block statistics [S2, S1, S0] (n_blocks, K, 2D+1) float64 and block counts.

    Descriptors are sorted by their cell at the first level with more than
    one cell, so that its cells are contiguous row ranges (one GEMM each);
    other multi-cell levels gather their rows; 1x1 levels are the sum of the
    first level's cells (every level partitions the image). Thresholded
    posteriors sparse enough (non-zeros x levels x ``_SPARSE_RATIO`` at
    most the GEMMs' entries) are accumulated by a kernel instead, over the
    non-zeros only (float64 sums, no BLAS).
    """
    n, D = Z.shape
    K = prep.W.shape[1]
    ids, counts = _block_ids(centers, shape, grid_arr)
    cells = grid_arr[:, 0] * grid_arr[:, 1]
    offs = np.concatenate([[0], np.cumsum(cells)[:-1]])
    S = np.zeros((counts.shape[0], K, 2 * D + 1), dtype=np.float64)
    if n == 0:
        return S, counts
    multi = [lev for lev in range(len(cells)) if cells[lev] > 1]
    if multi:
        p = multi[0]
        order = np.argsort(ids[:, p], kind="stable")
        Z = Z[order]
        ids = ids[order]
    A, G = _posteriors(Z, prep, threshold)
    if threshold > 0:
        nnz = int(np.count_nonzero(G))
        if nnz * len(cells) * _SPARSE_RATIO <= G.size * max(1, len(multi)):
            _kernels.fisher_sparse_stats(G, A, ids, S)
            return S, counts
    if not multi:
        _stats_gemm(G, A, S[0])
        for lev in range(1, len(cells)):
            S[offs[lev]] = S[0]
        return S, counts
    _cell_stats(G, A, counts, offs[p], cells[p], S)
    for lev in multi[1:]:
        o = np.argsort(ids[:, lev], kind="stable")
        _cell_stats(G[o], A[o], counts, offs[lev], cells[lev], S)
    for lev in range(len(cells)):
        if cells[lev] == 1:
            S[offs[lev]] = S[offs[p]:offs[p] + cells[p]].sum(axis=0)
    return S, counts


def _gradients(S, counts, prep, weights_gradient):
    """(n_blocks, E) float64 Fisher gradients from the statistics (zeros for empty blocks)."""
    n_blocks, K, e = S.shape
    D = (e - 1) // 2
    KD = K * D
    out = np.zeros((n_blocks, 2 * KD + (K if weights_gradient else 0)), dtype=np.float64)
    nz = counts > 0
    if not nz.any():
        return out
    Sb = S[nz]
    N = counts[nz].astype(np.float64)[:, None, None]
    S2, S1, S0 = Sb[:, :, :D], Sb[:, :, D:2 * D], Sb[:, :, 2 * D:]
    mu, var = prep.mu, prep.var
    sw = np.sqrt(prep.w)[:, None]
    g_mu = (S1 - mu * S0) / (N * sw * prep.sigma)
    g_sig = (S2 - 2 * mu * S1 + (mu * mu - var) * S0) / (N * np.sqrt(2.0) * sw * var)
    rows = np.flatnonzero(nz)
    out[rows, :KD] = g_mu.reshape(-1, KD)
    out[rows, KD:2 * KD] = g_sig.reshape(-1, KD)
    if weights_gradient:
        out[rows, 2 * KD:] = (S0[:, :, 0] - N[:, :, 0] * prep.w) / (N[:, :, 0] * sw[:, 0])
    return out


def _one(Z, centers, shape, grid_arr, prep, threshold, improved, weights_gradient, output):
    S, counts = _image_stats(Z, centers, shape, grid_arr, prep, threshold)
    out = _gradients(S, counts, prep, weights_gradient)
    if improved:
        out = np.sign(out) * np.sqrt(np.abs(out))
        return _finish(out, np.float32, "l2", output)
    return _finish(out, np.float32, "none", output)


def fisher_vector_dim(gmm, grids=((1, 1),), *, weights_gradient=False) -> int:
    """Length of the Fisher vector: blocks x (2 K D (+ K)).

    Raises
    ------
    TypeError
        If ``gmm`` is not a :class:`GMM`.
    ValueError
        If ``grids`` is not a valid pyramid.
    """
    gmm = _check_gmm(gmm)
    grids = check_grids(grids)
    wg = check_bool("weights_gradient", weights_gradient)
    K, D = gmm.n_components, gmm.dim
    return sum(r * c for r, c in grids) * (2 * K * D + (K if wg else 0))


def fisher_posteriors(Z, gmm, *, threshold=0.0):
    """Posterior probabilities of the GMM's components for each descriptor.

    Parameters
    ----------
    Z : (n, D) array_like
        Descriptors (in the GMM's space, e.g. PCA-reduced).
    gmm : GMM
    threshold : float, default 0.0
        Posteriors below it are set to 0 and each row renormalised (1e-4 is
        the usual value for sparsity); entries equal to the row's largest
        are always kept (1 gives hard assignment). 0 keeps all.

    Returns
    -------
    gamma : (n, K) float32
        Rows sum to 1 (to float32 rounding).

    Raises
    ------
    ValueError
        If the dimension of Z differs from the GMM's, ``threshold`` is
        outside [0, 1], Z holds NaN/Inf, or a descriptor lies so far from
        the GMM that its float32 log-densities overflow.
    TypeError
        If ``gmm`` is not a :class:`GMM` or Z is not numeric.

    Notes
    -----
    The log-densities come from one float32 GEMM on descriptors
    standardised by the mixture's mean and standard deviation (the
    posteriors are invariant to that change of coordinates); their
    absolute rounding error is about 1e-7 times the size of the
    ``(x' - mu')^2 / sigma'^2`` terms, so posteriors carry a relative error
    of about that size. For a GMM fitted on the descriptors' distribution
    the mixture mean is the data mean; a mixture whose mean lies far from
    the descriptors (a heavy component far away) loses float32 precision.
    """
    gmm = _check_gmm(gmm)
    Z = _check_Z(Z, gmm.dim)
    threshold = _check_threshold(threshold)
    _, G = _posteriors(Z, _prepare(gmm), threshold)
    return G


def _check_options(grids, improved, weights_gradient, output, threshold):
    grids = check_grids(grids)
    return (
        np.array(grids, dtype=np.int64).reshape(-1, 2),
        check_bool("improved", improved),
        check_bool("weights_gradient", weights_gradient),
        check_choice("output", output, _OUTPUTS),
        _check_threshold(threshold),
    )


def fisher_vector(
    Z,
    centers,
    shape,
    gmm,
    grids=((1, 1),),
    *,
    improved=True,
    weights_gradient=False,
    threshold=0.0,
    output="dense",
):
    """The pyramid-pooled (improved) Fisher vector of one image.

    Parameters
    ----------
    Z : (n, D) array_like
        The image's descriptors (in the GMM's space). float64 input is
        computed in float32.
    centers : (n, 2) array_like
        Descriptor centres (x, y) in pixels.
    shape : (h, w)
        Image size the centres refer to.
    gmm : GMM
    grids : list of (rows, cols), default ((1, 1),)
        Pyramid levels, as for :func:`bowsvm.coding.spm_pool`; e.g.
        ``[(1, 1), (3, 1)]`` (4 blocks).
    improved : bool, default True
        Signed square root then L2 normalisation per block. False returns
        the raw gradients.
    weights_gradient : bool, default False
        Append G_w (K entries) to each block.
    threshold : float, default 0.0
        Posterior threshold (see :func:`fisher_posteriors`).
    output : {"dense", "sparse"}
        The dense vector, or its non-zero entries ``(indices int32, values)``.

    Returns
    -------
    x : (n_blocks * E,) float32
        ``E = 2 K D`` (``+ K`` with ``weights_gradient``); block-major, see
        the module docstring for the order inside a block. An empty block
        gives zeros; no descriptors give the all-zero vector.

    Raises
    ------
    ValueError
        Shapes that disagree, a dimension other than the GMM's, bad
        ``grids``, ``threshold`` or ``output``, NaN/Inf input, or a
        descriptor so far from the GMM that its float32 log-densities
        overflow.
    TypeError
        If ``gmm`` is not a :class:`GMM`, a flag is not a bool or an array
        is not numeric.

    Notes
    -----
    Compared with ``skimage.feature.fisher_vector`` (one block, improved):
    skimage orders the entries ``[G_w, G_mu, G_sigma]`` and its G_sigma has
    the opposite sign (it computes the derivative's negative); its improved
    normalisation is the same (power 0.5, then L2 over the whole vector).
    With a pyramid, each block here is normalised on its own.

    The statistics are float32 GEMMs (float64 sums over the non-zeros when
    thresholded posteriors are sparse); the gradients are formed in float64
    from them. ``S2 - 2 mu S1 + mu^2 S0`` cancels when a component's mean
    lies far from the origin of the standardised coordinates relative to
    its spread: the relative error of G_sigma from the float32 GEMM grows
    like ``(mu^2 + sigma^2) / sigma^2`` (measured: 5e-5 of the largest
    entry for well-separated blobs with spread 1/8 of their distances,
    against 3e-6 for the float64 sparse sums).

    References
    ----------
    Perronnin, Sanchez and Mensink, "Improving the Fisher kernel for
    large-scale image classification", ECCV 2010. Sanchez, Perronnin,
    Mensink and Verbeek, "Image classification with the Fisher vector:
    theory and practice", IJCV 2013. Lazebnik et al., CVPR 2006 (pyramid).
    """
    gmm = _check_gmm(gmm)
    grid_arr, improved, weights_gradient, output, threshold = _check_options(
        grids, improved, weights_gradient, output, threshold
    )
    Z, centers, shape = _check_image(Z, centers, shape, gmm.dim)
    return _one(Z, centers, shape, grid_arr, _prepare(gmm), threshold, improved,
                weights_gradient, output)


def fisher_vectors(
    images,
    gmm,
    grids=((1, 1),),
    *,
    improved=True,
    weights_gradient=False,
    threshold=0.0,
    output="dense",
):
    """Fisher vectors of many images: :func:`fisher_vector` for each, sharing the set-up.

    Parameters
    ----------
    images : sequence of (Z, centers, shape)
        One triple per image, as the first three arguments of
        :func:`fisher_vector`.
    gmm, grids, improved, weights_gradient, threshold, output
        As for :func:`fisher_vector`.

    Returns
    -------
    X : (n_images, n_blocks * E) float32, if ``output="dense"``
    list of (indices, values), if ``output="sparse"``

    Raises
    ------
    ValueError, TypeError
        As :func:`fisher_vector`; a message about one image starts with
        ``images[i]``.

    Notes
    -----
    Every image gets the same bits as from :func:`fisher_vector`: its
    GEMMs are the very calls :func:`fisher_vector` makes (one posterior
    GEMM over the image's own rows, one statistics GEMM per cell, or the
    sparse statistics kernel, chosen from the image's own posteriors), so
    the guarantee holds for any BLAS that repeats a call exactly at the
    same thread count. Stacking several images into one posterior GEMM would
    make an image's rounding depend on its neighbours (a GEMM's rounding
    depends on its blocking), so it is not done; at 1,000-3,000
    descriptors per image the per-image and the stacked posterior GEMM ran
    at the same rate within the shared machine's noise (docs/BENCHMARKS.md).
    For small images (tens of descriptors) the per-image calls cost more. The set-up shared across images is the
    validation of the GMM and options and the standardised log-density
    matrix.
    """
    gmm = _check_gmm(gmm)
    grid_arr, improved, weights_gradient, output, threshold = _check_options(
        grids, improved, weights_gradient, output, threshold
    )
    try:
        images = list(images)
    except TypeError:
        raise TypeError(
            f"images must be a sequence of (Z, centers, shape) triples, got "
            f"{type(images).__name__}."
        ) from None
    checked = []
    for i, item in enumerate(images):
        try:
            Z, centers, shape = item
        except (TypeError, ValueError):
            raise TypeError(
                f"images[{i}] must be a (Z, centers, shape) triple, got "
                f"{type(item).__name__}."
            ) from None
        checked.append(_check_image(Z, centers, shape, gmm.dim, prefix=f"images[{i}]: "))
    prep = _prepare(gmm)
    res = []
    for i, (Z, c, s) in enumerate(checked):
        try:
            res.append(_one(Z, c, s, grid_arr, prep, threshold, improved, weights_gradient,
                            output))
        except ValueError as e:
            raise ValueError(f"images[{i}]: {e}") from None
    if output == "sparse":
        return res
    dim = int((grid_arr[:, 0] * grid_arr[:, 1]).sum()) * (
        2 * gmm.n_components * gmm.dim + (gmm.n_components if weights_gradient else 0)
    )
    if not res:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack(res)
