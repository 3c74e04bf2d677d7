"""numba kernels of the ASGD trainer: arrays in, arrays out, no I/O or config.

Notation (see docs/DESIGN.md, "ASGD one-vs-all SVM"): a class group keeps
``V`` and ``U`` (C x d) and one lower-triangular 2x2 matrix ``P`` shared by its
classes, stored as the float64 triple ``(P11, P21, P22)``, with
``w = P11 v`` and ``wbar = P21 v + P22 u``.

Every kernel that walks samples walks them in order and, for each class,
reproduces the plain sequential algorithm exactly; parallel kernels split the
classes into contiguous ranges, one per thread, so they are race-free and give
the same bits whatever the thread count.

Parallel kernels take ``n_threads`` (the caller passes
``numba.get_num_threads()``) and give each of that many prange iterations one
contiguous class range. fastmath is off everywhere (the violation test ``y*s < 1`` must not be
reassociated); that is the one place where the flag is set.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_FLAGS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@njit(**_FLAGS)
def block_schedule(P, t_start, n_steps, eta0, reg, power, average_start, average_decay,
                   averaged, bound, force_first, p11_prev, coef_v, coef_u, eta_out, alpha_out,
                   P_out):
    """Scalars of the next ``n_steps`` steps under the projection transform.

    Parameters
    ----------
    P : float64 (3,)
        ``(P11, P21, P22)`` before the block.
    t_start : int
        Samples seen before the block (the first step has ``t = t_start + 1``).
    bound : float
        Safe range: a step is accepted only while ``P11, P22 >= 1/bound`` and
        ``|P21|, |R21| <= bound`` after it (``force_first`` accepts step 0 anyway).
    p11_prev, coef_v, coef_u, eta_out, alpha_out : float64 (n_steps,)
        Out: ``P11`` before each step (margins), ``eta R11`` (v update),
        ``eta (R21 + alpha R22)`` (u update; 0 when alpha = 1), eta, alpha.
    P_out : float64 (3,)
        Out: P after the accepted steps.

    Returns
    -------
    m : int
        Number of accepted steps (0 means: fold P first).

    Notes
    -----
    When alpha = 1 the averaged weights equal the weights: P21 = P11, P22 = 1
    and u is kept at zero (the caller zeroes U before such a block).
    """
    p11 = P[0]
    p21 = P[1]
    p22 = P[2]
    m = 0
    for j in range(n_steps):
        t = t_start + j + 1
        eta = eta0 / (1.0 + reg * eta0 * t) ** power
        s = 1.0 - reg * eta
        if averaged and t > average_start:
            alpha = (average_decay + 1.0) / (t - average_start + average_decay)
        else:
            alpha = 1.0
        n11 = s * p11
        if alpha == 1.0:
            n21 = n11
            n22 = 1.0
            r21 = -1.0
            cu = 0.0
        else:
            n21 = alpha * s * p11 + (1.0 - alpha) * p21
            n22 = (1.0 - alpha) * p22
            r21 = -n21 / (n11 * n22)
            cu = eta * (r21 + alpha / n22)
        ok = (n11 >= 1.0 / bound and n22 >= 1.0 / bound and abs(n21) <= bound
              and abs(r21) <= bound)
        if not ok and not (force_first and j == 0):
            break
        p11_prev[j] = p11
        coef_v[j] = eta / n11
        coef_u[j] = cu
        eta_out[j] = eta
        alpha_out[j] = alpha
        p11 = n11
        p21 = n21
        p22 = n22
        m = j + 1
    P_out[0] = p11
    P_out[1] = p21
    P_out[2] = p22
    return m


@njit(parallel=True, **_FLAGS)
def dense_walk(M, G, row_class, y, p11_prev, coef_v, eta, alpha, bias_lr, pos_weight, b,
               bbar, A, n_threads):
    """Decide the violations of one block exactly and fill the update matrix.

    Parameters
    ----------
    M : float32 or float64 (C, B)
        ``V X_B^T`` at the block start.
    G : float64 (B, B)
        ``X_B X_B^T``.
    row_class : int64 (C,)
        Class index whose samples are positive for each row.
    y : int64 (B,)
        Class index of each sample.
    pos_weight : float
        Weight of a positive sample's hinge loss (negatives weigh 1): its
        step is ``pos_weight`` times longer, for the weights and the bias.
    b, bbar : float64 (C,)
        Biases and averaged biases, updated in place.
    A : float64 (C, B)
        Out: ``A[c, j] = eta_j y_cj q_cj R11_j`` where (c, j) violated, else 0
        (``q_cj`` = ``pos_weight`` for a positive, 1 for a negative).

    Notes
    -----
    The margin of class c at sample j is
    ``P11_{j-1} (M[c, j] + sum_{i<j} A[c, i] G[i, j]) + b_c``; the in-block
    correction is accumulated row by row at each violation (cost: violations x B).
    Each thread owns a contiguous range of classes for the whole block.
    """
    C, B = M.shape
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        acc = np.empty(B, dtype=np.float64)
        for c in range(c0, c1):
            acc[:] = 0.0
            bc = b[c]
            bb = bbar[c]
            cls = row_class[c]
            for j in range(B):
                score = p11_prev[j] * (M[c, j] + acc[j]) + bc
                yc = 1.0 if y[j] == cls else -1.0
                if yc * score < 1.0:
                    qy = pos_weight if yc > 0.0 else -1.0
                    a = coef_v[j] * qy
                    A[c, j] = a
                    for k in range(j + 1, B):
                        acc[k] += a * G[j, k]
                    bc += bias_lr * eta[j] * qy
                else:
                    A[c, j] = 0.0
                bb = (1.0 - alpha[j]) * bb + alpha[j] * bc
            b[c] = bc
            bbar[c] = bb


@njit(parallel=True, **_FLAGS)
def sparse_rows_update(V, U, A, ratio, XB, update_u, n_threads):
    """``V += A X_B`` and ``U += (A diag(ratio)) X_B`` visiting only non-zeros of A.

    Used instead of GEMM when few (class, sample) pairs violate.
    Each thread owns a contiguous class range.
    """
    C, B = A.shape
    d = XB.shape[1]
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        for c in range(c0, c1):
            for j in range(B):
                a = A[c, j]
                if a != 0.0:
                    av = V.dtype.type(a)
                    if update_u:  # one pass over the sample's row for both matrices
                        au = U.dtype.type(a * ratio[j])
                        for k in range(d):
                            x = XB[j, k]
                            V[c, k] += av * x
                            U[c, k] += au * x
                    else:
                        for k in range(d):
                            V[c, k] += av * XB[j, k]


@njit(parallel=True, **_FLAGS)
def csr_rows_update(V, U, A, ratio, data, indices, indptr, row0, update_u, n_threads):
    """:func:`sparse_rows_update` reading the block's rows from CSR (``row0 ..``): only
    a row's non-zeros are visited, so a pair costs nnz, not d. The same values as
    the dense form for CSR without duplicate indices (a zero entry adds 0 there; only a
    zero weight's sign can differ)."""
    C, B = A.shape
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        for c in range(c0, c1):
            for j in range(B):
                a = A[c, j]
                if a != 0.0:
                    av = V.dtype.type(a)
                    k0 = indptr[row0 + j]
                    k1 = indptr[row0 + j + 1]
                    if update_u:
                        au = U.dtype.type(a * ratio[j])
                        for k in range(k0, k1):
                            x = data[k]
                            col = indices[k]
                            V[c, col] += av * x
                            U[c, col] += au * x
                    else:
                        for k in range(k0, k1):
                            V[c, indices[k]] += av * data[k]


@njit(parallel=True, **_FLAGS)
def csr_scatter(data, indices, indptr, row0, m, out, clear, n_threads):
    """Rows ``row0 .. row0+m-1`` of a CSR matrix into the zero rows ``out[:m]``
    (``out[j, col] += value``, as scipy's ``toarray``), or with ``clear`` back to
    zero at the same places: the cost is the block's non-zeros, not ``m x d``."""
    nth = max(1, min(n_threads, m))
    for th in prange(nth):
        for j in range(th * m // nth, (th + 1) * m // nth):
            for k in range(indptr[row0 + j], indptr[row0 + j + 1]):
                if clear:
                    out[j, indices[k]] = 0.0
                else:
                    out[j, indices[k]] += data[k]


@njit(**_FLAGS)
def _csr_step(V, U, c, j, k0, k1, dot, data, indices, row_class, y, p11_prev, coef_v,
              coef_u, eta, alpha, bias_lr, pos_weight, b, bbar, update_u):
    """Decide and apply one (class, sample) step of :func:`csr_walk` given its dot product
    (:func:`csr_walk_cols` has the same lines on columns)."""
    score = p11_prev[j] * dot + b[c]
    yc = 1.0 if y[j] == row_class[c] else -1.0
    if yc * score < 1.0:
        qy = pos_weight if yc > 0.0 else -1.0
        av = coef_v[j] * qy
        for k in range(k0, k1):
            V[c, indices[k]] += V.dtype.type(av * data[k])
        if update_u:
            au = coef_u[j] * qy
            for k in range(k0, k1):
                U[c, indices[k]] += U.dtype.type(au * data[k])
        b[c] += bias_lr * eta[j] * qy
    bbar[c] = (1.0 - alpha[j]) * bbar[c] + alpha[j] * b[c]


@njit(parallel=True, **_FLAGS)
def csr_walk(V, U, data, indices, indptr, row0, m, row_class, y, p11_prev, coef_v,
             coef_u, eta, alpha, bias_lr, pos_weight, b, bbar, update_u, n_threads):
    """Sequential ASGD over CSR rows ``row0 .. row0+m-1``, exact, parallel over classes.

    For sparse rows the margins are gathered dot products and the updates are
    scatters over the row's non-zeros, so each class walks the block in order
    (no Gram-matrix correction is needed: the walk itself costs what the
    margins ``X_B V^T`` would). Classes are walked four at a time: each row's
    indices and values are loaded once for four gathers, and the four dot
    products are independent addition chains (float64 accumulators).

    Parameters
    ----------
    V, U : float32 or float64 (C, d)
        Transformed weights, updated in place (U only if ``update_u``).
    data, indices, indptr : CSR arrays of the chunk.
    y : int64 (m,)
        Class index of each sample of the block.
    """
    C = V.shape[0]
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        c = c0
        while c < c1:
            if c + 4 <= c1:
                for j in range(m):
                    r = row0 + j
                    k0 = indptr[r]
                    k1 = indptr[r + 1]
                    d0 = 0.0
                    d1 = 0.0
                    d2 = 0.0
                    d3 = 0.0
                    for k in range(k0, k1):
                        ix = indices[k]
                        v = np.float64(data[k])
                        d0 += np.float64(V[c, ix]) * v
                        d1 += np.float64(V[c + 1, ix]) * v
                        d2 += np.float64(V[c + 2, ix]) * v
                        d3 += np.float64(V[c + 3, ix]) * v
                    _csr_step(V, U, c, j, k0, k1, d0, data, indices, row_class, y,
                              p11_prev, coef_v, coef_u, eta, alpha, bias_lr, pos_weight, b, bbar,
                              update_u)
                    _csr_step(V, U, c + 1, j, k0, k1, d1, data, indices, row_class, y,
                              p11_prev, coef_v, coef_u, eta, alpha, bias_lr, pos_weight, b, bbar,
                              update_u)
                    _csr_step(V, U, c + 2, j, k0, k1, d2, data, indices, row_class, y,
                              p11_prev, coef_v, coef_u, eta, alpha, bias_lr, pos_weight, b, bbar,
                              update_u)
                    _csr_step(V, U, c + 3, j, k0, k1, d3, data, indices, row_class, y,
                              p11_prev, coef_v, coef_u, eta, alpha, bias_lr, pos_weight, b, bbar,
                              update_u)
                c += 4
            else:
                for j in range(m):
                    r = row0 + j
                    k0 = indptr[r]
                    k1 = indptr[r + 1]
                    d0 = 0.0
                    for k in range(k0, k1):
                        d0 += np.float64(V[c, indices[k]]) * np.float64(data[k])
                    _csr_step(V, U, c, j, k0, k1, d0, data, indices, row_class, y,
                              p11_prev, coef_v, coef_u, eta, alpha, bias_lr, pos_weight, b, bbar,
                              update_u)
                c += 1


@njit(parallel=True, **_FLAGS)
def csr_walk_cols(VT, UT, data, indices, indptr, row0, m, row_class, y, p11_prev, coef_v,
                  coef_u, eta, alpha, bias_lr, pos_weight, b, bbar, update_u, n_threads):
    """Sequential ASGD over CSR rows ``row0 .. row0+m-1``, exact, parallel over classes,
    on the weights held by columns: ``VT``, ``UT`` (d, C) are V and U transposed.

    For sparse rows no Gram-matrix correction is needed: each thread owns a class range
    and walks the rows in order, so each class sees every earlier update. A row's dot
    products for the thread's classes are one pass over the row's non-zeros, each reading
    the contiguous run ``VT[ix, c0:c1]`` (float64 sums, in the row's order); a violating
    class then adds to its column at the row's non-zeros. The same sums and steps as
    :func:`csr_walk`, so the same bits (``tests/naive.py`` ``naive_csr_walk`` is the
    loop-by-loop twin of both); faster when a thread owns a few hundred classes or
    more, slower below (the run over ``c0:c1`` is then too short).

    Parameters
    ----------
    VT, UT : float32 or float64 (d, C)
        Transformed weights by columns, updated in place (UT only if ``update_u``).
    data, indices, indptr : CSR arrays of the chunk.
    y : int64 (m,)
        Class index of each sample of the block.
    """
    C = VT.shape[1]
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        acc = np.empty(c1 - c0)
        for j in range(m):
            r = row0 + j
            k0 = indptr[r]
            k1 = indptr[r + 1]
            for q in range(c1 - c0):
                acc[q] = 0.0
            for k in range(k0, k1):
                ix = indices[k]
                v = np.float64(data[k])
                for c in range(c0, c1):
                    acc[c - c0] += np.float64(VT[ix, c]) * v
            for c in range(c0, c1):  # _csr_step on columns (inline: a view there is slower)
                score = p11_prev[j] * acc[c - c0] + b[c]
                yc = 1.0 if y[j] == row_class[c] else -1.0
                if yc * score < 1.0:
                    qy = pos_weight if yc > 0.0 else -1.0
                    av = coef_v[j] * qy
                    for k in range(k0, k1):
                        VT[indices[k], c] += VT.dtype.type(av * data[k])
                    if update_u:
                        au = coef_u[j] * qy
                        for k in range(k0, k1):
                            UT[indices[k], c] += UT.dtype.type(au * data[k])
                    b[c] += bias_lr * eta[j] * qy
                bbar[c] = (1.0 - alpha[j]) * bbar[c] + alpha[j] * b[c]


@njit(parallel=True, **_FLAGS)
def fold(V, U, p11, p21, p22, fold_u, n_threads):
    """Fold P into the weights: ``u <- P21 v + P22 u`` (if ``fold_u``), ``v <- P11 v``."""
    C, d = V.shape
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        for c in range(c0, c1):
            for k in range(d):
                v = np.float64(V[c, k])
                if fold_u:
                    U[c, k] = U.dtype.type(p21 * v + p22 * np.float64(U[c, k]))
                V[c, k] = V.dtype.type(p11 * v)


@njit(parallel=True, **_FLAGS)
def hinge_stats(S, y, row_class, pos_weight, loss_out, n_threads):
    """Per-row sum of hinge losses ``q_ci max(0, 1 - y_ci S[i, c])`` over samples.

    Parameters
    ----------
    S : float (n, C)
        Decision scores.
    pos_weight : float
        ``q_ci`` for a positive sample (negatives weigh 1).
    loss_out : float64 (C,)
        Out.
    """
    n, C = S.shape
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        for c in range(c0, c1):
            acc = 0.0
            cls = row_class[c]
            for i in range(n):
                yc = 1.0 if y[i] == cls else -1.0
                v = 1.0 - yc * S[i, c]
                if v > 0.0:
                    acc += pos_weight * v if yc > 0.0 else v
            loss_out[c] = acc


# -- dual coordinate descent (bowsvm.asgd.dcd) ---------------------------------------
#
# The dual variables ``alpha`` (C, n_train) are float32; each visit computes the new
# value in float64, rounds it to float32, and moves the weights by the change of the
# stored value, so ``w_c = sum_i alpha_ci y_ci x_i`` holds with the stored alphas.

@njit(**_FLAGS)
def _dcd_step(alpha, c, i, margin, yc, qd, upos, uneg):
    """The exact coordinate step of (class c, train row i): the change times y (0: none)."""
    a0 = alpha[c, i]
    hi = upos if yc > 0.0 else uneg
    a1 = alpha.dtype.type(min(max(np.float64(a0) - (yc * margin - 1.0) / qd, 0.0), hi))
    if a1 == a0:
        return 0.0
    alpha[c, i] = a1
    return (np.float64(a1) - np.float64(a0)) * yc


@njit(parallel=True, **_FLAGS)
def dcd_dense_walk(M, G, qd, row_class, y, idx, alpha, upos, uneg, b, A, n_threads):
    """Dual coordinate descent over one block, exact, parallel over classes.

    Parameters
    ----------
    M : float32 or float64 (C, B)
        ``W X_B^T`` at the block start (bias not included).
    G : float64 (B, B)
        ``X_B X_B^T + 1``: the Gram matrix of the rows with the constant bias feature.
    qd : float64 (B,)
        ``|x_j|^2 + 1``.
    idx : int64 (B,)
        Each sample's row in the train split (its column of ``alpha``).
    alpha : float32 (C, n_train)
        Dual variables, updated in place.
    upos, uneg : float
        The box of a positive's and a negative's dual variable.
    b : float64 (C,)
        Biases (the weights of the constant feature), updated in place.
    A : float64 (C, B)
        Out: the change of ``alpha[c, idx[j]]`` times ``y_cj`` (0 where none), so
        that ``W += A X_B`` completes the block.

    Notes
    -----
    The margin of class c at sample j is ``M[c, j] + b_c + sum_{i<j} A[c, i] G[i, j]``
    with ``b_c`` the bias at the block start; the correction is accumulated at each
    change (cost: changes x B), as in :func:`dense_walk`.
    """
    C, B = M.shape
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        acc = np.empty(B, dtype=np.float64)
        for c in range(c0, c1):
            acc[:] = 0.0
            b0 = b[c]
            bc = b0
            cls = row_class[c]
            for j in range(B):
                yc = 1.0 if y[j] == cls else -1.0
                a = _dcd_step(alpha, c, idx[j], np.float64(M[c, j]) + b0 + acc[j], yc, qd[j],
                              upos, uneg)
                A[c, j] = a
                if a != 0.0:
                    for k in range(j + 1, B):
                        acc[k] += a * G[j, k]
                    bc += a
            b[c] = bc


@njit(parallel=True, **_FLAGS)
def dcd_csr_walk(W, data, indices, indptr, row0, m, qd, row_class, y, idx, alpha, upos, uneg,
                 b, n_threads):
    """Dual coordinate descent over CSR rows ``row0 .. row0+m-1``, exact, parallel over classes.

    Each class walks the block in order: a gathered dot product for the margin,
    a scatter over the row's non-zeros for the update (no Gram correction is
    needed). ``qd``, ``y`` and ``idx`` are indexed by the block's sample
    ``0..m-1``; ``W`` (C, d) and ``b`` are updated in place.
    """
    C = W.shape[0]
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        for c in range(c0, c1):
            cls = row_class[c]
            bc = b[c]
            for j in range(m):
                r = row0 + j
                k0 = indptr[r]
                k1 = indptr[r + 1]
                dot = 0.0
                for k in range(k0, k1):
                    dot += np.float64(W[c, indices[k]]) * np.float64(data[k])
                yc = 1.0 if y[j] == cls else -1.0
                a = _dcd_step(alpha, c, idx[j], dot + bc, yc, qd[j], upos, uneg)
                if a != 0.0:
                    for k in range(k0, k1):
                        ix = indices[k]
                        W[c, ix] = W.dtype.type(np.float64(W[c, ix]) + a * np.float64(data[k]))
                    bc += a
            b[c] = bc


@njit(parallel=True, **_FLAGS)
def running_mean(U, V, ub, vb, weight, n_threads):
    """``U += weight (V - U)`` and ``ub += weight (vb - ub)``: one step of a running mean."""
    C, d = V.shape
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        for c in range(c0, c1):
            for k in range(d):
                u = np.float64(U[c, k])
                U[c, k] = U.dtype.type(u + weight * (np.float64(V[c, k]) - u))
            ub[c] += weight * (vb[c] - ub[c])
