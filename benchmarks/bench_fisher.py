"""Benchmark of the Fisher vector coder (bowsvm.coding.fisher_vectors).

Side by side in one run, for each shape (K Gaussians, D dims, N descriptors
per image, pyramid 1x1 + 3x1 by default):

* per image, against ``skimage.feature.fisher_vector(improved=True)`` on the
  same descriptors and GMM (``GMM.to_sklearn()``): skimage has no pyramid,
  so it is timed on the 1x1 block alone (vs ours with grids=[(1, 1)]) and
  on the whole pyramid as one call per block (what its user would do);
* the whole coding step against its own GEMM floor: the posterior GEMM
  (N x (2D+1) times (2D+1) x K) and the statistics GEMMs (per cell of the
  3x1 level, K x N_c times N_c x (2D+1)) timed alone with numpy at the same
  shapes, float32; "% of floor" = floor time / our time; and the same floor
  with the statistics GEMMs in the 128-row pieces the coder uses (one long
  GEMM runs slower in this OpenBLAS);
* the posterior GEMM over all images stacked into one matrix, to show what
  batching images into one GEMM would gain (it is not done: it would make an
  image's rounding depend on its neighbours);
* ours with posteriors thresholded at 1e-4 (statistics by the sparse
  kernel when sparse enough; no skimage equivalent), with the number of
  posteriors kept per descriptor.

Usage::

    .venv/bin/python benchmarks/bench_fisher.py [--images 20] [--repeat 3]
        [--shapes 256x64x1000,256x80x3000] [--grids 1x1,3x1] [--threads 1]

Times are the best of ``--repeat`` runs (the machine is shared). The GMM is
fitted with ``fit_gmm`` (10 EM iterations) on 20,000 descriptors drawn from
a random 256-component mixture with decaying variances (PCA-like); the
images' descriptors come from the same mixture, their centres are uniform.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _best_interleaved(fns, repeat):
    """Best time of each function, the functions run in turn ``repeat`` times
    (so a change in the machine's load hits all of them alike)."""
    best = [np.inf] * len(fns)
    for _ in range(repeat):
        for j, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[j] = min(best[j], time.perf_counter() - t)
    return best


def _best(fn, repeat):
    best = np.inf
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _mixture_sampler(rng, K, D):
    scale = 1.0 / np.sqrt(1.0 + np.arange(D))  # PCA-like decaying spread
    centres = rng.normal(0, 1, (K, D)) * scale
    spread = rng.uniform(0.3, 0.6, (K, D)) * scale

    def draw(n):
        k = rng.integers(0, K, n)
        return (centres[k] + rng.normal(0, 1, (n, D)) * spread[k]).astype(np.float32)

    return draw


def _parse_shapes(text):
    out = []
    for item in text.split(","):
        K, D, N = (int(v) for v in item.lower().split("x"))
        out.append((K, D, N))
    return out


def _parse_grids(text):
    return [tuple(int(v) for v in g.lower().split("x")) for g in text.split(",")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shapes", default="256x64x1000,256x64x3000,256x80x1000,256x80x3000")
    ap.add_argument("--grids", default="1x1,3x1")
    ap.add_argument("--sample", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads for every timed call (default 1: one Spark task per core)")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads, user_api="blas"):
        _run(args)


def _run(args):

    from skimage.feature import fisher_vector as sk_fisher_vector
    from threadpoolctl import threadpool_info

    from bowsvm.coding import block_ids, fisher_posteriors, fisher_vectors, fit_gmm

    grids = _parse_grids(args.grids)
    blas = [(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info()
            if i.get("user_api") == "blas"]
    print(f"BLAS {blas}; cpu_count {os.cpu_count()}; images per shape {args.images}; "
          f"grids {grids}; best of {args.repeat}")
    rows = []
    gmms = {}
    for K, D, N in _parse_shapes(args.shapes):
        rng = np.random.default_rng(0)
        draw = _mixture_sampler(rng, K, D)
        if (K, D) not in gmms:
            t0 = time.perf_counter()
            gmms[(K, D)] = fit_gmm(draw(args.sample), K, max_iter=10, init="random")
            print(f"fit_gmm K={K} D={D} on {args.sample} x {D}: "
                  f"{time.perf_counter() - t0:.1f} s ({gmms[(K, D)].n_iter} iterations)")
        gmm = gmms[(K, D)]
        sk_gmm = gmm.to_sklearn()
        shape = (480.0, 640.0)
        images = []
        for _ in range(args.images):
            Z = draw(N)
            C = np.column_stack([rng.uniform(0, shape[1], N), rng.uniform(0, shape[0], N)])
            images.append((Z, C, shape))
        n_img = len(images)

        # ours
        X = fisher_vectors(images, gmm, grids)
        fisher_vectors(images[:1], gmm, grids, threshold=1e-4)  # compile the kernel
        nnz = np.mean([np.count_nonzero(fisher_posteriors(Z, gmm, threshold=1e-4)) / len(Z)
                       for Z, _, _ in images[:3]])

        # scikit-image: 1x1, and the pyramid as one call per block
        members = []
        for Z, C, s in images:
            ids, _ = block_ids(C, s, grids)
            nb = int(ids.max()) + 1
            members.append([Z[(ids == b).any(axis=1)].astype(np.float64) for b in range(nb)])
        Z64 = [Z.astype(np.float64) for Z, _, _ in images]
        t_sk1, S1 = _best(lambda: [sk_fisher_vector(z, sk_gmm, improved=True) for z in Z64],
                          args.repeat)
        t_skp, _ = _best(lambda: [[sk_fisher_vector(m, sk_gmm, improved=True) for m in mem]
                                  for mem in members], args.repeat)
        # check: our 1x1 (with weights gradient mapped) equals skimage's to float32 rounding
        Xw = fisher_vectors(images[:2], gmm, [(1, 1)], weights_gradient=True)
        KD = K * D
        diff = max(
            float(np.abs(np.concatenate([x[2 * KD:], x[:KD], -x[KD:2 * KD]]) - s).max())
            for x, s in zip(Xw, S1[:2])
        )

        # GEMM floor at the same shapes (float32, numpy), per image
        W = np.ascontiguousarray(np.random.default_rng(1).normal(size=(2 * D + 1, K)),
                                 dtype=np.float32)
        As, Gs, cells = [], [], []
        for Z, C, s in images:
            A = np.empty((N, 2 * D + 1), np.float32)
            A[:, :D] = Z * Z
            A[:, D:2 * D] = Z
            A[:, 2 * D] = 1
            G = np.full((N, K), 1.0 / K, np.float32)
            ids, counts = block_ids(C, s, grids)
            multi = [lev for lev, (r, c) in enumerate(grids) if r * c > 1]
            if multi:
                off = sum(r * c for r, c in grids[:multi[0]])
                n_c = counts[off:off + grids[multi[0]][0] * grids[multi[0]][1]]
                bounds = np.concatenate([[0], np.cumsum(n_c)])
                cells.append([(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])])
            else:
                cells.append([(0, N)])
            As.append(A)
            Gs.append(G)

        def floor():
            for A, G, cl in zip(As, Gs, cells):
                np.matmul(A, W, out=G)
                for a, b in cl:
                    G[a:b].T @ A[a:b]

        tmp = np.empty((K, 2 * D + 1), np.float32)

        def floor_pieces():  # the statistics GEMMs in 128-row pieces, as the coder runs them
            for A, G, cl in zip(As, Gs, cells):
                np.matmul(A, W, out=G)
                for a, b in cl:
                    for r in range(a, b, 128):
                        np.matmul(G[r:min(b, r + 128)].T, A[r:min(b, r + 128)], out=tmp)

        A_all = np.concatenate(As)
        G_all = np.empty((A_all.shape[0], K), np.float32)
        t_ours, t_ours1, t_thr, t_floor, t_floor_p, t_post, t_stack = _best_interleaved([
            lambda: fisher_vectors(images, gmm, grids),
            lambda: fisher_vectors(images, gmm, [(1, 1)]),
            lambda: fisher_vectors(images, gmm, grids, threshold=1e-4),
            floor,
            floor_pieces,
            lambda: [np.matmul(A, W, out=G) for A, G in zip(As, Gs)],
            lambda: np.matmul(A_all, W, out=G_all),
        ], args.repeat)
        gflop_post = 2.0 * n_img * N * (2 * D + 1) * K / 1e9
        rows.append(dict(
            K=K, D=D, N=N, dim=X.shape[1],
            ours_ms=1e3 * t_ours / n_img, ours1_ms=1e3 * t_ours1 / n_img,
            thr_ms=1e3 * t_thr / n_img, nnz=nnz,
            sk1_ms=1e3 * t_sk1 / n_img, skp_ms=1e3 * t_skp / n_img,
            floor_ms=1e3 * t_floor / n_img, floorp_ms=1e3 * t_floor_p / n_img,
            post_gfs=gflop_post / t_post, stack_gfs=gflop_post / t_stack, diff=diff,
        ))
        r = rows[-1]
        print(f"K={K} D={D} N={N}: ours {r['ours_ms']:.2f} ms/image (1x1 {r['ours1_ms']:.2f}), "
              f"threshold 1e-4 {r['thr_ms']:.2f} ({r['nnz']:.1f} posteriors per descriptor), "
              f"skimage 1x1 {r['sk1_ms']:.2f}, pyramid {r['skp_ms']:.2f}, floor {r['floor_ms']:.2f} "
              f"(pieces {r['floorp_ms']:.2f}), "
              f"max |ours - skimage| {diff:.1e}", flush=True)

    print()
    print("| K | D | N per image | FV dim | ours ms/image (pyramid) | skimage ms/image (pyramid, "
          "1 call per block) | speed-up | ours ms/image (1x1) | skimage ms/image (1x1) | "
          "speed-up 1x1 | GEMM floor ms/image (pyramid) | % of floor | floor with 128-row "
          "statistics pieces ms/image | % of it | posterior GEMM GFLOP/s "
          "per image / stacked | max abs diff vs skimage (1x1) | ours ms/image, threshold 1e-4 "
          "(posteriors kept per descriptor) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for r in rows:
        print(f"| {r['K']} | {r['D']} | {r['N']:,} | {r['dim']:,} | {r['ours_ms']:.2f} | "
              f"{r['skp_ms']:.1f} | {r['skp_ms'] / r['ours_ms']:.0f}x | {r['ours1_ms']:.2f} | "
              f"{r['sk1_ms']:.1f} | {r['sk1_ms'] / r['ours1_ms']:.0f}x | {r['floor_ms']:.2f} | "
              f"{100 * r['floor_ms'] / r['ours_ms']:.0f}% | {r['floorp_ms']:.2f} | "
              f"{100 * r['floorp_ms'] / r['ours_ms']:.0f}% | {r['post_gfs']:.0f} / "
              f"{r['stack_gfs']:.0f} | {r['diff']:.1e} | {r['thr_ms']:.2f} ({r['nnz']:.1f}) |")


if __name__ == "__main__":
    main()
