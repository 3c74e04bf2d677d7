"""Tests of the Fisher vector coder: GMM fitting (EM), posteriors, improved FVs."""

import warnings

import numpy as np
import pytest

from bowsvm._validation import check_bool
from bowsvm.coding import (
    GMM,
    fisher_posteriors,
    fisher_vector,
    fisher_vector_dim,
    fisher_vectors,
    fit_gmm,
    spm_pool,
    sv_encode,
)
from naive import naive_fisher_vector, naive_gmm_posteriors

PYRAMID = [(1, 1), (3, 1), (2, 2)]


def _blobs(rng, centers, n_per=150, scale=0.4):
    centers = np.asarray(centers, dtype=np.float64)
    X = np.concatenate([rng.normal(c, scale, (n_per, centers.shape[1])) for c in centers])
    return X.astype(np.float32)


def _gmm(rng, K=5, D=6):
    w = rng.uniform(0.5, 1.5, K)
    return GMM(
        weights=w / w.sum(),
        means=rng.normal(0, 1.5, (K, D)),
        variances=rng.uniform(0.3, 2.0, (K, D)),
    )


def _image(rng, n, D, shape=(40.0, 30.0)):
    Z = rng.normal(0, 1.5, (n, D)).astype(np.float32)
    C = np.column_stack([rng.uniform(0, shape[1], n), rng.uniform(0, shape[0], n)])
    return Z, C, shape


def _naive(Z, C, shape, grids, g, **kw):
    return naive_fisher_vector(Z, C, shape, grids, g.weights, g.means, g.variances, **kw)


def _to_skimage_order(v, K, D):
    """Our one-block [G_mu, G_sigma, G_w] to skimage's [G_w, G_mu, -G_sigma]."""
    KD = K * D
    return np.concatenate([v[2 * KD:], v[:KD], -v[KD:2 * KD]])


# ------------------------------------------------------------------ GMM fit
def test_fit_gmm_is_deterministic_and_seeded(rng):
    X = _blobs(rng, [[-3, 0, 1], [0, 2, -1], [3, -2, 0], [1, 1, 1]], scale=0.8)
    for init in ("kmeans", "random"):
        a = fit_gmm(X, 4, random_state=3, init=init)
        b = fit_gmm(X, 4, random_state=3, init=init)
        for name in ("weights", "means", "variances"):
            assert getattr(a, name).dtype == np.float32
            assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
        assert (a.n_iter, a.log_likelihood, a.converged) == (b.n_iter, b.log_likelihood, b.converged)
    r1 = fit_gmm(X, 4, random_state=1, init="random", max_iter=2)
    r2 = fit_gmm(X, 4, random_state=2, init="random", max_iter=2)
    assert r1.means.tobytes() != r2.means.tobytes()


def test_fit_gmm_record_shapes_and_frozen(rng):
    X = _blobs(rng, [[-2, 0], [2, 0]])
    g = fit_gmm(X, 2)
    assert g.weights.shape == (2,) and g.means.shape == (2, 2) and g.variances.shape == (2, 2)
    assert (g.n_components, g.dim) == (2, 2)
    assert g.converged and 1 <= g.n_iter < 100
    assert np.isclose(g.weights.sum(), 1, atol=1e-6)
    with pytest.raises(AttributeError):
        g.weights = None
    with pytest.raises(ValueError, match="read-only"):
        g.means[0, 0] = 1.0
    assert "K=2, D=2" in repr(g)


def test_fit_gmm_recovers_separated_blobs(rng):
    true = np.array([[-4.0, 0.0, 2.0], [0.0, 4.0, -2.0], [4.0, -4.0, 0.0]])
    X = _blobs(rng, true, n_per=400, scale=0.5)
    g = fit_gmm(X, 3, random_state=0)
    order = np.argsort(g.means[:, 0])
    np.testing.assert_allclose(g.means[order], true, atol=0.1)
    np.testing.assert_allclose(g.variances, 0.25, rtol=0.2)
    np.testing.assert_allclose(g.weights, 1 / 3, atol=1e-3)


