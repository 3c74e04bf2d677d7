"""Fisher vectors as a feature set: presets, the GMM codebook, extraction and predict.

The unit tests check the ``coding.method = "fisher"`` presets (good and bad keys,
the hash), the GMM codebook file and its checks. The slow test runs the real CLI
(`bowsvm codebook`, `bowsvm extract` through spark-submit, then train and score) on
the tiny Fashion-MNIST image shards of test_extract_job.py and compares what the
stages wrote with independent computations: the GMM with ``fit_gmm`` on a sample
drawn here, the feature vectors with ``fisher_vectors`` (and the naive twin) on
each image's own descriptors, predict's scores with the score stage's.
"""

import argparse
import copy

import numpy as np
import pyarrow.parquet as pq
import pytest
from naive import naive_fisher_vector
from test_extract_job import read_features, run_bowsvm, write_image_shards

from bowsvm.coding import (
    Codebook,
    FeatureSetExtractor,
    check_codebook,
    feature_vector,
    feature_vectors,
    fisher_vector,
    fit_gmm,
    fit_pca,
    learn_gmm_codebook,
)
from bowsvm.presets import descriptor_params, load_preset, preset_hash

QUICK = "quick-fv-hog"


def _base(**coding):
    return {"descriptors": {"kind": "hog"}, "codebook": {"n_bases": 4, "pca_dim": 8},
            "coding": {"method": "fisher", **coding}, "pooling": {"grids": [[1, 1], [2, 2]]}}


# --------------------------------------------------------------- presets

@pytest.mark.parametrize("name,K,d,blocks,total", [
    ("quick-fv-hog", 8, 16, 5, 1280),
    ("fmnist-fv-hoglbp", 32, 64, 5, 20480),
    ("paper-7-fv-hoglbp-256", 256, 64, 4, 131072),
])
def test_fisher_presets_dims(name, K, d, blocks, total):
    p = load_preset(name)
    assert p["coding"]["method"] == "fisher" and p["pooling"]["method"] == "fisher"
    assert p["codebook"]["n_bases"] == K and p["codebook"]["pca_dim"] == d
    assert p["coding"]["dim"] == 2 * K * d
    assert p["pooling"]["n_blocks"] == blocks and p["output"]["dim"] == total
    assert p["output"]["layout"] == "dense" and p["pooling"]["normalize"] == "improved"
    assert load_preset(p) == p  # a resolved dict (a feature manifest's) resolves to itself


def test_fisher_preset_defaults_and_weights_gradient():
    p = load_preset(_base())
    assert p["output"]["layout"] == "dense" and p["pooling"]["normalize"] == "improved"
    assert p["coding"] == {"method": "fisher", "weights_gradient": False, "threshold": 1e-4,
                           "dim": 2 * 4 * 8}
    assert {"em_max_iter", "em_tol", "var_floor"} <= set(p["codebook"])
    q = load_preset(_base(weights_gradient=True))
    assert q["coding"]["dim"] == 2 * 4 * 8 + 4 and q["output"]["dim"] == 5 * 68
    r = load_preset(dict(_base(), pooling={"grids": [[1, 1]], "normalize": "none"}))
    assert r["pooling"]["normalize"] == "none"
    # without PCA, d is the descriptor's dimension (HOG 128)
    s = load_preset(dict(_base(), codebook={"n_bases": 4}))
    assert s["coding"]["dim"] == 2 * 4 * 128


def test_fisher_keys_do_not_touch_other_codings():
    lcc = {"descriptors": {"kind": "hog"}, "codebook": {"n_bases": 16, "n_samples": 100},
           "coding": {"method": "lcc", "k": 4}}
    with_keys = copy.deepcopy(lcc)
    with_keys["coding"].update(weights_gradient=True, threshold=0.5)
    with_keys["codebook"].update(em_max_iter=3, var_floor=0.1)
    p = load_preset(with_keys)
    assert "threshold" not in p["coding"] and "var_floor" not in p["codebook"]
    assert preset_hash(with_keys) == preset_hash(lcc)
    assert p["output"]["layout"] == "sparse" and p["pooling"]["normalize"] == "l2"
    fv = load_preset(dict(_base(), coding={"method": "fisher", "k": 3, "s": 0.5}))
    assert set(fv["coding"]) == {"method", "weights_gradient", "threshold", "dim"}


