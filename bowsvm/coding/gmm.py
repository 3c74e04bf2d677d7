"""Diagonal-covariance Gaussian mixtures for Fisher vector coding (validated public API).

``fit_gmm`` runs EM (seeded, deterministic) on a descriptor sample and returns
a small frozen :class:`GMM` record, float32. The E step's log-densities are
one GEMM per chunk of rows, ``[x^2, x, 1] @ [-1/(2 var); mu/var; const]``, and
the M step's sufficient statistics another, ``resp^T @ [x^2, x, 1]``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from bowsvm._validation import check_array, check_bool, check_choice, check_int, check_real

__all__ = ["GMM", "fit_gmm", "fit_gmm_streamed"]

_INITS = {"kmeans": "kmeans", "random": "random"}

#: rows per E-step chunk: chunk x K log-densities stay near 2^22 float64
#: entries (32 MB), whatever the sample size
_EM_CHUNK_ENTRIES = 1 << 22

# responsibility mass added to every component in the M step (as scikit-learn
# does), so that a component nobody chose keeps a finite log-weight
_NK_EPS = 10 * np.finfo(np.float64).eps


def _readonly32(a):
    a = np.array(a, dtype=np.float32, order="C", copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class GMM:
    """A Gaussian mixture with diagonal covariances (float32, read-only arrays).

    Parameters
    ----------
    weights : (K,) array_like
        Mixing weights, positive, summing to 1 (to 1e-3; they are used as given).
    means : (K, D) array_like
    variances : (K, D) array_like
        Diagonal covariances, positive.
    n_iter : int, default 0
        EM iterations run (0 for a mixture built by hand).
    log_likelihood : float, default nan
        Mean log-likelihood per sample of the fitting sample under these
        parameters.
    converged : bool, default False
        Whether EM stopped on ``tol`` rather than ``max_iter``.

    Raises
    ------
    ValueError
        On shapes that disagree, non-positive variances or weights, weights
        not summing to 1, or NaN/Inf.
    """

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    n_iter: int = 0
    log_likelihood: float = float("nan")
    converged: bool = False

    def __post_init__(self):
        w = check_array("weights", self.weights, ndim=1, min_rows=1)
        mu = check_array("means", self.means, ndim=2, min_rows=1)
        var = check_array("variances", self.variances, ndim=2, min_rows=1)
        K, D = mu.shape
        if D < 1:
            raise ValueError(f"means must have at least one column, got shape {mu.shape}.")
        if w.shape != (K,) or var.shape != (K, D):
            raise ValueError(
                f"weights, means and variances must have shapes (K,), (K, D), (K, D); "
                f"got {w.shape}, {mu.shape}, {var.shape}."
            )
        if not (var > 0).all():
            raise ValueError(
                "variances must be positive; floor them (fit_gmm's var_floor does)."
            )
        if not (w > 0).all() or abs(float(w.sum()) - 1.0) > 1e-3:
            raise ValueError(
                f"weights must be positive and sum to 1, got sum {float(w.sum()):.6g} "
                f"and minimum {float(w.min()):.3g}; divide them by their sum."
            )
        object.__setattr__(self, "weights", _readonly32(w))
        object.__setattr__(self, "means", _readonly32(mu))
        object.__setattr__(self, "variances", _readonly32(var))
        object.__setattr__(self, "n_iter", check_int("n_iter", self.n_iter, low=0))
        object.__setattr__(self, "log_likelihood", float(self.log_likelihood))
        object.__setattr__(self, "converged", bool(self.converged))

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def __repr__(self):
        return (
            f"GMM(K={self.n_components}, D={self.dim}, n_iter={self.n_iter}, "
            f"log_likelihood={self.log_likelihood:.6g}, converged={self.converged})"
        )

    def to_sklearn(self):
        """The same mixture as a fitted ``sklearn.mixture.GaussianMixture`` (diag).

        For interoperability (``skimage.feature.fisher_vector`` takes one);
        the parameters are converted to float64.
        """
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(n_components=self.n_components, covariance_type="diag")
        gm.weights_ = self.weights.astype(np.float64)
        gm.means_ = self.means.astype(np.float64)
        gm.covariances_ = self.variances.astype(np.float64)
        gm.precisions_ = 1.0 / gm.covariances_
        gm.precisions_cholesky_ = 1.0 / np.sqrt(gm.covariances_)
        gm.converged_ = self.converged
        gm.n_iter_ = self.n_iter
        gm.lower_bound_ = self.log_likelihood
        gm.n_features_in_ = self.dim
        return gm


def _log_density_matrix(w, mu, var):
    """``[-1/(2 var); mu/var; const]`` ((2D+1) x K), const_k = log w_k + log N(0-part)."""
    K, D = mu.shape
    W = np.empty((2 * D + 1, K), dtype=np.float64)
    W[:D] = (-0.5 / var).T
    W[D:2 * D] = (mu / var).T
    W[2 * D] = (
        np.log(w)
        - 0.5 * D * np.log(2 * np.pi)
        - 0.5 * np.log(var).sum(axis=1)
        - 0.5 * (mu * mu / var).sum(axis=1)
    )
    return W


def _augment(X, out):
    """``out[:, :D] = X**2, out[:, D:2D] = X, out[:, 2D] = 1``."""
    D = X.shape[1]
    np.multiply(X, X, out=out[:, :D])
    out[:, D:2 * D] = X
    out[:, 2 * D] = 1


def _e_step(X, w, mu, var, with_stats=True):
    """Mean log-likelihood and the statistics ``resp^T [x^2, x, 1]`` (K x (2D+1)).

    Rows are processed in fixed chunks (fixed order), so the result depends
    only on the data, the parameters and the BLAS library's thread count.
    """
    n, D = X.shape
    K = mu.shape[0]
    W = _log_density_matrix(w, mu, var)
    chunk = max(1, min(n, _EM_CHUNK_ENTRIES // max(K, 2 * D + 1)))
    A = np.empty((chunk, 2 * D + 1), dtype=np.float64)
    L = np.empty((chunk, K), dtype=np.float64)
    S = np.zeros((K, 2 * D + 1), dtype=np.float64)
    ll = 0.0
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        m = r1 - r0
        a, lg = A[:m], L[:m]
        _augment(X[r0:r1], a)
        np.matmul(a, W, out=lg)
        mx = lg.max(axis=1, keepdims=True)
        lg -= mx
        np.exp(lg, out=lg)
        s = lg.sum(axis=1, keepdims=True)
        ll += float((mx[:, 0] + np.log(s[:, 0])).sum())
        if with_stats:
            lg /= s
            S += lg.T @ a
    return ll / n, S


def _m_step(S, n, mu, var, floor):
    """Weights, means and variances from the statistics ``S`` of :func:`_e_step` over ``n`` rows.

    A component whose responsibility mass is below ``1e-10 n`` keeps its mean and variance.
    """
    D = mu.shape[1]
    S2, S1, S0 = S[:, :D], S[:, D:2 * D], S[:, 2 * D]
    nk = S0 + _NK_EPS
    w = nk / nk.sum()
    alive = S0 >= 1e-10 * n
    mu_new = S1 / nk[:, None]
    var_new = S2 / nk[:, None] - mu_new * mu_new
    mu = np.where(alive[:, None], mu_new, mu)
    var = np.where(alive[:, None], np.maximum(var_new, floor), var)
    return w, mu, var


def _nearest(X, means):
    """Index of the nearest mean of each row (float64 GEMM identity, ties: lower)."""
    n = X.shape[0]
    sq = (means * means).sum(axis=1)[None, :]
    chunk = max(1, _EM_CHUNK_ENTRIES // means.shape[0])
    labels = np.empty(n, dtype=np.int64)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        labels[r0:r1] = np.argmin(sq - 2.0 * (X[r0:r1] @ means.T), axis=1)
    return labels


def _hard_stats(X, means0):
    """Hard assignment to the nearest initial mean: member counts, sums and sums of squares."""
    K = means0.shape[0]
    n = X.shape[0]
    labels = _nearest(X, means0)
    onehot = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(K, n))
    return (np.bincount(labels, minlength=K).astype(np.float64), np.asarray(onehot @ X),
            np.asarray(onehot @ (X * X)))


def _init_from_stats(counts, sums, sq, means0, dim_var, floor):
    """Weights, member means and variances from :func:`_hard_stats` (summed over batches).

    An empty cluster keeps its initial mean; one of fewer than two members takes
    the sample's per-dimension variance ``dim_var``; variances are floored.
    """
    K, D = means0.shape
    mu = means0.copy()
    var = np.broadcast_to(dim_var, (K, D)).copy()
    has, many = counts > 0, counts > 1
    mu[has] = sums[has] / counts[has, None]
    var[many] = sq[many] / counts[many, None] - mu[many] ** 2
    np.maximum(var, floor, out=var)
    nk = counts + _NK_EPS
    return nk / nk.sum(), mu, var


def fit_gmm(
    X,
    n_components,
    *,
    random_state=0,
    max_iter=100,
    tol=1e-4,
    var_floor=1e-4,
    init="kmeans",
    means_init=None,
    verbose=False,
):
    """Fit a diagonal-covariance Gaussian mixture by EM.

    Parameters
    ----------
    X : (n, D) array_like
        Descriptor sample (e.g. PCA-reduced). Computed in float64 (one
        centred float64 copy of X is made).
    n_components : int
        K, the number of Gaussians (``1 <= K <= n``).
    random_state : int, default 0
        Seed of the initialisation (K-means or the random draw). Two runs with
        the same seed and data give identical bits (same BLAS thread count).
    max_iter : int, default 100
        Maximum EM iterations (each one E step and one M step).
    tol : float, default 1e-4
        Stop when the mean log-likelihood per sample changes by less than
        this between iterations.
    var_floor : float, default 1e-4
        Floor on every variance, relative to the mean variance of X over its
        dimensions (``floor = var_floor * mean(X.var(axis=0))``); keeps
        components from collapsing onto a few points.
    init : {"kmeans", "random"}
        Initial means: scikit-learn ``KMeans(n_init=1, random_state)``
        centres, or K distinct sample rows drawn with
        ``numpy.random.default_rng(random_state)``. Then every sample is
        assigned to its nearest initial mean, and weights, means and
        variances are those of the hard clusters.
    means_init : (K, D) array_like, optional
        Initial means given directly (``init`` is then ignored).
    verbose : bool, default False
        One progress line per EM iteration on stderr (``[gmm] iteration i``:
        the mean log-likelihood per sample before that iteration's M step,
        its change, the time), as :func:`bowsvm.coding.kmeans.kmeans` prints
        one per pass. The result does not depend on it.

    Returns
    -------
    GMM
        float32 weights (K,), means (K, D), variances (K, D); ``n_iter``, the
        mean log-likelihood per sample under the returned parameters and
        ``converged``.

    Raises
    ------
    ValueError
        Bad sizes (``K > n``), options out of range, an unknown ``init``,
        ``means_init`` of the wrong shape, X with NaN/Inf or with zero
        variance in every dimension.
    TypeError
        Non-numeric X or non-integer sizes.

    Notes
    -----
    The data are centred on their mean before EM (the means are shifted
    back), which keeps the GEMM form of the log-densities well conditioned.
    A component whose total responsibility falls below ``1e-10 n`` keeps
    its previous mean and variance (scikit-learn would move it to the
    origin); its weight follows the responsibilities.

    References
    ----------
    Dempster, Laird and Rubin, "Maximum likelihood from incomplete data via
    the EM algorithm", JRSS B 1977. Sanchez et al., "Image classification
    with the Fisher vector: theory and practice", IJCV 2013 (variance floor).
    """
    X = check_array("X", X, ndim=2, min_rows=1)
    n, D = X.shape
    if D < 1:
        raise ValueError(f"X must have at least one column, got shape {X.shape}.")
    K = check_int("n_components", n_components, low=1)
    if K > n:
        raise ValueError(
            f"n_components={K} exceeds the number of samples n={n}; pass a larger "
            f"sample or fewer components."
        )
    random_state = check_int("random_state", random_state, low=0)
    max_iter = check_int("max_iter", max_iter, low=1)
    verbose = check_bool("verbose", verbose)
    tol = check_real("tol", tol, low=0.0)
    var_floor = check_real("var_floor", var_floor, low=0.0, low_open=True)
    init = check_choice("init", init, _INITS)
    if means_init is not None:
        means_init = check_array("means_init", means_init, ndim=2)
        if means_init.shape != (K, D):
            raise ValueError(
                f"means_init must have shape (n_components, D) = ({K}, {D}), got "
                f"{means_init.shape}."
            )
    center = X.mean(axis=0, dtype=np.float64)
    Xc = np.subtract(X, center, dtype=np.float64)  # the one float64 copy
    mean_var = float(Xc.var(axis=0).mean())
    if mean_var <= 0:
        raise ValueError(
            "X has zero variance in every dimension (all samples equal); a mixture "
            "needs a spread sample."
        )
    floor = var_floor * mean_var

    if means_init is not None:
        means0 = np.asarray(means_init, dtype=np.float64) - center
    elif init == "kmeans":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=K, n_init=1, random_state=random_state).fit(Xc)
        means0 = np.asarray(km.cluster_centers_, dtype=np.float64)
    else:
        rng = np.random.default_rng(random_state)
        means0 = Xc[np.sort(rng.choice(n, size=K, replace=False))].copy()
    w, mu, var = _init_from_stats(*_hard_stats(Xc, means0), means0, Xc.var(axis=0), floor)
    return _em(lambda w, mu, var, stats: _e_step(Xc, w, mu, var, stats), n, w, mu, var,
               center, floor, max_iter, tol, verbose, f"{n} x {D} ({K} components)")


def _em(e_step, n, w, mu, var, center, floor, max_iter, tol, verbose, what):
    """EM iterations from ``(w, mu, var)`` (centred); ``e_step(w, mu, var, with_stats)``
    is :func:`_e_step` over all rows. Returns the :class:`GMM`, shifted back by ``center``."""
    prev = -np.inf
    converged = False
    it = 0
    t0 = time.perf_counter()
    for it in range(1, max_iter + 1):
        ll, S = e_step(w, mu, var, True)
        if verbose:
            change = "" if not np.isfinite(prev) else f" ({ll - prev:+.3g})"
            print(f"[gmm] iteration {it} on {what}: mean log-likelihood "
                  f"{ll:.6g}{change}, {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)
        w, mu, var = _m_step(S, n, mu, var, floor)
        if abs(ll - prev) < tol:
            converged = True
            break
        prev = ll
    ll, _ = e_step(w, mu, var, False)
    return GMM(
        weights=w / w.sum(),
        means=mu + center,
        variances=var,
        n_iter=it,
        log_likelihood=ll,
        converged=converged,
    )


def fit_gmm_streamed(batches, means_init, *, max_iter=100, tol=1e-4, var_floor=1e-4,
                     verbose=False):
    """:func:`fit_gmm` over a sample read batch by batch, never held whole (out of core).

    Parameters
    ----------
    batches : callable
        Returns a new iterator of ``(m, D)`` float arrays, the same rows in the same
        order on every call (e.g. the codebook stage's staged sample, PCA'd batch by
        batch). It is called once for the moments, once for the initial hard
        clusters, once per EM iteration and once for the final log-likelihood.
    means_init : (K, D) array_like
        Initial means (e.g. K-means centres of the same rows).
    max_iter, tol, var_floor, verbose
        As for :func:`fit_gmm`.

    Returns
    -------
    GMM
        As :func:`fit_gmm` with ``means_init``. The arithmetic is the same, with the
        E step summed batch by batch, so the result equals :func:`fit_gmm` on the
        rows in memory to rounding. Memory: one batch and its float64 copies, and
        ``K x (2D + 1)`` statistics.

    Raises
    ------
    ValueError
        As :func:`fit_gmm`: fewer rows than components, NaN/Inf rows, a sample
        without variance, options out of range, batches of differing widths.
    """
    means_init = check_array("means_init", means_init, ndim=2)
    K, D = means_init.shape
    max_iter = check_int("max_iter", max_iter, low=1)
    verbose = check_bool("verbose", verbose)
    tol = check_real("tol", tol, low=0.0)
    var_floor = check_real("var_floor", var_floor, low=0.0, low_open=True)

    def each():
        for b in batches():
            b = np.asarray(b)
            if b.ndim != 2 or b.shape[1] != D:
                raise ValueError(f"a batch of shape {b.shape} does not have the means' "
                                 f"{D} columns.")
            if len(b):
                yield b

    n, total, total_sq = 0, np.zeros(D), np.zeros(D)
    for b in each():
        b = check_array("X", b, ndim=2, min_rows=1)
        n += len(b)
        total += b.sum(axis=0, dtype=np.float64)
        total_sq += np.einsum("ij,ij->j", b, b, dtype=np.float64)
    if K > n:
        raise ValueError(f"n_components={K} exceeds the number of samples n={n}; pass a "
                         f"larger sample or fewer components.")
    center = total / n
    dim_var = np.maximum(total_sq / n - center * center, 0.0)
    mean_var = float(dim_var.mean())
    if mean_var <= 0:
        raise ValueError("X has zero variance in every dimension (all samples equal); a "
                         "mixture needs a spread sample.")
    floor = var_floor * mean_var

    def centred():
        for b in each():
            yield np.subtract(b, center, dtype=np.float64)

    means0 = np.asarray(means_init, dtype=np.float64) - center
    counts, sums, sq = np.zeros(K), np.zeros((K, D)), np.zeros((K, D))
    for Xc in centred():
        c_b, s_b, q_b = _hard_stats(Xc, means0)
        counts += c_b
        sums += s_b
        sq += q_b
    w, mu, var = _init_from_stats(counts, sums, sq, means0, dim_var, floor)

    def e_step(w, mu, var, with_stats):
        ll, S = 0.0, np.zeros((K, 2 * D + 1))
        for Xc in centred():
            ll_b, S_b = _e_step(Xc, w, mu, var, with_stats)
            ll += ll_b * len(Xc)
            S += S_b
        return ll / n, S

    return _em(e_step, n, w, mu, var, center, floor, max_iter, tol, verbose,
               f"{n} x {D} ({K} components, streamed)")
