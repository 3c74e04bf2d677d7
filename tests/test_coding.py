"""Tests of bowsvm.coding: kNN, LCC, SV codes, pyramid pooling, codebooks."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from bowsvm.coding import (
    Codebook,
    SVCodes,
    block_ids,
    codebook_from_centers,
    fit_pca,
    knn_bases,
    lcc_encode,
    learn_codebook,
    spm_pool,
    sv_encode,
    svc_encode,
)
from naive import naive_knn, naive_lcc, naive_max_pool, naive_sv_pool


def _data(rng, n=200, p=64, d=16, dtype=np.float32):
    Z = rng.standard_normal((n, d)).astype(dtype)
    B = rng.standard_normal((p, d)).astype(dtype)
    return Z, B


# ---------------------------------------------------------------- kNN
@pytest.mark.parametrize("k", [1, 5, 20, 64])
@pytest.mark.parametrize("block", [None, 7])
def test_knn_matches_brute_force_float64(rng, k, block):
    Z, B = _data(rng, dtype=np.float64)
    idx, d2 = knn_bases(Z, B, k, block=block)
    ref_idx, ref_d2 = naive_knn(Z, B, k)
    assert idx.dtype == np.int64 and d2.dtype == np.float64
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(d2, ref_d2, rtol=1e-10, atol=1e-10)


def test_knn_float32_default(rng):
    Z, B = _data(rng, n=300, p=500, d=32)
    idx, d2 = knn_bases(Z, B, 10)
    assert d2.dtype == np.float32
    ref_idx, ref_d2 = naive_knn(Z, B, 10)
    # the GEMM only pre-selects: the ranking is that of the float64 distances and the
    # distances are those values rounded to float32
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(d2, ref_d2, rtol=1e-6, atol=0)
    idx64, d64 = knn_bases(Z, B, 10, dtype="float64")
    assert d64.dtype == np.float64
    np.testing.assert_array_equal(idx64, ref_idx)
    np.testing.assert_array_equal(d64.astype(np.float32), d2)


def test_knn_near_ties_are_ranked_exactly(rng):
    """Bases whose distances differ far below the float32 GEMM's rounding error."""
    d = 24
    Z = rng.standard_normal((400, d)).astype(np.float32)
    base = rng.standard_normal((1, d)).astype(np.float32)
    # 60 bases within a few float32 ulps of each other, plus far ones
    ulp = np.spacing(np.abs(base)).astype(np.float32)
    near = base + ulp * rng.integers(-3, 4, size=(60, d)).astype(np.float32)
    B = np.concatenate([near, 5 + rng.standard_normal((40, d)).astype(np.float32)])
    ref_idx, ref_d2 = naive_knn(Z, B, 7)
    for block, threads in ((None, 1), (37, 1), (500, 3), (1, 2)):
        idx, d2 = knn_bases(Z, B, 7, block=block, n_threads=threads)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(d2, ref_d2.astype(np.float32))


def test_knn_ties_keep_lower_index(rng):
    B = np.repeat(rng.standard_normal((1, 8)), 5, axis=0)  # five identical bases
    Z = rng.standard_normal((3, 8))
    idx, _ = knn_bases(Z, B, 3)
    np.testing.assert_array_equal(idx, np.tile([0, 1, 2], (3, 1)))


def test_knn_descriptor_equal_to_basis_gives_zero_distance(rng):
    Z, B = _data(rng, n=10, p=30, d=8)
    Z[:] = B[5:15]
    idx, d2 = knn_bases(Z, B, 1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(5, 15))
    assert (d2 >= 0).all() and d2.max() < 1e-4


