"""K-means on the nearest-basis kernel: against a naive Lloyd pass, scikit-learn, and itself."""

import numpy as np
import pytest

from bowsvm.coding.kmeans import kmeans
from naive import naive_kmeanspp, naive_lloyd_pass


def _blobs(rng, n=3000, k=12, d=6):
    centres = rng.normal(0, 4, (k, d))
    X = centres[rng.integers(0, k, n)] + rng.normal(0, 1, (n, d))
    return X.astype(np.float32)


def test_one_pass_matches_the_naive_twin(rng):
    X = _blobs(rng)
    init = X[:12].copy()
    r = kmeans(X, 12, init=init, max_iter=1, coarse_size=0)
    _, ref, inertia = naive_lloyd_pass(X, init)
    assert r.centers.dtype == np.float32 and r.centers.shape == (12, 6)
    np.testing.assert_allclose(r.centers, ref, rtol=1e-5, atol=1e-5)
    assert r.inertia == pytest.approx(inertia, rel=1e-6)
    assert r.n_iter == 1 and r.history[0]["inertia"] == r.inertia


def test_converges_to_scikit_learns_lloyd_from_the_same_start(rng):
    from sklearn.cluster import KMeans

    X = _blobs(rng, n=4000, k=8)
    init = X[rng.choice(len(X), 8, replace=False)]
    r = kmeans(X, 8, init=init, max_iter=100, tol=0)
    sk = KMeans(8, init=init, n_init=1, algorithm="lloyd", tol=0, max_iter=100).fit(X)
    order = np.lexsort(r.centers.T[::-1])
    sk_order = np.lexsort(sk.cluster_centers_.T[::-1])
    np.testing.assert_allclose(r.centers[order], sk.cluster_centers_[sk_order], atol=1e-4)
    assert r.inertia == pytest.approx(sk.inertia_, rel=1e-4)


def test_same_seed_same_bits_any_threads_and_streamed_batches(rng):
    X = _blobs(rng, n=5000)
    a = kmeans(X, 12, random_state=3, max_iter=5, n_threads=1)
    b = kmeans(X, 12, random_state=3, max_iter=5, n_threads=2)
    c = kmeans(lambda: iter([X[:1234], X[1234:4000], X[4000:]]), 12, random_state=3, max_iter=5)
    assert a.centers.tobytes() == b.centers.tobytes() == c.centers.tobytes()
    assert a.inertia == b.inertia == c.inertia
    assert kmeans(X, 12, random_state=4, max_iter=5).centers.tobytes() != a.centers.tobytes()


def test_kmeanspp_kernel_matches_the_naive_twin(rng):
    from bowsvm.coding import _kernels

    S = _blobs(rng, n=700, k=9)
    S[5:10] = S[4]  # duplicate rows: zero distances
    u = rng.random(30)
    out = np.empty(30, dtype=np.int64)
    _kernels.kmeanspp_indices(S, 4, u, out)
    np.testing.assert_array_equal(out, naive_kmeanspp(S, 4, u))
    assert not set(out[1:]) & set(range(4, 10))  # never a row equal to a chosen centre


def test_kmeanspp_beats_a_random_start(rng):
    X = _blobs(rng, n=4000, k=20)
    pp = kmeans(X, 20, max_iter=1)
    rand = kmeans(X, 20, init=X[:20], max_iter=1)
    assert pp.history[0]["inertia"] < rand.history[0]["inertia"]


def test_empty_cluster_is_reseeded_with_the_farthest_row(rng, capsys):
    X = _blobs(rng, n=500, k=3)
    init = np.concatenate([X[:2], np.full((1, X.shape[1]), 1e4, np.float32)])
    r = kmeans(X, 3, init=init, max_iter=1, verbose=True)
    lab, _, _ = naive_lloyd_pass(X, init[:2])
    d2 = ((X.astype(np.float64) - init[:2][lab]) ** 2).sum(1)
    np.testing.assert_array_equal(r.centers[2], X[np.argmax(d2)])
    assert r.history[0]["empty"] == 1
    assert "1 empty re-seeded" in capsys.readouterr().err


def test_coarse_passes_on_a_sample_come_first(rng, capsys):
    X = _blobs(rng, n=30000, k=12)
    r = kmeans(X, 12, coarse_size=3000, init_size=500, max_iter=3, verbose=True)
    rows = [h["rows"] for h in r.history]
    assert rows[0] == 3000 and rows[-1] == 30000 and r.n_iter == rows.count(30000) <= 3
    assert "on sample (3000 rows" in capsys.readouterr().err
    plain = kmeans(X, 12, coarse_size=0, init_size=500, max_iter=3)
    assert [h["rows"] for h in plain.history] == [30000] * plain.n_iter


def test_stops_at_target_inertia(rng):
    X = _blobs(rng)
    full = kmeans(X, 12, max_iter=50, tol=0)
    r = kmeans(X, 12, max_iter=50, target_inertia=1.5 * full.inertia)
    assert r.n_iter < full.n_iter and r.inertia <= 1.5 * full.inertia


@pytest.mark.parametrize("kwargs,err,match", [
    ({"n_clusters": 50}, ValueError, "exceeds the 40 rows"),
    ({"n_clusters": 0}, ValueError, "n_clusters=0 is too small"),
    ({"n_clusters": 3, "init": "random"}, ValueError, "init='random' is not valid"),
    ({"n_clusters": 3, "init": np.zeros((2, 4))}, ValueError, "init has 2 rows"),
    ({"n_clusters": 3, "tol": -1.0}, ValueError, "tol=-1.0 is out of range"),
])
def test_bad_arguments(rng, kwargs, err, match):
    X = rng.normal(size=(40, 4)).astype(np.float32)
    with pytest.raises(err, match=match):
        kmeans(X, **kwargs)


def test_bad_rows(rng):
    X = rng.normal(size=(40, 4)).astype(np.float32)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        kmeans(X, 3)
    good = rng.normal(size=(40, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="has 5 columns, expected 4"):
        kmeans(lambda: iter([good, np.zeros((3, 5), np.float32)]), 3, init=good[:3])
