"""Dual coordinate descent (DCD) for the one-vs-all SVMs, in the block-exact GEMM form.

The solver of liblinear's L1-loss SVM (Hsieh et al., ICML 2008) for the
objective ``bowsvm train`` minimises (docs/DESIGN.md, "Dual coordinate
descent"): per class ``lambda/2 (|w|^2 + b^2) + (1/n) sum_i q_i hinge_i``, the
bias being the weight of a constant-1 feature. Each visit of train row ``i``
for class ``c`` sets its dual variable to the exact minimiser along that
coordinate, clipped to its box ``[0, q_i / (lambda n)]``; there is no step size.
A visit needs the exact current margin, which the block form gives as for
ASGD: per block one GEMM ``[W; X_B] X_B^T`` (margins and Gram matrix), a walk
that corrects each margin by the block's earlier changes, and one update
``W += A X_B`` (sparse rows when few pairs changed); sparse blocks are walked
row by row. The result equals the sequential algorithm up to rounding,
whatever the block size and thread count (tests/test_dcd.py). ``bowsvm train
--solver dcd`` runs it.

Averaging: from ``average_start`` samples on, the model is the running mean of
the iterates at the end of each block: on both benchmarks it scores above the
last iterate, which swings from epoch to epoch (docs/BENCHMARKS.md, "Dual
coordinate descent in the block form: a study").

The dual variables need each row's index in the train split: a chunk comes
with ``idx`` (:func:`bowsvm.io.features.iter_chunks` ``with_index=True``).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from bowsvm.asgd import _kernels
from bowsvm.asgd.core import DENSE_BLOCK_ABOVE, SpareRows, add_block, walks_sparse

__all__ = ["DualState", "dcd_chunk", "dual_bytes"]


def dual_bytes(n_classes: int, n_rows: int) -> int:
    """Bytes of the dual variables of ``n_classes`` one-vs-all problems on ``n_rows`` rows."""
    return 4 * int(n_classes) * int(n_rows)


class DualState(SpareRows):
    """Training state of one class group under dual coordinate descent.

    Parameters
    ----------
    row_class : int array (C,)
        For each row, the class index whose samples are positive for it.
    n_features : int
    n_rows : int
        Rows of the train split (columns of ``alpha``; fixes the box).
    dtype : float32 or float64 (of the weights)
    averaged : bool
        Keep the running mean of the block-end iterates once averaging starts.

    Attributes
    ----------
    V : ndarray (C, d)
        The weights ``w``.
    b : float64 (C,)
        The biases (weights of the constant feature; regularised).
    alpha : float32 (C, n_rows)
        Dual variables.
    U, ubar : ndarray (C, d), float64 (C,) or None
        Running mean of the block-end weights and biases (None for ``averaged=False``).
    count : int
        Block-end iterates in the mean.
    t : int
        Samples seen.
    """

    def __init__(self, row_class, n_features, n_rows, dtype=np.float32, averaged=True):
        self.row_class = np.ascontiguousarray(row_class, dtype=np.int64)
        C = self.row_class.shape[0]
        self.dtype = np.dtype(dtype)
        self.V = np.zeros((C, n_features), dtype=self.dtype)
        self.b = np.zeros(C)
        self.alpha = np.zeros((C, int(n_rows)), dtype=np.float32)
        self.U = np.zeros((C, n_features), dtype=self.dtype) if averaged else None
        self.ubar = np.zeros(C) if averaged else None
        self.count = 0
        self.t = 0

    def fold(self) -> None:
        """Nothing to fold (the interface of :class:`bowsvm.asgd.core.GroupState`)."""

    def weights(self):
        """(w, b): the current iterate."""
        return self.V, self.b

    def averaged(self):
        """(wbar, bbar): the running mean once it holds an iterate, else the iterate."""
        if self.U is None or self.count == 0:
            return self.V, self.b
        return self.U, self.ubar

    def to_arrays(self, prefix: str = "") -> dict:
        """The state as a dict of arrays (for ``np.savez``)."""
        out = {prefix + "V": self.V, prefix + "b": self.b, prefix + "alpha": self.alpha,
               prefix + "row_class": self.row_class,
               prefix + "scalars": np.array([self.t, self.count], dtype=np.int64)}
        if self.U is not None:
            out[prefix + "U"] = self.U
            out[prefix + "ubar"] = self.ubar
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> "DualState":
        """Rebuild a state written by :meth:`to_arrays`."""
        st = cls.__new__(cls)
        st.V = np.ascontiguousarray(arrays[prefix + "V"]).copy()
        st.dtype = st.V.dtype
        st.b = np.array(arrays[prefix + "b"], dtype=np.float64)
        st.alpha = np.ascontiguousarray(arrays[prefix + "alpha"], dtype=np.float32).copy()
        st.row_class = np.ascontiguousarray(arrays[prefix + "row_class"], dtype=np.int64)
        averaged = prefix + "U" in arrays
        st.U = np.ascontiguousarray(arrays[prefix + "U"]).copy() if averaged else None
        st.ubar = np.array(arrays[prefix + "ubar"], dtype=np.float64) if averaged else None
        st.t, st.count = (int(v) for v in np.asarray(arrays[prefix + "scalars"]))
        return st


def _row_norms(X) -> np.ndarray:
    """``|x_i|^2 + 1`` in float64 (the constant feature included)."""
    if sp.issparse(X):
        sq = np.zeros(X.shape[0])
        np.add.at(sq, np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)),
                  np.square(X.data, dtype=np.float64))
        return sq + 1.0
    return np.einsum("ij,ij->i", X, X, dtype=np.float64) + 1.0


def dcd_chunk(state: DualState, X, y, idx, hyper, dense_above: float | None = None) -> None:
    """Run dual coordinate descent over the rows of one chunk, in order, updating ``state``.

    Parameters
    ----------
    state : DualState
    X : ndarray (n, d) C-contiguous or scipy.sparse CSR, same dtype as the state
    y : int64 array (n,)
        Class index of each row.
    idx : int array (n,)
        Each row's index in the train split, in ``[0, state.alpha.shape[1])``.
    hyper : bowsvm.asgd.core.Hyper
        ``reg``, ``pos_weight``, ``block_size``, ``averaged``, ``average_start``.
    dense_above : float or None
        For CSR ``X``: blocks denser than this fraction take the GEMM path (as in
        :func:`bowsvm.asgd.core.train_chunk`); None is ``DENSE_BLOCK_ABOVE``.

    Raises
    ------
    ValueError
        If ``idx`` is missing, of the wrong length or outside the train split.
    """
    n = X.shape[0]
    if n == 0:
        return
    N = state.alpha.shape[1]
    if idx is None or len(idx) != n:
        raise ValueError("dual coordinate descent needs each row's index in the train split "
                         f"({n} indices), got {'none' if idx is None else len(idx)}.")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if idx.min() < 0 or idx.max() >= N:
        raise ValueError(f"row index {int(idx.max()) if idx.max() >= N else int(idx.min())} "
                         f"is outside the train split's {N} rows.")
    y = np.ascontiguousarray(y, dtype=np.int64)
    upos = hyper.pos_weight / (hyper.reg * N)
    uneg = 1.0 / (hyper.reg * N)
    qd = _row_norms(X)
    is_sparse = sp.issparse(X)
    dense_above = DENSE_BLOCK_ABOVE if dense_above is None else float(dense_above)
    C = state.V.shape[0]
    nt = numba.get_num_threads()
    B = int(hyper.block_size)
    for pos in range(0, n, B):
        m = min(B, n - pos)
        sl = slice(pos, pos + m)
        if is_sparse and walks_sparse(X, pos, m, dense_above):
            _kernels.dcd_csr_walk(state.V, X.data, X.indices, X.indptr, pos, m, qd[sl],
                                  state.row_class, y[sl], idx[sl], state.alpha, upos, uneg,
                                  state.b, nt)
        else:
            XB, MG = state.block_products(X, pos, m)  # margins and Gram matrix, one GEMM
            G = np.asarray(MG[C:], dtype=np.float64) + 1.0
            A = np.empty((C, m))
            _kernels.dcd_dense_walk(MG[:C], G, qd[sl], state.row_class, y[sl], idx[sl],
                                    state.alpha, upos, uneg, state.b, A, nt)
            add_block(state.V, None, A, XB, rows=(X, pos))
            state.release_block(X, pos, m)
        if hyper.averaged and state.U is not None and state.t >= hyper.average_start:
            state.count += 1
            _kernels.running_mean(state.U, state.V, state.ubar, state.b, 1.0 / state.count, nt)
        state.t += m