# ---------------------------------------------------------------- LCC
@pytest.mark.parametrize("k,d,beta", [(5, 16, 1e-4), (20, 8, 1e-4), (20, 16, 1e-2), (3, 16, 0.0)])
def test_lcc_matches_kkt_twin(rng, k, d, beta):
    Z, B = _data(rng, n=120, p=50, d=d, dtype=np.float64)
    C = lcc_encode(Z, B, k=k, beta=beta)
    assert sp.isspmatrix_csr(C) and C.shape == (120, 50) and C.dtype == np.float64
    idx, _ = naive_knn(Z, B, k)
    ref = naive_lcc(Z, B, idx, beta)
    np.testing.assert_allclose(C.toarray(), ref, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(np.asarray(C.sum(axis=1)).ravel(), 1.0, rtol=1e-12)


def test_lcc_float32_output_and_csr_structure(rng):
    Z, B = _data(rng, n=100, p=64, d=16)
    C = lcc_encode(Z, B, k=20)
    assert C.dtype == np.float32
    assert C.has_sorted_indices
    assert (np.diff(C.indptr) == 20).all()
    for i in range(5):
        row = C.indices[C.indptr[i]:C.indptr[i + 1]]
        assert (np.diff(row) > 0).all()
    idx, _ = naive_knn(Z, B, 20)
    ref = naive_lcc(Z, B, idx, 1e-4)
    np.testing.assert_allclose(C.toarray(), ref, atol=1e-4)


def test_lcc_reconstruction_of_a_basis_point(rng):
    # z equal to one basis: the code puts (almost) all weight on that basis
    Z, B = _data(rng, n=4, p=40, d=16, dtype=np.float64)
    Z[:] = B[:4]
    C = lcc_encode(Z, B, k=5, beta=1e-6).toarray()
    np.testing.assert_allclose(C[np.arange(4), np.arange(4)], 1.0, atol=1e-3)


def test_lcc_degenerate_all_bases_equal_z():
    B = np.ones((6, 4))
    Z = np.ones((2, 4))
    C = lcc_encode(Z, B, k=3).toarray()
    np.testing.assert_allclose(C[:, :3], 1 / 3)
    assert (C[:, 3:] == 0).all()


def test_lcc_empty_descriptor_set(rng):
    _, B = _data(rng)
    C = lcc_encode(np.zeros((0, 16), np.float32), B, k=4)
    assert C.shape == (0, 64) and C.nnz == 0


def test_lcc_is_deterministic(rng):
    Z, B = _data(rng, n=500, p=128, d=32)
    a = lcc_encode(Z, B)
    b = lcc_encode(Z, B)
    assert (a != b).nnz == 0
    np.testing.assert_array_equal(a.data, b.data)


def test_thread_count_does_not_change_results(rng):
    # A GEMM's rounding depends on its block shape and thread count; the kNN
    # recomputes the winners' distances itself, so the bits do not.
    Z, B = _data(rng, n=3 * 1024 + 17, p=300, d=24)
    i1, v1 = knn_bases(Z, B, 7, n_threads=1)
    for threads, block in ((3, 500), (2, 1), (1, 4096), (2, 333)):
        i3, v3 = knn_bases(Z, B, 7, n_threads=threads, block=block)
        np.testing.assert_array_equal(i1, i3)
        np.testing.assert_array_equal(v1, v3)
    a = lcc_encode(Z, B, k=9, n_threads=1)
    b = lcc_encode(Z, B, k=9, n_threads=2)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)
    s1, s2 = sv_encode(Z, B, n_threads=1), sv_encode(Z, B, n_threads=2)
    np.testing.assert_array_equal(s1.assign, s2.assign)
    np.testing.assert_array_equal(s1.blocks, s2.blocks)


def test_row_chunks_run_on_threads_with_single_threaded_blas():
    import threading

    from bowsvm.coding import _encode

    seen = []
    both_running = threading.Barrier(2, timeout=30)  # fails unless the chunks run concurrently

    def work(r0, r1):
        if r1 - r0 == 1536:
            both_running.wait()
        seen.append((r0, r1, threading.get_ident(), _encode._blas_threads()))

    _encode._run_rows(3 * _encode._MIN_ROWS_PER_THREAD, 2, work)
    assert sorted(s[:2] for s in seen) == [(0, 1536), (1536, 3072)]
    assert len({s[2] for s in seen}) == 2 and all(s[3] == 1 for s in seen)
    seen.clear()
    _encode._run_rows(_encode._MIN_ROWS_PER_THREAD + 5, 2, work)  # too few rows: one call
    assert [s[:2] for s in seen] == [(0, 1029)] and seen[0][2] == threading.get_ident()