@pytest.mark.parametrize("max_iter,tol", [(4, 0.0), (500, 1e-12)])
def test_fit_gmm_matches_sklearn_from_the_same_start(rng, max_iter, tol):
    from sklearn.mixture import GaussianMixture

    true = np.array([[-3.0, 0.0, 1.0, 0.5], [0.0, 3.0, -1.0, 0.0], [3.0, -3.0, 0.0, -0.5]])
    X = _blobs(rng, true, n_per=300, scale=[0.5, 1.0, 0.7, 0.3]).astype(np.float64)
    X[::7] += rng.normal(0, 1.5, X[::7].shape)  # overlap, so EM has work to do
    means0 = true + rng.normal(0, 0.5, true.shape)
    # the same start written out independently: hard clusters of the nearest mean
    labels = np.argmin(((X[:, None, :] - means0[None]) ** 2).sum(-1), axis=1)
    w0 = np.bincount(labels, minlength=3) / len(X)
    mu0 = np.array([X[labels == k].mean(0) for k in range(3)])
    var0 = np.array([X[labels == k].var(0) for k in range(3)])
    sk = GaussianMixture(3, covariance_type="diag", weights_init=w0, means_init=mu0,
                         precisions_init=1 / var0, reg_covar=0.0, tol=tol, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X)
    ours = fit_gmm(X, 3, means_init=means0, max_iter=max_iter, tol=tol, var_floor=1e-12)
    np.testing.assert_allclose(ours.weights, sk.weights_, rtol=1e-5)
    np.testing.assert_allclose(ours.means, sk.means_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.variances, sk.covariances_, rtol=1e-5)
    assert ours.log_likelihood == pytest.approx(sk.score(X), rel=1e-9)
    if max_iter == 4:
        assert ours.n_iter == 4 and not ours.converged
    else:
        assert ours.converged and abs(ours.n_iter - sk.n_iter_) <= 1


def test_fit_gmm_variance_floor_stops_collapse(rng):
    X = np.concatenate([np.tile([[5.0, 5.0]], (40, 1)), rng.normal(0, 1, (200, 2))])
    floor = 1e-3 * X.var(axis=0).mean()
    g = fit_gmm(X, 2, means_init=[[5.0, 5.0], [0.0, 0.0]], var_floor=1e-3)
    assert (g.variances >= np.float32(floor) * (1 - 1e-6)).all()
    np.testing.assert_allclose(g.variances[0], floor, rtol=1e-5)
    assert np.isfinite(g.log_likelihood)


def test_fit_gmm_component_without_members_keeps_its_mean(rng):
    X = rng.normal(0, 1, (300, 3))
    g = fit_gmm(X, 2, means_init=[[0.0, 0.0, 0.0], [1e3, 1e3, 1e3]], max_iter=5)
    np.testing.assert_allclose(g.means[1], 1e3)
    assert 0 < g.weights[1] < 1e-12
    assert np.isfinite(g.log_likelihood)


def test_fit_gmm_one_component_is_the_sample_moments(rng):
    X = rng.normal([1.0, -2.0], [0.5, 2.0], (500, 2))
    g = fit_gmm(X, 1)
    np.testing.assert_allclose(g.means[0], X.mean(0), rtol=1e-6)
    np.testing.assert_allclose(g.variances[0], X.var(0), rtol=1e-5)
    assert g.weights[0] == 1


def test_gmm_to_sklearn_scores_like_our_likelihood(rng):
    X = _blobs(rng, [[-2, 0], [2, 1]])
    g = fit_gmm(X, 2)
    sk = g.to_sklearn()
    assert sk.score(X.astype(np.float64)) == pytest.approx(g.log_likelihood, rel=1e-5)
    np.testing.assert_allclose(sk.predict_proba(X), fisher_posteriors(X, g), atol=1e-5)


# ------------------------------------------------------------------ posteriors
@pytest.mark.parametrize("threshold", [0.0, 1e-4, 0.05])
def test_posteriors_match_naive(rng, threshold):
    g = _gmm(rng, K=6, D=5)
    Z = rng.normal(0, 1.5, (80, 5))
    P = fisher_posteriors(Z, g, threshold=threshold)
    ref = naive_gmm_posteriors(Z, g.weights, g.means, g.variances, threshold)
    assert P.dtype == np.float32 and P.shape == (80, 6)
    np.testing.assert_allclose(P, ref, atol=5e-6)
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-6)
    if threshold:
        assert ((P == 0) == (ref == 0)).all()
        assert (P[P > 0] >= threshold * (1 - 1e-5)).all()


