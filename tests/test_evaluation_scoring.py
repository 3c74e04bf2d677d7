"""``bowsvm score`` on generated feature shards and models (real files, documented formats).

The helpers ``make_feature_set`` and ``make_model`` are also used by the fusion and
report tests.
"""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from bowsvm.cli import main
from bowsvm.asgd.core import decision_scores
from bowsvm.io.models import load_model
from bowsvm.io.scores import read_scores
from bowsvm.stages.score import score_feature_set
from bowsvm.io import atomic_output_dir, write_json_atomic
from bowsvm.io.features import shard_entries, write_shard

CLASSES = [f"class_{c:02d}" for c in range(7)]


def make_feature_set(root, name, dim, classes=CLASSES, splits=None, layout="dense", seed=0,
                     preset_hash="ph0", shard_rows=23, density=0.1, extra=None):
    """Write features/NAME with random shards; return {split: (ids, labels, X)}."""
    rng = np.random.default_rng(seed)
    splits = splits or {"train": 40, "val": 60, "test": 50}
    data = {}
    with atomic_output_dir(root / name) as tmp:
        for split, n in splits.items():
            labels = rng.integers(0, len(classes), size=n)
            ids = [f"{split}-{i:05d}" for i in range(n)]
            if layout == "sparse":
                X = sp.random(n, dim, density=density, format="csr", dtype=np.float32,
                              random_state=seed + n)
            else:
                X = rng.normal(size=(n, dim)).astype(np.float32)
            (tmp / split).mkdir()
            for j, a in enumerate(range(0, n, shard_rows)):
                write_shard(tmp / split / f"part-{j:05d}.parquet", ids[a:a + shard_rows],
                            labels[a:a + shard_rows], X[a:a + shard_rows], layout=layout)
            data[split] = (np.array(ids, dtype=object), labels, X)
        m = {"stage": "extract", "feature_set": name, "preset": name, "preset_hash": preset_hash,
             "codebook_hash": "cb0", "dim": dim, "layout": layout, "classes": list(classes),
             "counts": {s: n for s, n in splits.items()}, "shards": shard_entries(tmp)}
        m.update(extra or {})
        write_json_atomic(tmp / "manifest.json", m)
    return data


def make_model(root, name, coef, intercept, classes=CLASSES, preset_hash="ph0", log=None,
               extra=None):
    """Write models/NAME in the documented format."""
    with atomic_output_dir(root / name) as tmp:
        np.save(tmp / "coef.npy", np.asarray(coef, dtype=np.float32))
        np.save(tmp / "intercept.npy", np.asarray(intercept, dtype=np.float32))
        with open(tmp / "log.jsonl", "w") as f:
            for row in log or []:
                f.write(json.dumps(row) + "\n")
        m = {"stage": "train", "feature_set": name, "preset_hash": preset_hash,
             "dim": int(np.shape(coef)[1]), "classes": list(classes), "epochs": 3}
        m.update(extra or {})
        write_json_atomic(tmp / "manifest.json", m)


def score_and_fuse(root, names):
    """`bowsvm score` val and test for each feature set under ROOT, then `bowsvm fuse` them."""
    from bowsvm.cli import main

    for name in names:
        for s in ("val", "test"):
            assert main(["score", "--feature-set", name, "--split", s, "--features",
                         str(root / "features"), "--models", str(root / "models"),
                         "--scores", str(root / "scores")]) == 0
    assert main(["fuse", "--scores", str(root / "scores"), "--feature-sets", ",".join(names),
                 "--out", str(root / "fusion")]) == 0


@pytest.fixture
def dirs(tmp_path):
    d = {k: tmp_path / k for k in ("features", "models", "scores")}
    for p in d.values():
        p.mkdir()
    return d


@pytest.mark.parametrize("layout,density", [("dense", 1.0), ("sparse", 0.02), ("sparse", 0.3)])
def test_score_equals_direct_gemm(dirs, layout, density):
    # sparse at 2 % takes the CSR product, at 30 % the densify-then-GEMM path
    rng = np.random.default_rng(1)
    dim = 80
    data = make_feature_set(dirs["features"], "fs", dim, layout=layout, density=density)
    coef = rng.normal(size=(7, dim)).astype(np.float32)
    b = rng.normal(size=7).astype(np.float32)
    make_model(dirs["models"], "fs", coef, b)
    rc = main(["score", "--feature-set", "fs", "--split", "val", "--features", str(dirs["features"]),
               "--models", str(dirs["models"]), "--scores", str(dirs["scores"]), "--batch-rows", "10"])
    assert rc == 0
    s = read_scores(dirs["scores"] / "fs" / "val")
    ids, labels, X = data["val"]
    Xd = X.toarray() if sp.issparse(X) else X
    expect = Xd.astype(np.float64) @ coef.T.astype(np.float64) + b
    assert s.scores.dtype == np.float32 and s.scores.shape == (60, 7)
    np.testing.assert_allclose(s.scores, expect, rtol=1e-5, atol=1e-5)
    assert list(s.ids) == list(ids)
    np.testing.assert_array_equal(s.labels, labels)
    assert s.classes == CLASSES
    assert s.manifest["stage"] == "score" and s.manifest["n"] == 60
    assert s.manifest["split"] == "val" and s.manifest["feature_set"] == "fs"
    assert isinstance(s.manifest["seconds"], float) and s.manifest["preset_hash"] == "ph0"
    assert (dirs["scores"] / "fs" / "val" / "_SUCCESS").exists()


