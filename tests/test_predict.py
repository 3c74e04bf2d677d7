"""``bowsvm predict`` end to end from raw image files, against the batch pipeline.

A small Fashion-MNIST pipeline is built with the real descriptor/coding code:
PNG bytes -> decode_image -> feature_vector for two quick presets (one dense, one
sparse), codebooks saved with Codebook.save, feature shards, linear models
(scikit-learn LinearSVC, written in the documented model format), `bowsvm score`
and `bowsvm fuse`. Predicting the test PNG files must give the fused test scores
the batch pipeline wrote.
"""

import csv
import gzip
import io
import json

import numpy as np
import pytest
from PIL import Image

from bowsvm.cli import main
from bowsvm.io.fusion import read_fused
from bowsvm.stages.predict import Predictor, list_image_files
from bowsvm.io import atomic_output_dir, write_json_atomic
from bowsvm.io.features import shard_entries, write_shard
from test_evaluation_scoring import make_model, score_and_fuse

KEEP = [0, 1, 5, 7, 8]  # T-shirt, Trouser, Sandal, Sneaker, Bag
CLASSES = ["tshirt", "trouser", "sandal", "sneaker", "bag"]
PER_CLASS = {"train": 24, "val": 10, "test": 4}
PRESETS = {"svhog": "quick-sv-hog", "lcchoglbp": "quick-lcc-hoglbp"}


def _idx(path):
    with gzip.open(path) as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)


def _png(a):
    b = io.BytesIO()
    Image.fromarray(a).save(b, format="PNG")
    return b.getvalue()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, fashion_dir):
    from sklearn.svm import LinearSVC

    from bowsvm.coding import FeatureSetExtractor, feature_vector, stack_features
    from bowsvm.io.images import decode_image
    from bowsvm.presets import load_preset, preset_hash

    root = tmp_path_factory.mktemp("pred")
    X = _idx(fashion_dir / "train-images-idx3-ubyte.gz")[:3000]
    y = _idx(fashion_dir / "train-labels-idx1-ubyte.gz")[:3000]
    data = {}
    start = {c: 0 for c in KEEP}
    for split, n in PER_CLASS.items():
        ids, labels, pngs = [], [], []
        for li, c in enumerate(KEEP):
            rows = np.flatnonzero(y == c)[start[c]:start[c] + n]
            start[c] += n
            for r in rows:
                ids.append(f"{split}-{r:05d}")
                labels.append(li)
                pngs.append(_png(X[r]))
        data[split] = (ids, np.array(labels), pngs)
    (root / "inputs").mkdir()
    for i, b in zip(data["test"][0], data["test"][2]):
        (root / "inputs" / f"{i}.png").write_bytes(b)
    for name, pname in PRESETS.items():
        preset = load_preset(pname)
        greys = {s: [decode_image(b, preset["max_side"]) for b in d[2]] for s, d in data.items()}
        cb = FeatureSetExtractor(preset=pname).fit(greys["train"]).codebook_
        cb.save(root / "codebooks" / name)
        dim, layout = preset["output"]["dim"], preset["output"]["layout"]
        feats = {}
        with atomic_output_dir(root / "features" / name) as tmp:
            for s, (ids, labels, _) in data.items():
                F = stack_features([feature_vector(g, preset, cb) for g in greys[s]], dim, layout)
                feats[s] = F
                (tmp / s).mkdir()
                write_shard(tmp / s / "part-00000.parquet", ids, labels, F, layout=layout)
            # the keys `bowsvm extract` writes that predict reads
            write_json_atomic(tmp / "manifest.json", {
                "preset_config": preset, "stage": "extract", "feature_set": name, "preset": pname,
                "preset_hash": preset_hash(preset), "codebook_hash": cb.hash, "dim": dim,
                "layout": layout, "classes": CLASSES,
                "counts": {s: len(d[0]) for s, d in data.items()},
                "shards": shard_entries(tmp)})
        clf = LinearSVC(C=1.0, random_state=0).fit(feats["train"], data["train"][1])
        make_model(root / "models", name, clf.coef_, clf.intercept_, classes=CLASSES,
                   preset_hash=preset_hash(preset))
    score_and_fuse(root, PRESETS)
    return root, data


def _args(root):
    return ["--features", str(root / "features"), "--models", str(root / "models"),
            "--fusion", str(root / "fusion"), "--codebooks", str(root / "codebooks")]


