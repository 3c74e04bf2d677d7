"""Multi-executor rehearsal figures (issue 15, items 4-5): throughput per executor count.

(a) Extraction: the same image shards (500x375 JPEGs from scikit-image's photos, as in
    bench_extract.py, with its sampled-descriptor codebook) extracted by
    ``spark-submit jobs/extract_features.py`` on ``local-cluster[1,1,1024]`` (one executor,
    one core), ``local-cluster[2,1,1024]`` (two) and ``local[2]`` (reference). From each
    run's Spark event log: the extraction stage's wall time (submission to completion)
    and the sum of its task times; images/s = images / stage wall time; s per image per
    core = task-time sum / images. ``manifest seconds`` is the stage's own timing (after
    the session start, so it includes the executors' start on local-cluster).
(b) Training: a generated dense feature set (bench_out_of_core.generate: Gaussian
    classes, rows L2-normalised) trained by ``spark-submit jobs/train_groups.py`` with
    ``--groups 1`` and ``--groups 2`` on ``local-cluster[2,1,1024]``, ``--n-jobs 1`` per
    task; per-epoch seconds from the model's ``log.jsonl`` (the slowest group's epoch).
    Every group's task streams all shards from the feature folder.

    python benchmarks/bench_cluster.py --images 96 --rows 16384 --dim 8192 --classes 200 --epochs 3

Prints one JSON line per run and ``uptime`` before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extract import photos, write_codebook, write_images  # noqa: E402
from bench_out_of_core import generate  # noqa: E402

from bowsvm.spark import spark_env, spark_submit_command  # noqa: E402

MASTERS = ("local-cluster[1,1,1024]", "local-cluster[2,1,1024]", "local[2]")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def submit(job: str, job_args: list[str], master: str, event_dir: Path) -> float:
    """Run ``jobs/<job>`` under spark-submit with an event log in ``event_dir``; its wall s.

    Raises
    ------
    RuntimeError
        If the job exits non-zero (its log's tail in the message).
    """
    event_dir.mkdir(parents=True)
    conf = ["spark.eventLog.enabled=true", f"spark.eventLog.dir={event_dir}",
            "spark.eventLog.compress=false", "spark.eventLog.rolling.enabled=false"]
    t = time.perf_counter()
    proc = subprocess.run(spark_submit_command(job, job_args, master, conf), env=spark_env(),
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"{job} on {master} exited {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    return wall


def stage_times(event_dir: Path) -> list[dict]:
    """Per completed stage of the event log in ``event_dir``: name, wall s, task s, tasks."""
    (log,) = [p for p in event_dir.iterdir() if p.is_file()]
    stages, tasks = {}, {}
    for line in log.read_text().splitlines():
        e = json.loads(line)
        if e["Event"] == "SparkListenerStageCompleted":
            s = e["Stage Info"]
            stages[s["Stage ID"], s["Stage Attempt ID"]] = {
                "name": s["Stage Name"].split(" at ")[0], "n_tasks": s["Number of Tasks"],
                "wall_s": (s["Completion Time"] - s["Submission Time"]) / 1000}
        elif e["Event"] == "SparkListenerTaskEnd":
            i = e["Task Info"]
            key = (e["Stage ID"], e["Stage Attempt ID"])
            tasks[key] = tasks.get(key, 0.0) + (i["Finish Time"] - i["Launch Time"]) / 1000
    return [dict(v, task_s=round(tasks.get(k, 0.0), 3)) for k, v in sorted(stages.items())]


def bench_extract(work: Path, n_images: int, preset: str) -> list[dict]:
    write_images(work / "images", photos(n_images))
    write_codebook(work / "codebooks", preset, photos(min(n_images, 64)))
    out = []
    for master in MASTERS:
        tag = master.replace("[", "-").replace("]", "").replace(",", "-")
        feats = work / f"features-{tag}"
        wall = submit("extract_features.py", [
            "--feature-set", preset, "--images", str(work / "images"),
            "--codebooks", str(work / "codebooks"), "--features", str(feats)],
            master, work / f"events-extract-{tag}")
        m = json.loads((feats / preset / "manifest.json").read_text())
        big = max(stage_times(work / f"events-extract-{tag}"), key=lambda s: s["task_s"])
        out.append({
            "what": "extract", "preset": preset, "master": master, "images": n_images,
            "partitions": m["partitions"], "spark_submit_wall_s": round(wall, 1),
            "manifest_seconds": m["seconds"], "stage_wall_s": big["wall_s"],
            "stage_task_s": big["task_s"],
            "images_per_s_stage": round(n_images / big["wall_s"], 2),
            "s_per_image_per_core": round(big["task_s"] / n_images, 4),
            "shard_bytes_per_image": round(m["bytes_on_disk"] / n_images),
        })
        print(json.dumps(out[-1]), flush=True)
    return out


def bench_train(work: Path, rows: int, dim: int, classes: int, epochs: int,
                budget: str) -> list[dict]:
    generate(work / "features", "gen", rows, max(classes, rows // 8), dim, classes,
             sep=3.0, shard_rows=max(256, rows // 16))
    fm = json.loads((work / "features" / "gen" / "manifest.json").read_text())
    train_bytes = sum(e["bytes"] for e in fm["shards"] if e["split"] == "train")
    out = []
    for groups in (1, 2):
        models = work / f"models-g{groups}"
        wall = submit("train_groups.py", [
            "--feature-set", "gen", "--features", str(work / "features"), "--models", str(models),
            "--groups", str(groups), "--epochs", str(epochs), "--n-jobs", "1", "--seed", "0",
            "--eta0", "auto", "--memory-budget", budget, "--no-validate"],
            "local-cluster[2,1,1024]", work / f"events-train-g{groups}")
        log = [json.loads(r) for r in (models / "gen" / "log.jsonl").read_text().splitlines()]
        out.append({
            "what": "train", "master": "local-cluster[2,1,1024]", "groups": groups,
            "rows": rows, "dim": dim, "classes": classes, "train_shard_bytes": train_bytes,
            "epoch_seconds": [r["seconds"] for r in log], "spark_submit_wall_s": round(wall, 1),
        })
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96, help="images in the extraction job")
    ap.add_argument("--preset", default="paper-1-lcc-hoglbp-8k")
    ap.add_argument("--rows", type=int, default=16384, help="train rows of the generated set")
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--budget", default="256MB", help="--memory-budget of training")
    ap.add_argument("--skip", choices=("extract", "train"), default=None)
    ap.add_argument("--work", default=None, help="scratch folder (default: system temp)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-", dir=args.work))
    print(json.dumps({"uptime_before": uptime()}), flush=True)
    results = []
    try:
        if args.skip != "extract":
            results += bench_extract(work, args.images, args.preset)
        if args.skip != "train":
            results += bench_train(work, args.rows, args.dim, args.classes, args.epochs,
                                   args.budget)
    finally:
        print(json.dumps({"uptime_after": uptime()}), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
