"""Benchmarks of the ASGD trainer (issue 5); results go to docs/BENCHMARKS.md.

Every run compares side by side in one process, so the ratios hold on a
busy machine even when absolute times do not::

    python benchmarks/bench_asgd.py dense        # (1) vs one GEMM and scikit-learn
    python benchmarks/bench_asgd.py sparse       # (2) LCC-like sparse features
    python benchmarks/bench_asgd.py convergence  # (3) ASGD vs plain SGD per epoch
    python benchmarks/bench_asgd.py convergence --features features --feature-set NAME
    python benchmarks/bench_asgd.py convergence --fashion-mnist /usr/share/datasets/fashion-mnist
    python benchmarks/bench_asgd.py memory       # (4) peak RSS of `bowsvm train`

Each prints a JSON summary as its last line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bowsvm.asgd._parallel import resolve_n_jobs, thread_limit  # noqa: E402
from bowsvm.asgd.core import GroupState, Hyper, train_chunk  # noqa: E402
from bowsvm.asgd.trainer import calibrate_eta0  # noqa: E402
from _report import emit  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------
def dense_data(n, d, C, sep, seed=0):
    """Gaussian classes: x = noise + sep * centre_y, rows L2-normalised, float32."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((C, d), dtype=np.float32)
    y = rng.integers(0, C, n)
    X = rng.standard_normal((n, d), dtype=np.float32)
    X += np.float32(sep) * centers[y]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def sparse_data(n, d, C, density, seed=0, pool=4, class_fraction=0.1):
    """LCC-like rows: non-negative, ~density*d non-zeros, some from a class pool.

    Each class owns ``pool * density * d`` preferred features; a row draws
    ``class_fraction`` of its non-zeros there and the rest uniformly; values
    are uniform(0, 1) (like max-pooled codes); rows L2-normalised. CSR float32.
    """
    rng = np.random.default_rng(seed)
    k = max(1, int(density * d))
    kc = int(class_fraction * k)
    pools = rng.integers(0, d, (C, pool * k))
    y = rng.integers(0, C, n)
    rows = []
    for i in range(n):
        a = pools[y[i], rng.integers(0, pool * k, kc)]
        b = rng.integers(0, d, k - kc)
        rows.append(np.unique(np.concatenate([a, b])))
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([r.size for r in rows])
    indices = np.concatenate(rows).astype(np.int32)
    data = rng.random(indices.size, dtype=np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(n, d))
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = sp.csr_matrix(sp.diags(1.0 / norms).astype(np.float32) @ X)
    X.sort_indices()
    return X, y


def top1(W, b, X, y):
    S = np.asarray(X @ W.T) + b[None, :].astype(np.float32)
    return float(np.mean(np.argmax(S, axis=1) == y))


# -- ours ------------------------------------------------------------------------
def run_ours(X, y, Xt, yt, C, hyper, epochs, seed=0):
    """Epochs of the block-exact trainer on shuffled copies; times exclude the shuffle copy."""
    st = GroupState(np.arange(C), X.shape[1], np.float32, averaged=hyper.averaged)
    rng = np.random.default_rng(seed)
    out = []
    for e in range(epochs):
        p = rng.permutation(X.shape[0])
        Xe, ye = X[p], y[p]
        tm = {}
        t = time.perf_counter()
        train_chunk(st, Xe, ye, hyper, tm)
        st.fold()
        sec = time.perf_counter() - t
        W, b = st.averaged()
        row = {"epoch": e + 1, "seconds": sec, "top1": top1(W, b, Xt, yt),
               **{k: round(v, 3) for k, v in tm.items() if k in ("margins", "gram", "walk", "update")}}
        if "violations" in tm:  # counted on the dense path only
            row["violation_density"] = tm["violations"] / max(tm["pairs"], 1)
        out.append(row)
        log("ours", out[-1])
    return out