@pytest.mark.parametrize("section,key,value,err,match", [
    ("pooling", "method", "max", ValueError,
     r"pooling.method='max' does not fit coding.method='fisher'; it must be 'fisher'"),
    ("pooling", "method", "sum", ValueError, r"pooling.method='sum' does not fit"),
    ("pooling", "normalize", "l2", ValueError,
     r"pooling.normalize='l2' does not fit coding.method='fisher'; it must be 'improved' "
     r"or 'none'"),
    ("pooling", "normalize", "power", ValueError,
     r"pooling.normalize='power' is not a valid option"),
    ("output", "layout", "sparse", ValueError,
     r"output.layout='sparse' does not fit coding.method='fisher'; it must be 'dense'"),
    ("output", "dim", 100, ValueError, r"states output.dim=100 but its settings give 5 blocks x 64"),
    ("coding", "threshold", 1.5, ValueError, r"coding.threshold=1.5 is out of range"),
    ("coding", "threshold", -0.1, ValueError, r"coding.threshold=-0.1 is out of range"),
    ("coding", "weights_gradient", 1, TypeError, r"coding.weights_gradient must be True or False"),
    ("coding", "wg", True, ValueError, r"unknown key\(s\) \['wg'\] in preset section \[coding\]"),
    ("codebook", "em_max_iter", 0, ValueError, r"codebook.em_max_iter=0 is too small"),
    ("codebook", "em_tol", -1.0, ValueError, r"codebook.em_tol=-1.0 is out of range"),
    ("codebook", "var_floor", 0.0, ValueError, r"codebook.var_floor=0.0 is out of range"),
])
def test_fisher_preset_errors(section, key, value, err, match):
    bad = _base()
    bad.setdefault(section, {})[key] = value
    with pytest.raises(err, match=match):
        load_preset(bad)


def test_improved_normalisation_is_refused_for_lcc():
    bad = {"descriptors": {"kind": "hog"}, "codebook": {"n_bases": 16, "n_samples": 100},
           "coding": {"method": "lcc", "k": 4}, "pooling": {"normalize": "improved"}}
    with pytest.raises(ValueError, match=r"pooling.normalize='improved' does not fit "
                                         r"coding.method='lcc'; it must be 'l2' or 'none'"):
        load_preset(bad)


def test_fisher_preset_hash_changes_with_every_field():
    base = load_preset("fmnist-fv-hoglbp")
    for sec, key in (("output", "dim"), ("descriptors", "dim"), ("coding", "dim"),
                     ("pooling", "n_blocks"), ("pooling", "method")):
        base[sec].pop(key)
    h0 = preset_hash(base)
    changes = {
        ("max_side",): 32, ("descriptors", "kind"): "hog", ("descriptors", "patch_sizes"): [8, 12],
        ("descriptors", "step"): 3, ("descriptors", "n_bins"): 9, ("descriptors", "clip"): 0.3,
        ("descriptors", "cells"): 1, ("descriptors", "method"): "uniform",
        ("codebook", "n_bases"): 16, ("codebook", "pca_dim"): 32,
        ("codebook", "samples_per_image"): 20, ("codebook", "n_samples"): 50000,
        ("codebook", "random_state"): 1, ("codebook", "em_max_iter"): 50,
        ("codebook", "em_tol"): 1e-3, ("codebook", "var_floor"): 1e-3,
        ("coding", "method"): "sv", ("coding", "weights_gradient"): True,
        ("coding", "threshold"): 0.0, ("pooling", "grids"): [[1, 1]],
        ("pooling", "normalize"): "none",
    }
    leaves = [(sec, k) for sec in ("descriptors", "codebook", "coding", "pooling")
              for k in base[sec]]
    assert set(leaves) | {("max_side",)} == set(changes)  # every field is perturbed below
    for path, value in changes.items():
        p = copy.deepcopy(base)
        node = p
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        if path == ("coding", "method"):
            p["pooling"]["normalize"] = "l2"
        assert preset_hash(p) != h0, f"changing {'.'.join(path)} kept the hash"