def test_overlapping_calls_restore_the_blas_thread_count():
    from bowsvm.coding import _encode

    with _encode._blas_controller().limit(limits=2, user_api="blas"):
        a, b = _encode._single_threaded_blas(), _encode._single_threaded_blas()
        a.__enter__()
        b.__enter__()  # a second caller enters while the first holds the limit
        assert _encode._blas_threads() == 1
        a.__exit__(None, None, None)  # the first leaves first: still limited for the second
        assert _encode._blas_threads() == 1
        b.__exit__(None, None, None)
        assert _encode._blas_threads() == 2


def test_bad_inputs(rng):
    Z, B = _data(rng)
    with pytest.raises(ValueError, match="dimension 15 but the codebook B has bases of dimension 16"):
        lcc_encode(Z[:, :15], B)
    with pytest.raises(ValueError, match="k=65 exceeds the number of bases p=64"):
        lcc_encode(Z, B, k=65)
    with pytest.raises(ValueError, match="k=0 is too small"):
        knn_bases(Z, B, 0)
    with pytest.raises(TypeError, match="k must be an integer"):
        knn_bases(Z, B, 2.5)
    Zn = Z.copy()
    Zn[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"Z contains NaN or Inf \(first at index \(3, 2\)\)"):
        lcc_encode(Zn, B)
    with pytest.raises(ValueError, match="Z contains NaN"):
        sv_encode(Zn, B)
    with pytest.raises(ValueError, match="beta=-1.0 is out of range"):
        lcc_encode(Z, B, beta=-1)
    with pytest.raises(ValueError, match="dtype='float16' is not a valid option"):
        knn_bases(Z, B, 2, dtype="float16")
    with pytest.raises(ValueError, match="B must have at least 1 row"):
        knn_bases(Z, B[:0], 1)
    with pytest.raises(ValueError, match="s=-0.5 is out of range"):
        sv_encode(Z, B, s=-0.5)
    with pytest.raises(ValueError, match="n_threads=0 is too small"):
        lcc_encode(Z, B, n_threads=0)


# ---------------------------------------------------------------- SV
def test_svc_codes_layout(rng):
    Z, B = _data(rng, n=50, p=10, d=6, dtype=np.float64)
    codes = sv_encode(Z, B, s=0.3)
    assert codes.blocks.shape == (50, 7) and codes.n_bases == 10
    ref_idx, _ = naive_knn(Z, B, 1)
    np.testing.assert_array_equal(codes.assign, ref_idx[:, 0])
    full = codes.to_csr().toarray()
    assert full.shape == (50, 70)
    for i in range(50):
        k = ref_idx[i, 0]
        expect = np.zeros(70)
        expect[k * 7] = 0.3
        expect[k * 7 + 1:(k + 1) * 7] = Z[i] - B[k]
        np.testing.assert_allclose(full[i], expect, atol=1e-12)


@pytest.mark.parametrize("grids", [[(1, 1)], [(1, 1), (2, 2), (3, 1)], [(2, 2)]])
@pytest.mark.parametrize("normalize", ["l2", "none"])
def test_sv_pool_matches_paper_formula(rng, grids, normalize):
    Z, B = _data(rng, n=150, p=12, d=5, dtype=np.float64)
    centers = rng.integers(0, 40, size=(150, 2)).astype(np.float64) + 0.5
    shape = (40, 40)
    x = spm_pool(sv_encode(Z, B, s=0.2), centers, shape, grids, normalize=normalize)
    ref = naive_sv_pool(Z, B, 0.2, centers, shape, grids, normalize=normalize == "l2")
    assert x.dtype == np.float64
    np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- pooling
@pytest.mark.parametrize("grids", [[(1, 1)], [(1, 1), (3, 3)], [(1, 1), (2, 2), (3, 1)]])
def test_max_pool_matches_twin(rng, grids):
    Z, B = _data(rng, n=300, p=40, d=8, dtype=np.float64)
    C = lcc_encode(Z, B, k=6)
    centers = rng.uniform(0, 60, size=(300, 2))
    shape = (45, 60)
    x = spm_pool(C, centers, shape, grids)
    ref = naive_max_pool(C.toarray(), centers, shape, grids)
    np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-14)


