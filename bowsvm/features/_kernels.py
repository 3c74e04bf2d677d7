"""numba kernels of the dense descriptors: arrays in, arrays out, no I/O.

The public, validated API is in :mod:`bowsvm.features.dense`. Every kernel
here has a slow twin in ``tests/naive.py``.

Layout shared by the kernels
----------------------------
A *grid-sampled summed-area table* ``S`` of shape ``(len(ys), len(xs), C)``
holds, for every pair of cell-edge coordinates ``(ys[a], xs[b])`` that some
patch cell uses, the per-channel sum over the pixels ``ys[0] <= y < ys[a]``,
``xs[0] <= x < xs[b]``. It is the ordinary integral image of the channel maps
sampled at the grid lines only, so a cell sum is four look-ups whatever the
patch size, but building it touches each pixel once (one or two additions)
instead of ``C`` times. Pixels are assigned to *bands*: ``row_band[y] = a``
when ``ys[a] <= y < ys[a + 1]`` (``-1`` outside ``[ys[0], ys[-1])``), likewise
``col_band``; the per-band sums ``B[a, b, c]`` are then cumulated into ``S``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "fast_atan2",
    "hog_band_sums",
    "lbp_codes",
    "count_band_codes",
    "cumulate_bands",
    "hog_patches",
    "lbp_patches",
    "hog_lbp_patches",
]

_TWO_PI = 2.0 * math.pi


# atan(a) ~= a * poly(a * a) on [0, 1]; max error 3.8e-8 rad (below float32
# atan2's own), fitted once by iteratively reweighted least squares.
_ATAN_C0 = 0.9999993356026663
_ATAN_C1 = -0.33329860828576624
_ATAN_C2 = 0.19946565878547676
_ATAN_C3 = -0.13908629892447255
_ATAN_C4 = 0.09642196913452736
_ATAN_C5 = -0.05591230920877791
_ATAN_C6 = 0.021862939900529437
_ATAN_C7 = -0.004054561082079233

#: The one place fast-math flags are set: reassociation only (lets LLVM
#: vectorise the sums of the normalisation loops; results stay deterministic
#: for a given build). Never used by the LBP code kernel, which must stay
#: bit-identical to scikit-image.
FASTMATH = {"reassoc", "nsz"}


@njit(cache=True, nogil=True, inline="always")
def fast_atan2(y, x):
    """``atan2(y, x)`` in ``[-pi, pi]`` to 4e-8 rad (float64); ``(0, 0) -> 0``.

    Octant reduction and a degree-15 odd polynomial, written with selects
    only so that loops calling it vectorise.
    """
    ax = abs(x)
    ay = abs(y)
    mx = max(ax, ay)
    mn = min(ax, ay)
    a = mn / mx if mx > 0.0 else 0.0
    s = a * a
    p = _ATAN_C7
    p = p * s + _ATAN_C6
    p = p * s + _ATAN_C5
    p = p * s + _ATAN_C4
    p = p * s + _ATAN_C3
    p = p * s + _ATAN_C2
    p = p * s + _ATAN_C1
    p = p * s + _ATAN_C0
    r = a * p
    r = 0.5 * math.pi - r if ay > ax else r
    r = math.pi - r if x < 0 else r
    return -r if y < 0 else r


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def hog_band_sums(image, n_bins, row_band, col_band, n_row_bands, n_col_bands):
    """Gradient orientation votes summed per (row band, column band).

    Gradients are centred differences ``I[y, x+1] - I[y, x-1]`` and
    ``I[y+1, x] - I[y-1, x]``, set to 0 on the first/last column (x) and the
    first/last row (y), as in ``skimage.feature.hog``. The orientation
    ``atan2(gy, gx)`` (y pointing down; :func:`fast_atan2`) over
    ``[0, 2 pi)`` is split linearly between the two nearest bins (bin ``b``
    centred on ``2 pi b / n_bins``), weighted by the gradient magnitude.
    Each row is done in two passes: magnitude and bin position (vectorised),
    then the votes (scattered into the row's band).

    Parameters
    ----------
    image : (H, W) float32 or float64, C-contiguous
    n_bins : int
    row_band : (H,) int64, band of each row or -1
    col_band : (W,) int64, band of each column or -1
    n_row_bands, n_col_bands : int

    Returns
    -------
    (n_row_bands, n_col_bands, n_bins) float64
    """
    H, W = image.shape
    out = np.zeros((n_row_bands, n_col_bands, n_bins), dtype=np.float64)
    scale = n_bins / _TWO_PI
    mag = np.zeros(W, dtype=np.float64)
    pos = np.zeros(W, dtype=np.float64)
    for y in range(H):
        rb = row_band[y]
        if rb < 0:
            continue
        # rows above / below; on the first / last row both are the row itself,
        # so gy is exactly 0 there. Slices keep every index non-negative, which
        # lets LLVM vectorise the loops.
        row = image[y]
        up = image[y - 1] if 0 < y < H - 1 else row
        down = image[y + 1] if 0 < y < H - 1 else row
        for x in (0, W - 1):  # gx = 0 on the first / last column
            gy = float(down[x]) - float(up[x])
            mag[x] = abs(gy)
            t = fast_atan2(gy, 0.0) * scale
            pos[x] = t + n_bins if t < 0 else t
        if W > 2:
            left = row[:W - 2]
            right = row[2:]
            up_in = up[1:W - 1]
            down_in = down[1:W - 1]
            mag_in = mag[1:W - 1]
            pos_in = pos[1:W - 1]
            for x in range(W - 2):
                gx = float(right[x]) - float(left[x])
                gy = float(down_in[x]) - float(up_in[x])
                mag_in[x] = math.sqrt(gx * gx + gy * gy)
                t = fast_atan2(gy, gx) * scale
                pos_in[x] = t + n_bins if t < 0 else t
        for x in range(W):
            cb = col_band[x]
            m = mag[x]
            if cb < 0 or m == 0.0:
                continue
            t = pos[x]
            b0 = int(t)
            f = t - b0
            if b0 >= n_bins:
                b0 -= n_bins
            b1 = b0 + 1
            if b1 == n_bins:
                b1 = 0
            out[rb, cb, b0] += m * (1.0 - f)
            out[rb, cb, b1] += m * f
    return out


@njit(cache=True, nogil=True, inline="always")
def _lbp_neighbour(image, H, W, r0, r1, c0, c1, fr, fc):
    """skimage's bilinear_interpolation (mode 'C', cval 0), same operation order."""
    v00 = 0.0
    v01 = 0.0
    v10 = 0.0
    v11 = 0.0
    if 0 <= r0 < H:
        if 0 <= c0 < W:
            v00 = image[r0, c0]
        if 0 <= c1 < W:
            v01 = image[r0, c1]
    if 0 <= r1 < H:
        if 0 <= c0 < W:
            v10 = image[r1, c0]
        if 0 <= c1 < W:
            v11 = image[r1, c1]
    top = (1 - fc) * v00 + fc * v01
    bottom = (1 - fc) * v10 + fc * v11
    return (1 - fr) * top + fr * bottom


@njit(cache=True, nogil=True)
def lbp_codes(image, rp, cp, lut):
    """LBP codes of every pixel, bit-identical to scikit-image.

    Same arithmetic as ``skimage.feature.local_binary_pattern`` (P
    neighbours at offsets ``(rp[i], cp[i])``, bilinear interpolation with
    zero outside the image, ``neighbour - centre >= 0`` sets bit ``i``); the
    P-bit pattern is then mapped through ``lut``. Interior pixels take a
    branch-free path with the same operations in the same order.

    Parameters
    ----------
    image : (H, W) float64, C-contiguous
    rp, cp : (P,) float64 neighbour offsets (rows, columns), P <= 16,
        each in [-1, 1]
    lut : (2**P,) uint8, pattern -> code

    Returns
    -------
    (H, W) uint8
    """
    H, W = image.shape
    P = rp.shape[0]
    out = np.empty((H, W), dtype=np.uint8)
    # per-row / per-column interpolation tables (exactly skimage's numbers)
    minr = np.empty((P, H), dtype=np.int64)
    maxr = np.empty((P, H), dtype=np.int64)
    dr = np.empty((P, H), dtype=np.float64)
    minc = np.empty((P, W), dtype=np.int64)
    maxc = np.empty((P, W), dtype=np.int64)
    dc = np.empty((P, W), dtype=np.float64)
    for i in range(P):
        for r in range(H):
            rr = r + rp[i]
            lo = math.floor(rr)
            minr[i, r] = int(lo)
            maxr[i, r] = int(math.ceil(rr))
            dr[i, r] = rr - lo
        for c in range(W):
            cc = c + cp[i]
            lo = math.floor(cc)
            minc[i, c] = int(lo)
            maxc[i, c] = int(math.ceil(cc))
            dc[i, c] = cc - lo
    # neighbours at an integer column offset for every interior column (dc == 0)
    int_col = np.zeros(P, dtype=np.bool_)
    for i in range(P):
        zero = True
        for c in range(1, W - 1):
            if dc[i, c] != 0.0:
                zero = False
        int_col[i] = zero
    pat = np.zeros(W, dtype=np.int32)
    n = W - 2  # interior columns 1 .. W-2
    all_cols = np.arange(W)
    edge_cols = np.array([0, W - 1])
    for r in range(H):
        pat[:] = 0
        interior = 0 < r < H - 1 and W > 2
        if interior:
            # interior columns: all four taps inside the image at constant
            # offsets; slices with non-negative indices let LLVM vectorise
            centre = image[r, 1:1 + n]
            frac = dc[:, 1:1 + n]
            acc = pat[1:1 + n]
            for i in range(P):
                or0 = minr[i, r] - r
                or1 = maxr[i, r] - r
                oc0 = minc[i, 1] - 1
                oc1 = maxc[i, 1] - 1
                fr = dr[i, r]
                bit = np.int32(1 << i)
                a00 = image[r + or0, 1 + oc0:1 + oc0 + n]
                if fr == 0.0 and int_col[i]:
                    # integer offset: skimage's (1 - 0) * a + 0 * b is exactly a
                    for c in range(n):
                        acc[c] += bit * (a00[c] - centre[c] >= 0)
                    continue
                a01 = image[r + or0, 1 + oc1:1 + oc1 + n]
                a10 = image[r + or1, 1 + oc0:1 + oc0 + n]
                a11 = image[r + or1, 1 + oc1:1 + oc1 + n]
                fcs = frac[i]
                for c in range(n):
                    fc = fcs[c]
                    top = (1 - fc) * a00[c] + fc * a01[c]
                    bottom = (1 - fc) * a10[c] + fc * a11[c]
                    value = (1 - fr) * top + fr * bottom
                    acc[c] += bit * (value - centre[c] >= 0)
        cols = edge_cols if interior else all_cols  # the generic path for the rest
        for c in cols:
            for i in range(P):
                value = _lbp_neighbour(image, H, W, minr[i, r], maxr[i, r],
                                       minc[i, c], maxc[i, c], dr[i, r], dc[i, c])
                pat[c] += (1 << i) * (value - image[r, c] >= 0)
        for c in range(W):
            out[r, c] = lut[pat[c]]
    return out


@njit(cache=True, nogil=True)
def count_band_codes(codes, n_codes, row_band, col_band, n_row_bands, n_col_bands, dtype_like):
    """Histogram of integer codes per (row band, column band).

    Returns
    -------
    (n_row_bands, n_col_bands, n_codes) array of ``dtype_like.dtype``
    """
    H, W = codes.shape
    out = np.zeros((n_row_bands, n_col_bands, n_codes), dtype=dtype_like.dtype)
    for y in range(H):
        rb = row_band[y]
        if rb < 0:
            continue
        for x in range(W):
            cb = col_band[x]
            if cb < 0:
                continue
            out[rb, cb, codes[y, x]] += 1
    return out


@njit(cache=True, nogil=True)
def cumulate_bands(bands):
    """Summed-area table over band sums.

    Parameters
    ----------
    bands : (A, B, C) array

    Returns
    -------
    (A + 1, B + 1, C) array, ``S[a, b] = bands[:a, :b].sum((0, 1))``.
    """
    A, B, C = bands.shape
    S = np.zeros((A + 1, B + 1, C), dtype=bands.dtype)
    row = np.zeros(C, dtype=bands.dtype)
    for a in range(A):
        row[:] = 0
        for b in range(B):
            for c in range(C):
                row[c] += bands[a, b, c]
                S[a + 1, b + 1, c] = S[a, b + 1, c] + row[c]
    return S


@njit(cache=True, nogil=True, inline="always")
def _cell_sums(S, yidx, xidx, i, j, ncell, v):
    C = S.shape[2]
    k = 0
    for ci in range(ncell):
        y0 = yidx[i, ci]
        y1 = yidx[i, ci + 1]
        for cj in range(ncell):
            x0 = xidx[j, cj]
            x1 = xidx[j, cj + 1]
            s11 = S[y1, x1]
            s01 = S[y0, x1]
            s10 = S[y1, x0]
            s00 = S[y0, x0]
            dst = v[k:k + C]
            for c in range(C):
                dst[c] = s11[c] - s01[c] - s10[c] + s00[c]
            k += C


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def _hog_one(S, yidx, xidx, i, j, min_total, clip, v, out, row, col0):
    """One HOG descriptor: cell sums, low-contrast rule, L2 / clip / L2."""
    ncell = yidx.shape[1] - 1
    d = v.shape[0]
    _cell_sums(S, yidx, xidx, i, j, ncell, v)
    total = 0.0
    for k in range(d):
        x = max(v[k], 0.0)  # a float64 box sum of zeros can round to -1e-17
        v[k] = x
        total += x
    dst = out[row, col0:col0 + d]
    if total < min_total or total <= 0.0:
        dst[:] = 0.0
        return
    ss = 0.0
    for k in range(d):
        ss += v[k] * v[k]
    inv = 1.0 / math.sqrt(ss)
    if clip > 0:
        ss = 0.0
        for k in range(d):
            x = min(v[k] * inv, clip)
            v[k] = x
            ss += x * x
        inv = 1.0 / math.sqrt(ss)
    for k in range(d):
        dst[k] = v[k] * inv


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH)
def _lbp_one(S, yidx, xidx, i, j, inv, out, row, col0):
    """One LBP descriptor: sqrt of the cell counts times ``inv`` (= 1 / P).

    The cell-sum loop is ``_cell_sums`` with the square root fused in: calling
    ``_cell_sums`` and then a separate sqrt pass measured 5-10% slower per image.
    """
    ncell = yidx.shape[1] - 1
    C = S.shape[2]
    k = col0
    for ci in range(ncell):
        y0 = yidx[i, ci]
        y1 = yidx[i, ci + 1]
        for cj in range(ncell):
            x0 = xidx[j, cj]
            x1 = xidx[j, cj + 1]
            s11 = S[y1, x1]
            s01 = S[y0, x1]
            s10 = S[y1, x0]
            s00 = S[y0, x0]
            dst = out[row, k:k + C]
            for c in range(C):
                dst[c] = math.sqrt(np.float32(s11[c] - s01[c] - s10[c] + s00[c])) * inv
            k += C


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def hog_patches(S, yidx, xidx, min_total, clip, out, row0, col0):
    """HOG descriptors of a grid of patches from a summed-area table.

    Parameters
    ----------
    S : (A, B, n_bins) float64 summed-area table of orientation votes
    yidx : (ny, ncell + 1) int64, S row index of each patch row's cell edges
    xidx : (nx, ncell + 1) int64, S column index of each patch column's cell edges
    min_total : float
        Patches whose summed gradient magnitude is below this get a zero
        descriptor.
    clip : float
        Clip value after the first L2 normalisation (<= 0: no clipping).
    out : (n, >= col0 + ncell**2 * n_bins) float32
        Patch ``(i, j)`` goes to row ``row0 + i * nx + j``, columns from ``col0``.
    """
    ny = yidx.shape[0]
    nx = xidx.shape[0]
    ncell = yidx.shape[1] - 1
    v = np.empty(ncell * ncell * S.shape[2], dtype=np.float64)
    for i in range(ny):
        for j in range(nx):
            _hog_one(S, yidx, xidx, i, j, min_total, clip, v, out, row0 + i * nx + j, col0)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def lbp_patches(S, yidx, xidx, inv_norm, out, row0, col0):
    """LBP descriptors (square root of cell code counts, then L2) of a grid of patches.

    Same arguments as :func:`hog_patches`, with ``S`` the integer summed-area
    table of one-hot code counts. Every pixel of a patch has one code, so the
    squared L2 norm of the square-rooted counts is the patch area ``P * P``
    and ``inv_norm = 1 / P`` normalises.
    """
    ny = yidx.shape[0]
    nx = xidx.shape[0]
    inv = np.float32(inv_norm)
    for i in range(ny):
        for j in range(nx):
            _lbp_one(S, yidx, xidx, i, j, inv, out, row0 + i * nx + j, col0)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def hog_lbp_patches(Sh, yh, xh, min_total, clip, Sl, yl, xl, inv_norm, out, row0):
    """HOG (columns ``0 .. d_hog``) then LBP of each patch, one row at a time.

    Same as :func:`hog_patches` followed by :func:`lbp_patches` with
    ``col0 = d_hog``, but each output row is written once (better for the
    cache than two passes over a wide output).
    """
    ny = yh.shape[0]
    nx = xh.shape[0]
    ncell = yh.shape[1] - 1
    d_hog = ncell * ncell * Sh.shape[2]
    v = np.empty(d_hog, dtype=np.float64)
    inv = np.float32(inv_norm)
    for i in range(ny):
        for j in range(nx):
            row = row0 + i * nx + j
            _hog_one(Sh, yh, xh, i, j, min_total, clip, v, out, row, 0)
            _lbp_one(Sl, yl, xl, i, j, inv, out, row, d_hog)