# --------------------------------------------------------------- GMM codebooks

@pytest.fixture(scope="module")
def fmnist_greys(fashion_dir):
    from bowsvm.coding import prepare_image
    from bowsvm.io.images import load_idx_dataset

    X, _ = load_idx_dataset(fashion_dir)["train"]
    return [prepare_image(x, 64) for x in X[:120]]


def _sample(greys, preset, per_image=20):
    from bowsvm.features import extract_descriptors

    rng = np.random.default_rng(0)
    out = []
    for g in greys:
        D = extract_descriptors(g, preset["descriptors"]["kind"], **descriptor_params(preset))
        idx = np.sort(rng.choice(D.descriptors.shape[0], per_image, replace=False))
        out.append(D.descriptors[idx])
    return np.concatenate(out).astype(np.float32)


def test_learn_gmm_codebook_equals_fit_gmm_on_the_pca_sample(fmnist_greys, tmp_path):
    preset = load_preset(QUICK)
    S = _sample(fmnist_greys, preset)
    cb = learn_gmm_codebook(S, 8, pca_dim=16, random_state=3, max_iter=40, tol=1e-5)
    mean, comps = fit_pca(S, 16)
    gmm = fit_gmm((S - mean) @ comps.T, 8, random_state=3, max_iter=40, tol=1e-5)
    assert cb.kind == "gmm" and cb.n_bases == 8 and cb.dim == 16 and cb.input_dim == 128
    assert np.array_equal(cb.pca_mean, mean) and np.array_equal(cb.pca_components, comps)
    for got, want in ((cb.gmm.weights, gmm.weights), (cb.gmm.means, gmm.means),
                      (cb.gmm.variances, gmm.variances), (cb.bases, gmm.means)):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    assert cb.meta["method"] == "gmm" and cb.meta["n_iter"] == gmm.n_iter
    assert cb.meta["log_likelihood"] == gmm.log_likelihood
    # the same seed gives the same bits; another seed another mixture
    again = learn_gmm_codebook(S, 8, pca_dim=16, random_state=3, max_iter=40, tol=1e-5)
    assert again.hash == cb.hash
    assert learn_gmm_codebook(S, 8, pca_dim=16, random_state=4, max_iter=40).hash != cb.hash

    # the file round trip keeps every array and the EM record
    cb.save(tmp_path / "cb")
    back = Codebook.load(tmp_path / "cb")
    assert back.hash == cb.hash and back.kind == "gmm"
    assert np.array_equal(back.gmm.variances, cb.gmm.variances)
    assert back.gmm.n_iter == gmm.n_iter and back.gmm.converged == gmm.converged
    with np.load(tmp_path / "cb" / "codebook.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["bases", "gmm_variances", "gmm_weights", "pca_components",
                                   "pca_mean"]
    import json

    md = json.loads((tmp_path / "cb" / "codebook.json").read_text())
    assert md["kind"] == "gmm" and md["codebook_hash"] == cb.hash
    assert Codebook(**cb.arrays()).hash == cb.hash