def test_max_pool_negative_entries_and_implicit_zeros():
    # basis 0 chosen by both descriptors (max of negatives stays negative),
    # basis 1 chosen by one descriptor with a negative weight (implicit 0 wins)
    C = sp.csr_matrix(np.array([[-0.5, -0.2, 1.7], [-0.25, 0.0, 1.25]]))
    C.eliminate_zeros()
    x = spm_pool(C, [[1, 1], [2, 2]], (4, 4), [(1, 1)], normalize="none")
    np.testing.assert_allclose(x, [-0.25, 0.0, 1.7])


def test_spm_1x1_equals_global_pooling(rng):
    Z, B = _data(rng, n=100, p=30, d=8)
    C = lcc_encode(Z, B, k=5)
    centers = rng.uniform(0, 20, size=(100, 2))
    x = spm_pool(C, centers, (20, 20), [(1, 1)], normalize="none")
    np.testing.assert_allclose(x, C.toarray().max(axis=0), rtol=1e-6)
    # and the 1x1 level of a bigger pyramid is that same block
    y = spm_pool(C, centers, (20, 20), [(1, 1), (3, 3)], normalize="none")
    np.testing.assert_array_equal(y[:30], x)
    s = sv_encode(Z, B)
    xs = spm_pool(s, centers, (20, 20), [(1, 1)], normalize="none")
    ys = spm_pool(s, centers, (20, 20), [(1, 1), (2, 2)], normalize="none")
    np.testing.assert_array_equal(ys[:xs.size], xs)


def test_sparse_and_dense_outputs_identical(rng):
    Z, B = _data(rng, n=80, p=500, d=8)
    C = lcc_encode(Z, B, k=4)
    centers = rng.uniform(0, 30, size=(80, 2))
    dense = spm_pool(C, centers, (30, 30), [(1, 1), (3, 3)])
    ind, val = spm_pool(C, centers, (30, 30), [(1, 1), (3, 3)], output="sparse")
    assert ind.dtype == np.int32 and val.dtype == np.float32
    assert (np.diff(ind) > 0).all()
    back = np.zeros_like(dense)
    back[ind] = val
    np.testing.assert_array_equal(back, dense)
    assert np.count_nonzero(dense) == ind.size


def test_block_ids_layout():
    centers = np.array([[0.0, 0.0], [29.9, 0.0], [0.0, 29.9], [15.0, 15.0], [35.0, -3.0]])
    ids, counts = block_ids(centers, (30, 30), [(1, 1), (3, 3)])
    np.testing.assert_array_equal(ids[:, 0], 0)
    # row-major cells after the 1x1 block: (row 0, col 0) = 1, (0, 2) = 3, (2, 0) = 7,
    # (1, 1) = 5; out-of-image centres clip to the border cell
    np.testing.assert_array_equal(ids[:, 1], [1, 3, 7, 5, 3])
    assert counts.tolist() == [5, 1, 0, 2, 0, 1, 0, 1, 0, 0]


def test_empty_descriptor_set_gives_zero_vector(rng):
    _, B = _data(rng, p=20, d=8)
    empty = np.zeros((0, 8), np.float32)
    x = spm_pool(lcc_encode(empty, B, k=3), np.zeros((0, 2)), (10, 10), [(1, 1), (3, 3)])
    assert x.shape == (200,) and x.dtype == np.float32 and not x.any()
    xs = spm_pool(sv_encode(empty, B), np.zeros((0, 2)), (10, 10), [(2, 2)])
    assert xs.shape == (4 * 20 * 9,) and not xs.any()
    ind, val = spm_pool(sv_encode(empty, B), np.zeros((0, 2)), (10, 10), [(2, 2)],
                        output="sparse")
    assert ind.size == 0 and val.size == 0