def test_predict_equals_batch_pipeline(pipeline):
    root, data = pipeline
    pred = Predictor.from_folders(features=root / "features", models=root / "models",
                                  fusion=root / "fusion", codebooks=root / "codebooks")
    assert [s.name for s in pred.sets] == list(PRESETS) and pred.fusion is not None
    fused = read_fused(root / "fusion", "test")
    files = list_image_files([root / "inputs"])
    assert len(files) == len(fused.ids)
    res = pred.predict_files(files, k=5)
    by_id = {i: r for i, r in zip(fused.ids, fused.scores)}
    correct = 0
    for f, r in zip(files, res):
        assert r["error"] is None
        S = by_id[f.stem]
        order = np.argsort(-S, kind="stable")[:5]
        assert [t["index"] for t in r["top"]] == list(order)
        np.testing.assert_allclose([t["score"] for t in r["top"]], S[order], rtol=1e-4, atol=1e-4)
        assert [t["rank"] for t in r["top"]] == [1, 2, 3, 4, 5]
        correct += CLASSES.index(r["top"][0]["class"]) == fused.labels[list(fused.ids).index(f.stem)]
    assert correct / len(files) > 0.6  # 5 easy classes; chance is 0.2


def test_predict_single_set_uses_raw_scores(pipeline):
    root, _ = pipeline
    pred = Predictor.from_folders(["svhog"], features=root / "features", models=root / "models",
                                  fusion=root / "fusion", codebooks=root / "codebooks")
    assert pred.fusion is None
    from bowsvm.io.scores import read_scores

    sc = read_scores(root / "scores" / "svhog" / "test")
    f = root / "inputs" / f"{sc.ids[3]}.png"
    S = pred.scores_for_bytes(f.read_bytes())
    assert S.dtype == np.float32
    np.testing.assert_allclose(S, sc.scores[3], rtol=1e-4, atol=1e-4)


def test_predict_cli_outputs_and_bad_files(pipeline, tmp_path, capsys):
    root, data = pipeline
    (tmp_path / "in").mkdir()
    good = root / "inputs" / f"{data['test'][0][0]}.png"
    (tmp_path / "in" / "a.png").write_bytes(good.read_bytes())
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (tmp_path / "in" / "notes.jpg").write_text("hello")
    out_csv = tmp_path / "p.csv"
    rc = main(["predict", str(tmp_path / "in"), *_args(root), "--out", str(out_csv)])
    assert rc == 1  # some files failed, the rest were classified
    cap = capsys.readouterr()
    assert "broken.png: ERROR" in cap.err and "notes.jpg: ERROR" in cap.err
    assert "2 of 3 file(s) could not be classified" in cap.err
    assert "a.png: " in cap.out
    rows = list(csv.DictReader(out_csv.open()))
    ok = [r for r in rows if r["file"].endswith("a.png")]
    assert [r["rank"] for r in ok] == ["1", "2", "3", "4", "5"]
    assert all(r["class"] in CLASSES for r in ok)
    assert any(r["file"].endswith("broken.png") and r["error"] for r in rows)
    out_json = tmp_path / "p.json"
    rc = main(["predict", str(tmp_path / "in" / "a.png"), *_args(root), "--out", str(out_json),
               "--top", "3"])
    assert rc == 0
    res = json.loads(out_json.read_text())
    assert len(res) == 1 and len(res[0]["top"]) == 3 and res[0]["error"] is None
    assert res[0]["top"][0]["class"] == ok[0]["class"]


