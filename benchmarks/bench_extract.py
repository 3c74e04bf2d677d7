"""Feature extraction throughput: in-process vs spark-submit local[2], paper presets 1 and 4.

For each preset, on the same 500x375 photos (scikit-image's bundled photos, resized,
plus flipped and cropped variants):

- in-process, one thread: ``bowsvm.stages.extract.extract_local`` (the very function the Spark
  tasks run) -> seconds per image per core;
- ``bowsvm extract --master local[2]`` -> images/s for the job, per core, both end to
  end and after Spark's start-up (recorded in the manifest);
- Spark overhead = (in-process per-core rate) / (Spark per-core rate after start-up) - 1.

The codebook's bases are descriptors sampled from the same photos (plus PCA for the SV
preset) rather than K-means centres: extraction cost does not depend on where the
bases lie, and K-means with 8192 centres would dominate the run.

    python benchmarks/bench_extract.py --images 64
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def photos(n: int):
    """n 500x375 grey-able RGB photos from scikit-image's data, with variants."""
    from PIL import Image
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "immunohistochemistry",
             "retina", "hubble_deep_field"]
    base = []
    for nm in names:
        try:
            img = getattr(data, nm)()
        except Exception:
            continue
        im = Image.fromarray(img if img.ndim == 3 else np.stack([img] * 3, -1)).convert("RGB")
        base.append(im.resize((500, 375), Image.LANCZOS))
    out = []
    i = 0
    while len(out) < n:
        im = base[i % len(base)]
        v = i // len(base)
        if v % 2:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        if v % 3 == 2:
            im = im.crop((20, 15, 480, 360)).resize((500, 375), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
        i += 1
    return out


def write_images(root: Path, blobs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bowsvm.io import atomic_output_dir, write_json_atomic

    rows = [{"id": f"img{i:05d}", "label": i % 4, "class_name": f"c{i % 4}", "split": "train",
             "orig_width": 500, "orig_height": 375, "width": 500, "height": 375, "image": b,
             "source": "bench"} for i, b in enumerate(blobs)]
    with atomic_output_dir(root, overwrite=True) as tmp:
        (tmp / "shards").mkdir()
        pq.write_table(pa.Table.from_pylist(rows), tmp / "shards" / "part-00000.parquet")
        write_json_atomic(tmp / "manifest.json", {"stage": "prepare", "classes": ["c0", "c1", "c2", "c3"],
                                                  "n_images": len(rows)})


def write_codebook(root: Path, name: str, blobs, seed=0):
    from bowsvm.coding import Codebook, fit_pca, sample_descriptors
    from bowsvm.presets import feature_set_preset
    from bowsvm.io.images import decode_image
    from bowsvm.io import atomic_output_dir, write_json_atomic

    preset, phash = feature_set_preset(name)
    p = preset["codebook"]["n_bases"]
    rng = np.random.default_rng(seed)
    per = -(-4 * p // len(blobs))
    X = np.concatenate([sample_descriptors(decode_image(b, preset["max_side"]), preset, per, rng)
                        for b in blobs])
    mean = comps = None
    if preset["codebook"]["pca_dim"]:
        mean, comps = fit_pca(X[:20000], preset["codebook"]["pca_dim"])
        X = (X - mean) @ comps.T
    bases = X[rng.choice(len(X), size=p, replace=len(X) < p)]
    bases = bases + rng.normal(0, 1e-3, bases.shape).astype(np.float32)  # no duplicate bases
    cb = Codebook(bases, mean, comps, meta={"method": "benchmark: sampled descriptors"})
    with atomic_output_dir(root / name, overwrite=True) as tmp:
        cb.save(tmp)
        write_json_atomic(tmp / "manifest.json", {"stage": "codebook", "preset_hash": phash,
                                                  "codebook_hash": cb.hash})
    return cb, preset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--local-images", type=int, default=8,
                    help="images timed in-process (single thread)")
    ap.add_argument("--presets", default="paper-1-lcc-hoglbp-8k,paper-4-sv-hog-32k")
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from bowsvm.stages.extract import extract_local

    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    results = []
    try:
        blobs = photos(args.images)
        write_images(work / "images", blobs)
        write_images(work / "images-local", blobs[: args.local_images])
        for name in args.presets.split(","):
            cb, preset = write_codebook(work / "codebooks", name, blobs)
            # In-process, one thread (numba and BLAS), after a warm-up image.
            import numba

            numba.set_num_threads(1)
            with threadpool_limits(1):
                extract_local(work / "images-local", preset, cb)  # warm-up/compile
                t = time.perf_counter()
                extract_local(work / "images-local", preset, cb)
                local_s = (time.perf_counter() - t) / args.local_images
            env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bowsvm.cli", "extract", "--feature-set", name,
                            "--images", str(work / "images"), "--codebooks", str(work / "codebooks"),
                            "--features", str(work / "features"), "--master", args.master,
                            "--overwrite"], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t
            m = json.loads((work / "features" / name / "manifest.json").read_text())
            cores = m["default_parallelism"]
            job = m["seconds"]  # the stage after the session start (spark_start_seconds)
            spark_s_per_image_core = job * cores / args.images
            results.append({
                "preset": name, "dim": m["dim"], "layout": m["layout"], "images": args.images,
                "in_process_s_per_image_1_thread": round(local_s, 4),
                "spark_cores": cores,
                "spark_submit_wall_s": round(wall, 1),
                "spark_job_s_after_start": round(job, 1),
                "spark_s_per_image_per_core": round(spark_s_per_image_core, 4),
                "spark_images_per_s": round(args.images / job, 2),
                "spark_overhead_vs_in_process": round(spark_s_per_image_core / local_s - 1, 3),
                "end_to_end_s_per_image_per_core": round(wall * cores / args.images, 4),
                "shard_bytes_per_image": round(m["bytes_on_disk"] / args.images),
            })
            print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
