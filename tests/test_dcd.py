"""Dual coordinate descent (bowsvm.asgd.dcd) against its sequential twin and liblinear."""

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from bowsvm.asgd.core import Hyper
from bowsvm.asgd.dcd import DualState, dcd_chunk
from bowsvm.asgd.trainer import new_states, states_from_arrays, states_to_arrays
from naive import dcd_sequential

N, D, C = 120, 15, 5


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, N)
    X = rng.standard_normal((N, D)) * 0.5 + np.eye(C, D)[y] * 1.5
    X[rng.random((N, D)) < 0.6] = 0.0  # sparse-ish, so the CSR walk has work to skip
    orders = [rng.permutation(N) for _ in range(3)]
    return X, y, orders


def _run(X, y, orders, hyper, path, dtype=np.float64, state=None):
    """Each epoch one chunk: the rows in ``orders[e]`` with their train-split indices."""
    st = DualState(np.arange(C), D, N, dtype, averaged=hyper.averaged) if state is None else state
    dense_above = {"dense": None, "walked": 1.0, "densified": 0.0}[path]
    for order in orders:
        Xo = X[order].astype(dtype)
        Xo = Xo if path == "dense" else sp.csr_matrix(Xo)
        dcd_chunk(st, Xo, y[order], order, hyper, dense_above=dense_above)
    return st


