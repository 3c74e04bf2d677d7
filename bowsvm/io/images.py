"""Image files: reading them safely, THE one image path, folder trees and IDX files.

:func:`decode_image` (bytes -> decode -> EXIF orientation -> 8-bit with alpha over
white -> one resize filter -> grey float32) is the one path every stage uses: the
prepare stage stores its 8-bit image (:func:`normalize_image`, which never raises on
bad data but returns a reject reason), the codebook sample, extraction and predict
decode with it, so predict sees what training saw. :data:`IMAGE_EXTENSIONS` is the
one list of file suffixes taken for images in folders (``bowsvm predict``).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Suffixes (lower case) of the files ``bowsvm predict`` takes from a folder.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
    ".pgm", ".pbm", ".pnm", ".jfif", ".ico",
})
SPLIT_NAMES = ("train", "val", "test")
#: ``--layout`` values of :func:`scan_tree`.
LAYOUTS = ("auto", "split", "flat")
#: Default ``--max-pixels``: larger images are rejected before they are decoded.
DEFAULT_MAX_PIXELS = 100_000_000
#: Default ``--max-file-bytes``: larger files are rejected without being read.
DEFAULT_MAX_FILE_BYTES = 256 * 2**20
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


class UnusableFile(ValueError):
    """A path that is not read as an image: ``str(exc)`` is the reject reason."""


class ImageTooLarge(ValueError):
    """An image with more pixels than ``--max-pixels`` (a decompression bomb)."""

    def __init__(self, width: int, height: int, max_pixels: int, frame_pixels: int | None = None):
        self.width, self.height, self.max_pixels = int(width), int(height), int(max_pixels)
        if frame_pixels is None:
            msg = (f"decompression bomb: {width}x{height} = {width * height} pixels exceeds "
                   f"--max-pixels {max_pixels}")
        else:
            msg = (f"decompression bomb: a frame or tile of this {width}x{height} image has "
                   f"{frame_pixels} pixels, more than --max-pixels {max_pixels} allows")
        super().__init__(msg + "; raise --max-pixels if the image is genuine")


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
)


def _kind(mode: int) -> str:
    for test, name in _FILE_KINDS:
        if test(mode):
            return name
    return "a special file"


def _not_regular(path: str, mode: int) -> UnusableFile:
    if os.path.islink(path):
        return UnusableFile(f"not a regular file: a symlink to {os.readlink(path)!r}, "
                            f"which is {_kind(mode)}")
    return UnusableFile(f"not a regular file: {_kind(mode)}")


def _too_big(size: str, max_bytes: int) -> UnusableFile:
    return UnusableFile(f"file too large: {size} bytes exceeds --max-file-bytes {max_bytes}; "
                        f"raise --max-file-bytes if the file is genuine")


def read_image_file(path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """Read a regular file of at most ``max_bytes`` bytes; never block, never read more.

    Symlinks are followed; whatever they end at must be a regular file. The
    file is checked with ``os.stat`` before it is opened (a FIFO or device is
    never opened), opened with ``O_NONBLOCK`` and checked again with
    ``os.fstat`` (it may have been swapped in between), and at most
    ``max_bytes + 1`` bytes are read (a file may grow after the check).

    Parameters
    ----------
    path : str or Path
    max_bytes : int
        Largest accepted file size (``--max-file-bytes``).

    Returns
    -------
    bytes

    Raises
    ------
    UnusableFile
        (a ValueError) whose message is the reject reason: not a regular file
        (FIFO, device, socket, folder, or a symlink to one), broken symlink,
        over ``max_bytes``, or unreadable.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise UnusableFile(f"broken symlink: its target {os.readlink(path)!r} does not "
                               f"exist") from None
        raise UnusableFile("unreadable file: it vanished before it was read") from None
    except OSError as exc:
        raise UnusableFile(f"unreadable file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    if st.st_size > max_bytes:
        raise _too_big(str(st.st_size), max_bytes)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UnusableFile(f"unreadable file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for something else since the stat
            raise _not_regular(path, st.st_mode)
        chunks, left = [], max_bytes + 1
        while left > 0:
            b = os.read(fd, min(left, 1 << 22))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
    except OSError as exc:
        raise UnusableFile(f"unreadable file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise _too_big(f"more than {max_bytes}", max_bytes)
    return data


@contextmanager
def _pil_limit(value):
    """Set PIL's process-wide ``MAX_IMAGE_PIXELS`` inside the block (restored after)."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = value
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


@contextmanager
def open_image(raw: bytes, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Open encoded image bytes with the pixel count checked against ``max_pixels``.

    The header is read with PIL's own bomb check off; its size is checked here
    (so the error names ``--max-pixels`` and the image's size). Inside the
    block PIL's check is back on at ``max_pixels``, so a frame or tile larger
    than the header says (GIF, ICO, TIFF) still stops the decoder, and the
    ``DecompressionBombError`` becomes :class:`ImageTooLarge`.

    Yields
    ------
    PIL.Image.Image (not yet loaded)

    Raises
    ------
    ImageTooLarge
        If the image, or a frame of it, has more than ``max_pixels`` pixels.
    PIL.UnidentifiedImageError, OSError, ...
        Whatever PIL raises for bytes it cannot read.
    """
    from PIL import Image

    with _pil_limit(None):
        img = Image.open(io.BytesIO(raw))
    w, h = img.size
    if w * h > max_pixels:
        raise ImageTooLarge(w, h, max_pixels)
    try:
        # PIL raises above 2 * MAX_IMAGE_PIXELS (it only warns above 1x)
        with _pil_limit(max(1, max_pixels // 2)):
            yield img
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageTooLarge(w, h, max_pixels, int(m.group(1)) if m else None) from None


def _open_8bit(raw: bytes, max_pixels: int, size: list | None = None):
    """Steps 1-3 of the one image path; raises whatever PIL raises on bad bytes.

    ``size``, if given, receives the stored (width, height) once the header is read.
    """
    from PIL import ImageOps

    with open_image(raw, max_pixels) as img:
        if size is not None:
            size[:] = img.size
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_8bit(img)


def decode_8bit(data, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Decode image bytes to an oriented 8-bit PIL image (steps 1-3 of the image path).

    Decode with PIL (images of more than ``max_pixels`` pixels are refused
    before decoding, :func:`open_image`), apply the EXIF orientation, convert
    to 8-bit 'L' or 'RGB' with alpha composited over white (:func:`_to_8bit`).
    Multi-frame files keep their first frame.

    Parameters
    ----------
    data : bytes, bytearray or memoryview
    max_pixels : int

    Returns
    -------
    PIL.Image.Image, mode 'L' or 'RGB', both sides >= 1

    Raises
    ------
    TypeError
        If ``data`` is not bytes-like.
    ImageTooLarge
        (a ValueError) over ``max_pixels``.
    ValueError
        If ``data`` is not a decodable image.
    """
    from PIL import UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"data must be bytes (an encoded image), got {type(data).__name__}; "
            f"read the file in binary mode."
        )
    try:
        img = _open_8bit(bytes(data), max_pixels)
    except ImageTooLarge:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, EOFError,
            IndexError) as exc:
        raise ValueError(f"data ({len(data)} bytes) is not a decodable image: {exc}") from None
    if min(img.size) < 1:
        raise ValueError(f"data ({len(data)} bytes) is an image with a zero-length side "
                         f"({img.size[0]}x{img.size[1]}).")
    return img


def grey_pixels(img) -> np.ndarray:
    """Luminance of an 8-bit 'L' or 'RGB' PIL image as float32 in [0, 1] (step 5).

    The same arithmetic as :func:`bowsvm.features.to_gray` on the uint8 array
    (``/ 255`` in float32, then ``0.299 R + 0.587 G + 0.114 B`` summed in that
    order), so the two agree bit for bit (``tests/test_features.py`` checks it;
    io may not import features, hence the three lines here).

    Returns
    -------
    (H, W) float32, C-contiguous
    """
    if img.mode not in ("L", "RGB"):
        raise ValueError(f"grey_pixels needs an 8-bit 'L' or 'RGB' image, got mode {img.mode!r}; "
                         f"convert it with decode_8bit or array_image first.")
    f = np.asarray(img).astype(np.float32)
    f /= np.float32(255.0)
    if f.ndim == 3:
        w = _LUMA
        f = w[0] * f[:, :, 0] + w[1] * f[:, :, 1] + w[2] * f[:, :, 2]
    return np.ascontiguousarray(f, dtype=np.float32)


#: BT.601 luma weights (the values of ``bowsvm.features.LUMA_WEIGHTS``).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def decode_image(data, max_side=500, max_pixels=DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to a grey float32 image: THE image path of bowsvm.

    The prepare stage (which stores step 4's 8-bit image), the codebook
    sample, extraction and ``bowsvm predict`` all go through these steps, so
    predict sees exactly what training saw:

    1. decode with PIL, refusing more than ``max_pixels`` pixels before
       decoding (:func:`open_image`; first frame of multi-frame files);
    2. apply the EXIF orientation;
    3. convert to 8-bit 'L' or 'RGB' (16-bit scaled by 65535, palette and
       CMYK to RGB, alpha composited over white: :func:`_to_8bit`);
    4. downsize so the longer side is at most ``max_side``: PIL's Lanczos
       with ``reducing_gap=3.0`` (:func:`downsize`; never enlarged; each side
       rounded, at least 1 px);
    5. luminance, float32 in [0, 1] (:func:`grey_pixels`).

    An image prepared with ``--max-side M --format png`` and a preset of
    ``max_side`` M decodes to the same array as its original file (step 4 does
    nothing the second time). JPEG re-encoding (``--format jpeg``) or a second
    downsizing (prepare's ``--max-side`` above the preset's) is lossy and
    makes training see slightly different pixels than the original.

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
        than ``max_pixels`` pixels (:class:`ImageTooLarge`, a ValueError
        naming ``--max-pixels`` and the image's size).
    """
    from bowsvm._validation import check_int

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"data must be bytes (an encoded image), got {type(data).__name__}; "
            f"read the file in binary mode."
        )
    if max_side is not None:
        max_side = check_int("max_side", max_side, low=1)
    max_pixels = check_int("max_pixels", max_pixels, low=1)
    img = decode_8bit(data, max_pixels)
    if max_side is not None:
        img = downsize(img, max_side)
    return grey_pixels(img)


def array_image(arr):
    """An 8-bit 'L' or 'RGB' PIL image of a uint8 array (step 3 for pixels in memory).

    ``(H, W)`` and ``(H, W, 1)`` are grey, ``(H, W, 2)`` grey + alpha,
    ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA; alpha is composited over white as
    for files (:func:`_to_8bit`).

    Raises
    ------
    ValueError
        If ``arr`` is not uint8 of one of those shapes, or is empty.
    """
    from PIL import Image

    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))):
        raise ValueError(f"array_image needs a uint8 (H, W) or (H, W, 1..4) array, got "
                         f"{arr.dtype} of shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape}).")
    return _to_8bit(Image.fromarray(np.ascontiguousarray(arr)))


def normalize_image(raw: bytes, max_side: int = 500, max_pixels: int = DEFAULT_MAX_PIXELS,
                    fmt: str = "jpeg", quality: int = 90) -> Normalized:
    """Steps 1-4 of :func:`decode_image`, then re-encode: the prepare stage's per file.

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
        Images (or frames) with more pixels than this are rejected as
        decompression bombs before they are decoded (:func:`open_image`); the
        reason names ``--max-pixels`` and the image's size.
    fmt : {"jpeg", "png"}
        Output encoding.

    Returns
    -------
    Normalized
        With ``data`` set on success, else ``reason`` (never raises on bad data).
    """
    from PIL import UnidentifiedImageError

    if len(raw) == 0:
        return Normalized(reason="empty file (0 bytes)")
    size = [0, 0]
    try:
        img = _open_8bit(raw, max_pixels, size)
    except ImageTooLarge as exc:
        return Normalized(orig_width=exc.width, orig_height=exc.height, reason=str(exc))
    except UnidentifiedImageError:
        return Normalized(reason="not an image (format not recognised)")
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError) as exc:
        return Normalized(orig_width=size[0], orig_height=size[1],
                          reason=f"truncated or corrupt image: {type(exc).__name__}: {exc}")
    except Exception as exc:  # any other decoder failure must not stop the job
        return Normalized(orig_width=size[0], orig_height=size[1],
                          reason=f"undecodable image: {type(exc).__name__}: {exc}")
    w0, h0 = size
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
    """Shrink a PIL image so its longer side is <= ``max_side``: THE resize filter.

    PIL's Lanczos with ``reducing_gap=3.0``; each side ``round(side * scale)``,
    at least 1 px; an image already small enough is returned as is.
    """
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
    split: str | None  # None: outside a split folder of a split-layout tree


def _input_folder(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        what = "it does not exist" if not os.path.exists(root) else "it is a file"
        raise FileNotFoundError(
            f"--input {str(root)!r} is not a folder ({what}); pass the root of a "
            f"class-per-folder image tree.")
    return root


def detect_layout(root, layout: str = "auto") -> bool:
    """Decide whether a tree has a split level (``root/{train,val,test}/CLASS/...``).

    Only the top level is listed (cheap: run before Spark starts).

    Parameters
    ----------
    root : str or Path
    layout : {"auto", "split", "flat"}
        ``"auto"``: split when every top-level folder is one of train/val/test,
        flat (class folders at the top) when none is; a mix is refused.
        ``"split"`` and ``"flat"`` force the layout.

    Returns
    -------
    bool
        True for a split layout.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    ValueError
        If ``layout`` is not a valid name, or (``"auto"``) some but not all
        top-level folders are split names; the message names both groups.
    """
    from bowsvm._validation import check_choice

    check_choice("--layout", layout, {k: k for k in LAYOUTS})
    root = _input_folder(root)
    if layout != "auto":
        return layout == "split"
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    splits = [d for d in subdirs if d in SPLIT_NAMES]
    others = [d for d in subdirs if d not in SPLIT_NAMES]
    if splits and others:
        s_list = ", ".join(f"{d}/" for d in splits)
        o_list = ", ".join(f"{d}/" for d in others[:10]) + (
            f" and {len(others) - 10} more" if len(others) > 10 else "")
        raise ValueError(
            f"--input {str(root)!r} is ambiguous: the top-level folder(s) {s_list} are split "
            f"names but {o_list} are not, so it is neither a split tree "
            f"(only {', '.join(SPLIT_NAMES)} at the top) nor a flat class-per-folder tree. "
            f"Move {o_list} into a split folder (or out of the tree), or pass --layout split "
            f"(files outside {s_list} become rejects) or --layout flat (every top-level "
            f"folder, {s_list} included, is a class).")
    return bool(splits)


def scan_tree(root, layout: str = "auto") -> tuple[list[SourceFile], bool]:
    """List every file of an ImageNet-style tree.

    The tree is ``root/CLASS/.../file`` (flat) or, with a split level,
    ``root/{train,val,test}/CLASS/.../file``; :func:`detect_layout` decides
    which (and refuses a mix of split and other folders unless ``layout``
    forces one). Files outside a class folder get ``class_name=None``, files
    outside a split folder of a split tree ``split=None`` (both end up in the
    rejects table). Every directory entry that is not a folder is listed,
    whatever it is (FIFOs, devices, broken symlinks: the readers reject them).
    Hidden files and folders (starting with '.') are ignored; symlinked
    folders are not followed.

    Returns
    -------
    files : list of SourceFile, sorted by relative path
    has_split_level : bool

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    ValueError
        If the layout is ambiguous (see :func:`detect_layout`).
    """
    has_split = detect_layout(root, layout)
    root = Path(root)
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
                split = "train" if not parts else (parts[0] if parts[0] in SPLIT_NAMES else None)
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