def test_posteriors_threshold_keeps_the_largest(rng):
    g = GMM(np.full(4, 0.25), np.zeros((4, 2)), np.ones((4, 2)))  # all equal: 1/4 each
    P = fisher_posteriors(rng.normal(size=(5, 2)), g, threshold=0.5)
    np.testing.assert_array_equal(P, 0.25)  # ties at the largest are all kept
    g = GMM([0.5, 0.5], [[0.0], [4.0]], [[1.0], [1.0]])
    P = fisher_posteriors([[0.0], [4.0], [2.5]], g, threshold=1.0)  # hard assignment
    np.testing.assert_array_equal(P, [[1, 0], [0, 1], [0, 1]])


def test_posteriors_empty_input(rng):
    g = _gmm(rng)
    P = fisher_posteriors(np.zeros((0, 6)), g)
    assert P.shape == (0, 5) and P.dtype == np.float32


# ------------------------------------------------------------------ Fisher vector vs twin
@pytest.mark.parametrize("weights_gradient", [False, True])
@pytest.mark.parametrize("improved", [True, False])
@pytest.mark.parametrize("grids", [[(1, 1)], [(1, 1), (3, 1)], PYRAMID])
def test_fisher_vector_matches_naive(rng, grids, improved, weights_gradient):
    g = _gmm(rng)
    Z, C, shape = _image(rng, 120, 6)
    v = fisher_vector(Z, C, shape, g, grids, improved=improved,
                      weights_gradient=weights_gradient)
    ref = _naive(Z, C, shape, grids, g, improved=improved, weights_gradient=weights_gradient)
    assert v.dtype == np.float32
    assert v.shape == ref.shape == (fisher_vector_dim(g, grids, weights_gradient=weights_gradient),)
    atol = 5e-6 if improved else 2e-5 * np.abs(ref).max()
    np.testing.assert_allclose(v, ref, atol=atol)
    if improved:
        E = v.size // sum(r * c for r, c in grids)
        norms = np.linalg.norm(v.reshape(-1, E), axis=1)
        np.testing.assert_allclose(norms[norms > 0], 1, atol=1e-6)


def test_fisher_vector_threshold_matches_naive(rng):
    g = _gmm(rng)
    Z, C, shape = _image(rng, 90, 6)
    v = fisher_vector(Z, C, shape, g, PYRAMID, threshold=1e-2, weights_gradient=True)
    ref = _naive(Z, C, shape, PYRAMID, g, threshold=1e-2, weights_gradient=True)
    np.testing.assert_allclose(v, ref, atol=2e-6)


@pytest.mark.parametrize("ratio", [0, 10**18])  # force the sparse kernel / the GEMMs
def test_fisher_vector_sparse_and_gemm_statistics_match_naive(rng, monkeypatch, ratio):
    import bowsvm.coding.fisher as fisher_mod

    monkeypatch.setattr(fisher_mod, "_SPARSE_RATIO", ratio)
    g = _gmm(rng, K=12, D=5)
    Z, C, shape = _image(rng, 150, 5)
    for grids in ([(1, 1)], PYRAMID):
        v = fisher_vector(Z, C, shape, g, grids, threshold=1e-3, weights_gradient=True,
                          improved=False)
        ref = _naive(Z, C, shape, grids, g, threshold=1e-3, weights_gradient=True,
                     improved=False)
        np.testing.assert_allclose(v, ref, atol=2e-5 * np.abs(ref).max())