@pytest.mark.parametrize("path", ["dense", "walked", "densified"])
@pytest.mark.parametrize("block_size", [1, 7, 256])
def test_dcd_matches_sequential(data, path, block_size):
    X, y, orders = data
    h = Hyper(reg=1e-2, pos_weight=2.5, block_size=block_size, average_start=N, solver="dcd")
    st = _run(X, y, orders, h, path)
    wbar, bbar, w, b, alpha = dcd_sequential(X, y, np.arange(C), reg=1e-2, pos_weight=2.5,
                                             orders=orders, average_start=N, block_size=block_size)
    scale = np.abs(w).max()
    assert scale > 0.1 and np.count_nonzero(alpha) > N  # the test does work
    np.testing.assert_allclose(st.V, w, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(st.b, b, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(st.alpha, alpha, rtol=1e-6, atol=1e-9)
    W, bb = st.averaged()
    assert st.count == 2 * -(-N // block_size)  # epochs 2 and 3 are averaged
    np.testing.assert_allclose(W, wbar, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(bb, bbar, rtol=0, atol=1e-9 * scale)
    assert np.abs(W - w).max() > 1e-3 * scale  # the mean is not the last iterate


@pytest.mark.parametrize("path", ["dense", "walked"])
def test_dcd_float32_and_threads(data, path):
    X, y, orders = data
    h = Hyper(reg=1e-2, block_size=16, average_start=0, solver="dcd")
    _, _, w, b, _ = dcd_sequential(X, y, np.arange(C), reg=1e-2, orders=orders)
    runs, before = [], numba.get_num_threads()
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        try:
            runs.append(_run(X, y, orders, h, path, np.float32))
        finally:
            numba.set_num_threads(before)
    st = runs[0]
    np.testing.assert_allclose(st.V, w, rtol=0, atol=1e-5 * np.abs(w).max())
    np.testing.assert_allclose(st.b, b, rtol=0, atol=1e-5 * np.abs(w).max())
    if path == "walked":  # no BLAS on this path: the same bits whatever the threads
        assert runs[0].V.tobytes() == runs[1].V.tobytes()
        assert runs[0].alpha.tobytes() == runs[1].alpha.tobytes()


def test_dcd_converges_to_liblinear(data):
    """Epochs of DCD reach the optimum LinearSVC finds for the same objective
    (liblinear's L1-loss dual, bias a regularised constant feature, C = 1/(reg n)):
    per class, the primal objective agrees to 1e-5 and is never below liblinear's
    by more than its tolerance."""
    from sklearn.svm import LinearSVC

    X, y, _ = data
    reg = 1e-2
    rng = np.random.default_rng(5)
    h = Hyper(reg=reg, block_size=N, averaged=False, solver="dcd")
    st = _run(X, y, [rng.permutation(N) for _ in range(1000)], h, "dense")
    svc = LinearSVC(loss="hinge", C=1.0 / (reg * N), intercept_scaling=1.0, tol=1e-10,
                    max_iter=200000, random_state=0).fit(X, y)

    def primal(W, b):
        Y = np.where(y[:, None] == np.arange(C)[None, :], 1.0, -1.0)
        hinge = np.maximum(0.0, 1.0 - Y * (X @ W.T + b[None, :])).sum(axis=0)
        return 0.5 * ((W * W).sum(axis=1) + b * b) + hinge / (reg * N)

    ours, theirs = primal(st.V, st.b), primal(svc.coef_, svc.intercept_)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert (ours >= theirs * (1 - 1e-7)).all(), (ours, theirs)
    np.testing.assert_allclose(st.V, svc.coef_, rtol=0, atol=0.02 * np.abs(svc.coef_).max())


def test_state_round_trip_resumes_exactly(data):
    X, y, orders = data
    h = Hyper(reg=1e-2, block_size=16, average_start=N, solver="dcd")
    whole = _run(X, y, orders, h, "walked", np.float32)
    parts = [np.arange(C)]
    st = new_states(parts, [0], D, h, n_rows=N)[0]
    _run(X, y, orders[:1], h, "walked", np.float32, state=st)
    arrays = {k: np.array(v) for k, v in states_to_arrays({0: st}).items()}
    back = states_from_arrays(arrays)[0]
    assert isinstance(back, DualState)
    _run(X, y, orders[1:], h, "walked", np.float32, state=back)
    for a, b in zip(whole.averaged() + (whole.alpha,), back.averaged() + (back.alpha,)):
        assert a.tobytes() == b.tobytes()
    assert (whole.t, whole.count) == (back.t, back.count)


def test_dcd_chunk_refuses_bad_indices(data):
    X, y, _ = data
    st = DualState(np.arange(C), D, N)
    h = Hyper(solver="dcd")
    with pytest.raises(ValueError, match="index in the train split"):
        dcd_chunk(st, X, y, None, h)
    with pytest.raises(ValueError, match=f"row index {N} is outside the train split's {N} rows"):
        dcd_chunk(st, X[:3], y[:3], np.array([0, 1, N]), h)
    with pytest.raises(ValueError, match="needs the number of train rows"):
        new_states([np.arange(C)], [0], D, h)


@pytest.mark.parametrize("keep", [1.0, 0.15])
def test_densified_csr_equals_dense_rows(data, keep, monkeypatch):
    """CSR blocks densified into the spare rows (and cleared after) and updated from their
    non-zeros (sparse enough: ``keep``) or their dense rows give the values of the same rows
    given dense, chunks alternating CSR/dense (the GEMM update is
    test_dcd_matches_sequential's)."""
    X, y, orders = data
    X = X * (np.random.default_rng(1).random(X.shape) < keep)
    from bowsvm.asgd import core
    calls = []
    real = core._kernels.csr_rows_update
    monkeypatch.setattr(core._kernels, "csr_rows_update", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(core, "SPARSE_UPDATE_DENSITY", 1.1)  # row-by-row updates only
    h = Hyper(reg=1e-2, block_size=16, average_start=0, solver="dcd")
    ref = DualState(np.arange(C), D, N, np.float32)
    st = DualState(np.arange(C), D, N, np.float32)
    for e, order in enumerate(orders):
        Xo = X[order].astype(np.float32)
        dcd_chunk(ref, Xo, y[order], order, h)
        dcd_chunk(st, Xo if e == 1 else sp.csr_matrix(Xo), y[order], order, h, dense_above=0.0)
    for a, b in ((st.V, ref.V), (st.b, ref.b), (st.alpha, ref.alpha), (st.U, ref.U)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(st.V).max() > 0.1
    assert bool(calls) == (keep < 1.0)  # density 0.4 x 0.15: under the threshold
