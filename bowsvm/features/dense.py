"""Dense multi-scale HOG and LBP descriptors (validated public API).

Patches of every requested size are laid on a regular grid; every patch is
split into square spatial cells whose histograms (orientation votes for HOG,
uniform LBP codes for LBP) are read from summed-area tables built once per
image, so the cost per patch does not depend on the patch size (the "flat
window" trick of VLFeat's dense SIFT). The tables are integral images sampled
only at the grid lines that cell edges fall on (see
:mod:`bowsvm.features._kernels`): building one touches every pixel once, and
its size is about ``(#distinct cell-edge rows) x (#distinct cell-edge columns)
x channels`` (for 500 x 375, step 8, sizes 16/24/32: 181 x 245 x 8 float64 =
2.8 MB for HOG, 91 x 123 x 59 int32 = 2.6 MB for LBP).

Cost, one thread, 500 x 375 image, 7922 patches (docs/BENCHMARKS.md): about
3 ms for HOG, 2.5 ms for LBP, 5.5 ms for HOG+LBP.

Conventions (fixed; pooling and the tests rely on them)
-------------------------------------------------------
Grid
    For patch side ``P`` and image ``H x W`` (``P <= H`` and ``P <= W``),
    ``nx = (W - P) // step + 1`` columns of patches start at
    ``x0 = ox + j * step`` with ``ox = (W - P - (nx - 1) * step) // 2``: the
    grid is centred, the leftover pixels split between both sides (the extra
    one, if odd, on the right). Rows likewise. Every patch lies fully inside
    the image. Sizes with ``P > H`` or ``P > W`` give no patch.
Order
    Patches of ``patch_sizes[0]`` first, then the next size, ...; within a
    size row-major (top row first, left to right).
Centres
    ``(x0 + P / 2, y0 + P / 2)`` in continuous pixel coordinates where the
    image covers ``[0, W] x [0, H]`` (pixel ``(r, c)`` is the unit square
    whose top-left corner is ``(c, r)``); so ``centers / (W, H)`` lies in
    ``(0, 1)``.
Cells
    ``ncell x ncell`` cells (4 x 4 for HOG, ``cells x cells`` for LBP); the
    cell edges of a patch are at ``x0 + (k * P) // ncell``, ``k = 0..ncell``
    (all cells equal when ``ncell`` divides ``P``).
Descriptor layout
    Cell-major: index ``(ci * ncell + cj) * C + c`` for cell row ``ci``
    (top to bottom), cell column ``cj`` (left to right), channel ``c``
    (orientation bin or LBP code). ``dense_hog_lbp`` is ``[hog | lbp]``.
HOG
    Centred differences (zero on the image border rows/columns, as
    ``skimage.feature.hog``); signed orientation ``atan2(gy, gx)`` over
    ``[0, 360)`` degrees with the y axis pointing down; bin ``b`` centred on
    ``360 * b / n_bins`` degrees; each pixel's gradient magnitude split
    linearly between the two nearest bins; no spatial interpolation, no
    Gaussian window. Normalisation: L2, clip at ``clip``, L2 again.
    A 90-degree counter-clockwise rotation (``np.rot90``) of the image maps
    bin ``b`` to bin ``b - n_bins / 4`` (mod ``n_bins``).
Low contrast (HOG)
    A patch whose mean gradient magnitude per pixel (on the [0, 1] intensity
    scale) is below :data:`HOG_MIN_MEAN_GRADIENT` gets an all-zero HOG
    descriptor. It is kept, so the descriptor count depends only on the image
    shape and the grid.
LBP
    8 neighbours at radius 1 (diagonals bilinearly interpolated, zero outside
    the image): codes equal to ``skimage.feature.local_binary_pattern(image,
    8, 1, method)``, computed on the image values before the uint8 -> [0, 1]
    scaling (LBP is invariant to it; this keeps the codes bit-identical).
    "nri_uniform": 59 codes; "uniform" (rotation invariant): 10 codes.
    Normalisation: square root of the cell counts, then L2 (the counts sum to
    ``P * P`` so the norm never vanishes; no low-contrast rule).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from bowsvm._validation import check_array, check_choice, check_int, check_real

from . import _kernels

__all__ = [
    "DenseDescriptors",
    "HOG_MIN_MEAN_GRADIENT",
    "LBP_METHODS",
    "DESCRIPTORS",
    "descriptor_dim",
    "dense_hog",
    "dense_lbp",
    "dense_hog_lbp",
    "extract_descriptors",
    "lbp_codes",
    "patch_grid",
]

#: Patches with a mean gradient magnitude per pixel below this get a zero HOG
#: descriptor (intensities on the [0, 1] scale; one uint8 grey level is 0.0039).
HOG_MIN_MEAN_GRADIENT = 1e-3

#: HOG spatial cells per patch side (4 x 4 cells).
HOG_CELLS = 4

_LBP_P = 8
_LBP_R = 1.0
# skimage's neighbour offsets, rounded to 5 decimals like skimage does
_LBP_RP = np.round(-_LBP_R * np.sin(2 * np.pi * np.arange(_LBP_P, dtype=np.double) / _LBP_P), 5)
_LBP_CP = np.round(_LBP_R * np.cos(2 * np.pi * np.arange(_LBP_P, dtype=np.double) / _LBP_P), 5)


def _lbp_lut(P, method):
    """Pattern (bit i = neighbour i >= centre) -> code, skimage's mapping.

    "nri_uniform": 0 for no ones, ``P (P - 1) + 1`` for all ones, ``1 + (n_ones
    - 1) P + rot`` for the other uniform patterns, ``P (P - 1) + 2`` for the
    non-uniform ones. "uniform": number of ones, ``P + 1`` if non-uniform.
    "Uniform" counts the 0/1 changes between bits 0..P-1 without wrapping, as
    skimage does (equivalent to at most two circular changes).
    """
    lut = np.empty(2 ** P, dtype=np.uint8)
    for pattern in range(2 ** P):
        bits = [(pattern >> i) & 1 for i in range(P)]
        changes = sum(abs(bits[i] - bits[i + 1]) for i in range(P - 1))
        n_ones = sum(bits)
        if method == "uniform":
            lut[pattern] = n_ones if changes <= 2 else P + 1
            continue
        if changes > 2:
            lut[pattern] = P * (P - 1) + 2
        elif n_ones == 0:
            lut[pattern] = 0
        elif n_ones == P:
            lut[pattern] = P * (P - 1) + 1
        else:
            first_one = bits.index(1)
            first_zero = bits.index(0)
            rot = n_ones - first_zero if first_one == 0 else P - first_one
            lut[pattern] = 1 + (n_ones - 1) * P + rot
    return lut


#: LBP method name -> (pattern -> code table, number of codes) for P = 8, R = 1.
LBP_METHODS = {
    "nri_uniform": (_lbp_lut(_LBP_P, "nri_uniform"), _LBP_P * (_LBP_P - 1) + 3),
    "uniform": (_lbp_lut(_LBP_P, "uniform"), _LBP_P + 2),
}


class DenseDescriptors(NamedTuple):
    """Descriptors of one image with their patch geometry.

    Attributes
    ----------
    descriptors : (n, d) float32, C-contiguous
    centers : (n, 2) float32
        Patch centres ``(x, y)`` in pixels of the image the grid was laid on
        (continuous coordinates, the image covers ``[0, W] x [0, H]``).
    sizes : (n,) float32
        Patch side in pixels.
    shape : tuple of int
        ``(height, width)`` of that image.
    """

    descriptors: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    shape: tuple


# --------------------------------------------------------------------- checks

def _check_image(image, name="image"):
    """2-D numeric image -> (float image for HOG, float64 image for LBP)."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        raw = arr
        arr = arr.astype(np.float32) / np.float32(255.0)
    else:
        raw = None
    arr = check_array(name, arr, ndim=2)
    return arr, raw


