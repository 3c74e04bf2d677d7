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
each epoch's time over the mean of two floor calls, one just before and one just after
it: on a machine whose speed drifts over minutes, this pairs each epoch with a floor of
the same moment (the other ratios divide bests measured minutes apart).

``block_gemms_paired_over_gemm`` is the part of an epoch no block-exact trainer can
skip, timed the same way: the block GEMMs ``[V; X_B] X_B^T`` alone (margins and Gram
matrix, ``--block-size`` rows each, the block copied into the spare rows below V) over
the chunk's rows, with no walk and no update; ``margin_gemms_paired_over_gemm`` the
same without the Gram matrix (``V X_B^T`` per block): what a GEMM of ``--block-size``
rows costs over one GEMM of all rows, whose V is read and packed once. With ``timings``,
``default_phases_over_floor`` (and ``_epoch1_``) splits the default epoch into
``train_chunk``'s phases, each over the same floors.

``--walk-layout rows|columns`` forces the sparse walk's layout (``auto``: as shipped, by
columns from :data:`bowsvm.asgd.core.COLUMNS_WALK_PER_THREAD` classes per thread).

``--features DIR --feature-set NAME`` times the rows of a feature set's train split
instead of generated ones (``--rows`` of them, shuffled; its classes), at their own
density; ``--paths`` picks the trainer paths to time (the sparse walk is slow on dense
rows)::

    python benchmarks/bench_density.py --features mc-features --feature-set mc-sv \
        --paths default --average-start epoch

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
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bowsvm  # noqa: E402,F401  before numpy, as in the CLI: OPENBLAS_THREAD_TIMEOUT
import numpy as np  # noqa: E402

from _report import emit  # noqa: E402
from bench_asgd import log, sparse_data  # noqa: E402
from bowsvm.asgd._parallel import resolve_n_jobs, thread_limit  # noqa: E402
from bowsvm.asgd import core  # noqa: E402
from bowsvm.asgd.core import DENSE_BLOCK_ABOVE, GroupState, Hyper, train_chunk  # noqa: E402
from bowsvm.asgd.dcd import DualState, dcd_chunk  # noqa: E402


