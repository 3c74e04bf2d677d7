"""ASGDClassifier against the plain sequential algorithm (tests/naive.py)."""

import numpy as np
import pytest
import scipy.sparse as sp
from naive import asgd_sequential, naive_csr_walk

from bowsvm.asgd import ASGDClassifier
from bowsvm.asgd import core


def _data(n, d, C, seed=0, density=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    y[:C] = np.arange(C)  # every class present
    centers = rng.normal(size=(C, d))
    X = centers[y] + rng.normal(size=(n, d))
    if density is not None:
        X *= rng.random((n, d)) < density
        X[:, 0] += 0.5  # no empty rows
    return X, y


KW = dict(reg=1e-2, eta0=0.5, power=1.0, bias_lr=0.3)


def _rel(a, b):
    return np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-300)


@pytest.fixture(scope="module")
def dense50():
    X, y = _data(240, 17, 50)
    ref = {}
    for avs in (0, 130):
        ref[avs] = asgd_sequential(X, y, np.arange(50), average_start=avs, epochs=2, **KW)
    return X, y, ref


@pytest.mark.parametrize("block_size", [1, 5, 64, 256])
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("average_start", [0, 130])
@pytest.mark.parametrize("sparse", [False, "walk", "blocks"])
def test_matches_sequential_50_classes(dense50, block_size, n_jobs, average_start, sparse,
                                       monkeypatch):
    """CSR input both ways: walked row by row, and densified block by block."""
    X, y, ref = dense50
    wbar, bbar, _, _, t = ref[average_start]
    if sparse:
        monkeypatch.setattr(core, "DENSE_BLOCK_ABOVE", 1.0 if sparse == "walk" else 0.0)
    Xin = sp.csr_matrix(X) if sparse else X
    m = ASGDClassifier(max_epochs=2, shuffle=False, block_size=block_size, n_jobs=n_jobs,
                       average_start=average_start, **KW).fit(Xin, y)
    assert m.coef_.shape == (50, 17) and m.coef_.dtype == np.float64
    assert _rel(m.coef_, wbar) < 1e-5
    assert _rel(m.intercept_, bbar) < 1e-5
    assert m.t_ == t == 480


def _on_path(X, path, monkeypatch):
    """X as the trainer path ``path`` sees it: dense, CSR walked, or CSR densified per block."""
    if path == "dense":
        return X
    monkeypatch.setattr(core, "DENSE_BLOCK_ABOVE", 1.0 if path == "walk" else 0.0)
    return sp.csr_matrix(X)


@pytest.mark.parametrize("block_size", [1, 7, 256])
@pytest.mark.parametrize("path", ["dense", "walk", "blocks"])
def test_pos_weight_matches_sequential(dense50, block_size, path, monkeypatch):
    """Re-weighted positives: every path equals the naive weighted SGD."""
    X, y, _ = dense50
    wbar, bbar, w, b, _ = asgd_sequential(X, y, np.arange(50), average_start=60, epochs=2,
                                          pos_weight=7.5, **KW)
    ref_plain = asgd_sequential(X, y, np.arange(50), average_start=60, epochs=2, **KW)[0]
    assert _rel(ref_plain, wbar) > 0.05  # the weight matters here
    Xin = _on_path(X, path, monkeypatch)
    m = ASGDClassifier(max_epochs=2, shuffle=False, block_size=block_size, average_start=60,
                       pos_weight=7.5, **KW).fit(Xin, y)
    assert _rel(m.coef_, wbar) < 1e-5
    assert _rel(m.intercept_, bbar) < 1e-5
    sgd = ASGDClassifier(max_epochs=2, shuffle=False, block_size=block_size, averaged=False,
                         pos_weight=7.5, **KW).fit(Xin, y)
    _, _, w1, b1, _ = asgd_sequential(X, y, np.arange(50), average_start=0, averaged=False,
                                      epochs=2, pos_weight=7.5, **KW)
    assert _rel(sgd.coef_, w1) < 1e-5 and _rel(sgd.intercept_, b1) < 1e-5


