"""Convergence of ``bowsvm train`` (issue 16, part 2): defaults at 5 epochs vs the best of a grid.

Trains one feature set through the CLI (local, in this process's venv) once with the
defaults (5 epochs) and once per grid setting for ``--epochs`` epochs, reads each
model's ``log.jsonl`` (val top-1 per epoch) and reports the gap between the defaults'
epoch-5 val top-1 and the best val top-1 any setting reached at any epoch::

    python benchmarks/study_convergence.py --features demo-out/features \\
        --feature-set fmnist-lcc-hog-spm7 --epochs 20 \\
        --grid "reg=1e-6,1e-5,1e-4,1e-3 power=0.6667,1"

``--grid`` is space-separated ``option=v1,v2,...`` items (options of ``bowsvm train``
without the dashes); every combination is trained. Prints one JSON line per run on
stderr and the summary as the last line on stdout.

With ``--one-pass`` the grid's options must be ones ``bowsvm train`` takes as lists
(``reg``, ``eta0``, ``pos-weight``): the grid is then one ``bowsvm train`` run that
trains every combination in the same data pass (each as if alone), and each setting's
val top-1 per epoch is read from that run's per-epoch lines::

    python benchmarks/study_convergence.py --features mc-features --feature-set mc-sv \
        --epochs 20 --grid "reg=1e-4,1e-5 pos-weight=1,auto" --one-pass
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import emit


def train(features, name, models, options, epochs):
    cmd = [str(Path(sys.executable).with_name("bowsvm")), "train", "--feature-set", name,
           "--features", str(features), "--models", str(models), "--epochs", str(epochs),
           "--quiet", *options]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"options": options, "error": proc.stderr[-2000:]}
    rows = [json.loads(x) for x in (Path(models) / name / "log.jsonl").read_text().splitlines()]
    m = json.loads((Path(models) / name / "manifest.json").read_text())
    return {"options": options, "eta0": m.get("eta0"), "seconds": round(time.perf_counter() - t, 1),
            "top1": [r.get("top1") for r in rows], "top5": [r.get("top5") for r in rows]}


LIST_OPTIONS = ("reg", "eta0", "pos-weight")


def train_one_pass(features, name, models, items, extra, epochs):
    """Every combination of ``items`` in one ``bowsvm train`` run: one result per setting."""
    cmd = [str(Path(sys.executable).with_name("bowsvm")), "train", "--feature-set", name,
           "--features", str(features), "--models", str(models), "--epochs", str(epochs),
           *[x for k, v in items for x in (f"--{k}", v)], *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return [{"options": cmd[2:], "error": proc.stderr[-2000:]}]
    rows = {}
    for line in proc.stderr.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rows.setdefault(r.get("setting", 0), []).append(r)
    m = json.loads((Path(models) / name / "manifest.json").read_text())
    seconds = round(time.perf_counter() - t, 1)
    out = []
    for k, s in enumerate(m["selection"]["settings"]):
        r = sorted(rows.get(k, []), key=lambda x: x["epoch"])
        step = f"--eta0 {s['eta0']:g} " if s.get("solver", "asgd") == "asgd" else ""
        out.append({"setting": f"--reg {s['reg']:g} {step}--pos-weight {s['pos_weight']:g}",
                    "eta0": s["eta0"],
                    "seconds_all_settings": seconds, "error": s.get("error"),
                    "top1": [x.get("top1") for x in r], "top5": [x.get("top5") for x in r]})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", required=True)
    p.add_argument("--feature-set", required=True)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--grid", default="reg=1e-6,1e-5,1e-4,1e-3 power=0.6667,1")
    p.add_argument("--default-epochs", type=int, default=5)
    p.add_argument("--extra", default="", help="options added to every run, e.g. '--n-jobs 2'")
    p.add_argument("--out", default=None, help="also write the JSON summary here")
    p.add_argument("--one-pass", action="store_true",
                   help="train the whole grid in one bowsvm train run (list options only)")
    a = p.parse_args(argv)
    items = [kv.split("=", 1) for kv in a.grid.split()]
    extra = a.extra.split()
    bad = [k for k, _ in items if k not in LIST_OPTIONS]
    if a.one_pass and bad:
        p.error(f"--one-pass: {bad} cannot be given as lists to bowsvm train; "
                f"use options among {LIST_OPTIONS} or drop --one-pass.")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bowsvm-conv-") as tmp:
        r = train(a.features, a.feature_set, Path(tmp) / "default", extra, a.default_epochs)
        r["setting"] = "defaults"
        print(json.dumps(r), file=sys.stderr, flush=True)
        runs.append(r)
        if a.one_pass:
            for r in train_one_pass(a.features, a.feature_set, Path(tmp) / "grid", items, extra,
                                    a.epochs):
                print(json.dumps(r), file=sys.stderr, flush=True)
                runs.append(r)
        else:
            for i, combo in enumerate(itertools.product(*[v.split(",") for _, v in items])):
                opts = [x for (k, _), v in zip(items, combo) for x in (f"--{k}", v)]
                r = train(a.features, a.feature_set, Path(tmp) / f"g{i}", opts + extra, a.epochs)
                r["setting"] = " ".join(opts)
                print(json.dumps(r), file=sys.stderr, flush=True)
                runs.append(r)
    ok = [r for r in runs[1:] if r.get("top1")]
    best = max(ok, key=lambda r: max(r["top1"])) if ok else None
    d = runs[0].get("top1", [None])[-1]
    summary = {"benchmark": "convergence", "feature_set": a.feature_set, "epochs": a.epochs,
               "defaults_epoch5_top1": d,
               "best_top1": max(best["top1"]) if best else None,
               "best_setting": best["setting"] if best else None,
               "best_epoch": best["top1"].index(max(best["top1"])) + 1 if best else None,
               "gap_points": round(100 * (max(best["top1"]) - d), 2) if best and d else None,
               "loadavg": os.getloadavg()[0], "runs": runs}
    emit(summary, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
