"""Benchmark of bowsvm.coding: LCC / SV codes per second, kNN GEMM efficiency, peer.

Side by side in one run:

* ``knn_bases`` (blocked GEMM + numba top-k) against one plain float32 GEMM of
  the same shapes (n x d times d x p), as achieved GFLOP/s (2 n p d flops);
* ``lcc_encode`` (p = 4096 and 8192, k = 20, d = 128) and ``sv_encode``
  (p = 512, d = 128) codes per second;
* the peer: scikit-learn ``NearestNeighbors(algorithm="brute")`` (timed on
  all n descriptors) followed by a per-descriptor numpy solve of the same LCC
  system (``np.linalg.solve``; timed on ``--peer-n`` descriptors and
  extrapolated linearly to n), or the residual for SV. The two steps are also
  compared separately (kNN vs sklearn, solve vs the numpy loop);
* the "GEMM-only ceiling": the speed-up over the peer of a method that cost
  nothing but the plain GEMM (codes per second of ``Z @ B.T`` alone), i.e. the
  most any exact GEMM-based search can reach against this peer.

Usage::

    .venv/bin/python benchmarks/bench_coding.py [--n 20000] [--peer-n 2000] [--repeat 3]
    .venv/bin/python benchmarks/bench_coding.py --fmnist fmnist-lcc-hog [--fmnist-train 60000]

The ``--fmnist PRESET`` mode checks a Fashion-MNIST preset instead: it fits the
codebook on descriptors sampled from the first 5,000 training images, extracts
features for the training and test sets, picks the C of a linear SVM
(scikit-learn LinearSVC, squared hinge, one-vs-rest) on the last 5,000
training images held out, retrains on all training images with it and reports
top-1 on the 10,000 test images (the test set is used once).

Times are the best of ``--repeat`` runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _best(fn, repeat):
    best = np.inf
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _data(rng, n, p, d):
    # descriptor-like data: non-negative, L2-normalised; bases drawn from the
    # same distribution (like K-means centres of such descriptors)
    Z = np.abs(rng.standard_normal((n, d))).astype(np.float32) ** 2
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    B = np.abs(rng.standard_normal((p, d))).astype(np.float32) ** 2
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    return Z, B


def peer_knn(Z, B, k):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(B)
    return nn.kneighbors(Z)[1]


def peer_lcc_solve(Z, B, idx, beta):
    k = idx.shape[1]
    codes = np.empty((Z.shape[0], k), dtype=np.float64)
    one = np.ones(k)
    for i in range(Z.shape[0]):
        Zs = B[idx[i]].astype(np.float64) - Z[i]
        C = Zs @ Zs.T
        C += beta * np.trace(C) * np.eye(k)
        w = np.linalg.solve(C, one)
        codes[i] = w / w.sum()
    return codes


def peer_sv(Z, B, s):
    a = peer_knn(Z, B, 1)[:, 0]
    blocks = np.empty((Z.shape[0], Z.shape[1] + 1), dtype=Z.dtype)
    blocks[:, 0] = s
    blocks[:, 1:] = Z - B[a]
    return a, blocks


def _load_fashion(split):
    import gzip

    root = "/usr/share/datasets/fashion-mnist/"
    pre = "train" if split == "train" else "t10k"
    with gzip.open(root + f"{pre}-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(root + f"{pre}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return X, y


def fmnist(preset, n_train, Cs=(0.03, 0.1, 0.3)):
    from sklearn.svm import LinearSVC

    from bowsvm.coding import FeatureSetExtractor
    from bowsvm.presets import preset_hash

    Xtr, ytr = _load_fashion("train")
    Xte, yte = _load_fashion("test")
    Xtr, ytr = Xtr[:n_train], ytr[:n_train]
    t0 = time.perf_counter()
    fe = FeatureSetExtractor(preset=preset, random_state=0).fit(Xtr[:5000])
    t1 = time.perf_counter()
    Ftr = fe.transform(Xtr)
    Fte = fe.transform(Xte)
    t2 = time.perf_counter()
    nnz = Ftr.nnz / Ftr.shape[0] if hasattr(Ftr, "nnz") else np.count_nonzero(Ftr) / len(Ftr)
    print(f"# fmnist {preset} (hash {preset_hash(preset)}): dim {Ftr.shape[1]}, "
          f"{nnz:.0f} non-zeros/image, codebook {t1 - t0:.0f} s, features for "
          f"{len(Xtr) + len(Xte)} images {t2 - t1:.0f} s "
          f"({1e3 * (t2 - t1) / (len(Xtr) + len(Xte)):.2f} ms/image)", flush=True)
    n_val = 5000
    fit_rows = np.arange(len(ytr) - n_val)
    val_rows = np.arange(len(ytr) - n_val, len(ytr))
    best = None
    for C in Cs:
        clf = LinearSVC(C=C, max_iter=3000).fit(Ftr[fit_rows], ytr[fit_rows])
        acc = float((clf.predict(Ftr[val_rows]) == ytr[val_rows]).mean())
        print(f"#   C={C}: validation top-1 {acc:.4f}", flush=True)
        if best is None or acc > best[1]:
            best = (C, acc)
    t3 = time.perf_counter()
    clf = LinearSVC(C=best[0], max_iter=3000).fit(Ftr, ytr)
    acc = float((clf.predict(Fte) == yte).mean())
    print(f"| {preset} | {Ftr.shape[1]:,} | {nnz:.0f} | {len(ytr):,} | {best[0]} | "
          f"**{acc:.4f}** | {1e3 * (t2 - t1) / (len(Xtr) + len(Xte)):.2f} ms | "
          f"{time.perf_counter() - t3:.0f} s |", flush=True)
    return acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="descriptors per LCC run")
    ap.add_argument("--n-sv", type=int, default=100000, help="descriptors per SV run")
    ap.add_argument("--peer-n", type=int, default=2000, help="descriptors for the peer")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--fmnist", metavar="PRESET", help="check a Fashion-MNIST preset instead")
    ap.add_argument("--fmnist-train", type=int, default=60000)
    args = ap.parse_args(argv)
    if args.fmnist:
        fmnist(args.fmnist, args.fmnist_train)
        return

    from bowsvm.coding import _kernels, knn_bases, lcc_encode, sv_encode

    rng = np.random.default_rng(0)
    d = args.d
    print(f"# bench_coding: n={args.n}, n_sv={args.n_sv}, d={d}, peer_n={args.peer_n}, "
          f"repeat={args.repeat}, cpus={os.cpu_count()}, loadavg={os.getloadavg()}")
    rows = []
    for p in (4096, 8192):
        k = 20
        Z, B = _data(rng, args.n, p, d)
        # warm up numba (compile / load cache) and sklearn on a small slice
        lcc_encode(Z[:64], B, k=k)
        peer_knn(Z[:64], B, k)
        flops = 2.0 * args.n * p * d
        Bt = np.ascontiguousarray(B.T)
        t_gemm, _ = _best(lambda: Z @ Bt, args.repeat)
        t_knn, (idx, _) = _best(lambda: knn_bases(Z, B, k), args.repeat)
        t_lcc, C = _best(lambda: lcc_encode(Z, B, k=k), args.repeat)
        cols = np.empty((args.n, k), np.int32)
        vals = np.empty((args.n, k), np.float32)
        t_solve, _ = _best(lambda: _kernels.lcc_solve(Z, B, idx, 1e-4, cols, vals), args.repeat)
        t_pknn, pidx = _best(lambda: peer_knn(Z, B, k), args.repeat)
        m = min(args.peer_n, args.n)
        t_psolve, pcodes = _best(lambda: peer_lcc_solve(Z[:m], B, pidx[:m], 1e-4), 1)
        t_psolve *= args.n / m  # extrapolated: the loop is linear in n
        same = (np.sort(idx, axis=1) == np.sort(pidx, axis=1)).all(axis=1)
        ref = np.zeros((m, p))
        np.put_along_axis(ref, pidx[:m], pcodes, axis=1)
        err = float(np.abs(C[:m].toarray() - ref)[same[:m]].max())
        rows.append({
            "what": f"LCC p={p} k={k} d={d}",
            "gemm_gflops": flops / t_gemm / 1e9,
            "knn_gflops": flops / t_knn / 1e9,
            "knn_frac": t_gemm / t_knn,
            "knn_vs_peer": t_pknn / t_knn,
            "solve_vs_peer": t_psolve / t_solve,
            "ours_per_s": args.n / t_lcc,
            "peer_per_s": args.n / (t_pknn + t_psolve),
            "gemm_per_s": args.n / t_gemm,
            "check": f"same neighbours {same.mean():.4f}; max abs diff {err:.1e}",
        })
        print(rows[-1], flush=True)

    p = 512
    Z, B = _data(rng, args.n_sv, p, d)
    sv_encode(Z[:64], B)
    peer_knn(Z[:64], B, 1)
    flops = 2.0 * args.n_sv * p * d
    Bt = np.ascontiguousarray(B.T)
    t_gemm, _ = _best(lambda: Z @ Bt, args.repeat)
    t_knn, _ = _best(lambda: knn_bases(Z, B, 1), args.repeat)
    t_sv, codes = _best(lambda: sv_encode(Z, B), args.repeat)
    t_peer, (pa, _) = _best(lambda: peer_sv(Z, B, 0.1), args.repeat)
    rows.append({
        "what": f"SV p={p} d={d}",
        "gemm_gflops": flops / t_gemm / 1e9,
        "knn_gflops": flops / t_knn / 1e9,
        "knn_frac": t_gemm / t_knn,
        "knn_vs_peer": float("nan"),
        "solve_vs_peer": float("nan"),
        "ours_per_s": args.n_sv / t_sv,
        "peer_per_s": args.n_sv / t_peer,
        "gemm_per_s": args.n_sv / t_gemm,
        "check": f"same assignment {(codes.assign == pa).mean():.4f}",
    })
    print(rows[-1], flush=True)

    print()
    print("| coding | plain GEMM GFLOP/s | kNN step GFLOP/s | kNN / GEMM | kNN vs sklearn "
          "| solve vs numpy loop | ours codes/s | peer codes/s | speed-up | GEMM-only ceiling "
          "| check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kv = "" if np.isnan(r["knn_vs_peer"]) else f"{r['knn_vs_peer']:.1f}x"
        sv = "" if np.isnan(r["solve_vs_peer"]) else f"{r['solve_vs_peer']:.0f}x"
        print(f"| {r['what']} | {r['gemm_gflops']:.1f} | {r['knn_gflops']:.1f} | "
              f"{100 * r['knn_frac']:.0f}% | {kv} | {sv} | {r['ours_per_s']:,.0f} | "
              f"{r['peer_per_s']:,.0f} | {r['ours_per_s'] / r['peer_per_s']:.1f}x | "
              f"{r['gemm_per_s'] / r['peer_per_s']:.1f}x | "
              f"{r['check']} |")
    print(f"\nloadavg at end: {os.getloadavg()}")

if __name__ == "__main__":
    main()