def test_fisher_vector_sparse_statistics_kernel_is_used_and_agrees(rng, monkeypatch):
    import bowsvm.coding.fisher as fisher_mod
    from bowsvm.coding import _kernels

    X = _blobs(rng, rng.normal(0, 4, (16, 6)), n_per=60, scale=0.5)
    g = fit_gmm(X, 16, max_iter=20)
    Z = X[rng.permutation(len(X))[:400]]
    C = rng.uniform(0, 50, (400, 2))
    calls = []
    real = _kernels.fisher_sparse_stats
    monkeypatch.setattr(_kernels, "fisher_sparse_stats",
                        lambda *a: (calls.append(1), real(*a))[1])
    sparse = fisher_vector(Z, C, (50, 50), g, PYRAMID, threshold=1e-4)
    assert calls  # well-separated components: posteriors sparse enough
    monkeypatch.setattr(fisher_mod, "_SPARSE_RATIO", 10**18)
    dense = fisher_vector(Z, C, (50, 50), g, PYRAMID, threshold=1e-4)
    assert len(calls) == 1
    ref = _naive(Z, C, (50, 50), PYRAMID, g, threshold=1e-4)
    np.testing.assert_allclose(sparse, ref, atol=5e-6)  # float64 sums
    # float32 GEMM statistics: S2 - 2 mu S1 + mu^2 S0 cancels for these
    # tight, distant blobs (see fisher_vector's Notes)
    np.testing.assert_allclose(dense, ref, atol=1e-4)


def test_fisher_vector_fitted_gmm_realistic_sizes(rng):
    X = rng.normal(0, 1, (3000, 8)) * rng.uniform(0.2, 3, 8) + rng.normal(0, 2, 8)
    g = fit_gmm(X, 16, max_iter=30)
    Z = (rng.normal(0, 1, (400, 8)) * rng.uniform(0.2, 3, 8)).astype(np.float32)
    C = rng.uniform(0, 64, (400, 2))
    v = fisher_vector(Z, C, (64, 64), g, [(1, 1), (3, 1)], weights_gradient=True)
    ref = _naive(Z, C, (64, 64), [(1, 1), (3, 1)], g, weights_gradient=True)
    np.testing.assert_allclose(v, ref, atol=1e-5)


def test_fisher_vector_one_descriptor(rng):
    g = _gmm(rng)
    Z, C, shape = _image(rng, 1, 6)
    v = fisher_vector(Z, C, shape, g, PYRAMID, weights_gradient=True)
    ref = _naive(Z, C, shape, PYRAMID, g, weights_gradient=True)
    np.testing.assert_allclose(v, ref, atol=2e-6)
    assert np.count_nonzero(np.linalg.norm(v.reshape(8, -1), axis=1)) == 3  # one cell per level


def test_fisher_vector_empty_blocks_are_zero(rng):
    g = _gmm(rng)
    Z, C, shape = _image(rng, 50, 6)
    C[:, 1] = rng.uniform(0, shape[0] / 3 - 1e-3, 50)  # all in the top band
    v = fisher_vector(Z, C, shape, g, [(1, 1), (3, 1)]).reshape(4, -1)
    assert np.linalg.norm(v[1]) == pytest.approx(1, abs=1e-6)
    assert not v[2].any() and not v[3].any()
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)  # same descriptors


def test_fisher_vector_no_descriptors_is_all_zero(rng):
    g = _gmm(rng)
    v = fisher_vector(np.zeros((0, 6)), np.zeros((0, 2)), (10, 10), g, PYRAMID)
    assert v.dtype == np.float32 and v.shape == (8 * 2 * 5 * 6,) and not v.any()
    idx, val = fisher_vector(np.zeros((0, 6)), np.zeros((0, 2)), (10, 10), g, output="sparse")
    assert idx.size == 0 and val.size == 0


def test_fisher_vector_single_component(rng):
    g = GMM([1.0], rng.normal(size=(1, 4)), rng.uniform(0.5, 2, (1, 4)))
    Z, C, shape = _image(rng, 40, 4)
    v = fisher_vector(Z, C, shape, g, PYRAMID, weights_gradient=True, improved=False)
    ref = _naive(Z, C, shape, PYRAMID, g, weights_gradient=True, improved=False)
    np.testing.assert_allclose(v, ref, rtol=1e-5, atol=1e-6)
    assert not v.reshape(8, -1)[:, -1].any()  # G_w = (N - N w) / ... = 0
    Zd = Z.astype(np.float64)
    u = (Zd - g.means[0]) / np.sqrt(g.variances[0])
    np.testing.assert_allclose(v[:4], u.mean(0), rtol=1e-5)  # 1x1 block: G_mu = mean of u


