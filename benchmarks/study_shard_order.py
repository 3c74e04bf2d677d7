"""Study: how the order of a feature set's rows changes what streamed training learns (issue 16).

Trains dual coordinate descent (:func:`bowsvm.asgd.dcd.dcd_chunk`, reg 1e-4, pos-weight
auto, averaged from epoch 2) for ``--epochs`` epochs on one feature set's train split
under one sample order, and prints val top-1 per epoch (one JSON line each):

- ``--order global``: a fresh permutation of all rows per epoch (the rows held in memory);
- ``--order K`` (an integer): the reader of ``bowsvm train``, ``iter_chunks`` reading K
  shards side by side (``mix=K``), chunks of ``--rows`` rows shuffled.

On shards whose rows come class after class (feature sets extracted before extract
ordered rows by the SHA-256 of the id), K = all shards still leaves each class in one
stretch of the epoch; the global order does not::

    python benchmarks/study_shard_order.py --features mc-features --feature-set mc-sv \\
        --order global
    python benchmarks/study_shard_order.py --features mc-features --feature-set mc-sv \\
        --order 21 --rows 1129
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

from compare_sklearn import load  # noqa: E402
from bowsvm.asgd.core import Hyper  # noqa: E402
from bowsvm.asgd.dcd import DualState, dcd_chunk  # noqa: E402
from bowsvm.asgd.trainer import auto_pos_weight  # noqa: E402
from bowsvm.io.features import iter_chunks, open_feature_set, scan_split  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", required=True)
    p.add_argument("--feature-set", required=True)
    p.add_argument("--order", default="global", help="'global' or the shards read side by side")
    p.add_argument("--rows", type=int, default=1129, help="rows per chunk")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--reg", type=float, default=1e-4)
    a = p.parse_args(argv)
    fs = open_feature_set(a.features, a.feature_set)
    info = scan_split(fs, "train")
    C = len(fs.classes)
    Xv, yv = load(Path(a.features) / a.feature_set, "val")
    X = y = None
    if a.order == "global":  # the same row numbering as iter_chunks: shards in scan order
        parts = list(iter_chunks(info, fs.dim, 4096))
        import scipy.sparse as sp
        X = (sp.vstack([c[2] for c in parts], format="csr") if sp.issparse(parts[0][2])
             else np.concatenate([c[2] for c in parts]))
        y = np.concatenate([c[1] for c in parts])
    h = Hyper(reg=a.reg, pos_weight=auto_pos_weight(C), average_start=info.n, solver="dcd")
    st = DualState(np.arange(C), fs.dim, info.n)
    for e in range(1, a.epochs + 1):
        t = time.perf_counter()
        rng = np.random.default_rng([0, e])
        if a.order == "global":
            order = rng.permutation(info.n)
            for s in range(0, info.n, a.rows):
                o = order[s:s + a.rows]
                dcd_chunk(st, X[o], y[o], o, h)
        else:
            for _, lab, Xc, idx in iter_chunks(info, fs.dim, a.rows, rng, with_index=True,
                                               mix=int(a.order)):
                dcd_chunk(st, Xc, lab, idx, h)
        W, b = st.averaged()
        S = np.asarray(Xv @ W.T) + b
        print(json.dumps({"order": a.order, "epoch": e,
                          "top1": round(float(np.mean(S.argmax(1) == yv)), 4),
                          "seconds": round(time.perf_counter() - t, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