def test_pool_l2_per_block(rng):
    Z, B = _data(rng, n=200, p=16, d=8)
    centers = rng.uniform(0, 30, size=(200, 2))
    x = spm_pool(sv_encode(Z, B), centers, (30, 30), [(1, 1), (3, 3)])
    norms = np.linalg.norm(x.reshape(10, -1), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_pool_bad_inputs(rng):
    Z, B = _data(rng, n=10, p=8, d=4)
    C = lcc_encode(Z, B, k=2)
    cen = np.zeros((10, 2))
    with pytest.raises(ValueError, match="pooling='sv' does not fit sparse codes"):
        spm_pool(C, cen, (5, 5), pooling="sv")
    with pytest.raises(ValueError, match="pooling='mean' is not a valid option"):
        spm_pool(C, cen, (5, 5), pooling="mean")
    with pytest.raises(ValueError, match=r"centers must have shape \(10, 2\)"):
        spm_pool(C, cen[:5], (5, 5))
    with pytest.raises(TypeError, match="codes must be a scipy.sparse matrix"):
        spm_pool(C.toarray(), cen, (5, 5))
    with pytest.raises(ValueError, match="grids is empty"):
        spm_pool(C, cen, (5, 5), [])
    with pytest.raises(ValueError, match="grid rows=0 is too small"):
        spm_pool(C, cen, (5, 5), [(0, 2)])
    with pytest.raises(ValueError, match="shape must be"):
        spm_pool(C, cen, (0, 5))


# ---------------------------------------------------------------- codebooks
def test_codebook_round_trip_bit_for_bit(tmp_path, rng):
    X = rng.standard_normal((600, 20)).astype(np.float32)
    cb = learn_codebook(X, 16, pca_dim=8, random_state=3, max_iter=20, n_init=1)
    assert cb.bases.shape == (16, 8) and cb.bases.dtype == np.float32
    assert cb.input_dim == 20 and cb.dim == 8
    npz = cb.save(tmp_path / "cb")
    assert npz.name == "codebook.npz" and (tmp_path / "cb" / "codebook.json").exists()
    back = Codebook.load(tmp_path / "cb")
    assert back.hash == cb.hash
    for name in ("bases", "pca_mean", "pca_components"):
        a, b = getattr(cb, name), getattr(back, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    md = json.loads((tmp_path / "cb" / "codebook.json").read_text())
    assert md["codebook_hash"] == cb.hash and md["n_bases"] == 16 and md["pca"] is True
    # .npz path form, no PCA
    cb2 = codebook_from_centers(rng.standard_normal((5, 3)))
    cb2.save(tmp_path / "x.npz")
    back2 = Codebook.load(tmp_path / "x.npz")
    assert back2.pca_mean is None and back2.bases.tobytes() == cb2.bases.tobytes()
    np.testing.assert_allclose(back.project(X), (X - cb.pca_mean) @ cb.pca_components.T,
                               rtol=1e-5, atol=1e-6)


def test_fit_pca_matches_sklearn(rng):
    from sklearn.decomposition import PCA

    X = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12))
    mean, comps = fit_pca(X, 5)
    assert mean.dtype == np.float32 and comps.shape == (5, 12)
    ref = PCA(5, svd_solver="full").fit(X)
    np.testing.assert_allclose(mean, ref.mean_, rtol=1e-5, atol=1e-6)
    # same directions up to sign, unit norm, and our sign rule holds
    np.testing.assert_allclose(np.abs(np.sum(comps * ref.components_, axis=1)), 1.0, atol=1e-5)
    big = np.argmax(np.abs(comps), axis=1)
    assert (comps[np.arange(5), big] > 0).all()


def test_codebook_learning_is_reproducible(rng):
    X = rng.standard_normal((500, 6)).astype(np.float32)
    a = learn_codebook(X, 10, random_state=1, max_iter=10, n_init=1)
    b = learn_codebook(X, 10, random_state=1, max_iter=10, n_init=1)
    assert a.hash == b.hash
    c = learn_codebook(X, 10, random_state=2, max_iter=10, n_init=1)
    assert c.hash != a.hash


