"""Product-quantized features: the PQ math against its naive twins, the "pq" shard layout,
`bowsvm compress` end to end, and training on a pq set against its decoded twin."""

import numpy as np
import pytest
from naive import naive_pq_decode, naive_pq_encode

from bowsvm.coding.pq import fit_pq, make_codebook, pq_decode, pq_encode
from bowsvm.io.pq import PQCodebook


def _random_codebook(rng, dim, s, K):
    M = -(-dim // s)
    C = rng.normal(size=(M, K, s)).astype(np.float32)
    pad = M * s - dim
    if pad:
        C[-1, :, s - pad:] = 0
    return make_codebook(C, dim, s)


def _structured(rng, n=600, dim=40, k=6):
    """Rows near a few prototypes (plus small noise): what PQ compresses well."""
    protos = rng.normal(size=(k, dim))
    return (protos[rng.integers(0, k, n)] + 0.05 * rng.normal(size=(n, dim))).astype(np.float32)


# ----------------------------------------------------------------- kernels vs naive

@pytest.mark.parametrize("dim,s,K", [(32, 8, 16), (27, 8, 16), (5, 2, 3), (7, 7, 1), (9, 1, 4)])
def test_encode_matches_the_naive_nearest_centroid(rng, dim, s, K):
    pq = _random_codebook(rng, dim, s, K)
    X = rng.normal(size=(57, dim)).astype(np.float32)
    codes = pq_encode(X, pq, n_threads=1)
    assert codes.dtype == np.uint8 and codes.shape == (57, -(-dim // s))
    np.testing.assert_array_equal(codes, naive_pq_encode(X, pq.centroids, dim))


def test_encode_float64_input_and_edge_rows(rng):
    pq = _random_codebook(rng, 20, 4, 8)
    X = rng.normal(size=(30, 20))  # float64 stays float64 inside
    X[0] = 0.0  # a zero vector
    X[1] = np.tile(pq.centroids[:, 3, :].reshape(-1)[:20], 1)  # exactly on centroid 3
    codes = pq_encode(X, pq)
    np.testing.assert_array_equal(codes, naive_pq_encode(X, pq.centroids, 20))
    assert (codes[1] == 3).all()
    assert pq_encode(np.zeros((0, 20), np.float32), pq).shape == (0, 5)


def test_ties_keep_the_lower_index(rng):
    C = rng.normal(size=(3, 6, 4)).astype(np.float32)
    C[:, 4] = C[:, 1]  # duplicate centroids: equal distances, exactly
    C[:, 5] = C[:, 1]
    pq = make_codebook(C, 12, 4)
    X = C[:, 1, :].reshape(1, 12) + 1e-3
    X = np.repeat(X, 3, axis=0).astype(np.float32)
    codes = pq_encode(X, pq)
    assert (codes == 1).all()
    np.testing.assert_array_equal(codes, naive_pq_encode(X, C, 12))


def test_decode_matches_the_naive_twin_and_fills_out(rng):
    for dim, s in [(32, 8), (27, 8), (7, 7)]:
        pq = _random_codebook(rng, dim, s, 11)
        codes = rng.integers(0, 11, (45, pq.n_codes)).astype(np.uint8)
        X = pq_decode(codes, pq)
        assert X.dtype == np.float32 and X.shape == (45, dim)
        np.testing.assert_array_equal(X, naive_pq_decode(codes, pq.centroids, dim))
        out = np.empty((45, dim), np.float32)
        assert pq_decode(codes.astype(np.int64), pq, out=out) is out
        np.testing.assert_array_equal(out, X)
    assert pq_decode(np.zeros((0, pq.n_codes), np.uint8), pq).shape == (0, 7)


def test_decode_in_many_gather_blocks(rng, monkeypatch):
    import bowsvm.io.pq as iopq

    monkeypatch.setattr(iopq, "_DECODE_BLOCK_VALUES", 50)  # a few rows per block
    for dim in (24, 21):
        pq = _random_codebook(rng, dim, 8, 5)
        codes = rng.integers(0, 5, (33, 3)).astype(np.uint8)
        np.testing.assert_array_equal(pq_decode(codes, pq), naive_pq_decode(codes, pq.centroids, dim))


# ----------------------------------------------------------------- fitting

def test_fit_shapes_dtypes_and_padding(rng):
    X = _structured(rng, dim=27)
    pq = fit_pq(X, dims_per_code=8, n_centroids=16, seed=1)
    assert isinstance(pq, PQCodebook)
    assert pq.centroids.dtype == np.float32 and pq.centroids.shape == (4, 16, 8)
    assert (pq.dim, pq.dims_per_code, pq.n_codes, pq.n_centroids) == (27, 8, 4, 16)
    assert (pq.centroids[-1, :, 3:] == 0).all()  # 27 = 3 * 8 + 3: five padded entries
    assert not pq.centroids.flags.writeable


def test_round_trip_error_is_small_on_structured_data(rng):
    X = _structured(rng)
    pq = fit_pq(X, dims_per_code=8, n_centroids=32, seed=0)
    Y = pq_decode(pq_encode(X, pq), pq)
    rel = np.linalg.norm(Y - X) ** 2 / np.linalg.norm(X) ** 2
    assert rel < 0.01, rel
    # and much better than quantizing with random rows as centroids
    C = np.stack([X[rng.choice(len(X), 32, replace=False), m * 8:(m + 1) * 8] for m in range(5)])
    crude = make_codebook(C, 40, 8)
    Yc = pq_decode(pq_encode(X, crude), crude)
    assert np.linalg.norm(Y - X) < 0.9 * np.linalg.norm(Yc - X)


def test_fit_is_the_projects_kmeans_per_sub_space(rng):
    from bowsvm.coding.kmeans import kmeans

    X = _structured(rng, n=300, dim=16)
    pq = fit_pq(X, dims_per_code=8, n_centroids=8, seed=5, max_iter=7)
    seeds = np.random.default_rng(5).integers(0, 2**31 - 1, size=2)
    for m in range(2):
        ref = kmeans(X[:, 8 * m:8 * m + 8], 8, random_state=int(seeds[m]), max_iter=7)
        np.testing.assert_array_equal(pq.centroids[m], ref.centers)


def test_same_seed_same_bits_any_thread_count(rng):
    X = _structured(rng, n=400)
    a = fit_pq(X, 8, 16, seed=3, n_threads=1)
    b = fit_pq(X, 8, 16, seed=3, n_threads=2)
    assert a.centroids.tobytes() == b.centroids.tobytes()
    assert fit_pq(X, 8, 16, seed=4).centroids.tobytes() != a.centroids.tobytes()
    Z = rng.normal(size=(300, 40)).astype(np.float32)
    assert pq_encode(Z, a, n_threads=1).tobytes() == pq_encode(Z, a, n_threads=2).tobytes()


def test_progress_is_called_per_sub_space(rng):
    seen = []
    fit_pq(_structured(rng, n=50, dim=12), 4, 4, progress=lambda m, M, s: seen.append((m, M)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


# ----------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs,exc,match", [
    ({"dims_per_code": 0}, ValueError, "dims_per_code=0 is too small"),
    ({"dims_per_code": 41}, ValueError, "dims_per_code=41 exceeds the feature dimension 40"),
    ({"dims_per_code": 2.5}, TypeError, "dims_per_code must be an integer"),
    ({"n_centroids": 257}, ValueError, "n_centroids=257 is too large"),
    ({"n_centroids": 0}, ValueError, "n_centroids=0 is too small"),
    ({"n_centroids": 200}, ValueError, "X has 100 rows but n_centroids=200"),
    ({"seed": -1}, ValueError, "seed=-1 is too small"),
    ({"max_iter": 0}, ValueError, "max_iter=0 is too small"),
    ({"n_threads": 0}, ValueError, "n_threads=0 is too small"),
])
def test_fit_refuses_bad_options(rng, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fit_pq(_structured(rng, n=100), **kwargs)


def test_fit_refuses_bad_input(rng):
    X = _structured(rng, n=100)
    X[3, 4] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        fit_pq(X, 8, 4)
    with pytest.raises(ValueError, match="X must be 2-dimensional"):
        fit_pq(np.zeros(10), 2, 2)
    with pytest.raises(TypeError, match="X must be a numeric array"):
        fit_pq([["a"]], 1, 1)


def test_encode_and_decode_refuse_bad_input(rng):
    pq = _random_codebook(rng, 16, 8, 4)
    with pytest.raises(ValueError, match="X has 15 columns but the PQ codebook encodes dim=16"):
        pq_encode(np.zeros((2, 15)), pq)
    with pytest.raises(TypeError, match="pq must be a PQCodebook"):
        pq_encode(np.zeros((2, 16)), pq.centroids)
    with pytest.raises(ValueError, match=r"codes has shape \(2, 3\); expected \(n, 2\)"):
        pq_decode(np.zeros((2, 3), np.uint8), pq)
    with pytest.raises(ValueError, match=r"codes\[1, 0\] = 4 is outside \[0, 4\)"):
        pq_decode(np.array([[0, 0], [4, 0]], np.uint8), pq)
    with pytest.raises(TypeError, match="codes must be an integer array"):
        pq_decode(np.zeros((2, 2)), pq)
    with pytest.raises(TypeError, match="out must be a float32 ndarray"):
        pq_decode(np.zeros((2, 2), np.uint8), pq, out=np.zeros((2, 16)))
    with pytest.raises(ValueError, match=r"out has shape \(2, 15\)"):
        pq_decode(np.zeros((2, 2), np.uint8), pq, out=np.zeros((2, 15), np.float32))


def test_make_codebook_refuses_malformed_centroids(rng):
    with pytest.raises(ValueError, match=r"centroids has shape \(2, 4, 8\), but dim=17"):
        make_codebook(np.zeros((2, 4, 8), np.float32), 17, 8)
    with pytest.raises(ValueError, match="1 <= K <= 256"):
        make_codebook(np.zeros((2, 257, 8), np.float32), 16, 8)
    C = np.zeros((3, 4, 8), np.float32)
    C[-1, 0, 7] = 1.0
    with pytest.raises(ValueError, match="padded entries of the last sub-space must be 0"):
        make_codebook(C, 17, 8)
    with pytest.raises(TypeError, match="must be a floating-point array"):
        make_codebook(np.zeros((2, 4, 8), np.int32), 16, 8)
    with pytest.raises(ValueError, match="1 <= dims_per_code <= dim"):
        make_codebook(np.zeros((1, 4, 8), np.float32), 4, 8)