def test_fisher_vector_component_without_responsibility(rng):
    # far from the data, with the small weight EM gives such a component
    means = np.vstack([rng.normal(0, 1, (3, 4)), np.full((1, 4), 1e3)])
    g = GMM(np.r_[np.full(3, (1 - 1e-4) / 3), 1e-4], means, np.ones((4, 4)))
    Z, C, shape = _image(rng, 30, 4)
    v = fisher_vector(Z, C, shape, g, [(1, 1)], weights_gradient=True, improved=False)
    ref = _naive(Z, C, shape, [(1, 1)], g, weights_gradient=True, improved=False)
    np.testing.assert_allclose(v, ref, rtol=1e-5, atol=1e-6)
    KD = 16
    assert not v[12:16].any() and not v[KD + 12:KD + 16].any()  # far component: zero
    assert v[2 * KD + 3] == pytest.approx(-0.01, rel=1e-5)  # G_w = -w / sqrt(w) = -sqrt(1e-4)


def test_fisher_vector_pyramid_1x1_equals_global(rng):
    g = _gmm(rng)
    Z, C, shape = _image(rng, 200, 6)
    full = fisher_vector(Z, C, shape, g, [(1, 1), (3, 1)])
    glob = fisher_vector(Z, C, shape, g, [(1, 1)])
    np.testing.assert_allclose(full[:glob.size], glob, atol=1e-6)
    band = fisher_vector(Z, C, shape, g, [(3, 1)])
    np.testing.assert_array_equal(full[glob.size:], band)


def test_fisher_vector_blocks_follow_spm_pool_numbering(rng):
    # a descriptor alone in its cell: find its block through spm_pool's layout
    g = _gmm(rng, K=2, D=3)
    Z, C, shape = _image(rng, 1, 3)
    sv = sv_encode(Z, np.zeros((1, 3), np.float32))
    occupied = np.flatnonzero(spm_pool(sv, C, shape, PYRAMID).reshape(8, -1).any(1))
    fv = fisher_vector(Z, C, shape, g, PYRAMID).reshape(8, -1)
    np.testing.assert_array_equal(np.flatnonzero(fv.any(1)), occupied)


def test_fisher_vector_float64_input_is_float32(rng):
    g = _gmm(rng)
    Z, C, shape = _image(rng, 30, 6)
    a = fisher_vector(Z.astype(np.float64), C, shape, g)
    b = fisher_vector(Z, C.astype(np.float32), shape, g)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_fisher_vector_sparse_output(rng):
    g = _gmm(rng)
    Z, C, shape = _image(rng, 20, 6)
    C[:, 1] = 1.0  # top cells only
    dense = fisher_vector(Z, C, shape, g, PYRAMID)
    idx, val = fisher_vector(Z, C, shape, g, PYRAMID, output="sparse")
    assert idx.dtype == np.int32 and val.dtype == np.float32
    np.testing.assert_array_equal(idx, np.flatnonzero(dense))
    np.testing.assert_array_equal(val, dense[idx])


# ------------------------------------------------------------------ vs scikit-image
@pytest.mark.parametrize("improved", [True, False])
def test_fisher_vector_matches_skimage(rng, improved):
    from skimage.feature import fisher_vector as sk_fisher_vector
    from skimage.feature import learn_gmm

    X = rng.normal(0, 1, (2000, 6)) * rng.uniform(0.5, 2, 6)
    g = fit_gmm(X, 8, max_iter=50)
    Z = (rng.normal(0, 1, (300, 6)) * rng.uniform(0.5, 2, 6)).astype(np.float32)
    C = rng.uniform(0, 10, (300, 2))
    ours = fisher_vector(Z, C, (10, 10), g, [(1, 1)], improved=improved, weights_gradient=True)
    theirs = sk_fisher_vector(Z.astype(np.float64), g.to_sklearn(), improved=improved)
    mapped = _to_skimage_order(ours, 8, 6)
    scale = 1.0 if improved else np.abs(theirs).max()
    np.testing.assert_allclose(mapped, theirs, atol=2e-6 * scale)
    # skimage's own learn_gmm needs covariance_type in gm_args (KeyError otherwise)
    sk_gmm = learn_gmm(X, n_modes=2, gm_args={"covariance_type": "diag", "random_state": 0})
    assert sk_gmm.covariances_.shape == (2, 6)


