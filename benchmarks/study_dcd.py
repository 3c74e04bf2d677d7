"""Study: dual coordinate descent for the one-vs-all SVMs, in the trainer's block form (issue 16, goal 2).

Question: can a solver other than averaged SGD reach, in 5 epochs, what 20 epochs of
ASGD reach on the many-class set? Dual coordinate descent (DCD; Hsieh et al., ICML 2008,
the solver of liblinear's LinearSVC) minimises the same weighted L1-loss SVM as
``bowsvm train`` (docs/DESIGN.md, "Training practice"): lambda/2 |w|^2 + (1/n) sum_i q_i
hinge_i, bias included as the weight of a constant-1 feature (so it is regularised, as in
liblinear). Each visit of sample i for class c sets its dual variable to the exact
minimiser along that coordinate, clipped to [0, q_i / (lambda n)]:

    g = y (w.x_i + b) - 1;  a' = clip(a - g / (|x_i|^2 + 1), 0, U_i);  w += (a' - a) y x_i

There is no step size to choose. The visit needs the exact current margin, which is what
the trainer's block-exact form gives (docs/DESIGN.md): per block of B samples one GEMM
``M = W X_B^T``, the Gram matrix ``G = X_B X_B^T``, a walk that corrects each margin by
the block's earlier changes, and one update ``W += A X_B``. Its result equals the
sequential algorithm's, which ``--check`` verifies on random data before anything else.

This is the study that led to ``bowsvm train --solver dcd`` (now the default;
:mod:`bowsvm.asgd.dcd`): the features are held in memory (CSR rows densified per block),
the dual variables are a (classes x rows) float64 array, the order is a global
permutation per epoch, and there is no resume, Spark or list support. It prints one JSON line per epoch (val top-1, seconds)::

    python benchmarks/study_dcd.py --features mc-features --feature-set mc-sv \\
        --reg 1e-4 --pos-weight auto --epochs 15
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from compare_sklearn import load  # noqa: E402
from bowsvm.asgd._parallel import resolve_n_jobs, thread_limit  # noqa: E402
from bowsvm.asgd.trainer import auto_pos_weight  # noqa: E402


@njit(parallel=True, cache=False)
def dcd_walk(M, G, qd, y, idx, alpha, upos, uneg, A, n_threads):
    """Visit the block's samples in order for every class; exact margins, exact DCD steps.

    M (C, B) margins at the block start (bias included), G (B, B) Gram matrix of the
    augmented rows, qd (B,) their squared norms, alpha (C, n) dual variables (updated),
    A (C, B) out: change of alpha times y (the update's coefficients).
    """
    C, B = M.shape
    nth = max(1, min(n_threads, C))
    for th in prange(nth):
        c0 = th * C // nth
        c1 = (th + 1) * C // nth
        acc = np.empty(B)
        for c in range(c0, c1):
            acc[:] = 0.0
            for j in range(B):
                yc = 1.0 if y[j] == c else -1.0
                g = yc * (M[c, j] + acc[j]) - 1.0
                i = idx[j]
                a0 = alpha[c, i]
                hi = upos if yc > 0.0 else uneg
                a1 = min(max(a0 - g / qd[j], 0.0), hi)
                if a1 != a0:
                    alpha[c, i] = a1
                    a = (a1 - a0) * yc
                    A[c, j] = a
                    for k in range(j + 1, B):
                        acc[k] += a * G[j, k]
                else:
                    A[c, j] = 0.0


def dcd_epoch(W, bw, alpha, X, y, order, sq, upos, uneg, block, n_threads, avg=None):
    """One epoch over ``order`` in blocks; W (C, d) and bw (C,) updated in place.

    ``avg``: None, or a list [Wbar, bbar, count] that takes the running mean of the
    iterates after each block (``--average-from``).
    """
    for s in range(0, len(order), block):
        idx = order[s:s + block]
        XB = X[idx]
        XB = XB.toarray() if sp.issparse(XB) else np.ascontiguousarray(XB)
        XB = XB.astype(W.dtype, copy=False)
        M = (W @ XB.T).astype(np.float64) + bw[:, None]
        X64 = XB.astype(np.float64)
        G = X64 @ X64.T + 1.0
        A = np.empty((W.shape[0], len(idx)))
        dcd_walk(M, G, sq[idx], y[idx], idx, alpha, upos, uneg, A, n_threads)
        W += A.astype(W.dtype) @ XB
        bw += A.sum(axis=1)
        if avg is not None:
            avg[2] += 1
            avg[0] += (W - avg[0]) / np.float32(avg[2])
            avg[1] += (bw - avg[1]) / avg[2]


def naive_dcd(X, y, C, reg, q, orders):
    """Sequential DCD in float64, sample by sample (the reference for --check)."""
    n, d = X.shape
    W = np.zeros((C, d))
    bw = np.zeros(C)
    alpha = np.zeros((C, n))
    for order in orders:
        for i in order:
            for c in range(C):
                yc = 1.0 if y[i] == c else -1.0
                g = yc * (W[c] @ X[i] + bw[c]) - 1.0
                hi = (q if yc > 0 else 1.0) / (reg * n)
                a1 = min(max(alpha[c, i] - g / (X[i] @ X[i] + 1.0), 0.0), hi)
                W[c] += (a1 - alpha[c, i]) * yc * X[i]
                bw[c] += (a1 - alpha[c, i]) * yc
                alpha[c, i] = a1
    return W, bw


def check() -> None:
    rng = np.random.default_rng(0)
    n, d, C = 150, 12, 7
    X = rng.standard_normal((n, d))
    y = rng.integers(0, C, n)
    reg, q = 1e-2, 2.5
    orders = [rng.permutation(n) for _ in range(3)]
    Wn, bn = naive_dcd(X, y, C, reg, q, orders)
    for block in (1, 16, 64, 150):
        W = np.zeros((C, d))
        bw = np.zeros(C)
        alpha = np.zeros((C, n))
        sq = (X ** 2).sum(1) + 1.0
        for order in orders:
            dcd_epoch(W, bw, alpha, X, y, order, sq, q / (reg * n), 1.0 / (reg * n), block, 2)
        err = max(np.abs(W - Wn).max(), np.abs(bw - bn).max()) / np.abs(Wn).max()
        assert err < 1e-9, (block, err)
    print(json.dumps({"check": "block-exact DCD equals sequential DCD", "blocks": [1, 16, 64, 150],
                      "max_rel_err_bound": 1e-9}), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", required=True)
    p.add_argument("--feature-set", required=True)
    p.add_argument("--reg", type=float, default=1e-4)
    p.add_argument("--pos-weight", default="auto")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--average-from", type=int, default=0, metavar="EPOCH",
                   help="also score the running mean of the iterates (one per block) from "
                        "this epoch on (0: off)")
    a = p.parse_args(argv)
    check()
    folder = Path(a.features) / a.feature_set
    t = time.perf_counter()
    X, y = load(folder, "train")
    Xv, yv = load(folder, "val")
    C = int(max(y.max(), yv.max())) + 1
    q = auto_pos_weight(C) if a.pos_weight == "auto" else float(a.pos_weight)
    n = X.shape[0]
    print(json.dumps({"loaded": [n, X.shape[1]], "val": Xv.shape[0], "classes": C, "reg": a.reg,
                      "pos_weight": q, "seconds": round(time.perf_counter() - t, 1)}), flush=True)
    sq = np.asarray((X.multiply(X) if sp.issparse(X) else X * X).sum(axis=1), dtype=np.float64).ravel() + 1.0
    W = np.zeros((C, X.shape[1]), np.float32)
    bw = np.zeros(C)
    alpha = np.zeros((C, n))
    avg = [np.zeros_like(W), np.zeros(C), 0] if a.average_from else None
    n_jobs = resolve_n_jobs(a.n_jobs)
    with thread_limit(n_jobs):
        for e in range(1, a.epochs + 1):
            t = time.perf_counter()
            order = np.random.default_rng([a.seed, e]).permutation(n)
            dcd_epoch(W, bw, alpha, X, y, order, sq, q / (a.reg * n), 1.0 / (a.reg * n),
                      a.block_size, n_jobs, avg if avg is not None and e >= a.average_from else None)
            sec = time.perf_counter() - t
            row = {}
            if avg is not None and avg[2]:
                Sa = np.asarray(Xv @ avg[0].T) + avg[1][None, :]
                row["top1_averaged"] = round(float(np.mean(Sa.argmax(1) == yv)), 4)
            S = np.asarray(Xv @ W.T) + bw[None, :]
            top5 = np.argsort(-S, axis=1)[:, :5]
            print(json.dumps({"epoch": e, "seconds": round(sec, 1),
                              "top1": round(float(np.mean(top5[:, 0] == yv)), 4),
                              "top5": round(float(np.mean((top5 == yv[:, None]).any(1))), 4),
                              "support_pairs": int(np.count_nonzero(alpha)),
                              "at_positive_bound": int(np.count_nonzero(alpha >= q / (a.reg * n))),
                              **row}),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
