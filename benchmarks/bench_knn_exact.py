"""Time ``knn_bases`` and one plain GEMM of the same shapes (best of 5), for A/B runs.

Compare two versions of the code in alternating processes, e.g. against the commit
before the exact recomputation (d99be2c)::

    git worktree add /tmp/bowsvm-old d99be2c
    for i in 1 2 3; do
      PYTHONPATH=/tmp/bowsvm-old .venv/bin/python benchmarks/bench_knn_exact.py old
      PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_knn_exact.py new
    done
"""

import sys
import time

import numpy as np

from bowsvm.coding import knn_bases


def best(fn, repeat=5):
    t_best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best


def main():
    label = sys.argv[1] if len(sys.argv) > 1 else ""
    rng = np.random.default_rng(0)
    out = []
    for p in (4096, 8192):
        Z = np.abs(rng.standard_normal((20000, 128))).astype(np.float32) ** 2
        Z /= np.linalg.norm(Z, axis=1, keepdims=True)
        B = np.abs(rng.standard_normal((p, 128))).astype(np.float32) ** 2
        B /= np.linalg.norm(B, axis=1, keepdims=True)
        knn_bases(Z[:100], B, 20)  # compile
        t_knn = best(lambda: knn_bases(Z, B, 20))
        t_gemm = best(lambda: Z @ B.T)
        out.append(f"p={p}: knn {t_knn * 1e3:.0f} ms, gemm {t_gemm * 1e3:.0f} ms, "
                   f"ratio {t_gemm / t_knn:.0%}")
    print(label, "; ".join(out))


if __name__ == "__main__":
    main()
