"""bowsvm's trainer against scikit-learn on the same features (issue 16, part 3).

Loads a feature set written by ``bowsvm extract`` (train, val and test splits) into
memory and trains, side by side in one process:

- ``SGDClassifier(loss="hinge", alpha=REG, average=True)``, one ``partial_fit``
  per epoch (one-vs-all, ``n_jobs`` threads), val top-1 after each epoch;
- ``LinearSVC(C=1 / (n_train * REG))`` (the same objective's scaling), one fit;

and reports wall seconds and val/test top-1 of each. bowsvm's own runs come from
``benchmarks/study_convergence.py`` (the CLI), whose log gives its per-epoch figures::

    python benchmarks/compare_sklearn.py --features FEATURES --feature-set NAME \\
        --reg 1e-5 --epochs 5 --out sk.json

``--skip-linearsvc`` leaves LinearSVC out (it can take far longer than the SGD epochs).
``--linearsvc-classes K`` times LinearSVC on the binary problems of the first K classes
only (one-vs-rest trains each class on all rows, independently), and reports seconds
per class and the extrapolation to all classes; no accuracy, which needs every class.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bowsvm.io.features import shard_files, table_to_features  # noqa: E402
from bowsvm.io.manifest import read_manifest  # noqa: E402
from _report import emit  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load(folder, split):
    import pyarrow.parquet as pq

    m = read_manifest(folder, stage="extract")
    Xs, ys = [], []
    for f in shard_files(folder, split):
        _, lab, X = table_to_features(pq.read_table(f), m["dim"])
        Xs.append(X), ys.append(lab)
    X = sp.vstack(Xs).tocsr() if m["layout"] == "sparse" else np.concatenate(Xs)
    return X, np.concatenate(ys).astype(np.int64)


def top1(clf, X, y):
    return float(np.mean(clf.classes_[np.argmax(clf.decision_function(X), axis=1)] == y))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", required=True)
    p.add_argument("--feature-set", required=True)
    p.add_argument("--reg", type=float, default=1e-5)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--skip-linearsvc", action="store_true")
    p.add_argument("--linearsvc-classes", type=int, default=0,
                   help="time LinearSVC on this many classes' binary problems only (0: all)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    from sklearn.linear_model import SGDClassifier
    from sklearn.svm import LinearSVC

    folder = Path(a.features) / a.feature_set
    t = time.perf_counter()
    Xtr, ytr = load(folder, "train")
    Xva, yva = load(folder, "val")
    Xte, yte = load(folder, "test")
    density = Xtr.nnz / np.prod(Xtr.shape) if sp.issparse(Xtr) else 1.0
    out = {"benchmark": "compare_sklearn", "feature_set": a.feature_set, "reg": a.reg,
           "n_train": Xtr.shape[0], "dim": Xtr.shape[1], "classes": int(len(np.unique(ytr))),
           "density": round(float(density), 4), "load_seconds": round(time.perf_counter() - t, 1),
           "loadavg_start": os.getloadavg()[0]}
    log(json.dumps(out))
    classes = np.unique(ytr)
    sgd = SGDClassifier(loss="hinge", alpha=a.reg, average=True, n_jobs=a.n_jobs, random_state=0)
    rows, total = [], 0.0
    rng = np.random.default_rng(0)
    for epoch in range(1, a.epochs + 1):
        order = rng.permutation(Xtr.shape[0])
        t = time.perf_counter()
        sgd.partial_fit(Xtr[order], ytr[order], classes=classes)
        total += time.perf_counter() - t
        rows.append({"epoch": epoch, "seconds": round(total, 1), "val_top1": top1(sgd, Xva, yva)})
        log(json.dumps({"sgd": rows[-1]}))
    out["sgd"] = {"epochs": rows, "test_top1": top1(sgd, Xte, yte)}
    if a.skip_linearsvc:
        out["linearsvc"] = "skipped (--skip-linearsvc)"
    elif a.linearsvc_classes:
        secs, iters = [], []
        for c in classes[:a.linearsvc_classes]:
            t = time.perf_counter()
            svc = LinearSVC(C=1.0 / (Xtr.shape[0] * a.reg), random_state=0).fit(Xtr, ytr == c)
            secs.append(time.perf_counter() - t)
            iters.append(int(svc.n_iter_))
            log(json.dumps({"linearsvc_class": int(c), "seconds": round(secs[-1], 1),
                            "n_iter": iters[-1]}))
        out["linearsvc"] = {"classes_timed": len(secs), "seconds_per_class": round(
            float(np.mean(secs)), 1), "n_iter": iters, "extrapolated_seconds_all_classes": round(
            float(np.mean(secs)) * len(classes)), "accuracy": "not measured (needs every class)"}
        log(json.dumps({"linearsvc": out["linearsvc"]}))
    else:
        t = time.perf_counter()
        svc = LinearSVC(C=1.0 / (Xtr.shape[0] * a.reg), random_state=0).fit(Xtr, ytr)
        out["linearsvc"] = {"seconds": round(time.perf_counter() - t, 1), "n_iter": int(svc.n_iter_),
                            "val_top1": top1(svc, Xva, yva), "test_top1": top1(svc, Xte, yte)}
        log(json.dumps({"linearsvc": out["linearsvc"]}))
    out["loadavg_end"] = os.getloadavg()[0]
    emit(out, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
