"""Score fusion: val-only weights, alignment checks, single-set identity."""

import json

import numpy as np
import pytest

from bowsvm.cli import main
from bowsvm.evaluation.fusion import FusionModel, apply_fusion, fit_fusion
from bowsvm.evaluation.metrics import top_k_accuracy
from bowsvm.io.fusion import read_fused
from bowsvm.io.scores import write_scores
from bowsvm.stages.fuse import fuse_feature_sets

C = 6
CLASSES = [f"c{i}" for i in range(C)]


def _noisy_scores(rng, y, good_classes, strength=2.0, noise=1.0):
    """Scores that identify the true class well only when it is in good_classes."""
    S = rng.normal(scale=noise, size=(len(y), C))
    for i, c in enumerate(y):
        S[i, c] += strength if c in good_classes else 0.2
    return S.astype(np.float32)


def write_set(root, name, split, ids, y, S, classes=CLASSES, model_hash="m0"):
    m = {"stage": "score", "feature_set": name, "split": split, "classes": list(classes),
         "n": len(ids), "model_hash": model_hash}
    write_scores(root / name / split, ids, y, S, m, overwrite=True)


@pytest.fixture
def two_sets(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "scores"
    data = {}
    for split, n in (("val", 400), ("test", 300)):
        y = rng.integers(0, C, size=n)
        ids = [f"{split}{i}" for i in range(n)]
        A = _noisy_scores(rng, y, {0, 1, 2})
        B = 50.0 * _noisy_scores(rng, y, {3, 4, 5}) + 7.0  # very different scale
        write_set(root, "A", split, ids, y, A)
        write_set(root, "B", split, ids, y, B)
        data[split] = (ids, y, A, B)
    return root, data


def test_fusion_beats_each_set_and_weights_on_simplex(two_sets, tmp_path):
    root, data = two_sets
    m = fuse_feature_sets(root, ["A", "B"], tmp_path / "fusion")
    w = np.array([m["weights"]["A"], m["weights"]["B"]])
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    for split in ("val", "test"):
        r = m[split]
        assert r["fused"]["top1"] > max(r["sets"]["A"]["top1"], r["sets"]["B"]["top1"])
    # metrics.json numbers are those of the stored fused scores
    f = read_fused(tmp_path / "fusion", "test")
    _, y, _, _ = data["test"]
    np.testing.assert_array_equal(f.labels, y)
    assert f.scores.dtype == np.float32
    assert top_k_accuracy(f.scores, f.labels, 1) == m["test"]["fused"]["top1"]
    on_disk = json.loads((tmp_path / "fusion" / "metrics.json").read_text())
    assert on_disk["test"]["fused"]["top5"] == m["test"]["fused"]["top5"]
    wj = json.loads((tmp_path / "fusion" / "weights.json").read_text())
    assert wj["weights"] == m["weights"]
    # the fused test scores are the val-learned combination applied to test
    model = FusionModel.from_json(wj)
    _, _, A, B = data["test"]
    np.testing.assert_allclose(f.scores, apply_fusion(model, [A, B]), rtol=1e-6, atol=1e-6)


def test_weights_never_see_test_data(two_sets, tmp_path):
    root, data = two_sets
    fuse_feature_sets(root, ["A", "B"], tmp_path / "f1")
    # poison the test split: shuffled labels, garbage scores, favouring set A heavily
    rng = np.random.default_rng(99)
    ids, y, A, B = data["test"]
    y_bad = rng.permutation(y)
    A_bad = _noisy_scores(rng, y_bad, set(range(C)), strength=10.0)
    B_bad = rng.normal(size=B.shape).astype(np.float32)
    write_set(root, "A", "test", ids, y_bad, A_bad)
    write_set(root, "B", "test", ids, y_bad, B_bad)
    m2 = fuse_feature_sets(root, ["A", "B"], tmp_path / "f2")
    w1 = json.loads((tmp_path / "f1" / "weights.json").read_text())
    w2 = json.loads((tmp_path / "f2" / "weights.json").read_text())
    assert w1 == w2  # weights AND standardisation statistics
    m1 = json.loads((tmp_path / "f1" / "metrics.json").read_text())
    assert m1["val"] == m2["val"]
    assert m1["test"] != m2["test"]  # the poison did reach the test metrics


def test_single_set_fused_alone_equals_itself(two_sets, tmp_path):
    root, data = two_sets
    m = fuse_feature_sets(root, ["B"], tmp_path / "fb")
    assert m["weights"] == {"B": 1.0}
    for split in ("val", "test"):
        assert m[split]["fused"] == m[split]["sets"]["B"]
    _, yv, _, Bv = data["val"]
    f = read_fused(tmp_path / "fb", "test")
    _, _, _, Bt = data["test"]
    mu, sd = Bv.astype(np.float64).mean(), Bv.astype(np.float64).std()
    np.testing.assert_allclose(f.scores, (Bt - mu) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-f.scores, axis=1, kind="stable"),
                                  np.argsort(-Bt, axis=1, kind="stable"))


