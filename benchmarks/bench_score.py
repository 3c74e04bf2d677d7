"""Scoring, metrics and fusion timings, side by side with their floors/peers in ONE run.

* ``bowsvm score`` end to end (Parquet shards -> scores Parquet) against the
  bare float32 GEMM ``X @ W.T`` on the same arrays (the floor).
* Sparse batches: CSR x dense (scipy) against densify-then-GEMM over densities
  (justifies ``DENSIFY_ABOVE``).
* ``top_k_accuracy`` against scikit-learn's ``top_k_accuracy_score``.
* ``fit_fusion`` on six sets.

Usage::

    .venv/bin/python benchmarks/bench_score.py [--n 4096 --dim 8192 --classes 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def best(f, repeat=3):
    t = float("inf")
    for _ in range(repeat):
        a = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - a)
    return t


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--dim", type=int, default=8192)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--fusion-n", type=int, default=10000)
    p.add_argument("--sets", type=int, default=6)
    a = p.parse_args(argv)

    from bowsvm.evaluation.fusion import fit_fusion
    from bowsvm.evaluation.metrics import top_k_accuracy
    from bowsvm.stages.score import score_feature_set
    from bowsvm.io import atomic_output_dir, write_json_atomic
    from bowsvm.io.features import shard_entries, write_shard

    rng = np.random.default_rng(0)
    n, d, C = a.n, a.dim, a.classes
    W = rng.normal(size=(C, d)).astype(np.float32)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, C, n)
    res = {"n": n, "dim": d, "classes": C}

    g = best(lambda: X @ W.T)
    res["gemm_s"] = g
    res["gemm_gflops"] = 2 * n * d * C / g / 1e9

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        classes = [str(c) for c in range(C)]
        with atomic_output_dir(tmp / "features" / "fs") as f:
            (f / "val").mkdir()
            for j, s in enumerate(range(0, n, 1024)):
                write_shard(f / "val" / f"part-{j:05d}.parquet", [str(i) for i in range(s, min(n, s + 1024))],
                            y[s:s + 1024], X[s:s + 1024], layout="dense")
            write_json_atomic(f / "manifest.json", {"stage": "extract", "dim": d, "classes": classes,
                                                    "preset_hash": "h", "layout": "dense",
                                                    "shards": shard_entries(f)})
        with atomic_output_dir(tmp / "models" / "fs") as f:
            np.save(f / "coef.npy", W)
            np.save(f / "intercept.npy", np.zeros(C, np.float32))
            write_json_atomic(f / "manifest.json", {"stage": "train", "dim": d, "classes": classes,
                                                    "preset_hash": "h"})
        from bowsvm.io.features import iter_shard_batches, shard_files

        def read_only():
            for f in shard_files(tmp / "features" / "fs", "val"):
                for _ in iter_shard_batches(f, d, 4096):
                    pass

        res["read_shards_s"] = best(read_only, repeat=2)
        sc = best(lambda: score_feature_set(tmp / "features", tmp / "models", tmp / "scores", "fs",
                                            "val", overwrite=True), repeat=2)
    res["score_command_s"] = sc
    res["score_over_gemm"] = sc / g
    res["score_over_read_plus_gemm"] = sc / (g + res["read_shards_s"])

    res["sparse"] = []
    WT = np.ascontiguousarray(W.T)
    m = min(n, 1024)
    for dens in (0.01, 0.05, 0.2):
        Xs = sp.random(m, d, density=dens, format="csr", dtype=np.float32, random_state=1)
        t_csr = best(lambda: Xs @ WT)
        t_den = best(lambda: Xs.toarray() @ W.T)
        res["sparse"].append({"density": dens, "rows": m, "csr_s": t_csr, "densify_gemm_s": t_den,
                              "csr_over_densify": t_csr / t_den})

    from sklearn.metrics import top_k_accuracy_score

    S = rng.normal(size=(n, C)).astype(np.float32)
    ours = best(lambda: top_k_accuracy(S, y, 5))
    skl = best(lambda: top_k_accuracy_score(y, S, k=5, labels=np.arange(C)))
    assert abs(top_k_accuracy(S, y, 5) - top_k_accuracy_score(y, S, k=5, labels=np.arange(C))) < 1e-12
    res["top5_ours_s"], res["top5_sklearn_s"], res["top5_sklearn_over_ours"] = ours, skl, skl / ours

    nf = a.fusion_n
    yf = rng.integers(0, C, nf)
    sets = []
    for s in range(a.sets):
        Ss = rng.normal(size=(nf, C)).astype(np.float32)
        Ss[np.arange(nf), yf] += 1.0 + 0.2 * s
        sets.append(Ss)
    t0 = time.perf_counter()
    fm = fit_fusion(sets, yf)
    res["fusion"] = {"n": nf, "classes": C, "sets": a.sets, "seconds": time.perf_counter() - t0,
                     "rounds": fm.rounds, "weights": [round(float(w), 3) for w in fm.weights]}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
