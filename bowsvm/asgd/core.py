"""The ASGD engine: one class group's state and the block-exact chunk trainer.

A *class group* is a set of one-vs-all problems trained together; they share
the step size, the averaging weight and therefore the projection matrix P
(docs/DESIGN.md, "ASGD one-vs-all SVM"). Its state is a handful of arrays that
:meth:`GroupState.to_arrays` / :meth:`GroupState.from_arrays` turn into a
checkpoint (no pickle). :func:`train_chunk` runs the sequential algorithm
over one in-memory chunk (dense or CSR) in blocks: per block one GEMM for the
margins, the Gram matrix for in-block corrections, an exact sequential walk
parallel over classes, then GEMM or sparse-row updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

import numba
import numpy as np
import scipy.linalg.blas as _blas
import scipy.sparse as sp

from bowsvm.asgd import _kernels

__all__ = ["Hyper", "GroupState", "train_chunk", "decision_scores"]

#: Scalars of P (and of its inverse) are kept inside [1/BOUND, BOUND]; P is
#: folded into V and U when the next step would leave that range.
BOUND = 1.0e3

#: Below this fraction of violating (class, sample) pairs, the block's update
#: visits the non-zeros of A instead of running a GEMM.
SPARSE_UPDATE_DENSITY = 0.15


@dataclass(frozen=True)
class Hyper:
    """Validated hyper-parameters of the trainer.

    The defaults are those of :class:`bowsvm.asgd.ASGDClassifier` (and of
    ``bowsvm train``, whose ``--eta0`` defaults to ``auto`` instead).
    ``solver`` is ``"asgd"`` (this module) or ``"dcd"`` (:mod:`bowsvm.asgd.dcd`,
    which reads ``reg``, ``average_start``, ``averaged``, ``block_size`` and
    ``pos_weight`` only).
    """

    reg: float = 1e-4
    eta0: float = 0.1
    power: float = 2 / 3
    average_start: int = 0
    average_decay: float = 0.0
    bias_lr: float = 0.1
    averaged: bool = True
    block_size: int = 256
    pos_weight: float = 1.0
    solver: str = "asgd"


class SpareRows:
    """A state whose weights ``V`` (C, d) can gain spare rows below them (:meth:`reserve`)."""

    V: np.ndarray
    dtype: np.dtype

    def reserve(self, rows: int) -> np.ndarray:
        """The buffer ``[V; spare]`` with at least ``rows`` spare rows below V.

        V is a view of its first C rows, so ``buffer[:C + m] @ X_B^T`` yields the
        margins and the block's Gram matrix in a single GEMM.
        """
        C, d = self.V.shape
        buf = getattr(self, "_VX", None)
        if buf is None or buf.shape[0] < C + rows or not np.shares_memory(buf, self.V):
            buf = np.zeros((C + rows, d), dtype=self.dtype)
            buf[:C] = self.V
            self.V = buf[:C]
            self._VX = buf
            self._spare_zero = True
        return buf

    def block_products(self, X, pos: int, m: int):
        """``(X_B, [V; X_B] X_B^T)`` for rows ``pos .. pos+m-1`` of ``X`` (dense, or CSR
        densified): the block is copied into the spare rows below V, so one GEMM gives
        the margins (first C rows) and the block's Gram matrix (last m rows).

        A CSR block is scattered into spare rows kept at zero (:meth:`release_block`
        clears only its non-zeros again), so densifying costs its non-zeros, not
        ``m x d``; if a block was not released (an error, or dense rows) the rows are
        zeroed first.
        """
        C = self.V.shape[0]
        VX = self.reserve(m)
        XB = VX[C:C + m]
        if sp.issparse(X):
            if not self._spare_zero:
                XB[...] = 0
            self._spare_zero = False
            _kernels.csr_scatter(X.data, X.indices, X.indptr, pos, m, XB, False,
                                 numba.get_num_threads())
        else:
            self._spare_zero = False
            XB[...] = X[pos:pos + m]
        return XB, VX[:C + m] @ XB.T

    def release_block(self, X, pos: int, m: int) -> None:
        """After a CSR block of :meth:`block_products` is used: zero its non-zeros in
        the spare rows again, so the next CSR block needs no full clear."""
        if sp.issparse(X):
            C = self.V.shape[0]
            _kernels.csr_scatter(X.data, X.indices, X.indptr, pos, m, self._VX[C:C + m], True,
                                 numba.get_num_threads())
            self._spare_zero = True


class GroupState(SpareRows):
    """Training state of one class group.

    Parameters
    ----------
    row_class : int array (C,)
        For each row, the class index whose samples are positive for it.
    n_features : int
    dtype : float32 or float64

    Attributes
    ----------
    V, U : ndarray (C, d)
        Transformed weights; ``w = P11 V``, ``wbar = P21 V + P22 U``
        (``U`` is None for plain SGD).
    P : float64 (3,)
        ``(P11, P21, P22)``.
    b, bbar : float64 (C,)
        Biases and averaged biases (kept directly, unregularised).
    t : int
        Samples seen.
    u_zero : bool
        True while U is known to be zero (the alpha = 1 phase).

    Notes
    -----
    While CSR blocks are walked row by row with many classes (:func:`walks_by_columns`)
    the weights are held by columns (V and U transposed, (d, C), see :meth:`by_columns`):
    a row's dot products then read contiguous runs instead of gathers. V and U are stale
    meanwhile and memory doubles; :meth:`by_rows` (called by the dense path, the row walk
    and every method that hands out or saves weights) copies the columns back and drops
    them.
    """

    def __init__(self, row_class, n_features, dtype, averaged=True):
        self.row_class = np.ascontiguousarray(row_class, dtype=np.int64)
        C = self.row_class.shape[0]
        self.dtype = np.dtype(dtype)
        self.V = np.zeros((C, n_features), dtype=self.dtype)
        self.U = np.zeros((C, n_features), dtype=self.dtype) if averaged else None
        self.P = np.array([1.0, 1.0, 1.0])  # alpha = 1 form: wbar = w, u = 0
        self.b = np.zeros(C)
        self.bbar = np.zeros(C)
        self.t = 0
        self.u_zero = True
        self._cols = None

    # -- layout ------------------------------------------------------------------
    def by_columns(self):
        """``(VT, UT)``: the weights held by columns, (d, C) C-contiguous (``UT`` None
        for plain SGD); from now on they, not V and U, are the weights."""
        if getattr(self, "_cols", None) is None:
            self._cols = (np.ascontiguousarray(self.V.T),
                          None if self.U is None else np.ascontiguousarray(self.U.T))
        return self._cols

    def by_rows(self) -> None:
        """Copy weights held by columns back into V and U and drop the columns."""
        cols = getattr(self, "_cols", None)
        if cols is not None:
            self._cols = None
            np.copyto(self.V, cols[0].T)
            if cols[1] is not None:
                np.copyto(self.U, cols[1].T)

    def _live(self):
        """``(V, U)`` in the layout that holds the weights now (elementwise use only)."""
        cols = getattr(self, "_cols", None)
        return (self.V, self.U) if cols is None else cols

    # -- P handling -----------------------------------------------------------
    def fold(self) -> None:
        """Fold P into V and U so that P becomes the identity (U = wbar, V = w)."""
        p11, p21, p22 = (float(x) for x in self.P)
        V, U = self._live()
        if U is None:
            if p11 != 1.0:
                _kernels.fold(V, V, p11, 0.0, 1.0, False, numba.get_num_threads())
            self.P[:] = (1.0, 1.0, 1.0)
            return
        if self.u_zero:
            # u = 0 and wbar = w = P11 v.
            U[...] = 0
            _kernels.fold(V, U, p11, p11, 1.0, True, numba.get_num_threads())
        else:
            _kernels.fold(V, U, p11, p21, p22, True, numba.get_num_threads())
        self.P[:] = (1.0, 0.0, 1.0)
        self.u_zero = False

    def enter_alpha_one(self) -> None:
        """Switch to the alpha = 1 form (u = 0, P21 = P11, P22 = 1): wbar equals w."""
        if not self.u_zero:
            U = self._live()[1]
            if U is not None:
                U[...] = 0
            self.u_zero = True
        self.P[1] = self.P[0]
        self.P[2] = 1.0

    def weights(self):
        """Fold, then return (w, b): the current (not averaged) weights."""
        self.by_rows()
        self.fold()
        return self.V, self.b

    def averaged(self):
        """Fold, then return (wbar, bbar); for plain SGD the weights themselves."""
        self.by_rows()
        self.fold()
        if self.U is None:
            return self.V, self.b
        return self.U, self.bbar

    # -- checkpoints -------------------------------------------------------------
    def to_arrays(self, prefix: str = "") -> dict:
        """The state as a dict of arrays (for ``np.savez``); folds first."""
        self.by_rows()
        self.fold()
        out = {
            prefix + "V": self.V,
            prefix + "P": self.P,
            prefix + "b": self.b,
            prefix + "bbar": self.bbar,
            prefix + "row_class": self.row_class,
            prefix + "scalars": np.array([self.t, int(self.u_zero)], dtype=np.int64),
        }
        if self.U is not None:
            out[prefix + "U"] = self.U
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> "GroupState":
        """Rebuild a state written by :meth:`to_arrays`."""
        V = np.ascontiguousarray(arrays[prefix + "V"])
        st = cls.__new__(cls)
        st.row_class = np.ascontiguousarray(arrays[prefix + "row_class"], dtype=np.int64)
        st.dtype = V.dtype
        st.V = V.copy()
        st.U = np.ascontiguousarray(arrays[prefix + "U"]).copy() if prefix + "U" in arrays else None
        st.P = np.array(arrays[prefix + "P"], dtype=np.float64)
        st.b = np.array(arrays[prefix + "b"], dtype=np.float64)
        st.bbar = np.array(arrays[prefix + "bbar"], dtype=np.float64)
        sc = np.asarray(arrays[prefix + "scalars"])
        st.t = int(sc[0])
        st.u_zero = bool(sc[1])
        st._cols = None
        return st


def walks_sparse(X, pos: int, m: int, dense_above: float) -> bool:
    """True if CSR rows ``pos .. pos+m-1`` hold at most ``dense_above`` non-zeros per entry
    (the block is walked row by row, not densified for GEMMs)."""
    return bool(X.indptr[pos + m] - X.indptr[pos] <= dense_above * m * X.shape[1])


#: The sparse walk holds the weights by columns (``csr_walk_cols``) when each thread owns
#: at least this many classes, else it walks them by rows (``csr_walk``): measured (2%
#: density, d 16384, 2 threads) by columns 0.63x of the rows' time at 500 classes per
#: thread, 0.88x at 200, 1.05x at 100, 1.31x at 50, 1.79x at 25 (docs/BENCHMARKS.md,
#: "Where a dense-block epoch goes").
COLUMNS_WALK_PER_THREAD = 200


def walks_by_columns(n_classes: int, n_threads: int) -> bool:
    """True if a sparse walk over ``n_classes`` classes on ``n_threads`` threads holds the
    weights by columns (:data:`COLUMNS_WALK_PER_THREAD`)."""
    return n_classes >= COLUMNS_WALK_PER_THREAD * max(1, min(n_threads, n_classes))


#: ``sparse_rows_update``'s ratio argument when U is not updated (it is not read then).
_NO_RATIO = np.empty(0)


def add_block(V, U, A, XB, ratio=None, rows=None) -> int:
    """``V += A X_B``, and ``U += (A diag(ratio)) X_B`` when ``ratio`` is given.

    Row by row over the non-zeros of A when they are fewer than
    :data:`SPARSE_UPDATE_DENSITY` of its entries, else by GEMM. ``rows = (X, pos)``
    names the CSR rows that ``X_B`` densifies: when they hold at most
    :data:`CSR_ROWS_UPDATE_BELOW` non-zeros per entry, the row-by-row form visits only
    their non-zeros (the same values; not for CSR with duplicate indices, which stays on
    ``X_B``). Returns the number of non-zeros of A.
    """
    nnz = int(np.count_nonzero(A))
    if nnz:
        update_u = ratio is not None
        if nnz < SPARSE_UPDATE_DENSITY * A.size:
            U_ = U if update_u else V
            ratio_ = ratio if update_u else _NO_RATIO
            nt = numba.get_num_threads()
            X = None if rows is None else rows[0]
            if (X is not None and sp.issparse(X) and X.has_canonical_format
                    and walks_sparse(X, rows[1], A.shape[1], CSR_ROWS_UPDATE_BELOW)):
                _kernels.csr_rows_update(V, U_, A, ratio_, X.data, X.indices, X.indptr,
                                         rows[1], update_u, nt)
            else:
                _kernels.sparse_rows_update(V, U_, A, ratio_, XB, update_u, nt)
        else:
            _gemm_update(V, A, XB)
            if update_u:
                _gemm_update(U, A * ratio[None, :], XB)
    return nnz


def _gemm_update(W, A, XB):
    """``W += A @ XB`` in place through BLAS (W and XB C-contiguous)."""
    gemm = _blas.get_blas_funcs("gemm", dtype=W.dtype)
    out = gemm(1.0, XB.T, np.asarray(A, dtype=W.dtype).T, beta=1.0, c=W.T, overwrite_c=True)
    if not np.shares_memory(out, W):  # pragma: no cover - BLAS wrapper copied
        W[...] = out.T


def train_chunk(state: GroupState, X, y, hyper: Hyper, timings: dict | None = None,
                dense_above: float | None = None) -> None:
    """Run ASGD over the rows of one chunk, in order, updating ``state``.

    Parameters
    ----------
    state : GroupState
    X : ndarray (n, d) C-contiguous or scipy.sparse CSR, same dtype as the state
    y : int64 array (n,)
        Class index of each row (compared with ``state.row_class``).
    hyper : Hyper
    timings : dict or None
        If given, seconds spent per phase are added to it -- for benchmarks:
        margins (the one GEMM ``[V; X_B] X_B^T`` giving margins and Gram
        matrix), gram (its conversion to float64), walk, update; and the
        counts of violating (class, sample) pairs and of all pairs.
    dense_above : float or None
        For CSR ``X``: a block of rows with more non-zeros than this fraction
        is copied into a dense buffer and trained by the dense GEMM path; a
        sparser block is walked row by row (``csr_walk`` or, with many classes,
        ``csr_walk_cols``). None means
        :data:`DENSE_BLOCK_ABOVE`, the measured crossover; 1.0 keeps every
        block sparse, 0.0 makes every block dense.

    Notes
    -----
    Equals the plain sequential algorithm (up to rounding) whatever the block
    size and thread count: the walk decides each violation from the exact
    margin (docs/DESIGN.md, block-exact GEMM formulation).
    """
    n = X.shape[0]
    if n == 0:
        return
    y = np.ascontiguousarray(y, dtype=np.int64)
    is_sparse = sp.issparse(X)
    if is_sparse:
        data, indices, indptr = X.data, X.indices, X.indptr
        dense_above = DENSE_BLOCK_ABOVE if dense_above is None else float(dense_above)
    Bmax = int(hyper.block_size)
    p11_prev = np.empty(Bmax)
    coef_v = np.empty(Bmax)
    coef_u = np.empty(Bmax)
    eta = np.empty(Bmax)
    alpha = np.empty(Bmax)
    P_out = np.empty(3)
    C = state.V.shape[0]
    pos = 0
    while pos < n:
        B = min(Bmax, n - pos)
        t1 = state.t + 1
        if not hyper.averaged or t1 <= hyper.average_start + 1:
            state.enter_alpha_one()
        args = (state.t, B, hyper.eta0, hyper.reg, hyper.power, hyper.average_start,
                hyper.average_decay, hyper.averaged, BOUND)
        m = _kernels.block_schedule(state.P, *args, False, p11_prev, coef_v, coef_u,
                                    eta, alpha, P_out)
        if m == 0:
            state.fold()
            if not hyper.averaged or t1 <= hyper.average_start + 1:
                state.enter_alpha_one()
            m = _kernels.block_schedule(state.P, *args, True, p11_prev, coef_v, coef_u,
                                        eta, alpha, P_out)
        yb = y[pos:pos + m]
        update_u = state.U is not None and bool(np.any(coef_u[:m] != 0.0))
        if is_sparse and walks_sparse(X, pos, m, dense_above):
            tic = perf_counter()
            nt = numba.get_num_threads()
            if walks_by_columns(C, nt):
                V_, U_ = state.by_columns()
                walk = _kernels.csr_walk_cols
            else:
                state.by_rows()
                V_, U_ = state.V, state.U
                walk = _kernels.csr_walk
            walk(V_, U_ if U_ is not None else V_, data, indices, indptr, pos, m,
                 state.row_class, yb, p11_prev, coef_v, coef_u, eta, alpha, hyper.bias_lr,
                 hyper.pos_weight, state.b, state.bbar, update_u, nt)
            if timings is not None:
                timings["walk"] = timings.get("walk", 0.0) + perf_counter() - tic
                timings["pairs"] = timings.get("pairs", 0) + C * m
        else:
            tic = perf_counter()
            state.by_rows()
            XB, MG = state.block_products(X, pos, m)  # margins and Gram matrix, one GEMM
            Mg = MG[:C]
            tac = perf_counter()
            G = np.ascontiguousarray(MG[C:], dtype=np.float64)
            toc = perf_counter()
            A = np.empty((C, m))
            _kernels.dense_walk(Mg, G, state.row_class, yb, p11_prev, coef_v, eta,
                                alpha, hyper.bias_lr, hyper.pos_weight, state.b, state.bbar,
                                A, numba.get_num_threads())
            tw = perf_counter()
            nnz = add_block(state.V, state.U, A, XB,
                            coef_u[:m] / coef_v[:m] if update_u else None, rows=(X, pos))
            state.release_block(X, pos, m)
            if timings is not None:
                tu = perf_counter()
                for k, v in (("margins", tac - tic), ("gram", toc - tac), ("walk", tw - toc),
                             ("update", tu - tw)):
                    timings[k] = timings.get(k, 0.0) + v
                timings["violations"] = timings.get("violations", 0) + nnz
                timings["pairs"] = timings.get("pairs", 0) + C * m
        if update_u:
            state.u_zero = False
        state.P[:] = P_out
        state.t += m
        pos += m


#: A CSR block of training rows with more non-zeros than this fraction is trained by
#: the dense GEMM path (densified into the state's spare rows); see train_chunk and
#: docs/BENCHMARKS.md, "Trainer density crossover" (issue 16).
DENSE_BLOCK_ABOVE = 0.033

#: The row-by-row update of a densified CSR block reads the CSR non-zeros (not the
#: dense rows) up to this density: measured (1000 x 16384 weights, 256 rows, 5% of pairs
#: violating) 0.5x the dense rows' time at 3%, 0.9x at 9.5%, 1.5x at 16%, 2.2x at 24%
#: (docs/BENCHMARKS.md, "Dense blocks from CSR non-zeros").
CSR_ROWS_UPDATE_BELOW = 0.08

#: A CSR batch with more non-zeros than this fraction is densified for a GEMM.
DENSIFY_ABOVE = 0.05


def decision_scores(X, coef, intercept, coef_t=None) -> np.ndarray:
    """``X @ coef.T + intercept``: the scores (n, C) of a linear model, dense or CSR ``X``.

    The one scoring function of bowsvm: the estimator's ``decision_function``,
    ``bowsvm score`` and ``bowsvm predict`` all call it.

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix of shape (n, dim)
    coef : ndarray of shape (C, dim)
    intercept : ndarray of shape (C,)
    coef_t : ndarray of shape (dim, C), optional
        ``coef.T`` made C-contiguous, reused across batches for sparse input
        (scipy would otherwise copy the transposed view on every call).

    Returns
    -------
    ndarray of shape (n, C), C-contiguous
        float32 if ``X`` and ``coef`` are both float32, else float64.

    Raises
    ------
    ValueError
        If the dimensions disagree.

    Notes
    -----
    A CSR batch denser than ``DENSIFY_ABOVE`` (5 % non-zeros) is densified and
    multiplied by BLAS GEMM: measured here (dim 16384, C 1000, 1024 rows) the
    sparse product costs as much as GEMM at 5 % density and 8x more at 30 %
    (benchmarks/bench_score.py).
    """
    coef = np.asarray(coef)
    if X.shape[1] != coef.shape[1]:
        raise ValueError(
            f"features have dim {X.shape[1]} but the model has dim {coef.shape[1]}."
        )
    dtype = np.float32 if (X.dtype == np.float32 and coef.dtype == np.float32) else np.float64
    coef = coef.astype(dtype, copy=False)
    intercept = np.asarray(intercept).astype(dtype, copy=False)
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=dtype)
        n = X.shape[0]
        if n and X.nnz > DENSIFY_ABOVE * n * X.shape[1]:
            S = X.toarray() @ coef.T
        else:
            if coef_t is None:
                coef_t = np.ascontiguousarray(coef.T)
            S = np.asarray(X @ coef_t.astype(dtype, copy=False), dtype=dtype)
    else:
        S = np.asarray(X, dtype=dtype) @ coef.T
    S += intercept[None, :]
    return np.ascontiguousarray(S, dtype=dtype)
