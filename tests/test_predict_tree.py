"""``bowsvm predict`` on the original files of a prepared tree = ``bowsvm score`` on its shards.

A tiny generated tree of RGBA PNGs (varying alpha), palette PNGs with a transparent
colour, RGB JPEGs and grey PNGs, some larger than the preset's ``max_side`` and some
smaller, goes through the real CLI: prepare (``--format png``, ``--max-side`` the
preset's) -> codebook -> extract -> train -> score. Predicting the original test files
must give the per-class scores the score stage wrote for the same ids: training and
predict see the same pixels only if they share one image path (alpha over white, one
8-bit conversion, one resize filter; issue 14).
"""

import io

import numpy as np
import pytest
from PIL import Image

from bowsvm.cli import main

pytestmark = pytest.mark.slow
PRESET = "quick-sv-hog"  # max_side 64
CLASSES = ["checks", "hstripes", "vstripes"]
KINDS = ["rgba", "jpeg", "grey", "palette"]


def _pattern(cls, h, w, rng):
    yy, xx = np.mgrid[0:h, 0:w]
    period = int(rng.integers(6, 10))
    if cls == "hstripes":
        g = (yy // period) % 2
    elif cls == "vstripes":
        g = (xx // period) % 2
    else:
        g = ((yy // period) + (xx // period)) % 2
    base = g * 170 + 40 + rng.normal(0, 12, (h, w))
    rgb = np.stack([base * f for f in rng.uniform(0.6, 1.0, 3)], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _write(path, rgb, kind, rng):
    buf = io.BytesIO()
    if kind == "rgba":
        h, w = rgb.shape[:2]
        alpha = rng.integers(0, 256, (h, w)).astype(np.uint8)
        alpha[: h // 4] = 0  # fully transparent band: its colour must not be seen
        rgba = np.dstack([rgb, alpha])
        rgba[: h // 4, :, :3] = rng.integers(0, 256, (h // 4, w, 3))
        Image.fromarray(rgba).save(buf, format="PNG")
    elif kind == "jpeg":
        Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    elif kind == "grey":
        Image.fromarray(rgb).convert("L").save(buf, format="PNG")
    else:
        Image.fromarray(rgb).convert("P").save(buf, format="PNG", transparency=0)
    path.write_bytes(buf.getvalue())


def make_tree(root, per_split=(("train", 8), ("test", 4)), seed=0):
    rng = np.random.default_rng(seed)
    files = []
    for split, n in per_split:
        for cls in CLASSES:
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                kind = KINDS[i % len(KINDS)]
                # larger than max_side (downsized once, by prepare) or smaller (never resized)
                h, w = ((90, 120) if i % 2 == 0 else (50, 44))
                ext = "jpg" if kind == "jpeg" else "png"
                f = d / f"{i:02d}-{kind}.{ext}"
                _write(f, _pattern(cls, h, w, rng), kind, rng)
                files.append(f)
    return files


def _ok(*argv):
    rc = main([str(a) for a in argv])
    assert rc == 0, argv


@pytest.fixture(scope="module")
def tree_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_tree(root / "tree")
    out = root / "out"
    spark = ["--master", "local[2]"]
    _ok("prepare", "--input", root / "tree", "--output", out / "images", "--format", "png",
        "--max-side", "64", "--val-per-class", "2", *spark)
    _ok("codebook", "--feature-set", PRESET, "--images", out / "images",
        "--codebooks", out / "codebooks", *spark)
    _ok("extract", "--feature-set", PRESET, "--images", out / "images",
        "--codebooks", out / "codebooks", "--features", out / "features", *spark)
    _ok("train", "--feature-set", PRESET, "--features", out / "features", "--models",
        out / "models", "--epochs", "5", "--quiet")
    _ok("score", "--feature-set", PRESET, "--split", "test", "--features", out / "features",
        "--models", out / "models", "--scores", out / "scores")
    return root


def test_predict_on_original_files_equals_score_of_prepared_shards(tree_pipeline):
    from bowsvm.io.scores import read_scores
    from bowsvm.stages.predict import Predictor

    root = tree_pipeline
    out = root / "out"
    sc = read_scores(out / "scores" / PRESET / "test")
    ids = list(sc.ids)
    assert len(ids) == len(CLASSES) * 4  # every test image was prepared and extracted
    kinds = {i.rsplit("-", 1)[1].split(".")[0] for i in ids}
    assert kinds == set(KINDS)
    pred = Predictor.from_folders([PRESET], features=out / "features", models=out / "models",
                                  fusion=None, codebooks=out / "codebooks")
    files = [root / "tree" / i for i in ids]  # a tree image's id is its path in the tree
    S = np.stack([pred.scores_for_bytes(f.read_bytes()) for f in files])
    assert S.shape == sc.scores.shape and S.dtype == np.float32
    for i, s_pred, s_score in zip(ids, S, sc.scores):
        np.testing.assert_allclose(s_pred, s_score, rtol=1e-5, atol=1e-5, err_msg=i)
    # the CLI path (batched coding over the files) gives the same top classes
    res = pred.predict_files(files, k=len(CLASSES))
    for r, s_score in zip(res, sc.scores):
        assert r["error"] is None
        np.testing.assert_allclose([t["score"] for t in r["top"]],
                                   np.sort(s_score)[::-1], rtol=1e-5, atol=1e-5)
