"""Benchmark: codebook K-means on the project's kernel against scikit-learn, at equal inertia.

Side by side in one run, on the same rows:

1. scikit-learn ``MiniBatchKMeans(n_clusters=K, random_state=0)`` (its defaults:
   k-means++ on ``3 K`` rows, batch 1024, early stopping), timed by ``fit``;
   its inertia on all rows (``inertia_`` with ``compute_labels=True``);
2. ``bowsvm.coding.kmeans`` (k-means++ on ``max(3 K, 10000)`` rows, then Lloyd
   passes whose assignment step is the exact nearest-basis kernel), stopped as
   soon as a pass measures an inertia at or below scikit-learn's: the time to
   equal inertia. It then runs on to convergence (``tol``) for the final row.

The rows are real descriptors: dense HOG+LBP (364 dims, the paper's set 1 and 3
descriptors) of Fashion-MNIST training images at every pixel (patches 8, 12,
16 px), reduced by PCA to ``--pca`` dims, as the codebook stage does.

    .venv/bin/python benchmarks/bench_kmeans.py --rows 200000 --k 1024
    .venv/bin/python benchmarks/bench_kmeans.py --rows 1000000 --k 8192   # the issue's case
The descriptors are cached in bench-out/ (the first run extracts them).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def descriptors(n_rows, pca_dim, seed=0):
    from bowsvm.coding import fit_pca
    from bowsvm.features import extract_descriptors
    from bowsvm.io.images import load_idx_dataset

    data = load_idx_dataset("/usr/share/datasets/fashion-mnist")
    images = data["train"][0]
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    for i in rng.permutation(len(images)):
        g = images[i].astype(np.float32) / 255.0
        D = extract_descriptors(g, "hog+lbp", patch_sizes=(8, 12, 16), step=1).descriptors
        parts.append(np.asarray(D, np.float32))
        total += parts[-1].shape[0]
        if total >= n_rows:
            break
    X = np.concatenate(parts)[:n_rows]
    mean, comps = fit_pca(X[:200000], pca_dim)
    return np.ascontiguousarray((X - mean) @ comps.T, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--pca", type=int, default=80)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--converge", action="store_true",
                    help="also run bowsvm's K-means to --tol (long) for the last two columns")
    args = ap.parse_args()

    from sklearn.cluster import MiniBatchKMeans

    from bowsvm.coding.kmeans import kmeans

    t = time.perf_counter()
    cache = f"bench-out/kmeans-descriptors-{args.rows}-{args.pca}.npy"
    if os.path.exists(cache):
        X = np.load(cache, allow_pickle=False)
    else:
        X = descriptors(args.rows, args.pca)
        os.makedirs("bench-out", exist_ok=True)
        np.save(cache, X)
    print(f"{X.shape[0]} x {X.shape[1]} descriptors in {time.perf_counter() - t:.1f} s; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    kmeans(X[:5000], 8, max_iter=2)  # compile the kernels outside the timings

    t = time.perf_counter()
    sk = MiniBatchKMeans(n_clusters=args.k, random_state=0).fit(X)
    t_sk = time.perf_counter() - t
    print(f"sklearn MiniBatchKMeans: {t_sk:.1f} s, inertia {sk.inertia_:.6g}, "
          f"{sk.n_steps_} steps", flush=True)

    t = time.perf_counter()
    eq = kmeans(X, args.k, random_state=0, target_inertia=sk.inertia_, max_iter=100,
                verbose=True)
    t_eq = time.perf_counter() - t
    print(f"bowsvm kmeans to equal inertia: {t_eq:.1f} s, {eq.n_iter} passes, "
          f"inertia {eq.inertia:.6g}", flush=True)
    conv = ""
    if args.converge:
        t = time.perf_counter()
        full = kmeans(X, args.k, random_state=0, tol=args.tol, max_iter=100)
        t_full = time.perf_counter() - t
        print(f"bowsvm kmeans to tol {args.tol:g}: {t_full:.1f} s, {full.n_iter} passes, "
              f"inertia {full.inertia:.6g}", flush=True)
        conv = f" {t_full:.1f} ({full.n_iter}) | {(full.inertia - sk.inertia_) / sk.inertia_:+.2%} |"
    reached = eq.inertia <= sk.inertia_
    print()
    coarse = sum(1 for h in eq.history if h["rows"] < X.shape[0])
    print("| rows x dims | K | sklearn MiniBatchKMeans s | its inertia | bowsvm s to equal inertia "
          "(coarse + full passes) | speed-up |" + (" bowsvm converged s (passes) | its inertia "
                                                 "vs sklearn |" if conv else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if conv else ""))
    print(f"| {X.shape[0]:,} x {X.shape[1]} | {args.k} | {t_sk:.1f} | {sk.inertia_:.5g} | "
          f"{t_eq:.1f} ({coarse} + {eq.n_iter}){'' if reached else ' NOT reached'} | "
          f"{t_sk / t_eq:.1f}x |" + conv)
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