def best(f, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def epoch_seconds(X, y, C, hyper, dense_above, reps, floor, phases=None):
    """``reps`` runs of two epochs from a fresh state (same rows, same order), with one
    call of ``floor`` before, between and after the epochs: lists of epoch 2 and epoch 1
    seconds, and of ``(floor before, between, after)`` seconds per run. ``phases``, a
    list, receives ``train_chunk``'s timings of each run's two epochs."""
    first, second, floors = [], [], []
    for _ in range(reps):
        f = [best(floor, 1)]
        st = GroupState(np.arange(C), X.shape[1], np.float32, averaged=hyper.averaged)
        tm = []
        for out in (first, second):
            tm.append({})
            t = time.perf_counter()
            train_chunk(st, X, y, hyper, timings=tm[-1], dense_above=dense_above)
            st.fold()
            out.append(time.perf_counter() - t)
            f.append(best(floor, 1))
        floors.append(f)
        if phases is not None:
            phases.append(tm)
    return second, first, floors


def phases_over_floor(phases, floors, epoch):
    """Median over runs of each ``train_chunk`` phase of epoch ``epoch`` over the mean of
    the floors around it; ``violating`` is the fraction of (class, row) pairs that
    violated (dense blocks only)."""
    keys = [k for k in phases[0][epoch - 1] if k not in ("violations", "pairs")]
    out = {k: float(np.median([tm[epoch - 1].get(k, 0.0) / ((f[epoch - 1] + f[epoch]) / 2)
                               for tm, f in zip(phases, floors)])) for k in keys}
    tm = phases[0][epoch - 1]
    out["violating"] = tm.get("violations", 0) / max(tm.get("pairs", 1), 1)
    return out


def dcd_epoch_seconds(X, y, C, hyper, dense_above, reps, floor):
    """:func:`epoch_seconds` for two DCD epochs."""
    idx = np.arange(X.shape[0])
    first, second, floors = [], [], []
    for _ in range(reps):
        f = [best(floor, 1)]
        st = DualState(np.arange(C), X.shape[1], X.shape[0], np.float32, averaged=hyper.averaged)
        for out in (first, second):
            t = time.perf_counter()
            dcd_chunk(st, X, y, idx, hyper, dense_above=dense_above)
            out.append(time.perf_counter() - t)
            f.append(best(floor, 1))
        floors.append(f)
    return second, first, floors


def paired(seconds, floors, epoch):
    """Median over runs of ``seconds`` over the mean of the floors around epoch ``epoch``."""
    return float(np.median([s / ((f[epoch - 1] + f[epoch]) / 2) for s, f in zip(seconds, floors)]))


def block_gemms_paired(Xd, W, block, reps, floor):
    """Medians over ``reps`` of the block GEMMs over all rows of ``Xd``, each over the mean
    of a floor call before and after it: ``(with_gram, margins_only)``, the GEMMs
    ``[V; X_B] X_B^T`` (each block copied below ``V = W`` first, as the trainer does) and
    ``V X_B^T`` alone (no Gram matrix, no copy)."""
    C, n = W.shape[0], Xd.shape[0]
    VX = np.zeros((C + block, W.shape[1]), dtype=W.dtype)
    VX[:C] = W

    def with_gram():
        for pos in range(0, n, block):
            m = min(block, n - pos)
            VX[C:C + m] = Xd[pos:pos + m]
            VX[:C + m] @ VX[C:C + m].T

    def margins_only():
        for pos in range(0, n, block):
            W @ Xd[pos:pos + block].T

    ratios = {with_gram: [], margins_only: []}
    for _ in range(reps):
        for f, out in ratios.items():
            before = best(floor, 1)
            t = best(f, 1)
            out.append(t / ((before + best(floor, 1)) / 2))
    return tuple(float(np.median(v)) for v in ratios.values())


def feature_rows(root, name, rows, seed=0):
    """``(X, y, C)``: up to ``rows`` rows of a feature set's train split (CSR float32,
    shuffled), their class indices and the set's number of classes."""
    import scipy.sparse as sp

    from bowsvm.io.features import iter_chunks, open_feature_set, scan_split

    fs = open_feature_set(root, name)
    info = scan_split(fs, "train")
    Xs, ys = [], []
    for _, labels, X in iter_chunks(info, fs.dim, 1 << 16, rng=np.random.default_rng(seed)):
        Xs.append(sp.csr_matrix(X, dtype=np.float32))
        ys.append(np.asarray(labels, dtype=np.int64))
        if sum(x.shape[0] for x in Xs) >= rows:
            break
    X, y = sp.vstack(Xs).tocsr()[:rows], np.concatenate(ys)[:rows]
    X.sort_indices()
    return X, y, len(fs.classes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--d", type=int, default=16384)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--densities", default="0.01,0.02,0.05,0.19,0.32")
    p.add_argument("--reg", type=float, default=1e-4)
    p.add_argument("--eta0", type=float, default=0.5)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--pos-weight", type=float, default=1.0)
    p.add_argument("--average-start", default="0", metavar="N|epoch",
                   help="samples before averaging starts (0: from the start, as "
                        "ASGDClassifier; 'epoch': after the first epoch, as bowsvm train)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--solver", choices=("asgd", "dcd"), default="asgd")
    p.add_argument("--paths", default="sparse,dense,default",
                   help="trainer paths to time, of sparse,dense,default")
    p.add_argument("--features", default=None, help="feature root: time its rows, not generated ones")
    p.add_argument("--feature-set", default=None)
    p.add_argument("--rows", type=int, default=21000, help="train rows read with --features")
    p.add_argument("--walk-layout", choices=("auto", "rows", "columns"), default="auto",
                   help="weights of the sparse walk: by rows, by columns, or as shipped "
                        "(columns from COLUMNS_WALK_PER_THREAD classes per thread)")
    p.add_argument("--out", default=None, help="also write the JSON summary here")
    a = p.parse_args(argv)
    paths = [x.strip() for x in a.paths.split(",") if x.strip()]
    if not paths or set(paths) - {"sparse", "dense", "default"}:
        p.error(f"--paths {a.paths!r}: give a comma list of sparse, dense, default")
    if (a.features is None) != (a.feature_set is None):
        p.error("--features and --feature-set go together")
    n_jobs = resolve_n_jobs(a.n_jobs)
    if a.walk_layout != "auto":
        core.COLUMNS_WALK_PER_THREAD = 0 if a.walk_layout == "columns" else 1 << 62
    average_start = a.n if a.average_start == "epoch" else int(a.average_start)
    hyper = Hyper(reg=a.reg, eta0=a.eta0, power=2 / 3, bias_lr=0.1, block_size=a.block_size,
                  average_start=average_start, pos_weight=a.pos_weight, solver=a.solver)
    rows = []
    with thread_limit(n_jobs):
        if a.features:
            X, y, C = feature_rows(a.features, a.feature_set, a.rows)
            sets = [(X, y, C)]
        else:
            sets = ((*sparse_data(a.n, a.d, a.classes, float(x), class_fraction=0.2), a.classes)
                    for x in a.densities.split(","))
        for X, y, C in sets:
            n, d = X.shape
            if a.average_start == "epoch":
                hyper = replace(hyper, average_start=n)
            W = np.random.default_rng(1).standard_normal((C, d), dtype=np.float32)
            Xd = X.toarray()
            r = {"density": round(X.nnz / (n * d), 4), "n": n, "d": d, "C": C,
                 "features": a.feature_set, "n_jobs": n_jobs, "loadavg_start": os.getloadavg()[0]}
            r["gemm_seconds"] = best(lambda: Xd @ W.T, a.reps + 1)
            r["floor"] = "gemm" if r["density"] > DENSE_BLOCK_ABOVE else "csr_product"
            if r["floor"] == "csr_product" or "sparse" in paths:  # slow on dense rows
                r["csr_product_seconds"] = best(lambda: X @ W.T, a.reps + 1)
            floor_fn = (lambda: Xd @ W.T) if r["floor"] == "gemm" else (lambda: X @ W.T)
            timer = dcd_epoch_seconds if a.solver == "dcd" else epoch_seconds
            for name, above in (("sparse", 1.0), ("dense", 0.0), ("default", None)):
                if name not in paths:
                    continue
                phases = [] if name == "default" and a.solver == "asgd" else None
                extra = {} if phases is None else {"phases": phases}
                second, first, floors = timer(X, y, C, hyper, above, a.reps, floor_fn, **extra)
                r[f"{name}_seconds"], r[f"{name}_epoch1_seconds"] = min(second), min(first)
                if name == "default":  # each epoch against the floors measured around it
                    r["default_paired_over_floor"] = paired(second, floors, 2)
                    r["default_paired_epoch1_over_floor"] = paired(first, floors, 1)
                    r["paired_floor_seconds"] = floors
                    if phases:
                        r["default_phases_epoch1_over_floor"] = phases_over_floor(phases, floors, 1)
                        r["default_phases_over_floor"] = phases_over_floor(phases, floors, 2)
            r["block_gemms_paired_over_gemm"], r["margin_gemms_paired_over_gemm"] = \
                block_gemms_paired(Xd, W, a.block_size, a.reps + 2, lambda: Xd @ W.T)
            del Xd
            floor = r["gemm_seconds"] if r["floor"] == "gemm" else r["csr_product_seconds"]
            if "default" in paths:
                r["default_over_floor"] = r["default_seconds"] / floor
                r["default_epoch1_over_floor"] = r["default_epoch1_seconds"] / floor
            for name in paths:
                r[f"{name}_over_gemm"] = r[f"{name}_seconds"] / r["gemm_seconds"]
                if "csr_product_seconds" in r:
                    r[f"{name}_over_csr_product"] = r[f"{name}_seconds"] / r["csr_product_seconds"]
            r["loadavg_end"] = os.getloadavg()[0]
            log(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}))
            rows.append(r)
    summary = {"benchmark": "density", "solver": a.solver, "dense_block_above": DENSE_BLOCK_ABOVE,
               "average_start": hyper.average_start, "pos_weight": a.pos_weight,
               "walk_layout": a.walk_layout, "columns_walk_per_thread": core.COLUMNS_WALK_PER_THREAD,
               "rows": rows}
    emit(summary, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
