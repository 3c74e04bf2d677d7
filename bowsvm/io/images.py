"""Image ingest helpers: decode anything a user may have, re-encode it, or say why not.

Pure functions over bytes and arrays; the Spark job in ``jobs/prepare_images.py``
calls them inside partitions. Nothing here raises on bad image data:
:func:`normalize_image` returns either an encoded image or a reject reason.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
    ".pgm", ".pbm", ".pnm", ".jfif", ".ico",
})
SPLIT_NAMES = ("train", "val", "test")
OUTPUT_FORMATS = {"jpeg": "JPEG", "png": "PNG"}

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@dataclass(frozen=True)
class Normalized:
    """Result of :func:`normalize_image`: either ``data`` or ``reason`` is set."""

    data: bytes | None = None
    orig_width: int = 0
    orig_height: int = 0
    width: int = 0
    height: int = 0
    reason: str | None = None


def normalize_image(raw: bytes, max_side: int = 500, max_pixels: int = 100_000_000,
                    fmt: str = "jpeg", quality: int = 90) -> Normalized:
    """Decode image bytes, fix orientation and mode, downsize, re-encode.

    - EXIF orientation is applied (``ImageOps.exif_transpose``).
    - CMYK, 16-bit, palette, alpha and 1-bit images are converted to 8-bit RGB
      or L; alpha is composited over white.
    - The longer side is reduced to at most ``max_side`` (never enlarged).
    - Multi-frame files (GIF, TIFF) keep their first frame.

    Parameters
    ----------
    raw : bytes
        The file's content.
    max_side : int
        Longest side after downsizing, in pixels.
    max_pixels : int
        Images with more pixels than this are rejected as decompression bombs
        before they are decoded.
    fmt : {"jpeg", "png"}
        Output encoding.

    Returns
    -------
    Normalized
        With ``data`` set on success, else ``reason`` (never raises on bad data).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(raw) == 0:
        return Normalized(reason="empty file (0 bytes)")
    old_limit = Image.MAX_IMAGE_PIXELS  # restored below: PIL's limit is process-wide
    try:
        with warnings.catch_warnings():
            # Our own check below rejects > max_pixels with the size known; PIL's
            # error (at twice its limit) is the backstop for absurd headers.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            img = Image.open(io.BytesIO(raw))
            w0, h0 = img.size
            if w0 * h0 > max_pixels:
                return Normalized(orig_width=w0, orig_height=h0, reason=(
                    f"decompression bomb: {w0}x{h0} = {w0 * h0} pixels exceeds "
                    f"--max-pixels {max_pixels}"))
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_8bit(img)
    except UnidentifiedImageError:
        return Normalized(reason="not an image (format not recognised)")
    except Image.DecompressionBombError as exc:
        return Normalized(reason=f"decompression bomb: {exc}")
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError) as exc:
        return Normalized(reason=f"truncated or corrupt image: {type(exc).__name__}: {exc}")
    except Exception as exc:  # any other decoder failure must not stop the job
        return Normalized(reason=f"undecodable image: {type(exc).__name__}: {exc}")
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    if min(img.size) < 1:
        return Normalized(reason="image has a zero-length side")
    img = downsize(img, max_side)
    out = io.BytesIO()
    pil_fmt = OUTPUT_FORMATS[fmt]
    if pil_fmt == "JPEG":
        img.save(out, format="JPEG", quality=quality)
    else:
        img.save(out, format="PNG", optimize=False)
    return Normalized(data=out.getvalue(), orig_width=w0, orig_height=h0,
                      width=img.size[0], height=img.size[1])


def _to_8bit(img):
    """Convert any PIL mode to 8-bit 'L' or 'RGB' (alpha over white)."""
    from PIL import Image

    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode in ("1",):
        return img.convert("L")
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L")
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def downsize(img, max_side: int):
    """Shrink a PIL image so its longer side is <= ``max_side`` (Lanczos)."""
    from PIL import Image

    w, h = img.size
    if max(w, h) <= max_side:
        return img
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.LANCZOS, reducing_gap=3.0)


# ---------------------------------------------------------------------------
# Folder trees


@dataclass(frozen=True)
class SourceFile:
    path: str          # absolute path
    rel: str           # path relative to the root (the image id)
    class_name: str | None
    split: str


def scan_tree(root) -> tuple[list[SourceFile], bool]:
    """List every file of an ImageNet-style tree.

    The tree is ``root/CLASS/.../file`` or, with a split level,
    ``root/{train,val,test}/CLASS/.../file``. A split level is recognised when
    every sub-folder of ``root`` is one of train/val/test. Files outside a class
    folder get ``class_name=None`` (they end up in the rejects table). Hidden
    files and folders (starting with '.') are ignored.

    Returns
    -------
    files : list of SourceFile, sorted by relative path
    has_split_level : bool

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--input {str(root)!r} is not a folder; pass the root of a class-per-folder image tree.")
    subdirs = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    has_split = bool(subdirs) and all(d in SPLIT_NAMES for d in subdirs)
    files: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        parts = rel_dir.parts
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            rel = str(rel_dir / fn) if parts else fn
            if has_split:
                split = parts[0] if parts else "train"
                cls = parts[1] if len(parts) >= 2 else None
            else:
                split = "train"
                cls = parts[0] if parts else None
            files.append(SourceFile(str(Path(dirpath) / fn), rel, cls, split))
    files.sort(key=lambda f: f.rel)
    return files, has_split


# ---------------------------------------------------------------------------
# IDX files (MNIST / Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into an array.

    Raises
    ------
    ValueError
        If the file is not a valid IDX file (bad magic, type code or size).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number); pass the *-idx?-ubyte[.gz] files.")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{str(path)!r}: unknown IDX type code 0x{code:02x}.")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(
            f"{str(path)!r}: IDX header says shape {dims} ({expected} bytes) but the file holds "
            f"{len(body)} bytes; the file is truncated or corrupt.")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def find_idx_pair(folder, prefix: str) -> tuple[Path, Path]:
    """Locate ``PREFIX-images-idx3-ubyte[.gz]`` and ``PREFIX-labels-idx1-ubyte[.gz]``.

    Raises
    ------
    FileNotFoundError
        If either file is missing.
    """
    folder = Path(folder)
    out = []
    for kind, nd in (("images", 3), ("labels", 1)):
        for name in (f"{prefix}-{kind}-idx{nd}-ubyte.gz", f"{prefix}-{kind}-idx{nd}-ubyte",
                     f"{prefix}-{kind}.idx{nd}-ubyte"):
            if (folder / name).is_file():
                out.append(folder / name)
                break
        else:
            raise FileNotFoundError(
                f"{str(folder)!r} has no {prefix}-{kind}-idx{nd}-ubyte[.gz]; pass the folder of the "
                f"Fashion-MNIST IDX files (Debian: /usr/share/datasets/fashion-mnist).")
    return out[0], out[1]


def load_idx_dataset(folder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the train and t10k IDX pairs of an (Fashion-)MNIST folder.

    Returns ``{"train": (images, labels), "test": (images, labels)}``.

    Raises
    ------
    ValueError
        If image and label counts differ.
    """
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ip, lp = find_idx_pair(folder, prefix)
        images, labels = read_idx(ip), read_idx(lp)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{str(ip)!r} and {str(lp)!r} do not match: images {images.shape}, labels {labels.shape}.")
        out[split] = (images, labels.astype(np.int64))
    return out


def encode_gray_png(arr: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 array (lossless)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()