def _check_patch_sizes(patch_sizes, min_size):
    if isinstance(patch_sizes, (int, np.integer)) and not isinstance(patch_sizes, bool):
        patch_sizes = (patch_sizes,)
    if not isinstance(patch_sizes, (Sequence, np.ndarray)) or isinstance(patch_sizes, str):
        raise TypeError(
            f"patch_sizes must be a sequence of integers, got "
            f"{type(patch_sizes).__name__} {patch_sizes!r}; pass e.g. (16, 24, 32)."
        )
    if len(patch_sizes) == 0:
        raise ValueError("patch_sizes is empty; pass at least one patch size, e.g. (16,).")
    sizes = tuple(check_int("patch_sizes[%d]" % k, p, low=min_size)
                  for k, p in enumerate(patch_sizes))
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"patch_sizes={sizes} has duplicates; list each size once.")
    return sizes


def _check_hog_params(n_bins, clip):
    n_bins = check_int("n_bins", n_bins, low=2, high=64)
    if clip is None:
        clip = 0.0
    else:
        clip = check_real("clip", clip, low=0.0, low_open=True)
    return n_bins, clip


def _check_lbp_params(cells, method):
    cells = check_int("cells", cells, low=1, high=16)
    code, n_codes = check_choice("method", method, LBP_METHODS)
    return cells, code, n_codes


