"""The trainer's dense-block path on CSR rows, two of its pieces side by side (issue 16, goal 1).

- densify: one epoch of blocks (``--block-size`` rows each) copied into a dense buffer,
  by scipy (``toarray(out=...)``, which zeroes the whole buffer first) against bowsvm's
  ``csr_scatter`` into rows kept at zero plus the clear after use (both cost non-zeros);
- update: the row-by-row update ``V += A X_B``, ``U += (A diag(r)) X_B`` of one block
  whose ``A`` has ``--violations`` of its (class, sample) entries non-zero, reading the
  block's dense rows (``sparse_rows_update``) against its CSR non-zeros
  (``csr_rows_update``): the measurement behind
  :data:`bowsvm.asgd.core.CSR_ROWS_UPDATE_BELOW`.

Same rows (``bench_asgd.sparse_data``), same process, interleaved repetitions, medians::

    python benchmarks/bench_block_update.py --densities 0.03,0.05,0.1,0.17,0.27 \\
        --violations 0.006,0.05

Prints one JSON line per density and violation rate, and a summary as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_asgd import sparse_data  # noqa: E402
from _report import emit  # noqa: E402
from bowsvm.asgd import _kernels  # noqa: E402
from bowsvm.asgd._parallel import resolve_n_jobs, thread_limit  # noqa: E402


def medians(fns: dict, reps: int) -> dict:
    """Median seconds of each function, repetitions interleaved (one warm-up call each)."""
    for f in fns.values():
        f()
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in ts.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4096, help="rows of the densify epoch")
    p.add_argument("--d", type=int, default=16384)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--densities", default="0.03,0.05,0.1,0.17,0.27")
    p.add_argument("--violations", default="0.006,0.05",
                   help="fractions of non-zero entries of A (pairs that violate)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the JSON summary here")
    a = p.parse_args(argv)
    n_jobs = resolve_n_jobs(a.n_jobs)
    B, C, d = a.block_size, a.classes, a.d
    rng = np.random.default_rng(0)
    V = np.zeros((C, d), np.float32)
    U = np.zeros((C, d), np.float32)
    ratio = rng.random(B)
    buf = np.zeros((B, d), np.float32)
    rows = []
    with thread_limit(n_jobs):
        for density in [float(x) for x in a.densities.split(",")]:
            X, _ = sparse_data(a.n, d, C, density, class_fraction=0.2)
            starts = range(0, a.n - B + 1, B)

            def toarray():
                for s in starts:
                    X[s:s + B].toarray(out=buf)

            def scatter():
                for s in starts:
                    _kernels.csr_scatter(X.data, X.indices, X.indptr, s, B, buf, False, n_jobs)
                    _kernels.csr_scatter(X.data, X.indices, X.indptr, s, B, buf, True, n_jobs)

            dens = medians({"toarray": toarray, "scatter": scatter}, a.reps)
            buf[...] = 0
            XB = X[:B].toarray()
            for frac in [float(x) for x in a.violations.split(",")]:
                A = np.where(rng.random((C, B)) < frac, rng.standard_normal((C, B)), 0.0)
                upd = medians({
                    "dense_rows": lambda: _kernels.sparse_rows_update(V, U, A, ratio, XB, True,
                                                                      n_jobs),
                    "csr_rows": lambda: _kernels.csr_rows_update(V, U, A, ratio, X.data,
                                                                 X.indices, X.indptr, 0, True,
                                                                 n_jobs)}, a.reps)
                r = {"density": round(X[:B].nnz / (B * d), 4), "violations": frac,
                     "pairs_updated": int(np.count_nonzero(A)), "n_jobs": n_jobs,
                     "densify_toarray_seconds": dens["toarray"],
                     "densify_scatter_clear_seconds": dens["scatter"],
                     "densify_blocks": len(starts),
                     "update_dense_rows_seconds": upd["dense_rows"],
                     "update_csr_rows_seconds": upd["csr_rows"],
                     "update_csr_over_dense": upd["csr_rows"] / upd["dense_rows"]}
                print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v)
                                  for k, v in r.items()}), file=sys.stderr, flush=True)
                rows.append(r)
    emit({"benchmark": "block_update", "rows": rows}, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
