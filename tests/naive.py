"""Slow, obviously correct twins of every kernel (plain loops or direct solves).

Each area keeps its own section; tests compare the kernels against these on
seeded random inputs and edge cases.
"""

import numpy as np  # noqa: F401

# ---- features (HOG / LBP) -------------------------------------------------
def naive_patch_origins(length, size, step):
    """Patch starts along one axis: centred grid, scanned position by position."""
    starts = [s for s in range(0, length - size + 1, step)]
    if not starts:
        return []
    slack = length - (starts[-1] + size)
    return [s + slack // 2 for s in starts]


def naive_hog_votes(image, n_bins):
    """(H, W, n_bins) float64 orientation votes, pixel by pixel with np.arctan2."""
    img = np.asarray(image, dtype=np.float64)
    H, W = img.shape
    votes = np.zeros((H, W, n_bins))
    for y in range(H):
        for x in range(W):
            gx = img[y, x + 1] - img[y, x - 1] if 0 < x < W - 1 else 0.0
            gy = img[y + 1, x] - img[y - 1, x] if 0 < y < H - 1 else 0.0
            m = np.hypot(gx, gy)
            if m == 0:
                continue
            theta = np.arctan2(gy, gx) % (2 * np.pi)
            t = theta / (2 * np.pi) * n_bins
            b0 = int(np.floor(t)) % n_bins
            f = t - np.floor(t)
            votes[y, x, b0] += m * (1 - f)
            votes[y, x, (b0 + 1) % n_bins] += m * f
    return votes


def _naive_cells(maps, y0, x0, P, ncell):
    """Cell histograms of one patch by direct summation, cell-major."""
    edges = [(k * P) // ncell for k in range(ncell + 1)]
    hist = []
    for ci in range(ncell):
        for cj in range(ncell):
            block = maps[y0 + edges[ci]:y0 + edges[ci + 1], x0 + edges[cj]:x0 + edges[cj + 1]]
            hist.append(block.reshape(-1, maps.shape[2]).sum(axis=0))
    return np.concatenate(hist)


def naive_dense_hog(image, patch_sizes, step, n_bins, clip, min_mean_gradient):
    """Dense HOG patch by patch: (descriptors float64, centers, sizes)."""
    img = np.asarray(image)
    img = img / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    H, W = img.shape
    votes = naive_hog_votes(img, n_bins)
    desc, centers, sizes = [], [], []
    for P in patch_sizes:
        for y0 in naive_patch_origins(H, P, step):
            for x0 in naive_patch_origins(W, P, step):
                v = _naive_cells(votes, y0, x0, P, 4)
                if v.sum() < min_mean_gradient * P * P or v.sum() <= 0:
                    v = np.zeros_like(v)
                else:
                    v = v / np.linalg.norm(v)
                    if clip:
                        v = np.minimum(v, clip)
                        v = v / np.linalg.norm(v)
                desc.append(v)
                centers.append((x0 + P / 2, y0 + P / 2))
                sizes.append(P)
    d = 16 * n_bins
    return (np.array(desc).reshape(-1, d), np.array(centers).reshape(-1, 2),
            np.array(sizes, dtype=float))


def naive_dense_lbp(image, patch_sizes, step, cells, method):
    """Dense LBP patch by patch from skimage's codes: sqrt of cell counts, then L2."""
    import warnings

    from skimage.feature import local_binary_pattern

    img = np.asarray(image)
    n_codes = {"nri_uniform": 59, "uniform": 10}[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codes = local_binary_pattern(img, 8, 1, method).astype(np.int64)
    onehot = np.eye(n_codes)[codes]
    H, W = img.shape
    desc = []
    for P in patch_sizes:
        for y0 in naive_patch_origins(H, P, step):
            for x0 in naive_patch_origins(W, P, step):
                v = np.sqrt(_naive_cells(onehot, y0, x0, P, cells))
                desc.append(v / np.linalg.norm(v))
    return np.array(desc).reshape(-1, cells * cells * n_codes)
# ---- end features ----

# ---- coding (kNN / LCC / SV / pooling) ------------------------------------


def naive_knn(Z, B, k):
    """Brute-force k nearest bases: float64 distances, stable sort (lower index first)."""
    Z = np.asarray(Z, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    D = np.empty((Z.shape[0], B.shape[0]))
    for i in range(Z.shape[0]):
        for j in range(B.shape[0]):
            diff = Z[i] - B[j]
            D[i, j] = diff @ diff
    idx = np.argsort(D, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(D, idx, axis=1)


def naive_lcc(Z, B, idx, beta):
    """LCC codes (dense (n, p)) by solving each KKT system with scipy.

    min ||z - B_z^T a||^2 + r ||a||^2  s.t.  1^T a = 1, with r = beta *
    sum_j ||b_j - z||^2 (the trace regulariser): stationarity and the
    constraint give [[2 (B_z B_z^T + r I), 1], [1^T, 0]] [a; lam] = [2 B_z z; 1].
    """
    import scipy.linalg

    Z = np.asarray(Z, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    n, k = idx.shape
    out = np.zeros((n, B.shape[0]))
    for i in range(n):
        Bz = B[idx[i]]
        r = beta * sum(((b - Z[i]) ** 2).sum() for b in Bz)
        K = np.zeros((k + 1, k + 1))
        K[:k, :k] = 2 * (Bz @ Bz.T + r * np.eye(k))
        K[:k, k] = 1
        K[k, :k] = 1
        rhs = np.concatenate([2 * Bz @ Z[i], [1.0]])
        sol = scipy.linalg.solve(K, rhs)
        out[i, idx[i]] = sol[:k]
    return out


def naive_cell(x, y, shape, grids):
    """Block id per level by scanning cell bounds (no floor formula)."""
    h, w = shape
    ids = []
    offset = 0
    for rows, cols in grids:
        r = next(rr for rr in range(rows) if y < (rr + 1) * h / rows or rr == rows - 1)
        c = next(cc for cc in range(cols) if x < (cc + 1) * w / cols or cc == cols - 1)
        ids.append(offset + r * cols + c)
        offset += rows * cols
    return ids, offset


def naive_max_pool(dense_codes, centers, shape, grids, normalize=True):
    """Max pooling of dense codes per pyramid block, block-major, per-block L2."""
    dense_codes = np.asarray(dense_codes, dtype=np.float64)
    n, p = dense_codes.shape
    _, n_blocks = naive_cell(0, 0, shape, grids)
    members = [[] for _ in range(n_blocks)]
    for i in range(n):
        ids, _ = naive_cell(centers[i][0], centers[i][1], shape, grids)
        for b in ids:
            members[b].append(i)
    out = np.zeros((n_blocks, p))
    for b in range(n_blocks):
        if members[b]:
            out[b] = dense_codes[members[b]].max(axis=0)
            nrm = np.sqrt((out[b] ** 2).sum())
            if normalize and nrm > 0:
                out[b] /= nrm
    return out.ravel()


def naive_sv_pool(Z, B, s, centers, shape, grids, normalize=True):
    """Super-vector pooling straight from the paper's formula, with plain loops.

    Per block with N descriptors: x = (1/N) sum_k (1/sqrt(w_k)) sum_{i in k}
    [s, z_i - b_k], w_k = n_k / N, k the nearest basis of z_i (brute force).
    """
    Z = np.asarray(Z, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    p, d = B.shape
    _, n_blocks = naive_cell(0, 0, shape, grids)
    assign = [int(np.argmin(((B - z) ** 2).sum(axis=1))) for z in Z]
    members = [[] for _ in range(n_blocks)]
    for i in range(Z.shape[0]):
        ids, _ = naive_cell(centers[i][0], centers[i][1], shape, grids)
        for b in ids:
            members[b].append(i)
    out = np.zeros((n_blocks, p, d + 1))
    for b in range(n_blocks):
        N = len(members[b])
        for kk in range(p):
            mine = [i for i in members[b] if assign[i] == kk]
            if not mine:
                continue
            wk = len(mine) / N
            acc = np.zeros(d + 1)
            for i in mine:
                acc += np.concatenate([[s], Z[i] - B[kk]])
            out[b, kk] = acc / (N * np.sqrt(wk))
        nrm = np.sqrt((out[b] ** 2).sum())
        if normalize and nrm > 0:
            out[b] /= nrm
    return out.ravel()


# ---- end coding ----

# ---- asgd (sequential SGD / ASGD) -----------------------------------------
def asgd_sequential(X, y, row_class, *, reg, eta0, power, average_start, bias_lr,
                    averaged=True, epochs=1, orders=None, t_start=0, pos_weight=1.0,
                    average_decay=0.0):
    """Plain sequential one-vs-all ASGD in float64, sample by sample.

    ``X`` dense (n, d) (densified if sparse), ``y`` class indices, ``row_class``
    the positive class of each row; ``orders`` an optional list of per-epoch
    permutations; a positive sample's hinge loss weighs ``pos_weight`` (the
    SGD step on ``reg/2 |w|^2 + q_i hinge_i``); after ``average_start`` the
    average moves by ``alpha = (k + 1) / (t - average_start + k)``, ``k`` =
    ``average_decay``. Returns (wbar, bbar, w, b, t).
    """
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)
    C = len(row_class)
    d = X.shape[1]
    w = np.zeros((C, d))
    b = np.zeros(C)
    wbar = np.zeros((C, d))
    bbar = np.zeros(C)
    t = t_start
    for e in range(epochs):
        order = range(X.shape[0]) if orders is None else orders[e]
        for i in order:
            t += 1
            x = X[i]
            eta = eta0 / (1.0 + reg * eta0 * t) ** power
            k = average_decay
            alpha = (k + 1.0) / (t - average_start + k) if (averaged and t > average_start) else 1.0
            for c in range(C):
                yc = 1.0 if y[i] == row_class[c] else -1.0
                margin = yc * (w[c] @ x + b[c])
                w[c] *= 1.0 - reg * eta
                q = pos_weight if yc > 0 else 1.0
                if margin < 1.0:
                    w[c] += q * eta * yc * x
                    b[c] += q * bias_lr * eta * yc
                wbar[c] = (1.0 - alpha) * wbar[c] + alpha * w[c]
                bbar[c] = (1.0 - alpha) * bbar[c] + alpha * b[c]
    return wbar, bbar, w, b, t


def naive_csr_walk(V, U, data, indices, indptr, row0, m, row_class, y, p11_prev, coef_v,
                   coef_u, eta, alpha, bias_lr, pos_weight, b, bbar, update_u):
    """``csr_walk_cols`` loop by loop on weights by rows (V, U (C, d)), class by class and
    sample by sample: float64 dot products in the row's order, steps rounded to the
    weights' dtype, as the kernel does (so the same bits)."""
    for c in range(V.shape[0]):
        for j in range(m):
            r = row0 + j
            ks = range(indptr[r], indptr[r + 1])
            dot = 0.0
            for k in ks:
                dot += float(V[c, indices[k]]) * float(data[k])
            score = p11_prev[j] * dot + b[c]
            yc = 1.0 if y[j] == row_class[c] else -1.0
            if yc * score < 1.0:
                qy = pos_weight if yc > 0.0 else -1.0
                for k in ks:
                    V[c, indices[k]] += V.dtype.type(coef_v[j] * qy * float(data[k]))
                    if update_u:
                        U[c, indices[k]] += U.dtype.type(coef_u[j] * qy * float(data[k]))
                b[c] += bias_lr * eta[j] * qy
            bbar[c] = (1.0 - alpha[j]) * bbar[c] + alpha[j] * b[c]


def dcd_sequential(X, y, row_class, *, reg, pos_weight=1.0, orders, n_rows=None,
                   average_start=None, block_size=None, averaged=True):
    """Plain sequential one-vs-all dual coordinate descent (liblinear's L1-loss SVM).

    Float64 arithmetic, sample by sample; the dual variables are stored in
    float32 as the trainer stores them, and the weights move by the change of
    the stored value. ``X`` dense or sparse (densified), the bias a regularised
    constant-1 feature; ``orders`` the row order of each epoch (train-split row
    indices); the box is ``q / (reg n_rows)``. With ``average_start`` set, the
    running mean of the iterates after every ``block_size`` samples of each
    order from sample ``average_start`` on is also returned (otherwise wbar,
    bbar are w, b). Returns (wbar, bbar, w, b, alpha).
    """
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float64)
    n, d = X.shape
    N = n if n_rows is None else n_rows
    C = len(row_class)
    w = np.zeros((C, d))
    b = np.zeros(C)
    alpha = np.zeros((C, N), dtype=np.float32)
    wbar, bbar, count, t = np.zeros((C, d)), np.zeros(C), 0, 0
    for order in orders:
        for s, i in enumerate(order):
            qd = X[i] @ X[i] + 1.0
            for c in range(C):
                yc = 1.0 if y[i] == row_class[c] else -1.0
                hi = (pos_weight if yc > 0 else 1.0) / (reg * N)
                g = yc * (w[c] @ X[i] + b[c]) - 1.0
                a1 = np.float32(min(max(float(alpha[c, i]) - g / qd, 0.0), hi))
                delta = (float(a1) - float(alpha[c, i])) * yc
                alpha[c, i] = a1
                w[c] += delta * X[i]
                b[c] += delta
            t += 1
            block_end = (s + 1) % block_size == 0 or s + 1 == len(order) if block_size else False
            if averaged and average_start is not None and block_end and \
                    t - ((s % block_size) + 1) >= average_start:
                count += 1
                wbar += (w - wbar) / count
                bbar += (b - bbar) / count
    if not averaged or average_start is None or count == 0:
        return w.copy(), b.copy(), w, b, alpha
    return wbar, bbar, w, b, alpha
# ---- end asgd ----


def naive_lloyd_pass(X, centers):
    """One Lloyd pass: nearest centre of each row (float64, lower index on ties), new means
    (empty clusters keep their centre), and the inertia before the update."""
    X = np.asarray(X, dtype=np.float64)
    C = np.asarray(centers, dtype=np.float64)
    lab = np.empty(X.shape[0], dtype=np.int64)
    inertia = 0.0
    for i in range(X.shape[0]):
        best, bd = 0, np.inf
        for j in range(C.shape[0]):
            diff = X[i] - C[j]
            dj = diff @ diff
            if dj < bd:
                best, bd = j, dj
        lab[i] = best
        inertia += bd
    new = C.copy()
    for j in range(C.shape[0]):
        if (lab == j).any():
            new[j] = X[lab == j].mean(axis=0)
    return lab, new, inertia


def naive_kmeanspp(S, first, u):
    """k-means++ D^2 sampling with given draws: row j is taken with probability d2_j / sum."""
    S = np.asarray(S, dtype=np.float64)
    chosen = [first]
    d2 = ((S - S[first]) ** 2).sum(axis=1)
    for c in range(1, len(u)):
        cum = np.cumsum(d2)
        j = int(np.searchsorted(cum, u[c] * cum[-1], side="right")) if cum[-1] > 0 else \
            min(len(S) - 1, int(u[c] * len(S)))
        chosen.append(j)
        d2 = np.minimum(d2, ((S - S[j]) ** 2).sum(axis=1))
    return np.array(chosen)


# ---- fisher vectors ---------------------------------------------------------
def naive_gmm_posteriors(Z, weights, means, variances, threshold=0.0):
    """Posteriors descriptor by descriptor from the Gaussian densities (float64).

    gamma_ik = w_k N(x_i | mu_k, sigma_k) / sum_j w_j N(x_i | mu_j, sigma_j),
    each density the product over dimensions of the 1-D normal density (in
    logs, scaled by the largest term so nothing underflows). With a
    threshold, entries below it (except those equal to the row's largest) become 0 and the
    row is renormalised.
    """
    Z = np.asarray(Z, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    var = np.asarray(variances, dtype=np.float64)
    K, D = mu.shape
    out = np.zeros((Z.shape[0], K))
    for i in range(Z.shape[0]):
        logp = np.zeros(K)
        for k in range(K):
            acc = np.log(w[k])
            for d in range(D):
                diff = Z[i, d] - mu[k, d]
                acc += -0.5 * np.log(2 * np.pi * var[k, d]) - 0.5 * diff * diff / var[k, d]
            logp[k] = acc
        top = max(logp)
        p = [np.exp(v - top) for v in logp]
        total = sum(p)
        p = [v / total for v in p]
        if threshold > 0:
            best = max(p)
            p = [v if (v >= threshold or v == best) else 0.0 for v in p]
            total = sum(p)
            p = [v / total for v in p]
        out[i] = p
    return out


def naive_fisher_vector(Z, centers, shape, grids, weights, means, variances, *,
                        improved=True, weights_gradient=False, threshold=0.0):
    """Improved Fisher vector straight from the gradients, descriptor by descriptor.

    Per block with N descriptors: G_mu_k = sum_i gamma_ik (x_i - mu_k) /
    sigma_k / (N sqrt(w_k)), G_sigma_k = sum_i gamma_ik ((x_i - mu_k)^2 /
    sigma_k^2 - 1) / (N sqrt(2 w_k)), G_w_k = sum_i (gamma_ik - w_k) / (N
    sqrt(w_k)); block = [G_mu, G_sigma(, G_w)], then sign(z) sqrt(|z|) and
    L2 per block (improved). Blocks numbered as naive_cell.
    """
    Z = np.asarray(Z, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    var = np.asarray(variances, dtype=np.float64)
    K, D = mu.shape
    gamma = naive_gmm_posteriors(Z, w, mu, var, threshold)
    _, n_blocks = naive_cell(0, 0, shape, grids)
    members = [[] for _ in range(n_blocks)]
    for i in range(Z.shape[0]):
        ids, _ = naive_cell(centers[i][0], centers[i][1], shape, grids)
        for b in ids:
            members[b].append(i)
    E = 2 * K * D + (K if weights_gradient else 0)
    out = np.zeros((n_blocks, E))
    for b in range(n_blocks):
        N = len(members[b])
        if N == 0:
            continue
        g_mu = np.zeros((K, D))
        g_sig = np.zeros((K, D))
        g_w = np.zeros(K)
        for i in members[b]:
            for k in range(K):
                g_w[k] += gamma[i, k] - w[k]
                for d in range(D):
                    u = (Z[i, d] - mu[k, d]) / np.sqrt(var[k, d])
                    g_mu[k, d] += gamma[i, k] * u
                    g_sig[k, d] += gamma[i, k] * (u * u - 1.0)
        for k in range(K):
            g_mu[k] /= N * np.sqrt(w[k])
            g_sig[k] /= N * np.sqrt(2 * w[k])
            g_w[k] /= N * np.sqrt(w[k])
        v = np.concatenate([g_mu.ravel(), g_sig.ravel()] + ([g_w] if weights_gradient else []))
        if improved:
            v = np.array([np.sign(z) * np.sqrt(abs(z)) for z in v])
            nrm = np.sqrt((v ** 2).sum())
            if nrm > 0:
                v = v / nrm
        out[b] = v
    return out.ravel()
# ---- end fisher ----


# ---- product quantization ----------------------------------------------------
def naive_pq_encode(X, centroids, dim):
    """Codes (n, M) uint8: per row and sub-space, the centroid at the smallest squared
    distance summed term by term in float64 (lower index on ties); the last sub-space
    compares only its ``dim - (M - 1) s`` real dimensions."""
    X = np.asarray(X)
    C = np.asarray(centroids)
    M, K, s = C.shape
    codes = np.empty((X.shape[0], M), dtype=np.uint8)
    for i in range(X.shape[0]):
        for m in range(M):
            w = min(s, dim - m * s)
            best, bd = 0, np.inf
            for k in range(K):
                d = 0.0
                for t in range(w):
                    diff = float(X[i, m * s + t]) - float(C[m, k, t])
                    d += diff * diff
                if d < bd:
                    best, bd = k, d
            codes[i, m] = best
    return codes


def naive_pq_decode(codes, centroids, dim):
    """(n, dim) float32: each row the concatenation of the named centroids, cut to dim."""
    C = np.asarray(centroids)
    rows = [np.concatenate([C[m, int(c)] for m, c in enumerate(row)])[:dim] for row in codes]
    return np.array(rows, dtype=np.float32).reshape(len(rows), dim)