# ----------------------------------------------------------------------- grid

def _axis_grid(length, size, step):
    """Start offsets of the patches of side ``size`` along one axis."""
    if size > length:
        return np.zeros(0, dtype=np.int64)
    n = (length - size) // step + 1
    origin = (length - size - (n - 1) * step) // 2
    return origin + step * np.arange(n, dtype=np.int64)


def patch_grid(shape, patch_sizes, step):
    """Top-left corners and sides of all patches, in descriptor order.

    Parameters
    ----------
    shape : (int, int)
        ``(height, width)``.
    patch_sizes : sequence of int
    step : int

    Returns
    -------
    list of (y0 : (ny,) int64, x0 : (nx,) int64, size : int)
        One entry per patch size; the patches are the outer product of
        ``y0`` and ``x0`` in row-major order.

    Raises
    ------
    TypeError, ValueError
        For a bad shape, patch size or step.
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (height, width), got {shape!r}.")
    H = check_int("shape[0]", shape[0], low=0)
    W = check_int("shape[1]", shape[1], low=0)
    sizes = _check_patch_sizes(patch_sizes, 1)
    step = check_int("step", step, low=1)
    return [(_axis_grid(H, P, step), _axis_grid(W, P, step), P) for P in sizes]


def _layout(shape, grid, ncell):
    """Band maps and per-patch S indices for one cell subdivision."""
    H, W = shape
    edges_y, edges_x = [], []
    for y0, x0, P in grid:
        if y0.size == 0 or x0.size == 0:
            continue
        k = (np.arange(ncell + 1) * P) // ncell
        edges_y.append((y0[:, None] + k[None, :]).ravel())
        edges_x.append((x0[:, None] + k[None, :]).ravel())
    if not edges_y:
        return None
    ys = np.unique(np.concatenate(edges_y))
    xs = np.unique(np.concatenate(edges_x))

    def bands(coords, length):
        band = np.searchsorted(coords, np.arange(length), side="right") - 1
        band[(band < 0) | (band >= coords.size - 1)] = -1
        return band.astype(np.int64)

    per_size = []
    for y0, x0, P in grid:
        k = (np.arange(ncell + 1) * P) // ncell
        yidx = np.searchsorted(ys, y0[:, None] + k[None, :]).astype(np.int64)
        xidx = np.searchsorted(xs, x0[:, None] + k[None, :]).astype(np.int64)
        per_size.append((np.ascontiguousarray(yidx), np.ascontiguousarray(xidx)))
    return bands(ys, H), bands(xs, W), ys.size - 1, xs.size - 1, per_size


def _geometry(shape, grid):
    centers, sizes = [], []
    for y0, x0, P in grid:
        yy, xx = np.meshgrid(y0, x0, indexing="ij")
        c = np.empty((yy.size, 2), dtype=np.float32)
        c[:, 0] = xx.ravel() + P / 2.0
        c[:, 1] = yy.ravel() + P / 2.0
        centers.append(c)
        sizes.append(np.full(yy.size, P, dtype=np.float32))
    centers = np.ascontiguousarray(np.concatenate(centers)) if centers else np.zeros((0, 2), np.float32)
    sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.float32)
    return centers, sizes


def _row_offsets(grid):
    counts = [y0.size * x0.size for y0, x0, _ in grid]
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


# ------------------------------------------------------------- fill helpers

def _hog_table(image, grid, n_bins):
    """(summed-area table, per-size S indices) of the orientation votes, or None."""
    lay = _layout(image.shape, grid, HOG_CELLS)
    if lay is None:
        return None
    row_band, col_band, nrb, ncb, per_size = lay
    bands = _kernels.hog_band_sums(image, n_bins, row_band, col_band, nrb, ncb)
    return _kernels.cumulate_bands(bands), per_size


def _lbp_table(raw, grid, cells, lut, n_codes):
    """(summed-area table, per-size S indices) of the LBP code counts, or None."""
    lay = _layout(raw.shape, grid, cells)
    if lay is None:
        return None
    row_band, col_band, nrb, ncb, per_size = lay
    codes = _kernels.lbp_codes(raw, _LBP_RP, _LBP_CP, lut)
    count_dtype = np.int32 if raw.size < 2**31 - 1 else np.int64
    bands = _kernels.count_band_codes(codes, n_codes, row_band, col_band, nrb, ncb,
                                      np.zeros(0, dtype=count_dtype))
    return _kernels.cumulate_bands(bands), per_size


def _fill(grid, out, hog=None, lbp=None, clip=0.0):
    """Write the descriptors of every patch size from the tables given."""
    offsets = _row_offsets(grid)
    for k, ((y0, x0, P), r0) in enumerate(zip(grid, offsets)):
        if not (y0.size and x0.size):
            continue
        r0 = int(r0)
        min_total = HOG_MIN_MEAN_GRADIENT * P * P
        if hog is not None and lbp is not None:
            (yh, xh), (yl, xl) = hog[1][k], lbp[1][k]
            _kernels.hog_lbp_patches(hog[0], yh, xh, min_total, clip,
                                     lbp[0], yl, xl, 1.0 / P, out, r0)
        elif hog is not None:
            yh, xh = hog[1][k]
            _kernels.hog_patches(hog[0], yh, xh, min_total, clip, out, r0, 0)
        else:
            yl, xl = lbp[1][k]
            _kernels.lbp_patches(lbp[0], yl, xl, 1.0 / P, out, r0, 0)


def _lbp_input(image, raw):
    """float64 values the LBP codes are computed on (unscaled uint8 if given)."""
    return np.ascontiguousarray(raw if raw is not None else image, dtype=np.float64)


# ---------------------------------------------------------------- public API

def descriptor_dim(kind, **params):
    """Descriptor dimension ``d`` of ``extract_descriptors(image, kind, **params)``.

    Parameters
    ----------
    kind : str
        A key of :data:`DESCRIPTORS`.
    **params
        Options of any descriptor kind (``patch_sizes``, ``step``, ``n_bins``,
        ``clip``, ``cells``, ``method``); those that do not apply to ``kind``
        are ignored, so one preset dictionary serves every kind. Only
        ``n_bins``, ``cells`` and ``method`` change ``d``.

    Returns
    -------
    int
        ``16 * n_bins`` (HOG), ``cells**2 * n_codes`` (LBP) or their sum.

    Raises
    ------
    ValueError
        If ``kind`` or ``method`` is not a valid name or an option is out of range.
    TypeError
        If an option name is not one of any descriptor kind.
    """
    check_choice("kind", kind, DESCRIPTORS)
    known = {}
    for func in DESCRIPTORS.values():
        for name, p in inspect.signature(func).parameters.items():
            if name != "image":
                known.setdefault(name, p.default)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TypeError(
            f"descriptor_dim got unknown option(s) {unknown}; valid options: {list(known)}."
        )
    opts = {**known, **params}
    d = 0
    if "hog" in kind:
        d += HOG_CELLS * HOG_CELLS * check_int("n_bins", opts["n_bins"], low=2, high=64)
    if "lbp" in kind:
        cells, _, n_codes = _check_lbp_params(opts["cells"], opts["method"])
        d += cells * cells * n_codes
    return d


def dense_hog(image, patch_sizes=(16, 24, 32), step=8, n_bins=8, clip=0.2):
    """Dense multi-scale HOG descriptors (4 x 4 cells x ``n_bins`` orientations).

    Parameters
    ----------
    image : (H, W) array
        Grey image; uint8 is scaled to [0, 1], other numeric dtypes are used as
        they are (float32 stays float32, others become float64).
    patch_sizes : sequence of int
        Patch sides in pixels (each >= 4, no duplicates). Paper: 16, 24, 32.
    step : int
        Grid step in pixels (>= 1), the same for every size.
    n_bins : int
        Orientation bins over 360 degrees (2..64).
    clip : float or None
        Clip value between the two L2 normalisations (None: no clipping).

    Returns
    -------
    DenseDescriptors
        ``descriptors`` of shape ``(n, 16 * n_bins)``; ``n = 0`` when the image
        is smaller than every patch size.

    Raises
    ------
    TypeError
        If ``image`` is not numeric or an option has the wrong type.
    ValueError
        If ``image`` is not 2-D or holds NaN/Inf, or an option is out of range.

    Notes
    -----
    See the module docstring for the grid, the orientation convention and the
    low-contrast rule. Votes are bilinear in orientation only (no spatial
    interpolation, flat window), which is what lets every cell be read from a
    summed-area table.

    References
    ----------
    Lin et al., "Large-scale image classification: fast feature extraction and
    SVM training", CVPR 2011. Dalal and Triggs, "Histograms of oriented
    gradients for human detection", CVPR 2005. Vedaldi and Fulkerson, VLFeat
    dense SIFT (flat window).
    """
    img, _ = _check_image(image)
    sizes = _check_patch_sizes(patch_sizes, HOG_CELLS)
    step = check_int("step", step, low=1)
    n_bins, clip = _check_hog_params(n_bins, clip)
    grid = patch_grid(img.shape, sizes, step)
    centers, psizes = _geometry(img.shape, grid)
    out = np.empty((centers.shape[0], HOG_CELLS * HOG_CELLS * n_bins), dtype=np.float32)
    if out.shape[0]:
        _fill(grid, out, hog=_hog_table(img, grid, n_bins), clip=clip)
    return DenseDescriptors(out, centers, psizes, tuple(img.shape))


def dense_lbp(image, patch_sizes=(16, 24, 32), step=8, cells=2, method="nri_uniform"):
    """Dense multi-scale LBP descriptors (``cells x cells`` histograms of uniform codes).

    Parameters
    ----------
    image : (H, W) array
        Grey image (any numeric dtype; LBP codes only compare values).
    patch_sizes : sequence of int
        Patch sides in pixels (each >= ``cells``, no duplicates).
    step : int
        Grid step in pixels (>= 1).
    cells : int
        Spatial cells per patch side (1..16).
    method : {"nri_uniform", "uniform"}
        "nri_uniform": 59 non-rotation-invariant uniform codes;
        "uniform": 10 rotation-invariant uniform codes.

    Returns
    -------
    DenseDescriptors
        ``descriptors`` of shape ``(n, cells * cells * n_codes)``.

    Raises
    ------
    TypeError
        If ``image`` is not numeric or an option has the wrong type.
    ValueError
        If ``image`` is not 2-D or holds NaN/Inf, an option is out of range,
        or ``method`` is unknown.

    References
    ----------
    Ojala, Pietikainen and Maenpaa, "Multiresolution gray-scale and rotation
    invariant texture classification with local binary patterns", PAMI 2002.
    Lin et al., CVPR 2011.
    """
    cells, code, n_codes = _check_lbp_params(cells, method)
    img, raw = _check_image(image)
    sizes = _check_patch_sizes(patch_sizes, cells)
    step = check_int("step", step, low=1)
    grid = patch_grid(img.shape, sizes, step)
    centers, psizes = _geometry(img.shape, grid)
    out = np.empty((centers.shape[0], cells * cells * n_codes), dtype=np.float32)
    if out.shape[0]:
        _fill(grid, out, lbp=_lbp_table(_lbp_input(img, raw), grid, cells, code, n_codes))
    return DenseDescriptors(out, centers, psizes, tuple(img.shape))


def dense_hog_lbp(image, patch_sizes=(16, 24, 32), step=8, n_bins=8, clip=0.2,
                  cells=2, method="nri_uniform"):
    """HOG and LBP of the same patches, concatenated ``[hog | lbp]`` per patch.

    Each part is normalised on its own (as in :func:`dense_hog` and
    :func:`dense_lbp`), so the result equals
    ``np.hstack([dense_hog(...).descriptors, dense_lbp(...).descriptors])``.

    Parameters
    ----------
    image, patch_sizes, step, n_bins, clip
        As in :func:`dense_hog` (each patch size must be >= 4 and >= ``cells``).
    cells, method
        As in :func:`dense_lbp`.

    Returns
    -------
    DenseDescriptors
        ``descriptors`` of shape ``(n, 16 * n_bins + cells * cells * n_codes)``.

    Raises
    ------
    TypeError, ValueError
        As :func:`dense_hog` and :func:`dense_lbp`.

    References
    ----------
    Lin et al., CVPR 2011 (HOG and LBP descriptors).
    """
    n_bins, clip = _check_hog_params(n_bins, clip)
    cells, code, n_codes = _check_lbp_params(cells, method)
    img, raw = _check_image(image)
    sizes = _check_patch_sizes(patch_sizes, max(HOG_CELLS, cells))
    step = check_int("step", step, low=1)
    grid = patch_grid(img.shape, sizes, step)
    centers, psizes = _geometry(img.shape, grid)
    d_hog = HOG_CELLS * HOG_CELLS * n_bins
    out = np.empty((centers.shape[0], d_hog + cells * cells * n_codes), dtype=np.float32)
    if out.shape[0]:
        _fill(grid, out, hog=_hog_table(img, grid, n_bins), clip=clip,
              lbp=_lbp_table(_lbp_input(img, raw), grid, cells, code, n_codes))
    return DenseDescriptors(out, centers, psizes, tuple(img.shape))


def lbp_codes(image, method="nri_uniform"):
    """Per-pixel uniform LBP codes (P = 8, R = 1), equal to scikit-image's.

    Parameters
    ----------
    image : (H, W) array
        Any numeric dtype (compared as float64, unscaled).
    method : {"nri_uniform", "uniform"}

    Returns
    -------
    (H, W) uint8
        Same values as ``skimage.feature.local_binary_pattern(image, 8, 1, method)``.

    Raises
    ------
    TypeError, ValueError
        For a non-numeric, non-2-D or non-finite image or an unknown method.
    """
    code, _ = check_choice("method", method, LBP_METHODS)
    img, raw = _check_image(image)
    return _kernels.lbp_codes(_lbp_input(img, raw), _LBP_RP, _LBP_CP, code)


#: Descriptor kinds accepted by :func:`extract_descriptors`.
DESCRIPTORS = {
    "hog": dense_hog,
    "lbp": dense_lbp,
    "hog+lbp": dense_hog_lbp,
}


def extract_descriptors(image, kind, **params):
    """Dense descriptors of ``kind`` ("hog", "lbp" or "hog+lbp").

    Parameters
    ----------
    image : (H, W) array
    kind : str
        A key of :data:`DESCRIPTORS`.
    **params
        Keyword options of the chosen function (e.g. ``patch_sizes``, ``step``).

    Returns
    -------
    DenseDescriptors

    Raises
    ------
    ValueError
        If ``kind`` is unknown (the message lists the valid names), plus what
        the chosen function raises.
    TypeError
        If ``params`` holds an option the chosen function does not take (the
        message lists the ones it takes).
    """
    return _resolve_kind(kind, params)(image, **params)


def _resolve_kind(kind, params):
    """The function of ``kind``, after checking the option names in ``params``."""
    func = check_choice("kind", kind, DESCRIPTORS)
    valid = [p for p in inspect.signature(func).parameters if p != "image"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"kind={kind!r} does not take option(s) {unknown}; valid options: {valid}."
        )
    return func