def test_scale_invariance_and_reordered_ids(two_sets, tmp_path):
    root, data = two_sets
    m1 = fuse_feature_sets(root, ["A", "B"], tmp_path / "f1")
    # B rescaled by 1000 and its rows shuffled: same weights, same fused metrics
    rng = np.random.default_rng(3)
    for split in ("val", "test"):
        ids, y, A, B = data[split]
        p = rng.permutation(len(ids))
        write_set(root, "B", split, [ids[i] for i in p], y[p], 1000.0 * B[p])
    m2 = fuse_feature_sets(root, ["A", "B"], tmp_path / "f2")
    assert m2["weights"] == pytest.approx(m1["weights"])
    assert m2["test"]["fused"] == pytest.approx(m1["test"]["fused"])


def test_mismatched_ids_labels_classes(two_sets, tmp_path):
    root, data = two_sets
    ids, y, A, B = data["val"]
    write_set(root, "B", "val", ids[:-1] + ["stranger"], y, B)
    with pytest.raises(ValueError, match=r"ids of the val scores of feature set 'B' do not match "
                                         r"those of 'A': 1 id\(s\) of 'A' missing \(e.g. 'val399'\)"
                                         r"; 1 id\(s\) not in 'A' \(e.g. 'stranger'\)"):
        fuse_feature_sets(root, ["A", "B"], tmp_path / "f")
    y2 = y.copy()
    y2[7] = (y2[7] + 1) % C
    write_set(root, "B", "val", ids, y2, B)
    with pytest.raises(ValueError, match=r"labels of the val scores of feature set 'B' differ "
                                         r"from those of 'A' for 1 id\(s\) \(e.g. id 'val7'"):
        fuse_feature_sets(root, ["A", "B"], tmp_path / "f")
    write_set(root, "B", "val", ids, y, B, classes=CLASSES[:-1] + ["other"])
    with pytest.raises(ValueError, match=r"class lists differ between feature sets 'A' and 'B' "
                                         r"\(val split; 6 vs 6 classes, first difference at "
                                         r"index 5: 'c5' vs 'other'\)"):
        fuse_feature_sets(root, ["A", "B"], tmp_path / "f")
    assert not (tmp_path / "f").exists()
    with pytest.raises(FileNotFoundError, match=r"no val scores for feature set\(s\) \['Z'\]"):
        fuse_feature_sets(root, ["A", "Z"], tmp_path / "f")
    with pytest.raises(ValueError, match="repeats a name"):
        fuse_feature_sets(root, ["A", "A"], tmp_path / "f")


def test_fit_fusion_errors_and_determinism(rng):
    y = rng.integers(0, C, 50)
    S1 = rng.normal(size=(50, C))
    S2 = rng.normal(size=(50, C))
    a = fit_fusion([S1, S2], y, ["x", "y"])
    b = fit_fusion([S1, S2], y, ["x", "y"])
    assert np.array_equal(a.weights, b.weights)
    assert a.weights.dtype == np.float64
    assert a.val_top1 == top_k_accuracy(apply_fusion(a, [S1, S2]), y, 1)
    with pytest.raises(ValueError, match="val_scores is empty"):
        fit_fusion([], y)
    with pytest.raises(ValueError, match=r"have shape \(50, 5\), expected \(50, 6\)"):
        fit_fusion([S1, S2[:, :5]], y, ["x", "y"])
    with pytest.raises(ValueError, match="grid=0 is too small"):
        fit_fusion([S1], y, grid=0)
    with pytest.raises(ValueError, match="got 1 score matrices for 2 feature sets"):
        apply_fusion(a, [S1])