@pytest.mark.parametrize("block_size", [1, 7, 256])
@pytest.mark.parametrize("path", ["dense", "walk", "blocks"])
@pytest.mark.parametrize("decay", [1.0, 3.5])
def test_average_decay_matches_sequential(dense50, block_size, path, decay, monkeypatch):
    """Polynomial-decay averaging: every path equals the naive weighted average."""
    X, y, _ = dense50
    wbar, bbar, _, _, _ = asgd_sequential(X, y, np.arange(50), average_start=60, epochs=2,
                                          average_decay=decay, **KW)
    plain = asgd_sequential(X, y, np.arange(50), average_start=60, epochs=2, **KW)[0]
    assert _rel(plain, wbar) > 0.01  # the decay matters here
    Xin = _on_path(X, path, monkeypatch)
    m = ASGDClassifier(max_epochs=2, shuffle=False, block_size=block_size, average_start=60,
                       average_decay=decay, **KW).fit(Xin, y)
    assert _rel(m.coef_, wbar) < 1e-5
    assert _rel(m.intercept_, bbar) < 1e-5


def test_pos_weight_auto_and_one_is_unweighted(dense50):
    X, y, _ = dense50
    from bowsvm.asgd.trainer import auto_pos_weight

    assert auto_pos_weight(50) == pytest.approx(49 / 50 ** (2 / 3))
    assert auto_pos_weight(1000) == pytest.approx(9.99)
    assert auto_pos_weight(2) == 1.0 and auto_pos_weight(1) == 1.0
    kw = dict(max_epochs=1, shuffle=False, block_size=16, **KW)
    auto = ASGDClassifier(pos_weight="auto", **kw).fit(X, y)
    fixed = ASGDClassifier(pos_weight=49 / 50 ** (2 / 3), **kw).fit(X, y)
    assert auto.coef_.tobytes() == fixed.coef_.tobytes()
    one = ASGDClassifier(pos_weight=1.0, **kw).fit(X, y)
    default = ASGDClassifier(**kw).fit(X, y)
    assert one.coef_.tobytes() == default.coef_.tobytes()


@pytest.mark.parametrize("bad, err, match", [
    (0.0, ValueError, "pos_weight"), (-1, ValueError, "pos_weight"),
    ("heavy", ValueError, "pos_weight='heavy' is not a number or 'auto'"),
    (float("nan"), ValueError, "pos_weight"),
])
def test_pos_weight_errors(bad, err, match):
    X, y = _data(30, 3, 3)
    with pytest.raises(err, match=match):
        ASGDClassifier(pos_weight=bad).fit(X, y)


def test_weighted_objective_naive():
    """trainer.objective weighs positives' hinge losses by pos_weight."""
    from bowsvm.asgd.trainer import objective

    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 5))
    y = rng.integers(0, 4, 40)
    W = rng.normal(size=(4, 5))
    b = rng.normal(size=4)
    S = X @ W.T + b
    Y = np.where(y[:, None] == np.arange(4)[None, :], 1.0, -1.0)
    Q = np.where(Y > 0, 2.5, 1.0)
    want = np.mean(0.5 * 0.1 * (W ** 2).sum(1) + (Q * np.maximum(0, 1 - Y * S)).mean(0))
    assert objective(W, b, X, y, np.arange(4), 0.1, 2.5) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("block_size", [3, 100])
def test_two_classes_sklearn_convention(sparse, block_size):
    X, y = _data(150, 9, 2, seed=1, density=0.5 if sparse else None)
    labels = np.array(["cat", "dog"])[y]
    wbar, bbar, *_ = asgd_sequential(X, y, [1], average_start=20, epochs=3, **KW)
    Xin = sp.csr_matrix(X) if sparse else X
    m = ASGDClassifier(max_epochs=3, shuffle=False, block_size=block_size,
                       average_start=20, **KW).fit(Xin, labels)
    assert list(m.classes_) == ["cat", "dog"]
    assert m.coef_.shape == (1, 9) and m.intercept_.shape == (1,)
    assert _rel(m.coef_[0], wbar[0]) < 1e-5
    assert m.decision_function(X).shape == (150,)
    assert set(m.predict(X)) <= {"cat", "dog"}