# ------------------------------------------------------------------ many images
def test_fisher_vectors_same_bits_as_fisher_vector(rng):
    g = _gmm(rng)
    images = [_image(rng, n, 6) for n in (150, 1, 0, 37, 300)]
    for kw in ({}, {"weights_gradient": True, "threshold": 1e-4}, {"improved": False}):
        X = fisher_vectors(images, g, PYRAMID, **kw)
        assert X.dtype == np.float32 and X.shape == (5, fisher_vector_dim(g, PYRAMID, weights_gradient=kw.get("weights_gradient", False)))
        for i, (Z, C, s) in enumerate(images):
            assert X[i].tobytes() == fisher_vector(Z, C, s, g, PYRAMID, **kw).tobytes()
    sparse = fisher_vectors(images, g, PYRAMID, output="sparse")
    for i, (idx, val) in enumerate(sparse):
        dense = fisher_vector(*images[i], g, PYRAMID)
        np.testing.assert_array_equal(idx, np.flatnonzero(dense))
        np.testing.assert_array_equal(val, dense[idx])


def test_fisher_vectors_no_images(rng):
    g = _gmm(rng)
    X = fisher_vectors([], g, PYRAMID)
    assert X.shape == (0, 8 * 60) and X.dtype == np.float32
    assert fisher_vectors([], g, output="sparse") == []


