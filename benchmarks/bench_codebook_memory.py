"""Peak memory of `bowsvm codebook` (issue 15, item 1): the driver's Python process and JVM.

Runs the real CLI (spark-submit) on a prepared image tree, one case after another,
and polls the process tree of the `bowsvm` command every ``--interval`` seconds
through psutil (``Process.children(recursive=True)``, resident set size of each
process): the JVM (spark-submit's ``java``, the driver; in local mode the
executors live in it too), the job's Python driver (the ``learn_codebook.py``
process, where the sample is read and the codebook learned), and the PySpark
workers (``pyspark.daemon`` / ``pyspark.worker``: the tasks that draw the
sample). It records each group's peak (the sum over its processes at one poll)
and the peak of the whole tree, with the stage's manifest (path taken, sample
bytes, K-means seconds).

    python benchmarks/bench_codebook_memory.py --images IMAGES --out OUT \\
        --case 1m:100:1000000:2GB --case 1m-inmem:100:1000000:8GB

A case is ``NAME:SAMPLES_PER_IMAGE:N_SAMPLES:MEMORY_BUDGET``. ``--n-bases`` writes
a copy of the preset with another codebook size into OUT (the sample, its PCA
and the memory path do not depend on it; only K-means' time does).
``--repo`` runs another checkout's code (PYTHONPATH), e.g. main's, to measure
the code before this change (it has no --memory-budget: leave the budget empty).
``--stop-after-passes N`` ends each case once K-means has made N passes over all
rows (the peak is reached by then: every pass holds the same arrays).
Results: OUT/results.jsonl (one JSON object per case) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def _group(p: psutil.Process) -> str | None:
    try:
        name, cmd = p.name(), " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if name == "java" or cmd.startswith("java ") or "/java " in cmd:
        return "jvm"
    if "learn_codebook.py" in cmd:
        return "python_driver"
    if "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
        return "python_workers"
    return "other"


def run_case(cmd: list[str], env: dict, log: Path, interval: float,
             stop_after: int | None = None) -> dict:
    """Run ``cmd``, polling its process tree; return exit code, seconds and peak RSS per group.

    ``stop_after``: end the run (SIGTERM to its process group) once K-means has
    logged that many passes over all rows (``stopped`` is then True).
    """
    peaks = {"jvm": 0, "python_driver": 0, "python_workers": 0, "other": 0, "total": 0}
    t0 = time.time()
    stopped = False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        top = psutil.Process(proc.pid)
        while proc.poll() is None:
            if stop_after and f"[kmeans] pass {stop_after} on all rows" in log.read_text():
                os.killpg(proc.pid, signal.SIGTERM)
                stopped = True
                proc.wait()
                break
            now = {k: 0 for k in peaks}
            try:
                procs = [top] + top.children(recursive=True)
            except psutil.NoSuchProcess:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                g = _group(p)
                if g is None:
                    continue
                now[g] += rss
                now["total"] += rss
            for k in peaks:
                peaks[k] = max(peaks[k], now[k])
            time.sleep(interval)
    return {"exit": proc.returncode, "seconds": round(time.time() - t0, 1), "stopped": stopped,
            **{f"peak_rss_{k}": v for k, v in peaks.items()}}


def preset_with_bases(preset: str, n_bases: int, out: Path) -> Path:
    """A copy of a shipped preset (name or TOML path) with ``codebook.n_bases`` replaced."""
    src = Path(preset) if preset.endswith(".toml") else ROOT / "bowsvm" / "presets" / f"{preset}.toml"
    text = src.read_text()
    old = re.findall(r"(?m)^n_bases\s*=\s*(\d+)", text)
    dims = re.findall(r"(?m)^dim\s*=\s*(\d+)", text)
    if len(old) != 1 or len(dims) != 1:
        raise ValueError(f"{src} has no single 'n_bases = ...' and 'dim = ...' line to replace")
    text = re.sub(r"(?m)^n_bases\s*=\s*\d+", f"n_bases = {n_bases}", text)
    # output.dim is proportional to the codebook size (LCC, SV and Fisher vectors alike)
    text = re.sub(r"(?m)^dim\s*=\s*\d+", f"dim = {int(dims[0]) * n_bases // int(old[0])}", text)
    dst = out / f"{src.stem}-{n_bases}.toml"
    dst.write_text(f"# {src.name} with n_bases = {n_bases} (bench_codebook_memory.py)\n" + text)
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, help="a `bowsvm prepare` output")
    ap.add_argument("--out", required=True, help="folder for codebooks, logs and results")
    ap.add_argument("--preset", default="paper-1-lcc-hoglbp-8k")
    ap.add_argument("--n-bases", type=int, default=None,
                    help="codebook size (default: the preset's)")
    ap.add_argument("--case", action="append", required=True,
                    help="NAME:SAMPLES_PER_IMAGE:N_SAMPLES:MEMORY_BUDGET (budget may be empty)")
    ap.add_argument("--kmeans", default="local")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="2g")
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose bowsvm runs (PYTHONPATH)")
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between polls")
    ap.add_argument("--stop-after-passes", type=int, default=None, metavar="N",
                    help="end a case once K-means has made N passes over all rows (every "
                    "pass holds the same memory; the case then writes no codebook, and its "
                    "temporary folder is removed here)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preset = args.preset if args.n_bases is None else str(preset_with_bases(
        args.preset, args.n_bases, out))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [args.repo] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    rows = []
    for case in args.case:
        name, per_image, n_samples, budget = case.split(":")
        cmd = [sys.executable, "-m", "bowsvm.cli", "codebook", "--feature-set", name,
               "--preset", preset, "--images", args.images, "--codebooks", str(out / "codebooks"),
               "--samples-per-image", per_image, "--n-samples", n_samples,
               "--kmeans", args.kmeans, "--master", args.master,
               "--driver-memory", args.driver_memory, "--overwrite"]
        if budget:
            cmd += ["--memory-budget", budget]
        log = out / f"{name}.log"
        print(f"[bench] {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        res = run_case(cmd, env, log, args.interval, args.stop_after_passes)
        if res["stopped"]:  # the killed run's temporary folder (its staged sample)
            for tmp in (out / "codebooks").glob(f".{name}.tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)
        m = {}
        mpath = out / "codebooks" / name / "manifest.json"
        if res["exit"] == 0 and mpath.is_file():
            m = json.loads(mpath.read_text())
        row = {"case": name, "samples_per_image": int(per_image), "n_samples": int(n_samples),
               "memory_budget": budget or None, "repo": args.repo, "preset": preset,
               "command": " ".join(cmd), **res,
               **{k: m.get(k) for k in ("path", "sample_bytes", "kmeans_seconds",
                                        "codebook_hash")},
               "stage_seconds": m.get("seconds")}
        row["n_samples"] = m.get("n_samples", int(n_samples))
        rows.append(row)
        with open(out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[bench] {name}: exit {res['exit']} in {res['seconds']} s, peak RSS: JVM "
              f"{res['peak_rss_jvm'] / 2**30:.2f} GiB, Python driver "
              f"{res['peak_rss_python_driver'] / 2**30:.2f} GiB, workers "
              f"{res['peak_rss_python_workers'] / 2**30:.2f} GiB, tree "
              f"{res['peak_rss_total'] / 2**30:.2f} GiB; path {row.get('path')}",
              file=sys.stderr, flush=True)
    print("| case | rows | budget | path | exit | s | JVM peak GiB | Python driver peak GiB "
          "| workers peak GiB | tree peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['n_samples']} | {r['memory_budget']} | {r.get('path')} | "
              f"{r['exit']} | {r['seconds']} | {r['peak_rss_jvm'] / 2**30:.2f} | "
              f"{r['peak_rss_python_driver'] / 2**30:.2f} | "
              f"{r['peak_rss_python_workers'] / 2**30:.2f} | {r['peak_rss_total'] / 2**30:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