@pytest.mark.parametrize("sparse", [False, True])
def test_plain_sgd_matches_last_iterate(sparse):
    X, y = _data(200, 11, 7, seed=2, density=0.4 if sparse else None)
    _, _, w, b, _ = asgd_sequential(X, y, np.arange(7), average_start=0, averaged=False,
                                    epochs=2, **KW)
    Xin = sp.csr_matrix(X) if sparse else X
    m = ASGDClassifier(max_epochs=2, shuffle=False, block_size=16, averaged=False,
                       **KW).fit(Xin, y)
    assert _rel(m.coef_, w) < 1e-5
    assert _rel(m.intercept_, b) < 1e-5


@pytest.mark.parametrize("sparse", [False, True])
def test_float32_close_to_float64_reference(sparse):
    X, y = _data(200, 13, 6, seed=3, density=0.5 if sparse else None)
    X32 = X.astype(np.float32)
    wbar, *_ = asgd_sequential(X32.astype(np.float64), y, np.arange(6), average_start=50,
                               epochs=2, **KW)
    Xin = sp.csr_matrix(X32) if sparse else X32
    m = ASGDClassifier(max_epochs=2, shuffle=False, block_size=32, average_start=50,
                       **KW).fit(Xin, y)
    assert m.coef_.dtype == np.float32
    assert _rel(m.coef_, wbar) < 1e-4
    assert m.decision_function(X32).dtype == np.float32


def test_folding_under_extreme_decay():
    """reg*eta0 near 1 shrinks P11 by ~0.1 per step: P is folded many times per block."""
    X, y = _data(120, 6, 4, seed=4)
    kw = dict(reg=0.9, eta0=1.0, power=1.0, bias_lr=0.2)
    wbar, bbar, *_ = asgd_sequential(X, y, np.arange(4), average_start=10, epochs=2, **kw)
    for sparse in (False, True):
        Xin = sp.csr_matrix(X) if sparse else X
        m = ASGDClassifier(max_epochs=2, shuffle=False, block_size=50, average_start=10,
                           **kw).fit(Xin, y)
        assert _rel(m.coef_, wbar) < 1e-5
        assert _rel(m.intercept_, bbar) < 1e-5


def test_long_run_folds_averaging_scalars(monkeypatch):
    """With a tight bound P22 = t0/t leaves the safe range often; still exact."""
    monkeypatch.setattr(core, "BOUND", 4.0)
    X, y = _data(400, 5, 3, seed=5)
    wbar, *_ = asgd_sequential(X, y, np.arange(3), average_start=0, epochs=3, **KW)
    m = ASGDClassifier(max_epochs=3, shuffle=False, block_size=64, average_start=0,
                       **KW).fit(X, y)
    assert _rel(m.coef_, wbar) < 1e-5


def test_shuffle_visits_seeded_permutations():
    X, y = _data(90, 7, 5, seed=6)
    rs = np.random.RandomState(3)
    orders = [rs.permutation(90) for _ in range(3)]
    wbar, *_ = asgd_sequential(X, y, np.arange(5), average_start=0, epochs=3,
                               orders=orders, **KW)
    m = ASGDClassifier(max_epochs=3, shuffle=True, random_state=3, block_size=8,
                       **KW).fit(X, y)
    assert _rel(m.coef_, wbar) < 1e-5


def test_partial_fit_continues_the_sequence():
    X, y = _data(160, 8, 5, seed=7)
    wbar, bbar, _, _, t = asgd_sequential(X, y, np.arange(5), average_start=40, epochs=2, **KW)
    m = ASGDClassifier(block_size=16, average_start=40, **KW)
    for _ in range(2):
        for s in range(0, 160, 50):
            m.partial_fit(X[s:s + 50], y[s:s + 50], classes=np.arange(5))
    assert m.t_ == t == 320
    assert _rel(m.coef_, wbar) < 1e-5
    assert _rel(m.intercept_, bbar) < 1e-5


def test_deterministic_bits():
    X, y = _data(500, 40, 12, seed=8)
    X = X.astype(np.float32)
    a = ASGDClassifier(random_state=11, n_jobs=2, block_size=37, max_epochs=3).fit(X, y)
    b = ASGDClassifier(random_state=11, n_jobs=2, block_size=37, max_epochs=3).fit(X, y)
    assert a.coef_.tobytes() == b.coef_.tobytes()
    assert a.intercept_.tobytes() == b.intercept_.tobytes()


