"""Spark job: train the class groups of one feature set as parallel Spark tasks.

Each task trains one class group (``--groups`` of them) over ALL train shards,
with exactly the sample sequence of ``bowsvm train`` (same seed, same memory
budget -> same chunks), and writes its group's averaged weights to a staging
folder beside the model; the driver gathers them, evaluates the val split and
writes the model atomically. The gathered model equals the one-machine model
trained with the same ``--groups`` and seed. Shards and the models folder must
be on a filesystem every executor sees.

    spark-submit --master 'local[2]' jobs/train_groups.py --feature-set NAME \\
        --features features --models models --groups 2 --n-jobs 1

Options: those of ``bowsvm train`` (``--n-jobs`` is per task, default 1;
keep tasks x threads <= cores). Each task writes its group's averaged weights
after every epoch (``<models>/.NAME.groups/epoch-E/group-G.npz``); the driver
evaluates every epoch's gathered model on val, so log.jsonl matches the
one-machine run. ``--resume`` is not supported here (tasks restart from zero).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def parse_args(argv):
    from bowsvm.commands.train import add_arguments

    p = argparse.ArgumentParser(prog="train_groups.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    if args.n_jobs is None:
        args.n_jobs = 1
    return args


def train_group(g: int, features: str, name: str, hyper: dict, epochs: int, seed: int,
                budget: str, n_jobs: int, groups: int, staging: str) -> tuple:
    """Executor side: train group ``g`` over all shards; write its arrays; return its log."""
    import numpy as np

    from bowsvm.asgd.core import Hyper
    from bowsvm.asgd.streaming import open_feature_set, train_feature_set

    def save(epoch, states):
        W, b = states[g].averaged()
        folder = Path(staging) / f"epoch-{epoch:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".group-{g:05d}.npz.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, coef=W, intercept=b)
        tmp.replace(folder / f"group-{g:05d}.npz")

    fs = open_feature_set(features, name)
    states, log_rows, info = train_feature_set(
        fs, hyper=Hyper(**hyper), epochs=epochs, seed=seed, memory_budget=budget,
        n_jobs=n_jobs, groups=groups, only_groups=[g], validate=False, on_epoch=save)
    return g, log_rows, info


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    import numpy as np

    from bowsvm.asgd.streaming import (
        auto_eta0, evaluate, open_feature_set, parse_bytes, rows_per_chunk, scan_split,
        write_model,
    )
    from bowsvm.commands.train import hyper_from_args
    from bowsvm.io.arrays import load_npz
    from bowsvm.io.atomic import prepare_target
    from bowsvm.io.features import shard_files
    from bowsvm.spark import build_session

    hyper, auto = hyper_from_args(args)
    fs = open_feature_set(args.features, args.feature_set)
    prepare_target(Path(args.models) / fs.name, args.overwrite, "train", [fs.folder], "--models/NAME")
    t0 = time.time()
    train = scan_split(fs, "train", require_all_classes=True)  # errors before any task
    val = scan_split(fs, "val") if (not args.no_validate and shard_files(fs.folder, "val")) else None
    rows = rows_per_chunk(fs, train, parse_bytes(args.memory_budget))
    if auto:
        hyper = auto_eta0(fs, train, hyper, args.seed, rows)
    from dataclasses import asdict

    staging = Path(args.models).absolute() / f".{fs.name}.groups"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    spark = build_session("bowsvm-train-groups")
    sc = spark.sparkContext
    features = str(Path(args.features).absolute())
    h = asdict(hyper)
    job = (args.feature_set, h, args.epochs, args.seed, args.memory_budget, args.n_jobs,
           args.groups, str(staging))
    try:
        results = (sc.parallelize(range(args.groups), args.groups)
                   .map(lambda g: train_group(g, features, *job))
                   .collect())
    finally:
        spark.stop()
    results.sort(key=lambda r: r[0])

    def gathered(epoch):
        folder = staging / f"epoch-{epoch:04d}"
        parts = [load_npz(folder / f"group-{g:05d}.npz", "group weights file") for g, _, _ in results]
        return (np.concatenate([p["coef"] for p in parts]),
                np.concatenate([p["intercept"] for p in parts]))

    log_rows = []
    for e, row in enumerate(results[0][1]):
        r = dict(row)
        r["seconds"] = max(res[1][e]["seconds"] for res in results)
        if val is not None:  # per-epoch validation of the gathered model, on the driver
            coef, intercept = gathered(r["epoch"])
            ev = evaluate([(coef, intercept)], val, fs.dim, rows, hyper.reg)
            r.update(top1=ev["top1"], top5=ev["top5"], objective=ev["objective"])
        log_rows.append(r)
    coef, intercept = gathered(results[0][1][-1]["epoch"])
    info = dict(results[0][2])
    info["seconds"] = round(time.time() - t0, 3)
    write_model(args.models, fs, coef, intercept, log_rows, info, overwrite=args.overwrite)
    shutil.rmtree(staging, ignore_errors=True)
    print(f"[train_groups] {args.groups} groups trained; model written to "
          f"{Path(args.models) / fs.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from bowsvm.spark import run_job

    run_job(main, "train_groups.py")