def test_predict_errors(pipeline, tmp_path):
    root, _ = pipeline
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_image_files([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files found"):
        list_image_files([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="need fusion weights"):
        Predictor.from_folders(list(PRESETS), features=root / "features", models=root / "models",
                               fusion=tmp_path / "nofusion", codebooks=root / "codebooks")
    with pytest.raises(FileNotFoundError, match="no codebook with hash"):
        Predictor.from_folders(["svhog"], features=root / "features", models=root / "models",
                               fusion=None, codebooks=tmp_path)
    with pytest.raises(ValueError, match="learned for feature sets"):
        Predictor.from_folders(["svhog", "other"], features=root / "features",
                               models=root / "models", fusion=root / "fusion",
                               codebooks=root / "codebooks")


def _copy_set(root, tmp, name, manifest_changes=None, model_changes=None):
    """Copy a set's feature manifest and model into tmp roots, with changes."""
    from bowsvm.io import read_manifest

    fm = {**read_manifest(root / "features" / name, stage="extract"), **(manifest_changes or {})}
    fm = {k: v for k, v in fm.items() if v is not None}  # a change to None drops the key
    with atomic_output_dir(tmp / "features" / name, overwrite=True) as d:
        write_json_atomic(d / "manifest.json", fm)
    mm = read_manifest(root / "models" / name, stage="train")
    coef = np.load(root / "models" / name / "coef.npy")
    b = np.load(root / "models" / name / "intercept.npy")
    ch = dict(model_changes or {})
    coef = ch.pop("coef", coef)
    make_model(tmp / "models", name, coef, b, classes=ch.pop("classes", mm["classes"]),
               preset_hash=mm["preset_hash"])


def test_predict_loading_errors(pipeline, tmp_path):
    root, _ = pipeline
    kw = dict(features=root / "features", codebooks=root / "codebooks")
    with pytest.raises(ValueError, match="no fusion folder at .* and 2 models"):
        Predictor.from_folders(None, models=root / "models", fusion=tmp_path / "nofusion", **kw)
    with pytest.raises(ValueError, match="feature_sets is empty"):
        Predictor.from_folders([], models=root / "models", fusion=None, **kw)
    # the preset extraction recorded hashes differently from the model's preset_hash
    from bowsvm.presets import load_preset

    _copy_set(root, tmp_path / "a", "svhog", {"preset_config": load_preset("quick-lcc-hog")})
    with pytest.raises(ValueError, match="the feature manifest records preset hash .* but the "
                                         "preset extraction used .* has hash"):
        Predictor.from_folders(["svhog"], features=tmp_path / "a" / "features",
                               models=tmp_path / "a" / "models", fusion=None,
                               codebooks=root / "codebooks")
    _copy_set(root, tmp_path / "a2", "svhog", {"preset_config": load_preset("quick-lcc-hog"),
                                                "preset_hash": None})
    with pytest.raises(ValueError, match="the feature manifest records no preset_hash"):
        Predictor.from_folders(["svhog"], features=tmp_path / "a2" / "features",
                               models=tmp_path / "a2" / "models", fusion=None,
                               codebooks=root / "codebooks")
    _copy_set(root, tmp_path / "b", "svhog", {"preset_config": None})
    with pytest.raises(ValueError, match="lacks preset_config .* re-extract the feature set"):
        Predictor.from_folders(["svhog"], features=tmp_path / "b" / "features",
                               models=tmp_path / "b" / "models", fusion=None,
                               codebooks=root / "codebooks")
    _copy_set(root, tmp_path / "b2", "svhog", {"preset_config": {"name": "x", "nonsense": 1}})
    with pytest.raises(ValueError, match="preset_config of .* is not a valid preset"):
        Predictor.from_folders(["svhog"], features=tmp_path / "b2" / "features",
                               models=tmp_path / "b2" / "models", fusion=None,
                               codebooks=root / "codebooks")
    # a codebook other than the one the features were extracted with
    _copy_set(root, tmp_path / "b3", "svhog", {"codebook_hash": "0" * 16})
    with pytest.raises(ValueError, match="features were extracted with codebook 0000"):
        Predictor.from_folders(["svhog"], features=tmp_path / "b3" / "features",
                               models=tmp_path / "b3" / "models", fusion=None,
                               codebooks=root / "codebooks")
    # two sets whose models disagree on the class list
    _copy_set(root, tmp_path / "c", "svhog")
    _copy_set(root, tmp_path / "c", "lcchoglbp", model_changes={"classes": CLASSES[::-1]})
    with pytest.raises(ValueError, match="have different class lists"):
        Predictor.from_folders(None, features=tmp_path / "c" / "features",
                               models=tmp_path / "c" / "models", fusion=root / "fusion",
                               codebooks=root / "codebooks")


def test_predict_dim_mismatch_is_reported_per_file(pipeline, tmp_path):
    root, data = pipeline
    coef = np.load(root / "models" / "svhog" / "coef.npy")
    _copy_set(root, tmp_path, "svhog", model_changes={"coef": np.hstack([coef, coef[:, :1]])})
    pred = Predictor.from_folders(["svhog"], features=tmp_path / "features",
                                  models=tmp_path / "models", fusion=None,
                                  codebooks=root / "codebooks")
    f = root / "inputs" / f"{data['test'][0][0]}.png"
    with pytest.raises(ValueError, match="produced 320 features but its model expects 321"):
        pred.scores_for_bytes(f.read_bytes())
    res = pred.predict_files([f])
    assert res[0]["top"] == [] and "expects 321" in res[0]["error"]


def test_predict_cli_out_suffix(pipeline, tmp_path, capsys):
    root, _ = pipeline
    rc = main(["predict", str(root / "inputs"), *_args(root), "--out", str(tmp_path / "x.txt")])
    assert rc == 2
    assert "must end in .csv or .json" in capsys.readouterr().err


def test_batched_predictions_match_one_image_at_a_time(pipeline, tmp_path):
    root, _ = pipeline
    pred = Predictor.from_folders(features=root / "features", models=root / "models",
                                  fusion=root / "fusion", codebooks=root / "codebooks")
    files = list_image_files([root / "inputs"])[:7]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    files = files[:3] + [bad] + files[3:]  # a broken file inside the second batch
    res = pred.predict_files(files, k=3, batch=3)
    assert [r["file"] for r in res] == [str(f) for f in files]
    assert res[3]["top"] == [] and "bad.png" not in res[3]["error"] and res[3]["error"]
    for f, r in zip(files, res):
        if f == bad:
            continue
        S = pred.scores_for_bytes(f.read_bytes())
        order = np.argsort(-S, kind="stable")[:3]
        assert [t["index"] for t in r["top"]] == list(order)
        np.testing.assert_allclose([t["score"] for t in r["top"]], S[order], rtol=1e-5, atol=1e-5)
