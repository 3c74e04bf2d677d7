"""Tests of the per-image coding pipeline: feature_vector, feature_vectors, FeatureSetExtractor."""

import gzip

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from bowsvm.coding import (
    Codebook,
    FeatureSetExtractor,
    check_codebook,
    codebook_from_centers,
    code_and_pool,
    feature_vector,
    feature_vectors,
    lcc_encode,
    prepare_image,
    sample_descriptors,
    spm_pool,
)
from bowsvm.features import extract_descriptors
from bowsvm.presets import descriptor_params, load_preset


@pytest.fixture(scope="module")
def fashion(fashion_dir):
    with gzip.open(fashion_dir / "t10k-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(fashion_dir / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return X[:600].copy(), y[:600].copy()


@pytest.fixture(scope="module")
def fitted(fashion):
    X, _ = fashion
    return {
        name: FeatureSetExtractor(preset=name, random_state=0).fit(X[:200])
        for name in ("quick-lcc-hog", "quick-lcc-hoglbp", "quick-sv-hog")
    }


def test_pipeline_fit_transform_round_trip(fashion):
    X, y = fashion
    pipe = make_pipeline(FeatureSetExtractor(preset="quick-lcc-hog"),
                         LogisticRegression(max_iter=500))
    pipe.fit(X[:400], y[:400])
    acc = (pipe.predict(X[400:]) == y[400:]).mean()
    assert acc > 0.45  # 10 classes: chance is 0.1
    fe = pipe[0]
    F = fe.transform(X[400:410])
    assert isinstance(F, np.ndarray) and F.shape == (10, 80) and F.dtype == np.float32
    # the features are what feature_vector gives for each image on its own
    for i in range(3):
        g = prepare_image(X[400 + i], fe.preset_["max_side"])
        np.testing.assert_array_equal(F[i], feature_vector(g, "quick-lcc-hog", fe.codebook_))
    c = clone(pipe)
    assert c[0].get_params()["preset"] == "quick-lcc-hog"


@pytest.mark.parametrize("name", ["quick-lcc-hog", "quick-lcc-hoglbp", "quick-sv-hog"])
def test_batched_equals_per_image(fitted, fashion, name):
    X, _ = fashion
    fe = fitted[name]
    imgs = [prepare_image(x, 64) for x in X[200:230]]
    imgs.append(np.zeros((5, 5), np.float32))  # no patch fits: all-zero vector
    batched = feature_vectors(imgs, name, fe.codebook_, batch_descriptors=500)
    single = [feature_vector(g, name, fe.codebook_) for g in imgs]
    assert len(batched) == len(single) == 31
    for a, b in zip(batched, single):
        if isinstance(a, tuple):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        elif fe.codebook_.pca_mean is None:
            np.testing.assert_array_equal(a, b)
        else:  # batched PCA projection: float32 rounding differs
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    last = single[-1]
    if isinstance(last, tuple):
        assert last[0].size == 0
    else:
        assert last.shape == (fe.n_features_out_,) and not last.any()


def test_sparse_preset_gives_csr_equal_to_dense_path(fitted, fashion):
    X, _ = fashion
    fe = fitted["quick-lcc-hoglbp"]
    F = fe.transform(X[300:320])
    assert sp.isspmatrix_csr(F) and F.shape == (20, 160) and F.dtype == np.float32
    p = fe.preset_
    for i in range(5):
        g = prepare_image(X[300 + i], p["max_side"])
        dd = extract_descriptors(g, p["descriptors"]["kind"], **descriptor_params(p))
        Z = fe.codebook_.project(dd.descriptors)
        codes = lcc_encode(Z, fe.codebook_.bases, k=p["coding"]["k"])
        dense = spm_pool(codes, dd.centers, dd.shape, p["pooling"]["grids"])
        np.testing.assert_array_equal(F[i].toarray().ravel(), dense)


def test_fit_is_reproducible_and_accepts_a_codebook(fitted, fashion, tmp_path):
    X, _ = fashion
    a = fitted["quick-sv-hog"].codebook_
    b = FeatureSetExtractor(preset="quick-sv-hog", random_state=0).fit(X[:200]).codebook_
    assert a.hash == b.hash and a.pca_mean is not None and a.dim == 7
    a.save(tmp_path / "cb")
    fe = FeatureSetExtractor(preset="quick-sv-hog", codebook=str(tmp_path / "cb")).fit(None)
    assert fe.codebook_.hash == a.hash
    np.testing.assert_array_equal(fe.transform(X[:5]), fitted["quick-sv-hog"].transform(X[:5]))


def test_sample_descriptors(fashion):
    X, _ = fashion
    g = prepare_image(X[0], 64)
    p = load_preset("quick-lcc-hog")
    a = sample_descriptors(g, p, 10, np.random.default_rng(5))
    b = sample_descriptors(g, p, 10, np.random.default_rng(5))
    assert a.shape == (10, 128) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    allz = sample_descriptors(g, p, 10**6, 0)
    assert allz.shape == (36, 128)  # (28 - 8) // 4 + 1 = 6 positions per side


def test_extractor_errors(fitted, fashion):
    X, _ = fashion
    with pytest.raises(NotFittedError):
        FeatureSetExtractor(preset="quick-lcc-hog").transform(X[:2])
    cb = fitted["quick-lcc-hog"].codebook_
    with pytest.raises(ValueError, match=r"does not fit preset 'quick-sv-hog' \(n_bases: preset 8, codebook 16"):
        check_codebook("quick-sv-hog", cb)
    with pytest.raises(ValueError, match=r"does not fit preset .*input_dim: preset 364, codebook 128"):
        feature_vector(prepare_image(X[0]), "quick-lcc-hoglbp", cb)
    with pytest.raises(TypeError, match="codebook must be a bowsvm.coding.Codebook"):
        feature_vector(prepare_image(X[0]), "quick-lcc-hog", cb.bases)
    with pytest.raises(ValueError, match="X must be a sequence of images"):
        fitted["quick-lcc-hog"].transform(X[0])
    with pytest.raises(ValueError, match="X holds no images"):
        FeatureSetExtractor(preset="quick-lcc-hog").fit([])
    with pytest.raises(ValueError, match="n_samples=3 is too small"):
        FeatureSetExtractor(preset="quick-lcc-hog", n_samples=3).fit(X[:5])
    Zn = np.full((4, 128), np.nan, np.float32)
    with pytest.raises(ValueError, match="descriptors contains NaN or Inf"):
        code_and_pool(Zn, np.zeros((4, 2)), (28, 28), "quick-lcc-hog", cb)


def test_prepare_image_downsizes():
    img = np.random.default_rng(0).random((300, 120, 3))
    g = prepare_image(img, max_side=100)
    assert g.shape == (100, 40) and g.dtype == np.float32
    assert prepare_image(np.zeros((10, 10), np.uint8)).shape == (10, 10)
    assert isinstance(codebook_from_centers(np.eye(3)), Codebook)


def test_too_small_is_below_the_smallest_patch():
    from bowsvm.coding import too_small

    p = load_preset("quick-lcc-hog")
    side = min(p["descriptors"]["patch_sizes"])
    assert too_small(np.zeros((side, side), np.float32), p) is None
    assert too_small(np.zeros((side, 3 * side), np.float32), "quick-lcc-hog") is None
    why = too_small(np.zeros((side - 1, 40), np.float32), p)
    assert why.startswith(f"image too small: 40x{side - 1} px after decoding")
    assert f"smallest patch of {side}x{side} px" in why