def test_learns_separable_problem():
    X, y = _data(600, 30, 10, seed=9)
    m = ASGDClassifier(random_state=0).fit(X, y)
    assert m.score(X, y) > 0.95


def test_zero_rows_and_one_sample_blocks():
    X, y = _data(30, 4, 3, seed=10)
    X[::4] = 0.0
    wbar, *_ = asgd_sequential(X, y, np.arange(3), average_start=0, epochs=1, **KW)
    m = ASGDClassifier(max_epochs=1, shuffle=False, block_size=1, **KW).fit(X, y)
    assert _rel(m.coef_, wbar) < 1e-5


@pytest.mark.parametrize("params, exc, match", [
    (dict(reg=1.0, eta0=1.0), ValueError, "reg \\* eta0"),
    (dict(reg=-1.0), ValueError, "reg=-1.0 is out of range"),
    (dict(eta0=0.0), ValueError, "eta0=0.0 is out of range"),
    (dict(block_size=0), ValueError, "block_size=0 is too small"),
    (dict(average_decay=-1.0), ValueError, "average_decay=-1.0 is out of range"),
    (dict(average_decay=float("nan")), ValueError, "average_decay"),
    (dict(max_epochs=1.5), TypeError, "max_epochs must be an integer"),
    (dict(n_jobs=0), ValueError, "n_jobs=0"),
    (dict(averaged="yes"), TypeError, "averaged must be True or False"),
    (dict(shuffle=1), TypeError, "shuffle must be True or False"),
])
def test_bad_parameters(params, exc, match):
    X, y = _data(20, 3, 2)
    with pytest.raises(exc, match=match):
        ASGDClassifier(**params).fit(X, y)


def test_bad_inputs():
    X, y = _data(20, 3, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ASGDClassifier().fit(X, np.zeros(20, int))
    with pytest.raises(ValueError, match="classes must be passed"):
        ASGDClassifier().partial_fit(X, y)
    m = ASGDClassifier().partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="not in classes"):
        m.partial_fit(X, y + 5)
    with pytest.raises(ValueError, match="not the same as on the first call"):
        m.partial_fit(X, y, classes=[0, 1, 2, 3])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ASGDClassifier().fit(Xn, y)


@pytest.mark.parametrize("density", [0.0, 1.1])
def test_gemm_and_sparse_row_updates_agree(dense50, monkeypatch, density):
    """Force every block's update through GEMM (0.0) or through sparse rows (1.1)."""
    monkeypatch.setattr(core, "SPARSE_UPDATE_DENSITY", density)
    X, y, ref = dense50
    wbar, bbar, *_ = ref[0]
    m = ASGDClassifier(max_epochs=2, shuffle=False, block_size=32, **KW).fit(X, y)
    assert _rel(m.coef_, wbar) < 1e-5
    assert _rel(m.intercept_, bbar) < 1e-5


def test_timings_report_phases():
    X, y = _data(100, 6, 4, seed=11)
    st = core.GroupState(np.arange(4), 6, np.float64)
    tm = {}
    core.train_chunk(st, X, y, core.Hyper(power=1.0, block_size=10), tm)
    assert set(tm) == {"margins", "gram", "walk", "update", "violations", "pairs"}
    assert tm["pairs"] == 400 and 0 < tm["violations"] <= 400