def run_sklearn(X, y, Xt, yt, reg, n_classes_timed, epochs, n_jobs=2):
    """scikit-learn SGDClassifier(hinge, average) for ``epochs`` passes (max_iter=1 each)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    C = int(y.max()) + 1
    if n_classes_timed < C:
        # n_classes_timed one-vs-all problems over all n samples: the last class
        # absorbs the rest, so the work is exactly n_classes_timed / C of the full run.
        y = np.minimum(y, n_classes_timed - 1)
    clf = SGDClassifier(loss="hinge", alpha=reg, average=True, n_jobs=n_jobs, max_iter=1,
                        tol=None, random_state=0)
    out = []
    classes = np.unique(y)
    for e in range(epochs):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if e == 0:
                clf.fit(X, y)
            else:
                clf.partial_fit(X, y, classes=classes)
        sec = time.perf_counter() - t
        row = {"epoch": e + 1, "seconds": sec, "classes_timed": int(classes.size),
               "seconds_scaled_to_all_classes": sec * C / classes.size}
        if classes.size == C:
            row["top1"] = float(np.mean(clf.predict(Xt) == yt))
        out.append(row)
        log("sklearn", row)
    return out


def time_gemm(X, C, reps=3):
    W = np.random.default_rng(1).standard_normal((C, X.shape[1]), dtype=np.float32)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        _ = X @ W.T
        ts.append(time.perf_counter() - t)
    return min(ts)


def bench_dense(a):
    n_jobs = resolve_n_jobs(a.n_jobs)
    X, y = dense_data(a.n + a.n_test, a.d, a.classes, a.sep)
    X, Xt, y, yt = X[:a.n], X[a.n:], y[:a.n], y[a.n:]
    res = {"benchmark": "dense", "n": a.n, "d": a.d, "C": a.classes, "sep": a.sep,
           "n_jobs": n_jobs, "block_size": a.block_size, "reg": a.reg,
           "loadavg_start": os.getloadavg()[0]}
    with thread_limit(n_jobs):
        g0 = time_gemm(X, a.classes)
        t = time.perf_counter()
        eta0 = a.eta0 or calibrate_eta0(X[:1000], y[:1000], a.classes, a.reg, a.power, a.bias_lr,
                                        a.block_size)
        res["calibration_seconds"] = time.perf_counter() - t
        hyper = Hyper(reg=a.reg, eta0=eta0, power=a.power, bias_lr=a.bias_lr,
                      block_size=a.block_size, average_start=a.average_start)
        res["eta0"] = eta0
        res["ours"] = run_ours(X, y, Xt, yt, a.classes, hyper, a.epochs)
        g1 = time_gemm(X, a.classes)
    res["gemm_seconds"] = min(g0, g1)
    ep1 = res["ours"][0]["seconds"]
    res["epoch_over_gemm"] = [r["seconds"] / res["gemm_seconds"] for r in res["ours"]]
    if a.sklearn_classes:
        res["sklearn"] = run_sklearn(X, y, Xt, yt, a.reg, a.sklearn_classes, a.epochs)
        res["speedup_vs_sklearn"] = [s["seconds_scaled_to_all_classes"] / o["seconds"]
                                     for s, o in zip(res["sklearn"], res["ours"])]
    res["loadavg_end"] = os.getloadavg()[0]
    log(f"GEMM {res['gemm_seconds']:.2f}s; our epoch 1 {ep1:.2f}s "
        f"({ep1 / res['gemm_seconds']:.2f}x GEMM)")
    return res


def bench_sparse(a):
    n_jobs = resolve_n_jobs(a.n_jobs)
    X, y = sparse_data(a.n + a.n_test, a.d, a.classes, a.density,
                       class_fraction=a.class_fraction)
    X, Xt, y, yt = X[:a.n], X[a.n:], y[:a.n], y[a.n:]
    res = {"benchmark": "sparse", "n": a.n, "d": a.d, "C": a.classes,
           "class_fraction": a.class_fraction,
           "nnz_per_row": X.nnz / a.n, "n_jobs": n_jobs, "reg": a.reg,
           "loadavg_start": os.getloadavg()[0]}
    with thread_limit(n_jobs):
        W = np.random.default_rng(1).standard_normal((a.classes, a.d), dtype=np.float32)
        ts = []
        for _ in range(2):
            t = time.perf_counter()
            _ = X @ W.T
            ts.append(time.perf_counter() - t)
        res["sparse_dense_product_seconds"] = min(ts)
        eta0 = a.eta0 or calibrate_eta0(X[:1000], y[:1000], a.classes, a.reg, a.power,
                                        a.bias_lr, a.block_size)
        hyper = Hyper(reg=a.reg, eta0=eta0, power=a.power, bias_lr=a.bias_lr,
                      block_size=a.block_size, average_start=a.average_start)
        res["eta0"] = eta0
        res["ours"] = run_ours(X, y, Xt, yt, a.classes, hyper, a.epochs)
    res["epoch_over_product"] = [r["seconds"] / res["sparse_dense_product_seconds"]
                                 for r in res["ours"]]
    if a.sklearn_classes:
        res["sklearn"] = run_sklearn(X, y, Xt, yt, a.reg, a.sklearn_classes, a.epochs)
        res["speedup_vs_sklearn"] = [s["seconds_scaled_to_all_classes"] / o["seconds"]
                                     for s, o in zip(res["sklearn"], res["ours"])]
    res["loadavg_end"] = os.getloadavg()[0]
    return res


def _load_split(features, name, split):
    from bowsvm.io.features import iter_chunks, open_feature_set, scan_split

    fs = open_feature_set(features, name)
    info = scan_split(fs, split)
    Xs, ys = [], []
    for _, lab, X in iter_chunks(info, fs.dim, 1 << 30):
        Xs.append(X)
        ys.append(lab)
    X = sp.vstack(Xs).tocsr() if sp.issparse(Xs[0]) else np.concatenate(Xs)
    return X, np.concatenate(ys), len(fs.classes)


def bench_convergence(a):
    if a.features:
        X, y, C = _load_split(a.features, a.feature_set, "train")
        Xt, yt, _ = _load_split(a.features, a.feature_set, a.split)
        source = f"{a.features}/{a.feature_set}"
    elif a.fashion_mnist:
        # Raw pixels (784-d, scaled to unit L2 norm): a real-data stand-in until
        # extracted feature sets exist.
        from bowsvm.io.images import load_idx_dataset

        data = load_idx_dataset(a.fashion_mnist)

        def prep(images):
            Z = images.reshape(len(images), -1).astype(np.float32)
            return np.ascontiguousarray(Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-6))

        X, y = prep(data["train"][0]), data["train"][1]
        Xt, yt = prep(data["test"][0]), data["test"][1]
        C, source = 10, f"fashion-mnist raw pixels ({a.fashion_mnist})"
    else:
        X, y = dense_data(a.n + a.n_test, a.d, a.classes, a.sep)
        X, Xt, y, yt = X[:a.n], X[a.n:], y[:a.n], y[a.n:]
        C, source = a.classes, "generated"
    res = {"benchmark": "convergence", "source": source, "n": int(X.shape[0]),
           "d": int(X.shape[1]), "C": C, "reg": a.reg}
    with thread_limit(resolve_n_jobs(a.n_jobs)):
        eta0 = a.eta0 or calibrate_eta0(X[:1000], y[:1000], C, a.reg, a.power, a.bias_lr,
                                        a.block_size)
        res["eta0"] = eta0
        for avg in (True, False):
            hyper = Hyper(reg=a.reg, eta0=eta0, power=a.power, bias_lr=a.bias_lr,
                          block_size=a.block_size, average_start=a.average_start, averaged=avg)
            rows = run_ours(X, y, Xt, yt, C, hyper, a.epochs)
            res["asgd" if avg else "sgd"] = [r["top1"] for r in rows]
    asgd = res["asgd"]
    if len(asgd) >= 5:
        res["asgd_gap_5_vs_last"] = asgd[-1] - asgd[4]
    return res


def bench_memory(a):
    from bowsvm.io import atomic_output_dir, write_json_atomic
    from bowsvm.io.features import shard_entries, write_shard

    tmp = Path(tempfile.mkdtemp(prefix="bowsvm-mem-"))
    feats = tmp / "features"
    X, y = dense_data(a.n + a.n_test, a.d, a.classes, a.sep)
    with atomic_output_dir(feats / "gen") as out:
        for split, (lo, hi) in (("train", (0, a.n)), ("val", (a.n, a.n + a.n_test))):
            (out / split).mkdir()
            step = 2000
            for k, s in enumerate(range(lo, hi, step)):
                e = min(s + step, hi)
                write_shard(out / split / f"part-{k:05d}.parquet", [str(i) for i in range(s, e)],
                            y[s:e], X[s:e])
        write_json_atomic(out / "manifest.json", {
            "stage": "extract", "feature_set": "gen", "dim": a.d, "layout": "dense",
            "classes": [str(i) for i in range(a.classes)], "preset_hash": None,
            "counts": {"train": a.n, "val": a.n_test}, "shards": shard_entries(out)})
    del X, y
    # Peak RSS from /proc/self/status VmHWM: unlike getrusage's ru_maxrss it is
    # not inherited across fork+exec from this (large) benchmark process.
    code = ("import re; from bowsvm import cli; {body}; "
            "print(int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())"
            ".group(1)) * 1024)")
    base = subprocess.run([sys.executable, "-c", code.format(
        body="import bowsvm.asgd.trainer, bowsvm.stages.train, bowsvm.io.features, numba, pyarrow.parquet")],
        capture_output=True, text=True, check=True)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code.format(body=(
        f"rc = cli.main(['train', '--feature-set', 'gen', '--features', {str(feats)!r}, "
        f"'--models', {str(tmp / 'models')!r}, '--epochs', '1', '--eta0', '0.5', "
        f"'--memory-budget', {a.memory_budget!r}, '--quiet']); assert rc == 0"))],
        capture_output=True, text=True)
    sec = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    from bowsvm.stages.train import parse_bytes

    peak = int(r.stdout.strip().splitlines()[-1])
    baseline = int(base.stdout.strip().splitlines()[-1])
    weights = 2 * a.classes * a.d * 4
    budget = parse_bytes(a.memory_budget)
    limit = 1.2 * (weights + budget)
    res = {"benchmark": "memory", "n": a.n, "d": a.d, "C": a.classes,
           "memory_budget": budget, "weights_bytes": weights, "peak_rss": peak,
           "baseline_rss_after_imports": baseline, "peak_minus_baseline": peak - baseline,
           "limit_1.2x(weights+budget)": limit,
           "within_limit_raw": peak <= limit, "within_limit_minus_baseline": peak - baseline <= limit,
           "seconds": sec}
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["dense", "sparse", "convergence", "memory"])
    p.add_argument("--n", type=int, default=16000)
    p.add_argument("--n-test", type=int, default=4000)
    p.add_argument("--d", type=int, default=None, help="default 8192 (81920 for sparse)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--sep", type=float, default=0.15, help="class separation of generated data")
    p.add_argument("--density", type=float, default=0.02)
    p.add_argument("--class-fraction", type=float, default=0.2,
                   help="sparse: share of a row's non-zeros drawn from its class's pool")
    p.add_argument("--epochs", type=int, default=None, help="default 1 (20 for convergence)")
    p.add_argument("--reg", type=float, default=1e-4)
    p.add_argument("--eta0", type=float, default=None, help="default: calibrated on 1000 rows")
    p.add_argument("--power", type=float, default=2 / 3)
    p.add_argument("--bias-lr", type=float, default=0.1)
    p.add_argument("--average-start", type=int, default=0)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--sklearn-classes", type=int, default=100,
                   help="classes scikit-learn trains (time scaled to all); 0 skips it")
    p.add_argument("--features", default=None, help="convergence: features root folder")
    p.add_argument("--feature-set", default=None)
    p.add_argument("--fashion-mnist", default=None, metavar="DIR",
                   help="convergence: raw Fashion-MNIST pixels from this IDX folder")
    p.add_argument("--split", default="val", help="convergence: evaluation split")
    p.add_argument("--memory-budget", default="256MB")
    p.add_argument("--out", default=None, help="also write the JSON summary here")
    a = p.parse_args(argv)
    if a.d is None:
        a.d = 81920 if a.which == "sparse" else 8192
    if a.epochs is None:
        a.epochs = 20 if a.which == "convergence" else 1
    res = {"dense": bench_dense, "sparse": bench_sparse, "convergence": bench_convergence,
           "memory": bench_memory}[a.which](a)
    res["command"] = "python benchmarks/bench_asgd.py " + " ".join(sys.argv[1:] if argv is None else argv)
    emit(res, a.out, default=float)


if __name__ == "__main__":
    main()
