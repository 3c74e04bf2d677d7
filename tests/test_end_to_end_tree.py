"""The generic path end to end: an ImageNet-style folder tree through the same commands.

scikit-image's bundled photos are cut into classes (random crops, flips and colour
jitter of one photo per class), laid out as train/CLASS/*.jpg and test/CLASS/*.png, and
run through prepare -> codebook -> extract -> train -> score -> fuse -> report.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "brick"]


def make_tree(root, per_class=(16, 6), seed=0):
    from skimage import data

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        img = getattr(data, name)()
        img = img if img.ndim == 3 else np.stack([img] * 3, -1)
        h, w = img.shape[:2]
        for split, n in zip(("train", "test"), per_class):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                s = int(rng.integers(h // 3, h // 2))
                y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
                crop = img[y:y + s, x:x + s].astype(np.float64)
                crop = np.clip(crop * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
                im = Image.fromarray(crop).resize((96, 96), Image.LANCZOS)
                if rng.random() < 0.5:
                    im = im.transpose(Image.FLIP_LEFT_RIGHT)
                im.save(d / (f"{i:03d}.jpg" if split == "train" else f"{i:03d}.png"))


def bowsvm(*args):
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    proc = subprocess.run([sys.executable, "-m", "bowsvm.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout + proc.stderr


def test_folder_tree_through_the_whole_pipeline(tmp_path):
    tree, out = tmp_path / "tree", tmp_path / "out"
    make_tree(tree)
    bowsvm("prepare", "--input", tree, "--output", out / "images", "--val-per-class", "4",
           "--max-side", "64", "--master", "local[2]")
    m = json.loads((out / "images" / "manifest.json").read_text())
    assert m["classes"] == sorted(PHOTOS)
    assert {s: sum(c.values()) for s, c in m["counts"].items()} == {"train": 72, "val": 24, "test": 36}
    sets = ["quick-lcc-hog", "quick-sv-hog"]
    for fs in sets:
        bowsvm("codebook", "--feature-set", fs, "--images", out / "images",
               "--codebooks", out / "codebooks", "--master", "local[2]")
        bowsvm("extract", "--feature-set", fs, "--images", out / "images",
               "--codebooks", out / "codebooks", "--features", out / "features",
               "--master", "local[2]")
        bowsvm("train", "--feature-set", fs, "--features", out / "features", "--models",
               out / "models", "--epochs", "10", "--reg", "1e-4", "--quiet")
        for split in ("val", "test"):
            bowsvm("score", "--feature-set", fs, "--split", split, "--features", out / "features",
                   "--models", out / "models", "--scores", out / "scores")
    bowsvm("fuse", "--scores", out / "scores", "--feature-sets", ",".join(sets), "--out", out / "fusion")
    bowsvm("report", out / "report.html", "--models", out / "models", "--scores", out / "scores",
           "--fusion", out / "fusion", "--features", out / "features", "--images", out / "images")
    metrics = json.loads((out / "report.json").read_text())
    html = (out / "report.html").read_text()
    assert "<img" in html and "http://" not in html and "https://" not in html
    fused = json.loads((out / "fusion" / "metrics.json").read_text())
    # six visually distinct photos: far above chance (1/6) on held-out crops
    test_top1 = fused["test"]["fused"]["top1"] if "test" in fused else None
    assert test_top1 is not None and test_top1 >= 0.6, fused
    assert metrics  # the JSON of every number exists