def test_hyper_defaults_are_the_estimators():
    assert core.Hyper() == ASGDClassifier()._hyper()


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("block_size", [4, 16])
def test_mixed_density_chunk_switches_paths_per_block(monkeypatch, block_size, layout):
    """A chunk whose blocks alternate sparse / dense-ish takes both paths and still
    equals the sequential algorithm; the counts show both paths ran."""
    rng = np.random.default_rng(5)
    C, d, n = 12, 40, 96
    X, y = _data(n, d, C, seed=5)
    keep = np.ones((n, d), bool)
    for start in range(0, n, 2 * block_size):  # every other block: about 5 % non-zeros
        keep[start:start + block_size] = rng.random((min(block_size, n - start), d)) < 0.05
    keep[:, 0] = True
    X = X * keep
    Xs = sp.csr_matrix(X)
    wbar, bbar, *_ = asgd_sequential(X, y, np.arange(C), average_start=0, epochs=1, **KW)
    hyper = core.Hyper(block_size=block_size, average_start=0, **KW)
    calls = {"walk": 0}
    name = "csr_walk_cols" if layout == "columns" else "csr_walk"
    real_walk = getattr(core._kernels, name)

    def counting_walk(*a):
        calls["walk"] += 1
        return real_walk(*a)

    monkeypatch.setattr(core, "COLUMNS_WALK_PER_THREAD", 0 if layout == "columns" else 10**9)
    st = core.GroupState(np.arange(C), d, np.float64)
    tm = {}
    monkeypatch.setattr(core._kernels, name, counting_walk)
    core.train_chunk(st, Xs, y, hyper, tm, dense_above=0.5)
    st.fold()
    W, b = st.averaged()
    n_blocks = -(-n // block_size)
    assert 0 < calls["walk"] < n_blocks  # some blocks walked, the others densified
    assert tm["pairs"] == C * n
    assert _rel(W, wbar) < 1e-5 and _rel(b, bbar) < 1e-5


def _overlapping(n=600, d=8, C=4, seed=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    return rng.normal(size=(C, d))[y] + rng.normal(scale=2.0, size=(n, d)), y


@pytest.mark.parametrize("sparse", [False, True])
def test_early_stopping_keeps_the_best_epochs_exact_state(sparse):
    """The kept model is epoch best_epoch_ exactly: a plain fit of that many epochs on the
    documented training part gives the same bits (and partial_fit continues the same)."""
    from sklearn.model_selection import train_test_split

    X, y = _overlapping()
    X = sp.csr_matrix(X) if sparse else X
    kw = dict(eta0=2.0, reg=1e-3, random_state=3, block_size=32, n_jobs=1)
    m = ASGDClassifier(max_epochs=30, early_stopping=True, validation_fraction=0.25,
                       n_iter_no_change=2, **kw).fit(X, y)
    scores = m.validation_scores_
    assert m.best_epoch_ == 1 + int(np.argmax(scores)) and len(scores) == m.n_epochs_
    assert m.n_epochs_ == m.best_epoch_ + 2 < 30  # stopped after 2 epochs without a gain
    tr, va = train_test_split(np.arange(X.shape[0]), test_size=0.25, stratify=y, random_state=3)
    alone = ASGDClassifier(max_epochs=m.best_epoch_, **kw).fit(X[tr], y[tr])
    assert m.coef_.tobytes() == alone.coef_.tobytes()
    assert m.intercept_.tobytes() == alone.intercept_.tobytes()
    assert m.t_ == alone.t_ and alone.best_epoch_ == alone.n_epochs_ == m.best_epoch_
    assert m.score(X[va], y[va]) == pytest.approx(max(scores))
    m.partial_fit(X[tr[:50]], y[tr[:50]])
    alone.partial_fit(X[tr[:50]], y[tr[:50]])
    assert m.coef_.tobytes() == alone.coef_.tobytes()


@pytest.mark.parametrize("kw, err, match", [
    (dict(validation_fraction=1.0), ValueError, "0 < validation_fraction < 1"),
    (dict(validation_fraction=0.0), ValueError, "validation_fraction"),
    (dict(n_iter_no_change=0), ValueError, "n_iter_no_change"),
    (dict(validation_fraction=0.01), ValueError, "cannot hold out validation_fraction=0.01"),
])
def test_early_stopping_errors(kw, err, match):
    X, y = _overlapping(n=40)
    with pytest.raises(err, match=match):
        ASGDClassifier(early_stopping=True, **kw).fit(X, y)
    with pytest.raises(TypeError, match="early_stopping must be True or False"):
        ASGDClassifier(early_stopping="yes").fit(X, y)


@pytest.mark.parametrize("update, density", [("rows", 0.04), ("rows", 0.3), ("gemm", 0.2)])
def test_densified_csr_blocks_equal_dense_rows(monkeypatch, update, density):
    """A CSR block densified into the spare rows (scattered, then cleared again) and
    updated from its CSR non-zeros gives the same values as the same rows given dense,
    also when dense and CSR chunks alternate (the spare rows are dirty after a dense
    one) and after a block that failed between products and release."""
    monkeypatch.setattr(core, "SPARSE_UPDATE_DENSITY", 1.1 if update == "rows" else 0.0)
    C, d, n = 9, 300, 150
    X, y = _data(n, d, C, seed=3, density=density)
    X = X.astype(np.float32)
    h = core.Hyper(block_size=16, average_start=40, **KW)
    chunks = [slice(0, 60), slice(60, 100), slice(100, 150)]
    ref = core.GroupState(np.arange(C), d, np.float32)
    st = core.GroupState(np.arange(C), d, np.float32)
    calls = {"csr": 0, "dense": 0}
    real_csr, real_dense = core._kernels.csr_rows_update, core._kernels.sparse_rows_update

    def count(kind, real):
        def f(*a):
            calls[kind] += 1
            return real(*a)
        return f

    monkeypatch.setattr(core._kernels, "csr_rows_update", count("csr", real_csr))
    monkeypatch.setattr(core._kernels, "sparse_rows_update", count("dense", real_dense))
    for e, sl in enumerate(chunks):
        core.train_chunk(ref, X[sl], y[sl], h)
        Xin = X[sl] if e == 1 else sp.csr_matrix(X[sl])  # CSR, dense, CSR
        if e == 2:  # a block used without release leaves its rows dirty
            st.block_products(sp.csr_matrix(X[:16] * 3), 0, 16)
        core.train_chunk(st, Xin, y[sl], h, dense_above=0.0)
    for a, b in ((st.V, ref.V), (st.U, ref.U), (st.b, ref.b), (st.bbar, ref.bbar),
                 (st.P, ref.P)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(st.V).max() > 0.1
    if update == "rows":  # sparse CSR blocks updated from their non-zeros, others not
        assert calls["dense"] > 0
        assert (calls["csr"] > 0) == (density < core.CSR_ROWS_UPDATE_BELOW)


def test_csr_scatter_and_clear():
    X = sp.random(40, 70, density=0.15, format="csr", random_state=3, dtype=np.float32)
    out = np.zeros((13, 70), np.float32)
    core._kernels.csr_scatter(X.data, X.indices, X.indptr, 20, 13, out, False, 2)
    np.testing.assert_array_equal(out, X[20:33].toarray())
    core._kernels.csr_scatter(X.data, X.indices, X.indptr, 20, 13, out, True, 2)
    assert not out.any()


def test_openblas_threads_sleep_soon_after_a_call():
    """Importing bowsvm before numpy sets OPENBLAS_THREAD_TIMEOUT (OpenBLAS reads it once,
    when it loads), a value the user set wins, and spark-submit's environment carries it."""
    import os
    import subprocess
    import sys

    import bowsvm

    code = ("import bowsvm.spark, numpy, os; "
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'], "
            "bowsvm.spark.spark_env()['OPENBLAS_THREAD_TIMEOUT'])")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}

    def run(e):
        return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                              check=True).stdout.split()

    assert run(env) == [bowsvm.OPENBLAS_THREAD_TIMEOUT] * 2 == ["16", "16"]
    assert run({**env, "OPENBLAS_THREAD_TIMEOUT": "28"}) == ["28", "28"]


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("update_u", [False, True])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_csr_walks_equal_naive_walk(layout, dtype, update_u, n_threads):
    """Both sparse walks, on weights by rows and by columns, give the bits of the
    loop-by-loop walk (rows with repeated columns, an empty row, classes not divisible by
    threads or by the row walk's four)."""
    rng = np.random.default_rng(7)
    C, d, n, row0, m = 7, 40, 30, 4, 22
    X = sp.random(n, d, density=0.2, format="csr", random_state=8, dtype=np.float64)
    X = sp.lil_matrix(X.multiply(rng.normal(size=(n, d))))
    X[row0 + 3] = 0
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    data = np.concatenate([X.data, [0.7, -0.3]]).astype(dtype)  # two repeats in the last row
    indices = np.concatenate([X.indices, X.indices[X.indptr[-2]:X.indptr[-2] + 2]]).astype(np.int32)
    indptr = X.indptr.astype(np.int64)
    indptr[-1] += 2
    y = rng.integers(0, C, m)
    row_class = np.arange(C)
    p11_prev, coef_v, coef_u = rng.uniform(0.5, 1.5, m), rng.uniform(0.01, 0.5, m), rng.uniform(0.01, 0.3, m)
    eta, alpha = rng.uniform(0.01, 0.3, m), rng.uniform(0.0, 1.0, m)
    V = (0.3 * rng.normal(size=(C, d))).astype(dtype)
    U = (0.3 * rng.normal(size=(C, d))).astype(dtype)
    b, bbar = 0.1 * rng.normal(size=C), 0.1 * rng.normal(size=C)
    VT, UT, bk, bbk = np.ascontiguousarray(V.T), np.ascontiguousarray(U.T), b.copy(), bbar.copy()
    V0, U0 = V.copy(), U.copy()
    naive_csr_walk(V, U, data, indices, indptr, row0, m, row_class, y, p11_prev, coef_v, coef_u,
                   eta, alpha, 0.1, 2.0, b, bbar, update_u)
    if layout == "columns":
        core._kernels.csr_walk_cols(VT, UT, data, indices, indptr, row0, m, row_class, y,
                                    p11_prev, coef_v, coef_u, eta, alpha, 0.1, 2.0, bk, bbk,
                                    update_u, n_threads)
    else:
        VT, UT = V0.copy(), U0.copy()  # by rows
        core._kernels.csr_walk(VT, UT, data, indices, indptr, row0, m, row_class, y,
                               p11_prev, coef_v, coef_u, eta, alpha, 0.1, 2.0, bk, bbk,
                               update_u, n_threads)
        VT, UT = VT.T, UT.T
    for a, ref in ((VT.T, V), (UT.T, U), (bk, b), (bbk, bbar)):
        np.testing.assert_array_equal(a, ref)
    assert not np.array_equal(VT.T, V0)  # some pairs violated


def test_weights_by_columns_come_back_for_every_reader(monkeypatch):
    """Walked CSR chunks leave the weights by columns; checkpoints, weights, averaged,
    a dense chunk after them and fold between chunks all see the bits of the same chunks
    walked by rows."""
    C, d, n = 6, 50, 120
    X, y = _data(n, d, C, seed=9, density=0.05)
    Xs = sp.csr_matrix(X.astype(np.float32))
    h = core.Hyper(block_size=16, average_start=30, **KW)
    chunks = [slice(0, 40), slice(40, 80), slice(80, 120)]
    a = core.GroupState(np.arange(C), d, np.float32)
    ref = core.GroupState(np.arange(C), d, np.float32)
    for e, sl in enumerate(chunks):
        Xin = Xs[sl].toarray() if e == 1 else Xs[sl]  # walked, dense, walked
        monkeypatch.setattr(core, "COLUMNS_WALK_PER_THREAD", 0)
        core.train_chunk(a, Xin, y[sl], h, dense_above=1.0)
        a.fold()
        if e == 0:  # a checkpoint taken while the weights are by columns
            a = core.GroupState.from_arrays(a.to_arrays())
        monkeypatch.setattr(core, "COLUMNS_WALK_PER_THREAD", 10**9)
        core.train_chunk(ref, Xin, y[sl], h, dense_above=1.0)
        ref.fold()
    assert a._cols is not None and ref._cols is None  # the last chunk was walked
    Wa, ba = a.averaged()
    Wr, br = ref.averaged()
    np.testing.assert_array_equal(Wa, Wr)
    np.testing.assert_array_equal(ba, br)
    np.testing.assert_array_equal(a.weights()[0], ref.weights()[0])
    assert a._cols is None and np.abs(Wa).max() > 0.01


def test_walk_layout_follows_classes_per_thread():
    n = core.COLUMNS_WALK_PER_THREAD
    assert core.walks_by_columns(2 * n, 2) and not core.walks_by_columns(2 * n - 1, 2)
    assert core.walks_by_columns(n, 1) and not core.walks_by_columns(n - 1, 1)
    assert core.walks_by_columns(1000, 8) == (1000 >= 8 * n)