def test_learn_gmm_codebook_prints_em_iterations(fmnist_greys, capsys):
    S = _sample(fmnist_greys[:30], load_preset(QUICK))
    cb = learn_gmm_codebook(S, 4, pca_dim=8, max_iter=3, tol=0.0, verbose=True)
    err = capsys.readouterr().err
    assert [ln.split(" on ")[0] for ln in err.splitlines()] == [
        "[gmm] iteration 1", "[gmm] iteration 2", "[gmm] iteration 3"]
    assert f"on {len(S)} x 8 (4 components): mean log-likelihood" in err
    assert cb.gmm.n_iter == 3


def test_gmm_codebook_errors(fmnist_greys):
    S = _sample(fmnist_greys[:2], load_preset(QUICK))
    with pytest.raises(ValueError, match="n_components=50 exceeds the 40 sampled descriptors"):
        learn_gmm_codebook(S, 50)
    with pytest.raises(ValueError, match="pass both gmm_weights and gmm_variances"):
        Codebook(np.zeros((2, 3)), gmm_weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="variances must be positive"):
        Codebook(np.zeros((2, 3)), gmm_weights=[0.5, 0.5], gmm_variances=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shapes"):
        Codebook(np.zeros((2, 3)), gmm_weights=[1.0], gmm_variances=np.ones((2, 3)))


def test_codebook_kind_must_fit_the_coding(fmnist_greys):
    preset = load_preset(QUICK)
    fe = FeatureSetExtractor(preset=QUICK).fit(fmnist_greys[:100])
    cb = fe.codebook_
    assert cb.kind == "gmm"
    kmeans_like = Codebook(cb.bases, cb.pca_mean, cb.pca_components)
    with pytest.raises(ValueError, match=r"does not fit preset 'quick-fv-hog' \(kind: preset "
                                         r"gmm, codebook kmeans\)"):
        check_codebook(preset, kmeans_like)
    sv = load_preset("quick-sv-hog")
    gmm7 = Codebook(cb.bases[:, :7], cb.pca_mean, cb.pca_components[:7],
                    gmm_weights=cb.gmm_weights, gmm_variances=cb.gmm_variances[:, :7])
    with pytest.raises(ValueError, match=r"kind: preset kmeans, codebook gmm"):
        check_codebook(sv, gmm7)


def test_pipeline_fisher_vectors_equal_fisher_vector(fmnist_greys):
    from bowsvm.features import extract_descriptors

    preset = load_preset(QUICK)
    fe = FeatureSetExtractor(preset=QUICK).fit(fmnist_greys[:100])
    cb = fe.codebook_
    greys = fmnist_greys[100:110]
    many = feature_vectors(greys, preset, cb, batch_descriptors=50)
    F = fe.transform(greys)
    assert isinstance(F, np.ndarray) and F.dtype == np.float32 and F.shape == (10, 1280)
    for g, x, row in zip(greys, many, F):
        D = extract_descriptors(g, "hog", **descriptor_params(preset))
        want = fisher_vector(cb.project(D.descriptors), D.centers, D.shape, cb.gmm,
                             [(1, 1), (2, 2)], threshold=1e-4)
        assert x.dtype == np.float32 and x.shape == (1280,)
        # bit for bit whatever the batching: each image is projected on its own
        np.testing.assert_array_equal(x, want)
        np.testing.assert_array_equal(row, want)
        np.testing.assert_array_equal(feature_vector(g, preset, cb), want)
        # improved normalisation: each block has unit L2 norm
        np.testing.assert_allclose(np.linalg.norm(x.reshape(5, 256), axis=1), 1, atol=1e-5)


def test_value_bound_covers_improved_normalisation():
    from bowsvm.io.features import L2_BOUND, value_bound

    assert value_bound({"preset_config": load_preset(QUICK)}) == L2_BOUND
    raw = load_preset(dict(_base(), pooling={"normalize": "none"}))
    assert value_bound({"preset_config": raw}) is None


def test_codebook_stage_refuses_kmeans_engines_for_fisher():
    from bowsvm.stages.codebook import engine_for

    fv, lcc = load_preset(QUICK), load_preset("quick-lcc-hog")
    ns = lambda k: argparse.Namespace(kmeans=k, mllib_threshold=10)  # noqa: E731
    assert engine_for(ns("auto"), fv, 1000) == "gmm" == engine_for(ns("local"), fv, 5)
    assert engine_for(ns("auto"), lcc, 1000) == "mllib" and engine_for(ns("auto"), lcc, 5) == "local"
    for k in ("mllib", "minibatch"):
        with pytest.raises(ValueError, match=f"--kmeans {k} does not apply to preset "
                                             f"'quick-fv-hog': its coding.method is 'fisher'"):
            engine_for(ns(k), fv, 5)


# --------------------------------------------------------------- the stages, end to end

@pytest.fixture(scope="module")
def images(tmp_path_factory, fashion_dir):
    """test_extract_job.py's image shards: 60/20/40 Fashion-MNIST images, one corrupt."""
    return write_image_shards(tmp_path_factory.mktemp("img") / "images", fashion_dir)


@pytest.mark.slow
def test_fisher_set_through_the_cli(images, tmp_path):
    from bowsvm._seed import seeded_key
    from bowsvm.features import extract_descriptors
    from bowsvm.io import read_manifest
    from bowsvm.io.images import decode_image
    from bowsvm.io.scores import read_scores
    from bowsvm.stages.predict import Predictor

    fs, cbs, feats = QUICK, tmp_path / "codebooks", tmp_path / "features"
    models, scores = tmp_path / "models", tmp_path / "scores"
    proc = run_bowsvm("codebook", "--feature-set", fs, "--images", str(images),
                      "--codebooks", str(cbs), "--master", "local[2]")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[gmm] iteration 1 on " in proc.stderr and "[kmeans] pass" not in proc.stderr
    m = read_manifest(cbs / fs, stage="codebook")
    cb = Codebook.load(cbs / fs)
    preset = load_preset(fs)
    assert m["method"] == "gmm" and m["kmeans"] is None and cb.kind == "gmm"
    assert m["preset_hash"] == preset_hash(fs) and m["codebook_hash"] == cb.hash
    assert m["n_iter"] == cb.gmm.n_iter >= 1 and m["log_likelihood"] == cb.gmm.log_likelihood

    # the GMM = fit_gmm on the same sample, drawn here from the shards (seeded per id)
    table = pq.read_table(images / "shards").to_pylist()
    train = sorted((r for r in table if r["split"] == "train"), key=lambda r: r["id"])
    per_image, seed = preset["codebook"]["samples_per_image"], preset["codebook"]["random_state"]
    n_img = -(-preset["codebook"]["n_samples"] // per_image)
    chosen = set(sorted((r["id"] for r in train), key=lambda i: (seeded_key(seed, i), i))[:n_img])
    sample = []
    for r in train:
        if r["id"] not in chosen or r["id"] == "train-corrupt":
            continue
        g = decode_image(r["image"], max_side=preset["max_side"])
        D = extract_descriptors(g, "hog", **descriptor_params(preset)).descriptors
        rng = np.random.default_rng(seeded_key(seed, r["id"]))
        sample.append(D[np.sort(rng.choice(len(D), size=min(per_image, len(D)), replace=False))])
    S = np.concatenate(sample).astype(np.float32)
    assert len(S) == m["n_samples"] <= preset["codebook"]["n_samples"]  # no trim at this size
    mean, comps = fit_pca(S, preset["codebook"]["pca_dim"])
    np.testing.assert_allclose(cb.pca_mean, mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(cb.pca_components, comps, rtol=0, atol=1e-6)
    gmm = fit_gmm((S - mean) @ comps.T, preset["codebook"]["n_bases"], random_state=seed,
                  max_iter=preset["codebook"]["em_max_iter"], tol=preset["codebook"]["em_tol"],
                  var_floor=preset["codebook"]["var_floor"])
    np.testing.assert_allclose(cb.gmm.weights, gmm.weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cb.gmm.means, gmm.means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cb.gmm.variances, gmm.variances, rtol=1e-5, atol=1e-8)
    assert cb.gmm.n_iter == gmm.n_iter

    # extraction: dense float32 rows, each = fisher_vectors of that image's descriptors
    proc = run_bowsvm("extract", "--feature-set", fs, "--images", str(images),
                      "--codebooks", str(cbs), "--features", str(feats), "--master", "local[2]")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fm, got = read_features(feats / fs)
    assert fm["layout"] == "dense" and fm["dim"] == 1280 and fm["codebook_hash"] == cb.hash
    assert fm["counts"] == {"train": 60, "val": 20, "test": 40} and fm["n_rejected"] == 1
    by_id = {r["id"]: r for r in table}
    grids = preset["pooling"]["grids"]
    for split, (ids, labels, X) in got.items():
        assert isinstance(X, np.ndarray) and X.dtype == np.float32 and X.shape[1] == 1280
        triples = []
        for i, lab in zip(ids, labels):
            assert by_id[i]["label"] == lab
            g = decode_image(by_id[i]["image"], max_side=preset["max_side"])
            D = extract_descriptors(g, "hog", **descriptor_params(preset))
            triples.append((cb.project(D.descriptors), D.centers, D.shape))
        from bowsvm.coding import fisher_vectors

        want = fisher_vectors(triples, cb.gmm, grids, threshold=preset["coding"]["threshold"])
        np.testing.assert_allclose(X, want, rtol=0, atol=1e-6)
        if split == "test":  # and the naive twin, descriptor by descriptor (float64)
            for x, (Z, c, shape) in zip(X[:3], triples[:3]):
                naive = naive_fisher_vector(Z, c, shape, grids, cb.gmm.weights, cb.gmm.means,
                                            cb.gmm.variances, threshold=1e-4)
                # compared before the square root (v |v|, the L2-normalised gradients):
                # sqrt is not Lipschitz at 0, so near-zero entries carry the float32
                # rounding of the gradients magnified (up to 1e-3 here). The bound is
                # 5e-5, not 1e-6: the zeroed low-contrast HOG patches are one point,
                # fitted by a component at the variance floor, whose float32 G_sigma
                # cancels (fisher_vector's Notes; measured 2.5e-5 on its entries)
                np.testing.assert_allclose(x * np.abs(x), naive * np.abs(naive), rtol=0,
                                           atol=5e-5)
                np.testing.assert_allclose(x, naive, rtol=0, atol=2e-3)

    # train, score, and predict on the original files: predict's scores = the score stage's
    for args in (("train", "--feature-set", fs, "--features", str(feats), "--models",
                  str(models), "--epochs", "3", "--quiet"),
                 ("score", "--feature-set", fs, "--split", "test", "--features", str(feats),
                  "--models", str(models), "--scores", str(scores))):
        proc = run_bowsvm(*args)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sc = read_scores(scores / fs / "test")
    assert len(sc.ids) == 40
    pred = Predictor.from_folders([fs], features=feats, models=models, fusion=None,
                                  codebooks=cbs)
    files = []
    for i in sc.ids:
        f = tmp_path / "inputs" / f"{i}.png"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(by_id[i]["image"])  # the image file prepare stored
        files.append(f)
    S_pred = np.stack([pred.scores_for_bytes(f.read_bytes()) for f in files])
    assert S_pred.dtype == np.float32 and S_pred.shape == sc.scores.shape
    np.testing.assert_allclose(S_pred, sc.scores, rtol=1e-5, atol=1e-5)
    res = pred.predict_files(files, k=3)
    for r, s in zip(res, sc.scores):
        assert r["error"] is None
        np.testing.assert_allclose([t["score"] for t in r["top"]], np.sort(s)[::-1][:3],
                                   rtol=1e-5, atol=1e-5)
