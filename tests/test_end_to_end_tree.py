"""The generic path end to end: an ImageNet-style folder tree through the same commands.

scikit-image's bundled photos are cut into classes (random crops, flips and colour
jitter of one photo per class), laid out as train/CLASS/*.jpg and test/CLASS/* (RGBA
PNGs with varying alpha, palette PNGs with a transparent colour, JPEGs and grey PNGs,
some larger than the presets' ``max_side`` and some smaller), and run through prepare
-> codebook -> extract -> train -> score -> fuse -> report.

``bowsvm predict`` on the original test files must then give the per-class scores the
score stage wrote for the same ids: training and predict see the same pixels only if
they share one image path (alpha over white, one 8-bit conversion, one resize filter;
issue 14). Prepare stores PNG (``--format png``) so that the shards hold exactly the
pixels predict computes.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "brick"]


KINDS = ["rgba", "jpeg", "grey", "palette"]


def write_kind(path, rgb, kind, rng):
    """Save ``rgb`` as one of KINDS (the alpha of RGBA varies; a band is fully transparent)."""
    buf = io.BytesIO()
    if kind == "rgba":
        h, w = rgb.shape[:2]
        alpha = rng.integers(200, 256, (h, w)).astype(np.uint8)
        alpha[: h // 16] = 0  # fully transparent band: its colour must not be seen
        rgba = np.dstack([rgb, alpha])
        rgba[: h // 16, :, :3] = rng.integers(0, 256, (h // 16, w, 3))
        Image.fromarray(rgba).save(buf, format="PNG")
    elif kind == "jpeg":
        Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    elif kind == "grey":
        Image.fromarray(rgb).convert("L").save(buf, format="PNG")
    else:
        Image.fromarray(rgb).convert("P").save(buf, format="PNG", transparency=0)
    path.write_bytes(buf.getvalue())


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
                side = 96 if split == "train" or i % 3 else 60  # test: some below max_side 64
                im = Image.fromarray(crop).resize((side, side), Image.LANCZOS)
                if rng.random() < 0.5:
                    im = im.transpose(Image.FLIP_LEFT_RIGHT)
                if split == "train":
                    im.save(d / f"{i:03d}.jpg")
                else:
                    kind = KINDS[i % len(KINDS)]
                    ext = "jpg" if kind == "jpeg" else "png"
                    write_kind(d / f"{i:03d}-{kind}.{ext}", np.asarray(im), kind, rng)


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
           "--max-side", "64", "--format", "png", "--master", "local[2]")
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
    check_predict_equals_score(tree, out, "quick-sv-hog")


def check_predict_equals_score(tree, out, feature_set):
    """Predict on the original test files = the score stage's scores for the same ids."""
    from bowsvm.io.scores import read_scores
    from bowsvm.stages.predict import Predictor

    sc = read_scores(out / "scores" / feature_set / "test")
    ids = list(sc.ids)
    assert len(ids) == 36 and {i.rsplit("-", 1)[1].split(".")[0] for i in ids} == set(KINDS)
    pred = Predictor.from_folders([feature_set], features=out / "features",
                                  models=out / "models", fusion=None,
                                  codebooks=out / "codebooks")
    files = [tree / i for i in ids]  # a tree image's id is its path in the tree
    S = np.stack([pred.scores_for_bytes(f.read_bytes()) for f in files])
    assert S.shape == sc.scores.shape and S.dtype == np.float32
    for i, s_pred, s_score in zip(ids, S, sc.scores):
        np.testing.assert_allclose(s_pred, s_score, rtol=1e-5, atol=1e-5, err_msg=i)
    # the batched path of `bowsvm predict` gives the same top classes and scores
    res = pred.predict_files(files, k=len(PHOTOS))
    for r, s_score in zip(res, sc.scores):
        assert r["error"] is None
        np.testing.assert_allclose([t["score"] for t in r["top"]],
                                   np.sort(s_score)[::-1], rtol=1e-5, atol=1e-5)