def test_codebook_default_is_project_kmeans_and_minibatch_stays(rng):
    from sklearn.cluster import MiniBatchKMeans

    from bowsvm.coding.kmeans import kmeans

    X = rng.standard_normal((3000, 12)).astype(np.float32)
    cb = learn_codebook(X, 20, pca_dim=6, random_state=4)
    Z = ((X - cb.pca_mean) @ cb.pca_components.T).astype(np.float32)
    ref = kmeans(Z, 20, random_state=4, max_iter=30, tol=1e-4)
    assert cb.bases.tobytes() == ref.centers.tobytes()
    assert cb.meta["method"] == "kmeans-lloyd" and cb.meta["inertia"] == ref.inertia
    mb = learn_codebook(X, 20, pca_dim=6, random_state=4, method="minibatch", max_iter=50)
    assert mb.meta["method"] == "MiniBatchKMeans"
    sk = MiniBatchKMeans(20, batch_size=4096, max_iter=50, n_init=1, random_state=4).fit(Z)
    np.testing.assert_allclose(mb.bases, sk.cluster_centers_, rtol=1e-5, atol=1e-6)
    # Lloyd to convergence is at least as good as the mini-batch run here
    assert cb.meta["inertia"] <= 1.01 * mb.meta["inertia"]
    with pytest.raises(ValueError, match="method='elkan' is not valid"):
        learn_codebook(X, 20, method="elkan")


def test_codebook_hash_changes_with_one_bit(tmp_path, rng):
    cb = codebook_from_centers(rng.standard_normal((5, 3)))
    bases = cb.bases.copy()
    bases.view(np.uint32)[2, 1] ^= 1
    assert Codebook(bases).hash != cb.hash


def test_codebook_errors(tmp_path, rng):
    X = rng.standard_normal((20, 4))
    with pytest.raises(ValueError, match="n_bases=30 exceeds the 20 sampled descriptors"):
        learn_codebook(X, 30)
    with pytest.raises(ValueError, match="pca_dim=5 is too large"):
        learn_codebook(X, 3, pca_dim=5)
    with pytest.raises(FileNotFoundError, match="no codebook at"):
        Codebook.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="pass both pca_mean and pca_components"):
        Codebook(X[:3], pca_mean=np.zeros(4))
    cb = codebook_from_centers(X[:3])
    with pytest.raises(ValueError, match="descriptors have dimension 5 but this codebook expects 4"):
        cb.project(np.zeros((2, 5)))
    # tampered arrays are refused
    cb.save(tmp_path / "c")
    md = json.loads((tmp_path / "c" / "codebook.json").read_text())
    md["codebook_hash"] = "0" * 16
    (tmp_path / "c" / "codebook.json").write_text(json.dumps(md))
    with pytest.raises(ValueError, match="the files are corrupt or mismatched"):
        Codebook.load(tmp_path / "c")


def test_svcodes_is_a_tuple(rng):
    Z, B = _data(rng, n=5, p=3, d=2)
    assign, blocks, p = sv_encode(Z, B)
    assert isinstance(sv_encode(Z, B), SVCodes) and p == 3 and blocks.dtype == np.float32


def test_svc_encode_is_the_old_name_of_sv_encode(rng):
    import bowsvm.coding as coding

    assert svc_encode is sv_encode and coding.svc_encode is coding.sv_encode
    assert {"sv_encode", "svc_encode"} <= set(coding.__all__)


def test_codebook_save_is_atomic(tmp_path, rng, monkeypatch):
    import os

    cb = codebook_from_centers(rng.standard_normal((5, 3)))
    cb.save(tmp_path / "c")
    before = (tmp_path / "c" / "codebook.npz").read_bytes()
    assert oct((tmp_path / "c" / "codebook.npz").stat().st_mode & 0o777) == oct(0o644)

    def boom(*a, **k):
        raise OSError("disk full")

    # a failed write leaves the old file as it was and no temporary behind
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        codebook_from_centers(rng.standard_normal((5, 3))).save(tmp_path / "c")
    assert (tmp_path / "c" / "codebook.npz").read_bytes() == before
    assert sorted(os.listdir(tmp_path / "c")) == ["codebook.json", "codebook.npz"]
    assert Codebook.load(tmp_path / "c").hash == cb.hash
