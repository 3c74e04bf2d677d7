"""Grey conversion of pixel arrays ahead of the dense descriptors (pure array math).

Image files are decoded by :func:`bowsvm.io.images.decode_image` (the one image
path, which applies the same luma arithmetic to its 8-bit images). Grey is
luminance with the ITU-R BT.601 weights ``0.299 R + 0.587 G + 0.114 B`` (the
weights of PIL's ``convert("L")`` and of JPEG's Y channel), as float32 in [0, 1].
"""

from __future__ import annotations

import numpy as np

from bowsvm._validation import check_array

__all__ = ["LUMA_WEIGHTS", "to_gray"]

#: RGB -> grey weights (ITU-R BT.601 luma).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_INT_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def to_gray(image):
    """Grey float32 image in [0, 1] from a grey, RGB or RGBA array.

    Parameters
    ----------
    image : (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4) array
        uint8 is divided by 255, uint16 by 65535, bool becomes 0/1; other
        numeric dtypes (floats assumed already in [0, 1]) are cast unscaled.
        3 or 4 channels are RGB(A): luminance with :data:`LUMA_WEIGHTS`,
        alpha ignored; 1 or 2 channels are grey (plus alpha, ignored).

    Returns
    -------
    (H, W) float32, C-contiguous

    Raises
    ------
    TypeError
        If ``image`` is not numeric.
    ValueError
        If ``image`` has another shape, or holds NaN/Inf.
    """
    arr = np.asarray(image)
    scale = _INT_SCALE.get(arr.dtype)
    arr = check_array("image", arr, dtypes=None)
    if arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4):
        channels = arr.shape[2]
    elif arr.ndim == 2:
        channels = 0
    else:
        raise ValueError(
            f"image must be (H, W) grey or (H, W, C) with C in 1..4 channels, got "
            f"shape {arr.shape}; pass a grey, RGB or RGBA image."
        )
    f = arr.astype(np.float32)
    if arr.dtype.kind == "f" and not np.isfinite(f).all():
        raise ValueError("image contains NaN or Inf (after conversion to float32); "
                         "clean the input first.")
    if scale is not None:
        f /= np.float32(scale)
    if channels == 0:
        gray = f
    elif channels <= 2:
        gray = f[:, :, 0]
    else:
        # explicit sum (not a matmul) so the result does not depend on the memory
        # layout or on a BLAS: RGB and RGBA give the same bits
        w = LUMA_WEIGHTS
        gray = w[0] * f[:, :, 0] + w[1] * f[:, :, 1] + w[2] * f[:, :, 2]
    return np.ascontiguousarray(gray, dtype=np.float32)
