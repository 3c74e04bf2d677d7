"""Product-quantized feature shards against uncompressed ones: top-1 lost, bytes saved.

Given a dense (or sparse) feature set FEATURES/NAME with train and val splits:

1. ``bowsvm compress`` it into WORK/pq/NAME (``--dims-per-code``, ``--n-centroids``,
   ``--sample``; its wall time and encode rate from its manifest);
2. ``bowsvm train`` on both with the same options (``--train-args``; after one
   untimed warm-up epoch on the dense set), then
   ``bowsvm score`` on val with each model and top-1 / top-5 from the scores;
3. bytes per image: the split's shard bytes / rows of each (the pq set's codebook,
   ``pq.npz``, is stored once and reported apart);
4. throughput: ``pq_encode`` and ``pq_decode`` on one block of val rows (kernels
   alone), and one full read pass of the train split through the trainer's reader
   (``iter_chunks``: Parquet decode, checks, and for pq the decode to float32) for each.

Prints a markdown table and one JSON object (also written to ``--json``).

    # on real features (the lead's run; e.g. a Fisher set)
    python benchmarks/bench_pq.py --features out/features --feature-set fv-hoglbp --work /tmp/pq
    # a quick check on a generated set (Gaussian classes, rows L2-normalised)
    python benchmarks/bench_pq.py --generate 3000,512,20 --work /tmp/pq --n-centroids 64

Every step runs through the real CLI in this process (``bowsvm.cli.main``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate(root: Path, name: str, rows: int, dim: int, classes: int, sep: float = 0.1,
             seed: int = 0, shard_rows: int = 1000) -> None:
    """FEATURES/NAME with train (rows) and val (rows / 4) splits of Gaussian classes
    (``x = noise + sep * centre_y``, rows L2-normalised, as in bench_out_of_core.py)."""
    from bowsvm.io import atomic_output_dir, write_json_atomic
    from bowsvm.io.features import shard_entries, write_shard

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim)).astype(np.float32)
    counts, k = {}, 0
    with atomic_output_dir(root / name, overwrite=True) as tmp:
        for split, n in (("train", rows), ("val", max(rows // 4, classes))):
            (tmp / split).mkdir()
            for a in range(0, n, shard_rows):
                m = min(shard_rows, n - a)
                y = rng.integers(0, classes, m)
                if a == 0:
                    y[:min(m, classes)] = np.arange(min(m, classes))
                X = rng.standard_normal((m, dim)).astype(np.float32) + np.float32(sep) * centers[y]
                X /= np.linalg.norm(X, axis=1, keepdims=True)
                write_shard(tmp / split / f"part-{k:05d}.parquet",
                            [f"{split}-{i:08d}" for i in range(a, a + m)], y, X, "dense")
                k += 1
            counts[split] = n
        write_json_atomic(tmp / "manifest.json", {
            "stage": "extract", "feature_set": name, "preset": "generated", "preset_hash": None,
            "codebook_hash": None, "dim": dim, "layout": "dense",
            "classes": [str(c) for c in range(classes)], "counts": counts,
            "shards": shard_entries(tmp)})


def _cli(*argv) -> None:
    from bowsvm import cli

    rc = cli.main([str(a) for a in argv])
    if rc != 0:
        raise SystemExit(f"bowsvm {argv[0]} exited with {rc}")


def _top_k(scores_dir: Path):
    from bowsvm.evaluation.metrics import top_k_accuracy
    from bowsvm.io.scores import read_scores

    s = read_scores(scores_dir)
    return top_k_accuracy(s.scores, s.labels, 1), top_k_accuracy(s.scores, s.labels, 5)


def _split_bytes(manifest: dict, split: str) -> tuple[int, int]:
    entries = [e for e in manifest["shards"] if e["split"] == split]
    return sum(e["bytes"] for e in entries), sum(e["rows"] for e in entries)


def _read_pass(features: Path, name: str, rows: int) -> float:
    """Seconds of one pass over the train split through the trainer's reader."""
    from bowsvm.io.features import iter_chunks, open_feature_set, scan_split

    fs = open_feature_set(features, name)
    info = scan_split(fs, "train", check_hash=False)
    t = time.perf_counter()
    for _ in iter_chunks(info, fs.dim, rows, np.random.default_rng(0)):
        pass
    return time.perf_counter() - t