def test_fuse_cli(two_sets, tmp_path, capsys):
    root, _ = two_sets
    rc = main(["fuse", "--scores", str(root), "--feature-sets", "A,B", "--out", str(tmp_path / "fu")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "FUSED" in out and "weights: A=" in out
    rc = main(["fuse", "--scores", str(root), "--feature-sets", "A,B", "--out", str(tmp_path / "fu")])
    assert rc == 2
    assert "already exists" in capsys.readouterr().err
    m = json.loads((tmp_path / "fu" / "manifest.json").read_text())
    assert m["stage"] == "fuse" and isinstance(m["seconds"], float) and m["seconds"] >= 0
    # options are checked before any score is read, naming the option
    for bad, msg in ((["--feature-sets", "A,A"], "--feature-sets 'A,A' repeats a name"),
                     (["--feature-sets", " , "], "--feature-sets ' , ' names no feature set"),
                     (["--feature-sets", "A", "--grid", "0"], "--grid=0 is too small"),
                     (["--feature-sets", "A", "--max-rounds", "-1"], "--max-rounds=-1 is too small")):
        rc = main(["fuse", "--scores", str(root), "--out", str(tmp_path / "fv"), *bad])
        assert rc == 2 and msg in capsys.readouterr().err
    assert not (tmp_path / "fv").exists()


def test_val_only_fusion_when_test_missing(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, C, 30)
    ids = [str(i) for i in range(30)]
    write_set(tmp_path / "s", "A", "val", ids, y, rng.normal(size=(30, C)))
    m = fuse_feature_sets(tmp_path / "s", ["A"], tmp_path / "f")
    assert "test" not in m and "val" in m
    with pytest.raises(FileNotFoundError, match="has no 'test' scores"):
        read_fused(tmp_path / "f", "test")


def test_more_fusion_errors(two_sets, tmp_path, rng):
    from bowsvm.evaluation.fusion import align_score_sets
    from bowsvm.io.scores import ScoreSet

    root, data = two_sets
    y = rng.integers(0, C, 10)
    S = rng.normal(size=(10, C))
    with pytest.raises(ValueError, match="got 2 score matrices but 1 feature-set names"):
        fit_fusion([S, S], y, ["a"])
    with pytest.raises(ValueError, match="the validation split has no rows"):
        fit_fusion([S[:0]], y[:0])
    m = fit_fusion([S, S], y)
    with pytest.raises(ValueError, match="score matrices have different shapes"):
        apply_fusion(m, [S, S[:5]])
    dup = ScoreSet(np.array(["a", "a"], dtype=object), np.zeros(2, int), np.zeros((2, C)), CLASSES)
    with pytest.raises(ValueError, match="val scores of feature set 'X' repeat some ids"):
        align_score_sets({"X": dup}, "val")
    with pytest.raises(ValueError, match="feature_sets is empty"):
        fuse_feature_sets(root, [], tmp_path / "f")
    with pytest.raises(ValueError, match="splits must start with 'val'"):
        fuse_feature_sets(root, ["A"], tmp_path / "f", splits=("test", "val"))
    ids, yt, A, _ = data["test"]
    write_set(root, "A", "test", ids, yt, A, classes=CLASSES[::-1])
    write_set(root, "B", "test", ids, yt, A, classes=CLASSES[::-1])
    with pytest.raises(ValueError, match="class lists of the test and val scores of feature set 'A' differ"):
        fuse_feature_sets(root, ["A", "B"], tmp_path / "f")


def test_two_set_search_matches_brute_force_grid(rng):
    # with two sets the simplex is a segment: the search must reach the best val top-1
    # of a brute-force scan of the same grid (computed here with plain numpy)
    n = 300
    y = rng.integers(0, C, n)
    A = _noisy_scores(rng, y, {0, 1, 2}, strength=1.5)
    B = 3.0 * _noisy_scores(rng, y, {2, 3, 4, 5}, strength=1.5) - 1.0
    m = fit_fusion([A, B], y, ["A", "B"], grid=20)
    za = (A - A.mean()) / A.std()
    zb = (B - B.mean()) / B.std()
    brute = max(np.mean(np.argmax((1 - a) * za + a * zb, axis=1) == y)
                for a in np.linspace(0, 1, 21))
    assert m.val_top1 == pytest.approx(brute)
    assert m.weights.sum() == pytest.approx(1.0) and np.all(m.weights >= 0)


def test_noise_set_gets_little_weight(rng):
    n = 400
    y = rng.integers(0, C, n)
    good = _noisy_scores(rng, y, set(range(C)), strength=2.0)
    noise = rng.normal(size=(n, C)).astype(np.float32)
    m = fit_fusion([noise, good], y, ["noise", "good"])
    assert m.weights[1] > 0.7
    assert m.val_top1 >= top_k_accuracy(good, y, 1)


def test_val_and_test_from_different_models(two_sets, tmp_path):
    root, data = two_sets
    ids, y, A, _ = data["test"]
    write_set(root, "A", "test", ids, y, A, model_hash="retrained")
    with pytest.raises(ValueError, match=r"the test and val scores of feature set 'A' come from "
                                         r"different models \(model_hash 'retrained' vs 'm0'\)"):
        fuse_feature_sets(root, ["A", "B"], tmp_path / "f")