# ------------------------------------------------------------------ errors
def test_gmm_record_errors():
    with pytest.raises(ValueError, match="at least one column"):
        GMM([1.0], np.zeros((1, 0)), np.ones((1, 0)))
    with pytest.raises(ValueError, match=r"shapes \(K,\), \(K, D\), \(K, D\)"):
        GMM([0.5, 0.5], np.zeros((2, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="variances must be positive"):
        GMM([1.0], np.zeros((1, 2)), [[1.0, 0.0]])
    with pytest.raises(ValueError, match="sum to 1"):
        GMM([0.5, 0.6], np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="sum to 1"):
        GMM([1.5, -0.5], np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="means must be 2-dimensional"):
        GMM([1.0], np.zeros(2), np.ones((1, 2)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        GMM([1.0], [[np.nan, 0.0]], np.ones((1, 2)))
    with pytest.raises(TypeError, match="n_iter must be an integer"):
        GMM([1.0], np.zeros((1, 2)), np.ones((1, 2)), n_iter=1.5)


def test_fit_gmm_errors(rng):
    X = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="at least one column"):
        fit_gmm(np.zeros((5, 0)), 1)
    with pytest.raises(ValueError, match="at least 1 row"):
        fit_gmm(np.zeros((0, 3)), 1)
    with pytest.raises(ValueError, match="n_components=21 exceeds the number of samples n=20"):
        fit_gmm(X, 21)
    with pytest.raises(ValueError, match="n_components=0 is too small"):
        fit_gmm(X, 0)
    with pytest.raises(TypeError, match="n_components must be an integer"):
        fit_gmm(X, 2.0)
    with pytest.raises(ValueError, match="max_iter=0 is too small"):
        fit_gmm(X, 2, max_iter=0)
    with pytest.raises(ValueError, match="tol=-1.0 is out of range"):
        fit_gmm(X, 2, tol=-1.0)
    with pytest.raises(ValueError, match="var_floor=0.0 is out of range"):
        fit_gmm(X, 2, var_floor=0.0)
    with pytest.raises(ValueError, match="random_state=-1 is too small"):
        fit_gmm(X, 2, random_state=-1)
    with pytest.raises(ValueError, match="init='kmeans\\+\\+' is not a valid option"):
        fit_gmm(X, 2, init="kmeans++")
    with pytest.raises(ValueError, match=r"means_init must have shape \(n_components, D\) = \(2, 3\)"):
        fit_gmm(X, 2, means_init=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="zero variance in every dimension"):
        fit_gmm(np.ones((10, 3)), 2)
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        fit_gmm(np.where(np.eye(20, 3) > 0, np.inf, X), 2)
    with pytest.raises(TypeError, match="X must be a numeric array"):
        fit_gmm(np.array([["a", "b"]]), 1)


def test_fisher_errors(rng):
    g = _gmm(rng)
    Z, C, shape = _image(rng, 10, 6)
    with pytest.raises(TypeError, match="gmm must be a bowsvm.coding.GMM"):
        fisher_vector(Z, C, shape, g.to_sklearn())
    with pytest.raises(TypeError, match="gmm must be a bowsvm.coding.GMM"):
        fisher_posteriors(Z, None)
    with pytest.raises(TypeError, match="gmm must be a bowsvm.coding.GMM"):
        fisher_vector_dim("gmm")
    with pytest.raises(ValueError, match="Z has descriptors of dimension 5 but the GMM has dimension 6"):
        fisher_vector(Z[:, :5], C, shape, g)
    with pytest.raises(ValueError, match="Z has descriptors of dimension 5"):
        fisher_posteriors(Z[:, :5], g)
    with pytest.raises(ValueError, match="Z must be 2-dimensional"):
        fisher_vector(Z[0], C, shape, g)
    with pytest.raises(ValueError, match=r"centers must have shape \(10, 2\) to match 10"):
        fisher_vector(Z, C[:9], shape, g)
    with pytest.raises(ValueError, match="centers contains NaN or Inf"):
        fisher_vector(Z, np.full((10, 2), np.nan), shape, g)
    with pytest.raises(TypeError, match="shape must be \\(h, w\\)"):
        fisher_vector(Z, C, 40, g)
    with pytest.raises(ValueError, match="shape must be \\(h, w\\) with positive sides"):
        fisher_vector(Z, C, (40, 0), g)
    with pytest.raises(ValueError, match="shape must be \\(h, w\\) with positive sides"):
        fisher_vector(Z, C, (40, 30, 3), g)
    with pytest.raises(ValueError, match="threshold=1.5 is out of range"):
        fisher_vector(Z, C, shape, g, threshold=1.5)
    with pytest.raises(ValueError, match="threshold=-0.1 is out of range"):
        fisher_posteriors(Z, g, threshold=-0.1)
    with pytest.raises(TypeError, match="improved must be True or False"):
        fisher_vector(Z, C, shape, g, improved=1)
    with pytest.raises(TypeError, match="weights_gradient must be True or False"):
        fisher_vectors([(Z, C, shape)], g, weights_gradient="yes")
    with pytest.raises(TypeError, match="weights_gradient must be True or False"):
        fisher_vector_dim(g, weights_gradient=None)
    with pytest.raises(ValueError, match="output='csr' is not a valid option"):
        fisher_vector(Z, C, shape, g, output="csr")
    with pytest.raises(ValueError, match="grids is empty"):
        fisher_vector(Z, C, shape, g, grids=[])
    with pytest.raises(TypeError, match="images must be a sequence"):
        fisher_vectors(5, g)
    with pytest.raises(TypeError, match=r"images\[1\] must be a \(Z, centers, shape\) triple"):
        fisher_vectors([(Z, C, shape), Z], g)
    with pytest.raises(ValueError, match=r"images\[1\]: centers must have shape \(10, 2\)"):
        fisher_vectors([(Z, C, shape), (Z, C[:3], shape)], g)
    with pytest.raises(ValueError, match=r"images\[0\]: Z has descriptors of dimension 2"):
        fisher_vectors([(Z[:, :2], C, shape)], g)


def test_descriptor_far_from_the_gmm_is_an_error_not_nan(rng):
    g = _gmm(rng)
    Z, C, shape = _image(rng, 10, 6)
    Z[7, 2] = 1e30
    with pytest.raises(ValueError, match="descriptor 7 lies too far from the GMM"):
        fisher_posteriors(Z, g)
    with pytest.raises(ValueError, match="descriptor 7 lies too far from the GMM"):
        fisher_vector(Z, C, shape, g)
    with pytest.raises(ValueError, match=r"images\[1\]: descriptor 7 lies too far"):
        fisher_vectors([(Z[:5], C[:5], shape), (Z, C, shape)], g)
    Z[7, 2] = 50.0  # far, but representable: a finite, normalised vector
    assert np.isfinite(fisher_vector(Z, C, shape, g)).all()


def test_check_bool():
    assert check_bool("flag", np.bool_(True)) is True
    with pytest.raises(TypeError, match="flag must be True or False, got int 0"):
        check_bool("flag", 0)
