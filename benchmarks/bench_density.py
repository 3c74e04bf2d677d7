"""Trainer speed across feature densities (issue 16, part 1): sparse walk vs dense blocks.

For each density, two epochs of the block-exact trainer from a fresh state over the
same CSR rows, side by side in one process; ``*_seconds`` is the second epoch (the
steady state of a run: the first one's cold start, where most pairs violate and the
updates are GEMMs, happens once) and ``*_epoch1_seconds`` the first. The paths:

- ``sparse``: every block walked row by row (``train_chunk(..., dense_above=1.0)``);
- ``dense``: every block densified into the state's buffer and trained by GEMMs
  (``dense_above=0.0``);
- ``default``: the shipped crossover (:data:`bowsvm.asgd.core.DENSE_BLOCK_ABOVE`);

against two floors measured in the same run: one dense GEMM of the shape
(``X_dense @ W.T``, n x d x C) and one CSR x dense product (``X_csr @ W.T``,
scipy). Densities 2, 5, 19 and 32 % are those of the shipped presets' real
features (issue 16)::

    python benchmarks/bench_density.py --n 4096 --d 16384 --classes 1000 \\
        --densities 0.0202,0.0513,0.211,0.386

(the generator draws column indices with repeats, so these nominal densities give 2.0,
5.0, 18.9 and 31.9% non-zeros after duplicates merge).

``default_paired_over_floor`` (and ``_epoch1_``) is the median over the repetitions of
each run's time over the floor measured by one call just before it: on a machine whose
speed drifts over minutes, this pairs each epoch with a floor of the same moment (the
other ratios divide bests measured minutes apart).

Prints one JSON line per density and a summary as the last line.

``--solver dcd`` times dual coordinate descent (:func:`bowsvm.asgd.dcd.dcd_chunk`,
averaged from the start) instead, the same two epochs (after the first, most dual
variables stay put).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_asgd import sparse_data  # noqa: E402
from bowsvm.asgd._parallel import resolve_n_jobs, thread_limit  # noqa: E402
from bowsvm.asgd.core import DENSE_BLOCK_ABOVE, GroupState, Hyper, train_chunk  # noqa: E402
from bowsvm.asgd.dcd import DualState, dcd_chunk  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def best(f, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def epoch_seconds(X, y, C, hyper, dense_above, reps, floor):
    """``reps`` runs of two epochs from a fresh state (same rows, same order), each run
    right after one call of ``floor``: lists of (epoch 2, epoch 1, floor) seconds."""
    first, second, floors = [], [], []
    for _ in range(reps):
        floors.append(best(floor, 1))
        st = GroupState(np.arange(C), X.shape[1], np.float32, averaged=hyper.averaged)
        for out in (first, second):
            t = time.perf_counter()
            train_chunk(st, X, y, hyper, dense_above=dense_above)
            st.fold()
            out.append(time.perf_counter() - t)
    return second, first, floors


def dcd_epoch_seconds(X, y, C, hyper, dense_above, reps, floor):
    """:func:`epoch_seconds` for two DCD epochs."""
    idx = np.arange(X.shape[0])
    first, second, floors = [], [], []
    for _ in range(reps):
        floors.append(best(floor, 1))
        st = DualState(np.arange(C), X.shape[1], X.shape[0], np.float32, averaged=hyper.averaged)
        for out in (first, second):
            t = time.perf_counter()
            dcd_chunk(st, X, y, idx, hyper, dense_above=dense_above)
            out.append(time.perf_counter() - t)
    return second, first, floors


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--d", type=int, default=16384)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--densities", default="0.01,0.02,0.05,0.19,0.32")
    p.add_argument("--reg", type=float, default=1e-4)
    p.add_argument("--eta0", type=float, default=0.5)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--average-start", default="0", metavar="N|epoch",
                   help="samples before averaging starts (0: from the start, as "
                        "ASGDClassifier; 'epoch': after the first epoch, as bowsvm train)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--solver", choices=("asgd", "dcd"), default="asgd")
    p.add_argument("--out", default=None, help="also write the JSON summary here")
    a = p.parse_args(argv)
    n_jobs = resolve_n_jobs(a.n_jobs)
    average_start = a.n if a.average_start == "epoch" else int(a.average_start)
    hyper = Hyper(reg=a.reg, eta0=a.eta0, power=2 / 3, bias_lr=0.1, block_size=a.block_size,
                  average_start=average_start, solver=a.solver)
    rows = []
    with thread_limit(n_jobs):
        W = np.random.default_rng(1).standard_normal((a.classes, a.d), dtype=np.float32)
        for density in [float(x) for x in a.densities.split(",")]:
            X, y = sparse_data(a.n, a.d, a.classes, density, class_fraction=0.2)
            Xd = X.toarray()
            r = {"density": round(X.nnz / (a.n * a.d), 4), "n": a.n, "d": a.d, "C": a.classes,
                 "n_jobs": n_jobs, "loadavg_start": os.getloadavg()[0]}
            r["gemm_seconds"] = best(lambda: Xd @ W.T, a.reps + 1)
            r["csr_product_seconds"] = best(lambda: X @ W.T, a.reps + 1)
            r["floor"] = "gemm" if r["density"] > DENSE_BLOCK_ABOVE else "csr_product"
            floor_fn = (lambda: Xd @ W.T) if r["floor"] == "gemm" else (lambda: X @ W.T)
            timer = dcd_epoch_seconds if a.solver == "dcd" else epoch_seconds
            for name, above in (("sparse", 1.0), ("dense", 0.0), ("default", None)):
                second, first, floors = timer(X, y, a.classes, hyper, above, a.reps, floor_fn)
                r[f"{name}_seconds"], r[f"{name}_epoch1_seconds"] = min(second), min(first)
                if name == "default":  # each run against the floor measured just before it
                    r["default_paired_over_floor"] = float(np.median(np.divide(second, floors)))
                    r["default_paired_epoch1_over_floor"] = float(np.median(np.divide(first, floors)))
                    r["paired_floor_seconds"] = floors
            del Xd
            floor = r["gemm_seconds"] if r["floor"] == "gemm" else r["csr_product_seconds"]
            r["default_over_floor"] = r["default_seconds"] / floor
            r["default_epoch1_over_floor"] = r["default_epoch1_seconds"] / floor
            for name in ("sparse", "dense", "default"):
                r[f"{name}_over_gemm"] = r[f"{name}_seconds"] / r["gemm_seconds"]
                r[f"{name}_over_csr_product"] = r[f"{name}_seconds"] / r["csr_product_seconds"]
            r["loadavg_end"] = os.getloadavg()[0]
            log(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}))
            rows.append(r)
    summary = {"benchmark": "density", "solver": a.solver, "dense_block_above": DENSE_BLOCK_ABOVE,
               "average_start": average_start, "rows": rows}
    text = json.dumps(summary)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