def run(a) -> dict:
    from bowsvm.coding.pq import pq_decode, pq_encode
    from bowsvm.io import read_manifest
    from bowsvm.io.features import iter_chunks, open_feature_set, scan_split

    work = Path(a.work)
    features, name = Path(a.features) if a.features else work / "dense", a.feature_set
    if a.generate:
        rows, dim, classes = (int(v) for v in a.generate.split(","))
        generate(features, name, rows, dim, classes, a.sep)
    pq_root = work / "pq"
    t = time.perf_counter()
    _cli("compress", "--feature-set", name, "--features", features, "--output-features", pq_root,
         "--dims-per-code", a.dims_per_code, "--n-centroids", a.n_centroids, "--sample", a.sample,
         "--seed", a.seed, "--overwrite", *(["--n-jobs", a.n_jobs] if a.n_jobs else []),
         *([] if a.verbose else ["--quiet"]))
    compress_seconds = time.perf_counter() - t
    res = {"feature_set": name, "features": str(features), "dims_per_code": a.dims_per_code,
           "n_centroids": a.n_centroids, "sample": a.sample, "train_args": a.train_args,
           "compress_seconds": round(compress_seconds, 2)}
    extra = shlex.split(a.train_args)
    # warm-up (numba kernels loaded or compiled), so neither timed run pays for it
    _cli("train", "--feature-set", name, "--features", features, "--models", work / "warm-up",
         "--overwrite", "--quiet", "--epochs", "1", "--no-validate")
    for kind, root in (("dense", features), ("pq", pq_root)):
        models, scores = work / f"models-{kind}", work / f"scores-{kind}"
        t = time.perf_counter()
        _cli("train", "--feature-set", name, "--features", root, "--models", models,
             "--overwrite", "--quiet", *extra)
        train_seconds = time.perf_counter() - t
        _cli("score", "--feature-set", name, "--split", "val", "--features", root,
             "--models", models, "--scores", scores, "--overwrite")
        top1, top5 = _top_k(scores / name / "val")
        m = read_manifest(root / name)
        b, n = _split_bytes(m, "train")
        res[kind] = {"val_top1": round(top1, 4), "val_top5": round(top5, 4),
                     "train_bytes_per_image": round(b / n, 1), "train_seconds": round(train_seconds, 2),
                     "layout": m["layout"], "dim": m["dim"],
                     "read_pass_seconds": round(_read_pass(root, name, a.read_rows), 3)}
    pm = read_manifest(pq_root / name)
    res["pq"].update(codebook_bytes=pm["pq"]["bytes"], n_codes=pm["pq"]["n_codes"],
                     sample_relative_error=pm["pq"]["sample_relative_error"],
                     fit_seconds=pm["pq"]["fit_seconds"],
                     encode_rows_per_second_stage=pm["encode_rows_per_second"])
    res["top1_loss"] = round(res["dense"]["val_top1"] - res["pq"]["val_top1"], 4)
    res["compression"] = round(res["dense"]["train_bytes_per_image"]
                               / res["pq"]["train_bytes_per_image"], 2)
    # the kernels alone, on one block of val rows
    fs = open_feature_set(pq_root, name)
    pq = fs.pq_codebook()
    _, _, X = next(iter_chunks(scan_split(open_feature_set(features, name), "val"),
                               pq.dim, a.kernel_rows))
    X = np.ascontiguousarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)
    pq_encode(X[:2], pq)  # compile / warm up
    t = time.perf_counter()
    codes = pq_encode(X, pq, n_threads=a.n_jobs)
    enc = time.perf_counter() - t
    out = np.empty_like(X)
    pq_decode(codes[:2], pq)
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        pq_decode(codes, pq, out=out)
        best = min(best, time.perf_counter() - t)
    res["kernels"] = {"rows": int(X.shape[0]), "encode_rows_per_second": round(X.shape[0] / enc, 1),
                      "decode_rows_per_second": round(X.shape[0] / best, 1),
                      "decode_GB_per_second": round(X.nbytes / best / 1e9, 3),
                      "n_threads": a.n_jobs}
    return res


def table(r: dict) -> str:
    d, p, k = r["dense"], r["pq"], r["kernels"]
    lines = [
        "| set | layout | dim | val top-1 | val top-5 | train bytes / image | train s | "
        "read pass s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, x in (("dense", d), ("pq", p)):
        lines.append(f"| {r['feature_set']} | {x['layout']} | {x['dim']} | {x['val_top1']:.4f} | "
                     f"{x['val_top5']:.4f} | {x['train_bytes_per_image']:.0f} | "
                     f"{x['train_seconds']:.1f} | {x['read_pass_seconds']:.3f} |")
    lines += [
        "",
        f"top-1 loss {r['top1_loss']:+.4f}; {r['compression']:.1f}x fewer bytes per image "
        f"(codebook {p['codebook_bytes']} bytes once); {p['n_codes']} codes of "
        f"{r['dims_per_code']} dims, {r['n_centroids']} centroids; sample relative error "
        f"{p['sample_relative_error']:.4g}; fit {p['fit_seconds']:.1f} s; compress stage "
        f"{r['compress_seconds']:.1f} s ({p['encode_rows_per_second_stage']} rows/s encoded, "
        f"Parquet included); kernels on {k['rows']} rows: encode {k['encode_rows_per_second']:.0f} "
        f"rows/s, decode {k['decode_rows_per_second']:.0f} rows/s "
        f"({k['decode_GB_per_second']:.2f} GB/s of float32).",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", help="root of the dense feature set (unless --generate)")
    p.add_argument("--feature-set", default="fs")
    p.add_argument("--generate", metavar="ROWS,DIM,CLASSES",
                   help="write a Gaussian-class feature set under WORK/dense first")
    p.add_argument("--sep", type=float, default=0.1, help="class separation of --generate")
    p.add_argument("--work", default=None, help="folder for the pq set, models and scores")
    p.add_argument("--dims-per-code", type=int, default=8)
    p.add_argument("--n-centroids", type=int, default=256)
    p.add_argument("--sample", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--train-args", default="--epochs 5",
                   help="options passed to both `bowsvm train` runs (one string)")
    p.add_argument("--read-rows", type=int, default=4096, help="rows per chunk of the read pass")
    p.add_argument("--kernel-rows", type=int, default=1024, help="val rows of the kernel timing")
    p.add_argument("--json", help="also write the JSON result here")
    p.add_argument("--verbose", action="store_true", help="show the compress stage's progress")
    a = p.parse_args(argv)
    if not a.features and not a.generate:
        p.error("pass --features (a dense feature set) or --generate")
    if a.work is None:
        a.work = tempfile.mkdtemp(prefix="bench-pq-")
    r = run(a)
    print(table(r))
    print(json.dumps(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
