"""Dense HOG / LBP descriptors: kernels vs naive twins, references, invariances, errors."""

import io
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import naive
from bowsvm.features import (
    DESCRIPTORS,
    HOG_MIN_MEAN_GRADIENT,
    DenseDescriptors,
    dense_hog,
    dense_hog_lbp,
    dense_lbp,
    descriptor_dim,
    extract_descriptors,
    lbp_codes,
    patch_grid,
    to_gray,
)
from bowsvm.features import _kernels
from bowsvm.io.images import decode_image

skimage_lbp = pytest.importorskip("skimage.feature").local_binary_pattern


def sk_codes(img, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skimage_lbp(img, 8, 1, method)


def smooth_random(rng, shape, dtype=np.uint8):
    """Random image with structure (so orientations are not pure noise)."""
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(rng.random(shape), 1.5)
    img = (img - img.min()) / (img.max() - img.min())
    if dtype == np.uint8:
        return (img * 255).round().astype(np.uint8)
    return img.astype(dtype)


# ---------------------------------------------------------------- LBP codes

@pytest.mark.parametrize("method", ["nri_uniform", "uniform"])
@pytest.mark.parametrize("shape", [(37, 41), (1, 1), (1, 7), (6, 1), (2, 2), (3, 3), (64, 5)])
def test_lbp_codes_equal_skimage_uint8(rng, method, shape):
    full = rng.integers(0, 256, shape).astype(np.uint8)
    ties = rng.integers(0, 3, shape).astype(np.uint8)  # many equal neighbours
    for img in (full, ties):
        got = lbp_codes(img, method)
        assert got.dtype == np.uint8
        assert_array_equal(got, sk_codes(img, method))


@pytest.mark.parametrize("method", ["nri_uniform", "uniform"])
def test_lbp_codes_equal_skimage_float(rng, method):
    img = rng.random((23, 19))
    img[5:9, 5:9] = 0.5  # a flat area
    assert_array_equal(lbp_codes(img, method), sk_codes(img, method))


@pytest.mark.parametrize("method", ["nri_uniform", "uniform"])
def test_lbp_codes_equal_skimage_on_a_photo(method):
    from skimage import data

    img = data.camera()  # 512 x 512 uint8 with flat areas (many ties)
    assert_array_equal(lbp_codes(img, method), sk_codes(img, method))


def test_lbp_code_ranges(rng):
    img = rng.integers(0, 256, (200, 200)).astype(np.uint8)
    assert set(np.unique(lbp_codes(img, "nri_uniform"))) == set(range(59))
    assert set(np.unique(lbp_codes(img, "uniform"))) == set(range(10))


# ------------------------------------------------------------- vs naive twins

HOG_CASES = [
    # shape, patch_sizes, step, n_bins, clip
    ((40, 52), (16, 24, 32), 8, 8, 0.2),
    ((33, 29), (16, 18, 13), 5, 9, 0.2),   # odd sizes, unequal cells
    ((16, 16), (16,), 8, 8, 0.2),          # exactly one patch
    ((17, 23), (16, 24), 3, 12, None),     # 24 does not fit; no clipping
]


@pytest.mark.parametrize("shape, sizes, step, n_bins, clip", HOG_CASES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_dense_hog_matches_naive(rng, shape, sizes, step, n_bins, clip, dtype):
    img = smooth_random(rng, shape, dtype)
    got = dense_hog(img, patch_sizes=sizes, step=step, n_bins=n_bins, clip=clip)
    want, centers, psizes = naive.naive_dense_hog(img, sizes, step, n_bins, clip,
                                                  HOG_MIN_MEAN_GRADIENT)
    assert got.descriptors.shape == want.shape
    assert want.shape[0] > 0
    assert_allclose(got.descriptors, want, rtol=1e-5, atol=2e-6)
    assert_array_equal(got.centers, centers)
    assert_array_equal(got.sizes, psizes)
    assert got.shape == shape


LBP_CASES = [
    ((40, 52), (16, 24, 32), 8, 2),
    ((33, 29), (16, 18, 13), 5, 3),
    ((16, 16), (16,), 8, 2),
    ((9, 30), (8, 9, 10), 4, 1),
]


@pytest.mark.parametrize("shape, sizes, step, cells", LBP_CASES)
@pytest.mark.parametrize("method", ["nri_uniform", "uniform"])
def test_dense_lbp_matches_naive(rng, shape, sizes, step, cells, method):
    img = rng.integers(0, 256, shape).astype(np.uint8)
    got = dense_lbp(img, patch_sizes=sizes, step=step, cells=cells, method=method)
    want = naive.naive_dense_lbp(img, sizes, step, cells, method)
    assert got.descriptors.shape == want.shape
    assert want.shape[0] > 0
    assert_allclose(got.descriptors, want, rtol=1e-6, atol=1e-7)


def test_dense_lbp_float_input_matches_naive(rng):
    img = rng.random((30, 30))
    got = dense_lbp(img, patch_sizes=(16,), step=4)
    assert_allclose(got.descriptors, naive.naive_dense_lbp(img, (16,), 4, 2, "nri_uniform"),
                    rtol=1e-6, atol=1e-7)


def test_hog_lbp_is_concatenation(rng):
    img = smooth_random(rng, (45, 50))
    kw = dict(patch_sizes=(16, 24), step=6)
    both = dense_hog_lbp(img, n_bins=9, clip=0.3, cells=3, method="uniform", **kw)
    h = dense_hog(img, n_bins=9, clip=0.3, **kw)
    lb = dense_lbp(img, cells=3, method="uniform", **kw)
    assert_array_equal(both.descriptors, np.hstack([h.descriptors, lb.descriptors]))
    assert_array_equal(both.centers, h.centers)
    assert_array_equal(both.sizes, lb.sizes)
    assert both.descriptors.shape[1] == descriptor_dim("hog+lbp", n_bins=9, cells=3,
                                                       method="uniform", **kw) == 144 + 90
    assert descriptor_dim("hog") == 128 and descriptor_dim("lbp", cells=4) == 16 * 59
    assert descriptor_dim("lbp", method="uniform") == 40
    assert descriptor_dim("hog", n_bins=9, cells=3, method="uniform") == 144  # LBP options ignored


# ------------------------------------------------------- direct computations

def test_hog_of_a_ramp_is_analytic():
    """A linear ramp has one gradient everywhere: every cell = m * [(1-f), f] at b0, b0+1."""
    H = W = 40
    a, b = 0.004, 0.0025  # intensity slope per pixel along x and y
    yy, xx = np.mgrid[0:H, 0:W]
    img = a * xx + b * yy
    n_bins = 8
    d = dense_hog(img, patch_sizes=(16,), step=8, n_bins=n_bins, clip=None)
    theta = np.arctan2(2 * b, 2 * a)
    t = theta / (2 * np.pi) * n_bins
    cell = np.zeros(n_bins)
    cell[int(t)] = 1 - (t - int(t))
    cell[int(t) + 1] = t - int(t)
    want = np.tile(cell, 16)
    want /= np.linalg.norm(want)
    # interior patches only (border pixels have one-sided zero gradients)
    inner = (d.centers[:, 0] > 8) & (d.centers[:, 0] < W - 8) & \
            (d.centers[:, 1] > 8) & (d.centers[:, 1] < H - 8)
    assert inner.sum() > 0
    assert_allclose(d.descriptors[inner], np.broadcast_to(want, (inner.sum(), 16 * n_bins)),
                    atol=2e-6)


def test_hog_cell_histograms_direct():
    """Raw cell sums (clip off, known norm) equal gradient sums by brute force."""
    rng = np.random.default_rng(3)
    img = rng.random((20, 20))
    d = dense_hog(img, patch_sizes=(16,), step=8, n_bins=4, clip=None).descriptors[0]
    # direct: gradients with np.gradient-like differences (no loops shared with naive.py)
    gx = np.zeros_like(img)
    gy = np.zeros_like(img)
    gx[:, 1:-1] = img[:, 2:] - img[:, :-2]
    gy[1:-1, :] = img[2:, :] - img[:-2, :]
    m = np.hypot(gx, gy)
    t = (np.arctan2(gy, gx) % (2 * np.pi)) / (np.pi / 2)
    b0 = np.floor(t).astype(int) % 4
    f = t - np.floor(t)
    y0 = x0 = 2  # centred grid: (20 - 16) // 2
    raw = []
    for ci in range(4):
        for cj in range(4):
            sl = (slice(y0 + 4 * ci, y0 + 4 * ci + 4), slice(x0 + 4 * cj, x0 + 4 * cj + 4))
            h = np.bincount(b0[sl].ravel(), (m * (1 - f))[sl].ravel(), minlength=4)
            h += np.bincount(((b0 + 1) % 4)[sl].ravel(), (m * f)[sl].ravel(), minlength=4)
            raw.append(h)
    raw = np.concatenate(raw)
    assert_allclose(d, raw / np.linalg.norm(raw), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n_bins", [8, 12, 4])
def test_rot90_permutes_cells_and_orientation_bins(rng, n_bins):
    """np.rot90 (counter-clockwise): cell grid rotates, bin b -> b - n_bins / 4."""
    H, W, P = 40, 48, 16  # (H - P) and (W - P) multiples of step: symmetric grid
    img = smooth_random(rng, (H, W), np.float64)
    d0 = dense_hog(img, patch_sizes=(P,), step=8, n_bins=n_bins)
    d1 = dense_hog(np.rot90(img), patch_sizes=(P,), step=8, n_bins=n_bins)
    assert d0.descriptors.shape == d1.descriptors.shape
    # old centre (x, y) -> new centre (y, W - x)
    lookup = {tuple(c): i for i, c in enumerate(d1.centers.tolist())}
    shift = n_bins // 4
    for i, (x, y) in enumerate(d0.centers.tolist()):
        j = lookup[(y, W - x)]
        old = d0.descriptors[i].reshape(4, 4, n_bins)
        want = np.roll(np.rot90(old, 1, axes=(0, 1)), -shift, axis=2)
        assert_allclose(d1.descriptors[j].reshape(4, 4, n_bins), want, atol=1e-6)
    assert np.abs(d0.descriptors).sum() > 0


@pytest.mark.parametrize("high", [256, 3])
def test_rotation_invariant_lbp_codes_commute_with_rot90(rng, high):
    """"uniform" codes are rotation invariant: rot90 of the codes = codes of rot90 (interior)."""
    img = rng.integers(0, high, (32, 45)).astype(np.uint8)
    a = np.rot90(lbp_codes(img, "uniform"))[1:-1, 1:-1]
    b = lbp_codes(np.rot90(img), "uniform")[1:-1, 1:-1]
    if high == 256:
        assert_array_equal(a, b)
    else:
        # exact ties (neighbour == centre) on the interpolated diagonals are
        # decided by skimage's position-dependent rounding of r + rp: rare flips
        assert 0 < (a == b).mean() and (a != b).mean() < 0.01
    assert not np.array_equal(np.rot90(lbp_codes(img, "nri_uniform")), lbp_codes(np.rot90(img)))


# ------------------------------------------------------- kernels one by one

def test_fast_atan2_accuracy():
    from numba import njit

    @njit
    def many(y, x):
        out = np.empty(y.size)
        for i in range(y.size):
            out[i] = _kernels.fast_atan2(y[i], x[i])
        return out

    ang = np.linspace(-np.pi, np.pi, 100001)
    r = np.random.default_rng(0).uniform(1e-6, 10, ang.size)
    y, x = r * np.sin(ang), r * np.cos(ang)
    got = many(y, x)
    want = np.arctan2(y, x)
    diff = np.angle(np.exp(1j * (got - want)))  # wrap-around safe
    assert np.abs(diff).max() < 5e-8
    axes = np.array([0.0, 1.0, 0.0, -1.0]), np.array([1.0, 0.0, -1.0, 0.0])
    assert_allclose(many(*axes), [0, np.pi / 2, np.pi, -np.pi / 2], atol=1e-12)
    assert many(np.zeros(1), np.zeros(1))[0] == 0.0


def test_cumulate_bands_is_a_2d_cumsum(rng):
    bands = rng.random((5, 7, 3))
    S = _kernels.cumulate_bands(bands)
    assert S.shape == (6, 8, 3)
    want = np.zeros((6, 8, 3))
    want[1:, 1:] = bands.cumsum(0).cumsum(1)
    assert_allclose(S, want, rtol=1e-12)
    counts = rng.integers(0, 9, (4, 3, 2)).astype(np.int32)
    Si = _kernels.cumulate_bands(counts)
    assert Si.dtype == np.int32
    assert_array_equal(Si[1:, 1:], counts.cumsum(0).cumsum(1))


def _bands(edges, length):
    band = np.full(length, -1, np.int64)
    for a in range(len(edges) - 1):
        band[edges[a]:edges[a + 1]] = a
    return band


def test_hog_band_sums_match_naive_votes(rng):
    img = rng.random((23, 31)).astype(np.float32)
    ys, xs = [2, 5, 6, 20], [0, 4, 30]
    got = _kernels.hog_band_sums(img, 9, _bands(ys, 23), _bands(xs, 31), 3, 2)
    votes = naive.naive_hog_votes(img, 9)
    want = np.array([[votes[ys[a]:ys[a + 1], xs[b]:xs[b + 1]].sum((0, 1)) for b in range(2)]
                     for a in range(3)])
    assert got.dtype == np.float64
    assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_count_band_codes_match_bincount(rng):
    codes = rng.integers(0, 10, (17, 13)).astype(np.uint8)
    ys, xs = [1, 9, 17], [3, 4, 12]
    got = _kernels.count_band_codes(codes, 10, _bands(ys, 17), _bands(xs, 13), 2, 2,
                                    np.zeros(0, np.int32))
    for a in range(2):
        for b in range(2):
            block = codes[ys[a]:ys[a + 1], xs[b]:xs[b + 1]]
            assert_array_equal(got[a, b], np.bincount(block.ravel(), minlength=10))


def test_small_images_like_fashion_mnist(rng):
    img = rng.integers(0, 256, (28, 28)).astype(np.uint8)
    got = dense_hog_lbp(img, patch_sizes=(8, 12, 16), step=4)
    counts = [((28 - P) // 4 + 1) ** 2 for P in (8, 12, 16)]
    assert got.descriptors.shape == (sum(counts), 364)
    want_h, _, _ = naive.naive_dense_hog(img, (8, 12, 16), 4, 8, 0.2, HOG_MIN_MEAN_GRADIENT)
    want_l = naive.naive_dense_lbp(img, (8, 12, 16), 4, 2, "nri_uniform")
    assert_allclose(got.descriptors, np.hstack([want_h, want_l]), rtol=1e-5, atol=2e-6)


# --------------------------------------------------------------- geometry

def test_grid_origin_rule_and_centres():
    img = np.zeros((37, 37), np.uint8)
    d = dense_hog(img, patch_sizes=(16,), step=8)
    # n = (37 - 16) // 8 + 1 = 3, leftover 37 - 16 - 16 = 5, origin 5 // 2 = 2
    xs = np.unique(d.centers[:, 0])
    assert_array_equal(xs, [10.0, 18.0, 26.0])
    assert d.descriptors.shape == (9, 128)
    grid = patch_grid((37, 37), (16, 40), 8)
    assert_array_equal(grid[0][0], [2, 10, 18])
    assert grid[1][0].size == 0
    for H, W, P, step in ((37, 37, 16, 8), (50, 23, 7, 3), (16, 16, 16, 5)):
        (y0, x0, _), = patch_grid((H, W), (P,), step)
        assert y0.tolist() == naive.naive_patch_origins(H, P, step)
        assert x0.tolist() == naive.naive_patch_origins(W, P, step)
    with pytest.raises(ValueError, match="shape must be"):
        patch_grid((3, 4, 5), (16,), 8)
    with pytest.raises(ValueError, match="step=0 is too small"):
        patch_grid((30, 30), (16,), 0)


def test_image_smaller_than_patches_gives_no_descriptor():
    img = np.ones((10, 12), np.float32)
    for f, d in ((dense_hog, 128), (dense_lbp, 236), (dense_hog_lbp, 364)):
        out = f(img)
        assert out.descriptors.shape == (0, d)
        assert out.descriptors.dtype == np.float32
        assert out.centers.shape == (0, 2) and out.sizes.shape == (0,)
        assert out.shape == (10, 12)


def test_some_sizes_fit(rng):
    img = rng.random((20, 30))
    d = dense_hog_lbp(img, patch_sizes=(32, 16, 24), step=8)
    assert set(d.sizes.tolist()) == {16.0}
    assert d.descriptors.shape == (1 * 2, 364)  # (20-16)//8+1 rows, (30-16)//8+1 cols


def test_counts_and_order_on_a_photo_sized_image(rng):
    img = smooth_random(rng, (375, 500))
    d = dense_hog_lbp(img)
    counts = [(((375 - P) // 8 + 1) * ((500 - P) // 8 + 1)) for P in (16, 24, 32)]
    assert d.descriptors.shape == (sum(counts), 364)
    assert_array_equal(d.sizes, np.repeat([16, 24, 32], counts).astype(np.float32))
    # row-major within a size: y non-decreasing, x increasing within a row
    first = d.centers[:counts[0]]
    assert np.all(np.diff(first[:, 1]) >= 0)
    assert (0 < d.centers[:, 0]).all() and (d.centers[:, 0] < 500).all()


# ------------------------------------------------------- low contrast, dtypes

def test_low_contrast_patches_are_zeroed_but_kept():
    img = np.full((40, 40), 0.5)
    img[:, 30:] += np.linspace(0, 0.3, 10)[None, :]  # structure only on the right
    d = dense_hog(img, patch_sizes=(16,), step=8)
    flat = d.centers[:, 0] + 8 < 29
    assert d.descriptors.shape[0] == 16
    assert flat.any() and (~flat).any()
    assert not d.descriptors[flat].any()
    assert_allclose(np.linalg.norm(d.descriptors[~flat], axis=1), 1.0, rtol=1e-5)
    # just below / above the threshold: a ramp of known mean gradient
    yy, xx = np.mgrid[0:16, 0:16]
    for slope, zero in ((0.4 * HOG_MIN_MEAN_GRADIENT, True), (2 * HOG_MIN_MEAN_GRADIENT, False)):
        out = dense_hog(slope * xx, patch_sizes=(16,), step=8).descriptors
        assert (not out.any()) == zero
    # LBP has no low-contrast rule
    lb = dense_lbp(np.zeros((16, 16)), patch_sizes=(16,))
    assert_allclose(np.linalg.norm(lb.descriptors, axis=1), 1.0, rtol=1e-6)


def test_dtypes_and_contiguity(rng):
    img = smooth_random(rng, (50, 41))
    for kind in DESCRIPTORS:
        d = extract_descriptors(img, kind, patch_sizes=(16, 24), step=8)
        assert isinstance(d, DenseDescriptors)
        assert d.descriptors.dtype == np.float32 and d.descriptors.flags.c_contiguous
        assert d.centers.dtype == np.float32 and d.centers.shape == (d.descriptors.shape[0], 2)
        assert d.sizes.dtype == np.float32
        assert isinstance(d.shape, tuple) and d.shape == (50, 41)
        assert d.descriptors.shape[1] == descriptor_dim(kind)
        assert np.isfinite(d.descriptors).all()
        assert (d.descriptors >= 0).all()
        norms = np.linalg.norm(d.descriptors, axis=1)
        assert_allclose(norms, np.sqrt(2.0) if kind == "hog+lbp" else 1.0, rtol=1e-5)


def test_uint8_is_scaled_like_float32(rng):
    img = smooth_random(rng, (40, 40))
    a = dense_hog(img).descriptors
    b = dense_hog(img.astype(np.float32) / np.float32(255)).descriptors
    assert_array_equal(a, b)
    assert_array_equal(a, dense_hog(to_gray(img)).descriptors)
    # LBP only compares values: any positive scaling gives the same codes
    assert_array_equal(dense_lbp(img).descriptors, dense_lbp(img.astype(np.float64)).descriptors)


def test_determinism_and_layout_independence(rng):
    img = smooth_random(rng, (60, 70), np.float32)
    a = dense_hog_lbp(img)
    b = dense_hog_lbp(img.copy())
    c = dense_hog_lbp(np.asfortranarray(img))
    d = dense_hog_lbp(np.pad(img, 2)[2:-2, 2:-2])  # a non-contiguous view
    for other in (b, c, d):
        assert_array_equal(a.descriptors, other.descriptors)
        assert_array_equal(a.centers, other.centers)


def test_extract_descriptors_dispatch(rng):
    img = smooth_random(rng, (40, 40))
    assert_array_equal(extract_descriptors(img, "lbp", cells=1).descriptors,
                       dense_lbp(img, cells=1).descriptors)
    assert_array_equal(extract_descriptors(img, "hog", n_bins=9).descriptors,
                       dense_hog(img, n_bins=9).descriptors)


# ------------------------------------------------------------------- errors

@pytest.mark.parametrize("func", [dense_hog, dense_lbp, dense_hog_lbp])
def test_bad_images(func):
    with pytest.raises(ValueError, match="must be 2-dimensional"):
        func(np.zeros((20, 20, 3)))
    with pytest.raises(ValueError, match="must be 2-dimensional"):
        func(np.zeros(20, np.uint8))
    bad = np.zeros((20, 20))
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        func(bad)
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        func(bad)
    with pytest.raises(TypeError, match="numeric array"):
        func(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="real-valued"):
        func(np.zeros((20, 20), complex))


def test_bad_options():
    img = np.zeros((40, 40))
    with pytest.raises(ValueError, match="patch_sizes is empty"):
        dense_hog(img, patch_sizes=())
    with pytest.raises(TypeError, match="patch_sizes must be a sequence"):
        dense_hog(img, patch_sizes="16")
    with pytest.raises(TypeError, match=r"patch_sizes\[1\] must be an integer"):
        dense_hog(img, patch_sizes=(16, 2.5))
    with pytest.raises(ValueError, match=r"patch_sizes\[0\]=3 is too small"):
        dense_hog(img, patch_sizes=(3,))
    with pytest.raises(ValueError, match=r"patch_sizes\[0\]=2 is too small; expected .* >= 3"):
        dense_lbp(img, patch_sizes=(2,), cells=3)
    with pytest.raises(ValueError, match="duplicates"):
        dense_lbp(img, patch_sizes=(16, 16))
    with pytest.raises(ValueError, match="step=0 is too small"):
        dense_hog(img, step=0)
    with pytest.raises(ValueError, match="n_bins=1 is too small"):
        dense_hog(img, n_bins=1)
    with pytest.raises(ValueError, match="clip=0.0 is out of range"):
        dense_hog_lbp(img, clip=0)
    with pytest.raises(ValueError, match="cells=0 is too small"):
        dense_lbp(img, cells=0)
    with pytest.raises(ValueError, match="method='ror' is not a valid option; expected one of "
                                         "'nri_uniform', 'uniform'"):
        dense_lbp(img, method="ror")
    with pytest.raises(ValueError, match="method='x' is not a valid option"):
        lbp_codes(img, method="x")
    with pytest.raises(ValueError, match="kind='sift' is not a valid option; expected one of "
                                         "'hog', 'lbp', 'hog\\+lbp'"):
        extract_descriptors(img, "sift")
    with pytest.raises(ValueError, match="kind='sift' is not a valid option"):
        descriptor_dim("sift")
    with pytest.raises(TypeError, match=r"kind='hog' does not take option\(s\) \['cells'\]; "
                                        r"valid options: \['patch_sizes', 'step', 'n_bins', 'clip'\]"):
        extract_descriptors(img, "hog", cells=2)
    with pytest.raises(TypeError, match=r"descriptor_dim got unknown option\(s\) \['bins'\]"):
        descriptor_dim("lbp", bins=9)
    with pytest.raises(ValueError, match="method='ror' is not a valid option"):
        descriptor_dim("hog+lbp", method="ror")
    with pytest.raises(ValueError, match="n_bins=65 is too large"):
        dense_hog(img, n_bins=65)
    with pytest.raises(TypeError, match="clip must be a real number"):
        dense_hog(img, clip="0.2")
    with pytest.raises(TypeError, match="step must be an integer"):
        dense_lbp(img, step=8.0)


# -------------------------------------------------------------- grey / decode

def test_to_gray_conversions(rng):
    rgb = rng.integers(0, 256, (5, 6, 3)).astype(np.uint8)
    g = to_gray(rgb)
    assert g.dtype == np.float32 and g.shape == (5, 6)
    assert_allclose(g, (rgb @ [0.299, 0.587, 0.114]) / 255, rtol=1e-6)
    rgba = np.concatenate([rgb, np.zeros((5, 6, 1), np.uint8)], axis=2)
    assert_array_equal(to_gray(rgba), g)
    assert_allclose(to_gray(rgb.astype(np.uint16) * 257), g, rtol=1e-6)
    assert_array_equal(to_gray(rgb[:, :, 0]), rgb[:, :, 0].astype(np.float32) / 255)
    assert_array_equal(to_gray(np.ones((2, 2), bool)), np.ones((2, 2), np.float32))
    assert to_gray(np.full((2, 2), 0.25)).dtype == np.float32
    with pytest.raises(ValueError, match="grey, RGB or RGBA"):
        to_gray(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="grey, RGB or RGBA"):
        to_gray(np.zeros(4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        to_gray(np.full((2, 2), np.nan))
    with pytest.raises(TypeError, match="numeric array"):
        to_gray(np.array([["a"]]))


def _encode(arr, fmt, **kw):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_decode_png_exact(rng):
    rgb = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    out = decode_image(_encode(rgb, "PNG"))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert_array_equal(out, to_gray(rgb))
    # 16-bit: to 8 bits (v / 65535 * 255, rounded), as the prepare stage stores it
    grey16 = rng.integers(0, 65536, (10, 12)).astype(np.uint16)
    grey8 = np.floor(grey16 / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    assert_array_equal(decode_image(_encode(grey16, "PNG")), to_gray(grey8))
    # alpha is composited over white: opaque pixels keep their colour, transparent
    # ones become white, the rest are the blend (to 8-bit rounding)
    rgba = rng.integers(0, 256, (8, 9, 4)).astype(np.uint8)
    rgba[0, :, 3], rgba[1, :, 3] = 255, 0
    out = decode_image(_encode(rgba, "PNG"))
    assert out.dtype == np.float32 and out.shape == (8, 9)
    assert_array_equal(out[0], to_gray(rgba[:1, :, :3])[0])
    assert_allclose(out[1], 1.0, atol=1e-6)
    a = rgba[:, :, 3:].astype(np.float64) / 255
    blend = to_gray((rgba[:, :, :3] * a + 255 * (1 - a)).astype(np.float32) / 255)
    assert_allclose(out, blend, atol=1.01 / 255)
    from PIL import Image

    pal = Image.fromarray(rgb).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert_array_equal(decode_image(buf.getvalue()), to_gray(np.asarray(pal.convert("RGB"))))


def test_decode_jpeg_exif_orientation():
    from PIL import Image

    H, W = 60, 90
    img = np.zeros((H, W, 3), np.uint8)
    img[:20, :30] = 255  # bright top-left block as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(buf.getvalue())
    assert out.shape == (W, H)
    want = np.rot90(to_gray(img), -1)  # clockwise
    assert np.abs(out - want).mean() < 0.02
    assert out[:30, -20:].mean() > 0.9 and out[-30:, :20].mean() < 0.1
    # big, rotated: the target size is the displayed (swapped) one
    big = np.zeros((600, 1000, 3), np.uint8)
    big[:200, :300] = 255
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(buf.getvalue(), max_side=500)
    assert out.shape == (500, 300)
    want = np.rot90(to_gray(big[::2, ::2]), -1)
    assert np.abs(out - want).mean() < 0.03


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decode_downsizes_big_images(rng, fmt):
    from PIL import Image

    yy, xx = np.mgrid[0:1200, 0:1600]
    grey = ((np.sin(xx / 40.0) * np.cos(yy / 55.0) + 1) * 127.5).astype(np.uint8)
    data = _encode(np.stack([grey] * 3, axis=2), fmt)
    out = decode_image(data)
    assert out.shape == (375, 500)
    assert out.min() >= 0 and out.max() <= 1
    ref = np.asarray(Image.fromarray(grey).resize((500, 375), Image.Resampling.LANCZOS)) / 255
    assert np.abs(out - ref).mean() < 0.02
    assert decode_image(data, max_side=64).shape == (48, 64)
    assert decode_image(data, max_side=None).shape == (1200, 1600)


@pytest.mark.parametrize("kind", ["rgba", "palette-alpha", "jpeg", "grey16", "la", "exif-jpeg"])
@pytest.mark.parametrize("size", [(60, 40), (300, 170)])
def test_decode_image_of_the_prepared_image_is_the_original_decoded(rng, kind, size):
    # the one image path: what prepare stores (--format png, --max-side M) decodes to
    # exactly what the original file decodes to at max_side M (predict == training)
    from PIL import Image

    from bowsvm.io.images import normalize_image

    w, h = size
    rgba = rng.integers(0, 256, (h, w, 4)).astype(np.uint8)
    buf = io.BytesIO()
    if kind == "rgba":
        Image.fromarray(rgba).save(buf, format="PNG")
    elif kind == "palette-alpha":
        Image.fromarray(rgba).convert("P").save(buf, format="PNG", transparency=3)
    elif kind == "jpeg":
        Image.fromarray(rgba[:, :, :3]).save(buf, format="JPEG", quality=80)
    elif kind == "grey16":
        Image.fromarray(rgba[:, :, 0].astype(np.uint16) * 251).save(buf, format="PNG")
    elif kind == "la":
        Image.fromarray(rgba[:, :, :2]).save(buf, format="PNG")
    else:
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(rgba[:, :, :3]).save(buf, format="JPEG", exif=exif.tobytes())
    raw = buf.getvalue()
    for m in (64, 500):
        prepared = normalize_image(raw, max_side=m, fmt="png")
        assert prepared.data is not None, prepared.reason
        want = decode_image(raw, max_side=m)
        assert_array_equal(decode_image(prepared.data, max_side=m), want)
        assert max(want.shape) == min(m, max(w, h))


def test_decode_never_upsizes(rng):
    rgb = rng.integers(0, 256, (50, 100, 3)).astype(np.uint8)
    assert decode_image(_encode(rgb, "PNG"), max_side=500).shape == (50, 100)
    assert decode_image(_encode(rgb, "PNG"), max_side=100).shape == (50, 100)


def test_decode_errors():
    with pytest.raises(TypeError, match="data must be bytes"):
        decode_image("image.jpg")
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_image(b"definitely not an image")
    with pytest.raises(ValueError, match="max_side=0 is too small"):
        decode_image(b"x", max_side=0)
    with pytest.raises(TypeError, match="max_side must be an integer"):
        decode_image(b"x", max_side=2.5)
