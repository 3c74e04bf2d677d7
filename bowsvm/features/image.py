"""Image decoding and grey conversion ahead of the dense descriptors.

Grey is luminance with the ITU-R BT.601 weights ``0.299 R + 0.587 G +
0.114 B`` (the weights of PIL's ``convert("L")`` and of JPEG's Y channel), as
float32 in [0, 1].
"""

from __future__ import annotations

import numpy as np

from bowsvm._validation import check_array, check_int
from bowsvm.io.images import DEFAULT_MAX_PIXELS, ImageTooLarge, open_image

__all__ = ["LUMA_WEIGHTS", "to_gray", "decode_image"]

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


def _pil_to_array(img):
    """A PIL image in any mode -> (grey or RGB) numpy array with its scale."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.float32) / np.float32(65535.0)
    if mode == "I":
        a = np.asarray(img, dtype=np.float32)
        return a / np.float32(65535.0 if a.max(initial=0) > 255 else 255.0)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode in ("1", "LA", "La"):
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))


def decode_image(data, max_side=500, max_pixels=DEFAULT_MAX_PIXELS):
    """Decode image bytes to a grey float32 image, downsized to ``max_side``.

    Steps: decode with PIL; apply the EXIF orientation; convert to grey
    (:func:`to_gray`; alpha ignored, 16-bit images scaled by 65535; JPEGs are
    decoded straight to their luma channel Y, the same BT.601 weights); if the
    longer side exceeds ``max_side``, resize with PIL's antialiased Lanczos
    filter so that the longer side is ``max_side`` (aspect ratio kept, each
    side rounded, at least 1 px) and clip to [0, 1]. Images are never
    upsized. Large JPEGs are first reduced in the decoder by a power of two
    (``Image.draft``, DCT-domain scaling) to a size still at least the target.

    Parameters
    ----------
    data : bytes, bytearray or memoryview
        Encoded image (any format PIL reads: JPEG, PNG, ...).
    max_side : int or None
        Bound on the longer side in pixels (>= 1); None keeps the full size.
    max_pixels : int
        Images (or frames) with more pixels are refused before they are
        decoded (decompression bombs; the prepare stage's ``--max-pixels``).

    Returns
    -------
    (H, W) float32 in [0, 1], C-contiguous

    Raises
    ------
    TypeError
        If ``data`` is not bytes-like or ``max_side`` not an integer.
    ValueError
        If ``data`` cannot be decoded, ``max_side < 1``, or the image has more
        than ``max_pixels`` pixels (:class:`bowsvm.io.images.ImageTooLarge`,
        a ValueError naming ``--max-pixels`` and the image's size).
    """
    import struct

    from PIL import Image, ImageOps, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"data must be bytes (an encoded image), got {type(data).__name__}; "
            f"read the file in binary mode."
        )
    if max_side is not None:
        max_side = check_int("max_side", max_side, low=1)
    max_pixels = check_int("max_pixels", max_pixels, low=1)
    try:
        with open_image(bytes(data), max_pixels) as img:
            w0, h0 = img.size
            target = None
            if max_side is not None and max(w0, h0) > max_side:
                s = max_side / max(w0, h0)
                target = (max(1, round(w0 * s)), max(1, round(h0 * s)))
            if img.format == "JPEG" and img.mode in ("L", "RGB", "YCbCr"):
                # decode the luma (Y) channel only, reduced by a power of two when
                # that still leaves at least the target size
                img.draft("L", target or (w0, h0))
            img.load()
            transposed = ImageOps.exif_transpose(img)
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, EOFError,
            IndexError) as exc:
        raise ValueError(f"data ({len(data)} bytes) is not a decodable image: {exc}") from None
    if target is not None and transposed.size != img.size:
        target = (target[1], target[0])
    gray = to_gray(_pil_to_array(transposed))
    if target is not None and (gray.shape[1], gray.shape[0]) != target:
        resized = Image.fromarray(gray).resize(target, Image.Resampling.LANCZOS)
        gray = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return np.ascontiguousarray(gray, dtype=np.float32)