def test_score_refuses_existing_and_overwrites(dirs):
    make_feature_set(dirs["features"], "fs", 5)
    make_model(dirs["models"], "fs", np.ones((7, 5)), np.zeros(7))
    args = dict(features_dir=dirs["features"], models_dir=dirs["models"],
                scores_dir=dirs["scores"], feature_set="fs", split="test")
    score_feature_set(**args)
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        score_feature_set(**args)
    score_feature_set(**args, overwrite=True)
    assert read_scores(dirs["scores"] / "fs" / "test").scores.shape == (50, 7)


def test_score_mismatches_are_clear(dirs, tmp_path):
    make_feature_set(dirs["features"], "fs", 5)
    other = list(CLASSES)
    other[3] = "zebra"
    cases = [
        (dict(coef=np.ones((7, 6)), intercept=np.zeros(7)), "feature dim 5 != model dim 6"),
        (dict(coef=np.ones((7, 5)), intercept=np.zeros(7), classes=other),
         r"class lists differ .*index 3: 'class_03' vs 'zebra'"),
        (dict(coef=np.ones((6, 5)), intercept=np.zeros(6), classes=CLASSES[:6]),
         r"class lists differ \(features: 7 classes, model: 6 classes"),
        (dict(coef=np.ones((7, 5)), intercept=np.zeros(7), preset_hash="other"),
         "preset_hash differs"),
    ]
    for i, (kw, msg) in enumerate(cases):
        models = tmp_path / f"models{i}"
        models.mkdir()
        make_model(models, "fs", **kw)
        with pytest.raises(ValueError, match=msg):
            score_feature_set(dirs["features"], models, dirs["scores"], "fs", "val")
        assert not (dirs["scores"] / "fs" / "val").exists()
    make_model(dirs["models"], "fs", np.ones((7, 5)), np.zeros(7))
    args = dict(features_dir=dirs["features"], models_dir=dirs["models"],
                scores_dir=dirs["scores"], feature_set="fs", split="val")
    with pytest.raises(FileNotFoundError, match="no shards for split 'dev'"):
        score_feature_set(**{**args, "split": "dev"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        score_feature_set(**{**args, "feature_set": "nope"})
    with pytest.raises(ValueError, match="batch_rows=0 is too small"):
        score_feature_set(**args, batch_rows=0)


def test_cli_error_exit_code(dirs, capsys):
    rc = main(["score", "--feature-set", "nope", "--split", "val", "--features", str(dirs["features"]),
               "--models", str(dirs["models"]), "--scores", str(dirs["scores"])])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_load_model_inconsistent(dirs):
    make_model(dirs["models"], "m", np.ones((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="lists 7 classes in manifest.json but coef.npy has 3 rows"):
        load_model(dirs["models"] / "m")
    make_model(dirs["models"], "m2", np.ones((7, 4)), np.zeros(6))
    with pytest.raises(ValueError, match="is inconsistent"):
        load_model(dirs["models"] / "m2")


@pytest.mark.parametrize("density", [0.0, 0.01, 0.2])
def test_decision_scores_sparse_equals_dense(rng, density):
    X = sp.random(20, 500, density=density, format="csr", dtype=np.float32, random_state=3)
    W = rng.normal(size=(4, 500)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    a = decision_scores(X, W, b)
    d = decision_scores(X.toarray(), W, b)
    assert a.dtype == np.float32 and a.flags.c_contiguous
    np.testing.assert_allclose(a, d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(decision_scores(X, W, b, np.ascontiguousarray(W.T)), d,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="features have dim 500 but the model has dim 49"):
        decision_scores(X, W[:, :49], b)
    wide = decision_scores(X.astype(np.float64), W, b)  # float32 only when both are float32
    assert wide.dtype == np.float64
    np.testing.assert_allclose(wide, d, rtol=1e-5, atol=1e-5)


def test_more_model_and_score_errors(dirs, tmp_path):
    make_model(dirs["models"], "m", np.ones((7, 4)), np.zeros(7), extra={"dim": 5})
    with pytest.raises(ValueError, match="manifest dim=5 but coef.npy has 4 columns"):
        load_model(dirs["models"] / "m")
    make_feature_set(dirs["features"], "fs", 5, extra={"codebook_hash": "cbA"})
    make_model(dirs["models"], "fs", np.ones((7, 5)), np.zeros(7), extra={"codebook_hash": "cbB"})
    with pytest.raises(ValueError, match="codebook_hash differs"):
        score_feature_set(dirs["features"], dirs["models"], dirs["scores"], "fs", "val")
    # a damaged scores folder: the manifest lists more classes than the vectors hold
    from bowsvm.io.scores import write_scores

    write_scores(tmp_path / "s", ["a"], [0], np.zeros((1, 3)),
                 {"stage": "score", "classes": ["x", "y", "z", "w"], "n": 1})
    with pytest.raises(ValueError, match="holds 3 score values for 1 rows but 4 classes"):
        read_scores(tmp_path / "s")
    with pytest.raises(ValueError, match="expected 'score'"):
        read_scores(dirs["models"] / "m")
