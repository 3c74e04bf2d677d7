"""Rehearsal: `bowsvm train` on ImageNet-shaped data larger than its memory budget.

Generates a dense feature set of ImageNet shape (1000 classes, 65,536 dimensions,
24,576 training rows = 6 GiB of float32 features, plus a val split) as Parquet
shards, then:

1. streams it through ``bowsvm train --memory-budget 2GB`` in a child process
   (peak RSS from the child's own /proc/self/status VmHWM);
2. trains the same model in memory: all 6 GiB loaded into one array, then
   ``ASGDClassifier.partial_fit`` over the very sample sequence the streaming run
   visited (per epoch: shard order and per-chunk row shuffles from
   ``default_rng([seed, epoch])``, chunk sizes from the run's manifest);
3. compares the two models (max weight difference relative to the largest weight,
   val top-1, val predictions agreeing).

    python benchmarks/bench_out_of_core.py                 # 6 GiB, budget 2GB, 2 epochs
    python benchmarks/bench_out_of_core.py --rows 2048 --dim 4096 --budget 16MB  # quick

Needs about 3x the data size in free disk under --work (default: the system temp
folder) and 1.5x in RAM for the in-memory run. The data are Gaussian classes
(``x = noise + sep * centre_y``, rows L2-normalised) like bench_asgd.py's.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(root: Path, name: str, rows: int, val_rows: int, dim: int, classes: int,
             sep: float, shard_rows: int, seed: int = 0) -> dict:
    """Write FEATURES/NAME (train, val) shard by shard; never holds more than one shard."""
    from bowsvm.io import atomic_output_dir, write_json_atomic
    from bowsvm.io.features import shard_entries, write_shard

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim), dtype=np.float32)
    counts, k = {}, 0
    with atomic_output_dir(root / name, overwrite=True) as tmp:
        for split, n in (("train", rows), ("val", val_rows)):
            (tmp / split).mkdir()
            for a in range(0, n, shard_rows):
                m = min(shard_rows, n - a)
                y = rng.integers(0, classes, m)
                if split == "train" and a == 0:
                    y[:min(m, classes)] = np.arange(min(m, classes))
                X = rng.standard_normal((m, dim), dtype=np.float32)
                X += np.float32(sep) * centers[y]
                X /= np.linalg.norm(X, axis=1, keepdims=True)
                write_shard(tmp / split / f"part-{k:05d}.parquet",
                            [f"{split}-{i:08d}" for i in range(a, a + m)], y, X, "dense")
                k += 1
                print(f"# generated {split} rows {a + m}/{n}", file=sys.stderr, flush=True)
            counts[split] = n
        write_json_atomic(tmp / "manifest.json", {
            "stage": "extract", "feature_set": name, "preset": "rehearsal", "preset_hash": None,
            "codebook_hash": None, "dim": dim, "layout": "dense",
            "classes": [str(c) for c in range(classes)], "counts": counts,
            "shards": shard_entries(tmp)})
    return counts


def peak_rss_of(body: str) -> tuple[int, float]:
    """Run ``body`` in a fresh interpreter; its peak RSS (bytes) and wall seconds."""
    code = ("import re; from bowsvm import cli; {body}; "
            "print(int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())"
            ".group(1)) * 1024)").format(body=body)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"child exited with {r.returncode}")
    return int(r.stdout.strip().splitlines()[-1]), time.perf_counter() - t


def load_split(folder: Path, dim: int):
    """Every row of a dense split in one (n, dim) float32 array, with ids and labels."""
    import pyarrow.parquet as pq

    from bowsvm.io.features import iter_shard_batches

    files = sorted(folder.glob("part-*.parquet"))
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    X = np.empty((n, dim), dtype=np.float32)
    ids = np.empty(n, dtype=object)
    y = np.empty(n, dtype=np.int64)
    r = 0
    for f in files:
        for bid, lab, Xb in iter_shard_batches(f, dim, 2048):
            m = lab.shape[0]
            X[r:r + m], ids[r:r + m], y[r:r + m] = Xb, bid, lab
            r += m
    return ids, y, X


def epoch_sequence(files, rows: int, seed: int, epoch: int, mix: int = 1) -> np.ndarray:
    """Ids in the order `bowsvm train` visits them in ``epoch`` (see bowsvm.stages.train):
    shards in ``rng.permutation`` order, ``mix`` side by side, ``rows // mix`` rows of
    each per chunk, each chunk shuffled."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng([seed, epoch])
    order = list(rng.permutation(len(files)))
    out = []
    for w in range(0, len(order), mix):
        window = order[w:w + mix]
        per = max(1, rows // len(window))
        readers = {fi: pq.ParquetFile(files[fi]).iter_batches(batch_size=per, columns=["id"])
                   for fi in window}
        while readers:
            ids = []
            for fi in window:
                rb = next(readers[fi], None) if fi in readers else None
                if rb is None:
                    readers.pop(fi, None)
                    continue
                ids += rb.column(0).to_pylist()
            if not ids:
                break
            ids = np.asarray(ids, dtype=object)
            out.append(ids[rng.permutation(ids.shape[0])])
    return np.concatenate(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=24576, help="training rows")
    ap.add_argument("--val-rows", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=65536)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--sep", type=float, default=0.05,
                    help="class separation (0.05 at 65,536-d: val top-1 about 0.22 after 2 epochs, chance 0.001)")
    ap.add_argument("--shard-rows", type=int, default=1024)
    ap.add_argument("--budget", default="2GB", help="--memory-budget of the streaming run")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--eta0", type=float, default=0.5)
    ap.add_argument("--reg", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for the data (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    a = ap.parse_args(argv)

    from bowsvm.asgd import ASGDClassifier
    from bowsvm.stages.train import parse_bytes
    from bowsvm.io.features import shard_files

    work = Path(tempfile.mkdtemp(prefix="bowsvm-ooc-", dir=a.work))
    feats, models = work / "features", work / "models"
    res = {"benchmark": "out_of_core", "rows": a.rows, "dim": a.dim, "classes": a.classes,
           "budget": a.budget, "epochs": a.epochs}
    try:
        t = time.perf_counter()
        generate(feats, "rehearsal", a.rows, a.val_rows, a.dim, a.classes, a.sep, a.shard_rows,
                 a.seed)
        res["generate_seconds"] = round(time.perf_counter() - t, 1)
        res["train_bytes_in_memory"] = a.rows * a.dim * 4
        res["train_bytes_on_disk"] = sum(f.stat().st_size for f in (feats / "rehearsal" / "train")
                                         .glob("*.parquet"))
        budget = parse_bytes(a.budget)
        res["data_over_budget"] = round(res["train_bytes_in_memory"] / budget, 2)

        # 1. Streaming, in a child process with the given budget.
        args = ["train", "--feature-set", "rehearsal", "--features", str(feats), "--models",
                str(models), "--epochs", str(a.epochs), "--solver", "asgd", "--eta0", str(a.eta0),
                "--reg",
                str(a.reg), "--seed", str(a.seed), "--memory-budget", a.budget]
        peak, sec = peak_rss_of(f"rc = cli.main({args!r}); assert rc == 0")
        man = json.loads((models / "rehearsal" / "manifest.json").read_text())
        log = [json.loads(x) for x in (models / "rehearsal" / "log.jsonl").read_text().splitlines()]
        rows = int(man["rows_per_chunk"])
        weights = 2 * a.classes * a.dim * 4
        res.update(stream_seconds=round(sec, 1), stream_peak_rss=peak, rows_per_chunk=rows,
                   weights_bytes=weights, stream_peak_over_weights_plus_budget=round(
                       peak / (weights + budget), 3),
                   stream_epoch_seconds=[r["seconds"] for r in log],
                   stream_val_top1=[r.get("top1") for r in log])
        coef_s = np.load(models / "rehearsal" / "coef.npy")
        b_s = np.load(models / "rehearsal" / "intercept.npy")
        print(json.dumps(res), file=sys.stderr, flush=True)

        # 2. In memory: the whole split in one array, the same sample sequence.
        t = time.perf_counter()
        ids, y, X = load_split(feats / "rehearsal" / "train", a.dim)
        res["load_seconds"] = round(time.perf_counter() - t, 1)
        where = {k: i for i, k in enumerate(ids)}
        files = shard_files(feats / "rehearsal", "train")
        hp = man["hyper_parameters"]
        clf = ASGDClassifier(reg=a.reg, eta0=a.eta0, power=hp["power"],
                             average_start=hp["average_start"], bias_lr=hp["bias_lr"],
                             average_decay=hp.get("average_decay", 0.0),
                             block_size=hp["block_size"], pos_weight=hp["pos_weight"])
        classes = np.arange(a.classes)
        t = time.perf_counter()
        for e in range(1, a.epochs + 1):
            order = np.fromiter((where[k] for k in epoch_sequence(files, rows, a.seed, e,
                                                                  man["shards_per_chunk"])),
                                dtype=np.int64, count=a.rows)
            for s in range(0, a.rows, 4096):
                idx = order[s:s + 4096]
                clf.partial_fit(X[idx], y[idx], classes=classes)
        res["memory_train_seconds"] = round(time.perf_counter() - t, 1)
        res["memory_peak_rss"] = int(re.search(r"VmHWM:\s*(\d+)",
                                               Path("/proc/self/status").read_text()).group(1)) * 1024
        del X

        # 3. Compare.
        scale = float(np.abs(coef_s).max())
        res["max_weight_diff_relative"] = float(np.abs(clf.coef_ - coef_s).max()) / scale
        res["max_bias_diff"] = float(np.abs(clf.intercept_ - b_s).max())
        _, yv, Xv = load_split(feats / "rehearsal" / "val", a.dim)
        ps = np.argmax(Xv @ coef_s.T + b_s, axis=1)
        pm = np.argmax(clf.decision_function(Xv), axis=1)
        res["val_top1_stream"] = float((ps == yv).mean())
        res["val_top1_memory"] = float((pm == yv).mean())
        res["val_predictions_agree"] = float((ps == pm).mean())
    finally:
        if a.keep:
            print(f"# data kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["command"] = "python benchmarks/bench_out_of_core.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
