"""Ingest throughput: generated 640x480 JPEGs through `bowsvm prepare` under local[2].

Side by side in one run: the Spark job's images/s (end to end, including JVM start)
and the in-process single-thread rate of the same decode/resize/re-encode function,
so the ratio shows Spark's parallel efficiency on this machine.

    python benchmarks/bench_ingest.py --images 600 --master 'local[2]'
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_tree(root: Path, n: int, classes: int = 6, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640]
    paths = []
    for i in range(n):
        # Smooth random colour fields plus noise: JPEG sizes like photos (~60-120 KB).
        f = rng.uniform(0.005, 0.05, 3)
        ph = rng.uniform(0, 6.3, 3)
        img = np.stack([127 + 100 * np.sin(f[c] * xx + ph[c]) * np.cos(f[c] * yy) for c in range(3)], -1)
        img += rng.normal(0, 12, img.shape)
        p = root / f"class{i % classes}" / f"img{i:05d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--max-side", type=int, default=500)
    args = ap.parse_args(argv)
    from bowsvm.io.images import normalize_image

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        paths = make_tree(work / "tree", args.images)
        mb = sum(p.stat().st_size for p in paths) / 2**20
        # In-process, single thread, same function as the executors run.
        sample = paths[: min(100, len(paths))]
        t = time.perf_counter()
        for p in sample:
            normalize_image(p.read_bytes(), max_side=args.max_side)
        local_rate = len(sample) / (time.perf_counter() - t)

        env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bowsvm.cli", "prepare", "--input", str(work / "tree"),
                        "--output", str(work / "out"), "--max-side", str(args.max_side),
                        "--master", args.master], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        m = json.loads((work / "out" / "manifest.json").read_text())
        job = m["seconds"]
        cores = int(args.master[6:-1].split(",")[0]) if args.master.startswith("local[") and args.master[6:-1].split(",")[0].isdigit() else os.cpu_count()
        res = {
            "images": args.images, "input_MB": round(mb, 1), "master": args.master,
            "spark_submit_wall_s": round(wall, 2), "job_s_after_start": job,
            "images_per_s_end_to_end": round(args.images / wall, 1),
            "images_per_s_job": round(args.images / job, 1),
            "single_thread_in_process_images_per_s": round(local_rate, 1),
            "parallel_efficiency_job": round(args.images / job / (cores * local_rate), 2),
        }
        print(json.dumps(res, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
