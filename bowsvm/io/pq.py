"""The PQ codebook of a product-quantized feature set: its record, its file, its decode.

A feature set of layout ``"pq"`` (docs/FORMATS.md, "Product-quantized feature
shards") stores per row ``M = ceil(dim / s)`` one-byte codes: code ``m`` names
one of the ``K <= 256`` centroids of sub-space ``m`` (feature dimensions
``m s .. m s + s - 1``). A row decodes to the concatenation of the centroids its
codes name. When ``s`` does not divide ``dim`` the last sub-space is padded
with zero dimensions: its centroids are stored with ``s`` entries whose padded
ones are 0, and decoding drops them.

The codebook is stored once per feature set, in ``pq.npz`` beside
``manifest.json`` (arrays ``centroids`` (M, K, s) float32, ``dim`` and
``dims_per_code`` int64; loaded without pickle), its SHA-256 recorded in the
manifest's ``pq`` entry.

Fitting and encoding are math and live in :mod:`bowsvm.coding.pq`; this module
holds what a reader needs to turn codes back into features (the format's
reader beside its writer), and :func:`bowsvm.coding.pq.pq_decode` calls the
same :func:`decode_codes`, so training, scoring and the library decode alike.
Decoding is a gather (copies of stored float32 values): bit-exact, with no
arithmetic and no BLAS.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bowsvm.io.arrays import load_npz
from bowsvm.io.atomic import atomic_file

__all__ = ["MAX_CENTROIDS", "PQ_FILE", "PQCodebook", "decode_codes", "make_codebook",
           "n_codes_for", "read_pq_codebook", "write_pq_codebook"]

#: The codebook's file, beside a pq feature set's manifest.json.
PQ_FILE = "pq.npz"

#: Centroids per sub-space at most: a code is one byte.
MAX_CENTROIDS = 256

#: Decoded values per gather block (4 MB of float32): bounds the index scratch.
_DECODE_BLOCK_VALUES = 1 << 20


def n_codes_for(dim: int, dims_per_code: int) -> int:
    """Number of sub-spaces (codes per row): ``ceil(dim / dims_per_code)``."""
    return -(-int(dim) // int(dims_per_code))


@dataclass(frozen=True, eq=False)
class PQCodebook:
    """A product quantizer: per sub-space, ``K`` centroids of ``s`` dimensions.

    Build one with :func:`make_codebook` (checked) or
    :func:`bowsvm.coding.pq.fit_pq`; the centroid array is read-only.

    Attributes
    ----------
    centroids : (M, K, s) float32
        Sub-space ``m`` covers feature dimensions ``m s .. min(m s + s, dim) - 1``;
        the padded entries of the last sub-space (when ``s`` does not divide
        ``dim``) are 0.
    dim : int
        Feature dimension.
    dims_per_code : int
        ``s``.
    """

    centroids: np.ndarray
    dim: int
    dims_per_code: int

    @property
    def n_codes(self) -> int:
        """M, the codes per row."""
        return int(self.centroids.shape[0])

    @property
    def n_centroids(self) -> int:
        """K, the centroids per sub-space."""
        return int(self.centroids.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes of the centroid array in memory."""
        return int(self.centroids.nbytes)


def make_codebook(centroids, dim, dims_per_code, what: str = "centroids") -> PQCodebook:
    """A checked :class:`PQCodebook` (float32, C-contiguous, read-only copy).

    Raises
    ------
    TypeError
        If ``centroids`` is not a real floating-point array, or ``dim`` /
        ``dims_per_code`` are not integers.
    ValueError
        If the shape does not fit ``dim`` and ``dims_per_code`` (M = ceil(dim /
        s) sub-spaces of s entries, 1 to 256 centroids), a value is NaN/Inf or a
        padded entry is not 0. Messages start with ``what``.
    """
    for name, v in (("dim", dim), ("dims_per_code", dims_per_code)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{what}: {name} must be an integer, got {type(v).__name__} {v!r}.")
    dim, s = int(dim), int(dims_per_code)
    if dim < 1 or s < 1 or s > dim:
        raise ValueError(f"{what}: dim={dim} and dims_per_code={s} are not valid; expected "
                         f"1 <= dims_per_code <= dim.")
    C = np.asarray(centroids)
    if C.dtype.kind != "f":
        raise TypeError(f"{what} must be a floating-point array, got dtype {C.dtype}.")
    M = n_codes_for(dim, s)
    if C.ndim != 3 or C.shape[0] != M or C.shape[2] != s or not 1 <= C.shape[1] <= MAX_CENTROIDS:
        raise ValueError(
            f"{what} has shape {C.shape}, but dim={dim} with dims_per_code={s} needs "
            f"({M}, K, {s}) with 1 <= K <= {MAX_CENTROIDS} (M = ceil(dim / dims_per_code) "
            f"sub-spaces of K centroids each).")
    C = np.array(C, dtype=np.float32, order="C")  # a private copy
    if not np.isfinite(C).all():
        raise ValueError(f"{what} holds NaN or Inf.")
    pad = M * s - dim
    if pad and np.any(C[-1, :, s - pad:] != 0):
        raise ValueError(f"{what}: the {pad} padded entries of the last sub-space must be 0 "
                         f"(dim={dim} is not a multiple of dims_per_code={s}).")
    C.setflags(write=False)
    return PQCodebook(C, dim, s)


def decode_codes(codes: np.ndarray, pq: PQCodebook, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with the decoded rows of ``codes`` (the unvalidated core).

    Parameters
    ----------
    codes : (n, M) uint8, C-contiguous
        Every code below ``pq.n_centroids`` (a larger one is clipped: the
        callers check them).
    pq : PQCodebook
    out : (n, dim) float32, C-contiguous

    Returns
    -------
    out
    """
    M, K, s = pq.centroids.shape
    n = codes.shape[0]
    flat = pq.centroids.reshape(M * K, s)
    offsets = np.arange(M, dtype=np.intp) * K
    width = M * s
    block = max(1, _DECODE_BLOCK_VALUES // width)
    padded = width != pq.dim
    tmp = np.empty((min(block, max(n, 1)), M, s), dtype=np.float32) if padded else None
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        idx = codes[r0:r1].astype(np.intp)
        idx += offsets
        if padded:
            dst = tmp[:r1 - r0]
            np.take(flat, idx, axis=0, out=dst, mode="clip")
            out[r0:r1] = dst.reshape(r1 - r0, width)[:, :pq.dim]
        else:
            np.take(flat, idx, axis=0, out=out[r0:r1].reshape(r1 - r0, M, s), mode="clip")
    return out


def write_pq_codebook(path, pq: PQCodebook) -> str:
    """Write ``pq`` to ``path`` (``.npz``, atomically); return the file's hex SHA-256.

    The archive's bytes depend only on the codebook (members in a fixed order,
    a fixed timestamp, no compression), so the same codebook gives the same hash.
    """
    buf = io.BytesIO()
    arrays = {"centroids": np.ascontiguousarray(pq.centroids),
              "dim": np.asarray(pq.dim, dtype=np.int64),
              "dims_per_code": np.asarray(pq.dims_per_code, dtype=np.int64)}
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
    data = buf.getvalue()
    with atomic_file(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def read_pq_codebook(path, *, sha256: str | None = None, expect: dict | None = None) -> PQCodebook:
    """Load and check a PQ codebook file.

    Parameters
    ----------
    path : path
    sha256 : str, optional
        The SHA-256 the manifest records; the file's bytes must match.
    expect : dict, optional
        Values the codebook must have: any of ``dim``, ``dims_per_code``,
        ``n_codes``, ``n_centroids`` (the manifest's).

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If its bytes do not match ``sha256``, it is not a valid ``.npz`` (corrupt,
        truncated, pickled objects), an array is missing or malformed, or a
        value differs from ``expect``. Every message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PQ codebook {str(path)!r} is missing; re-run `bowsvm compress` "
                                f"for the feature set.")
    fix = "re-run `bowsvm compress` for the feature set (with --overwrite)"
    if sha256 is not None:
        h = hashlib.sha256(path.read_bytes()).hexdigest()
        if h != sha256:
            raise ValueError(f"PQ codebook {str(path)!r} does not match the SHA-256 recorded in "
                             f"the feature set's manifest; its bytes were changed: {fix}.")
    arrays = load_npz(path, "PQ codebook")
    missing = [k for k in ("centroids", "dim", "dims_per_code") if k not in arrays]
    if missing:
        raise ValueError(f"PQ codebook {str(path)!r} lacks the arrays {missing}; {fix}.")
    try:
        dim, s = (arrays[k] for k in ("dim", "dims_per_code"))
        if dim.shape != () or s.shape != () or dim.dtype.kind != "i" or s.dtype.kind != "i":
            raise ValueError("dim and dims_per_code must be integer scalars")
        pq = make_codebook(arrays["centroids"], int(dim), int(s), what="its centroids")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"PQ codebook {str(path)!r} is malformed ({exc}); {fix}.") from None
    for key, want in (expect or {}).items():
        got = getattr(pq, key)
        if got != want:
            raise ValueError(f"PQ codebook {str(path)!r} has {key}={got}, but the feature set's "
                             f"manifest says {want}; {fix}.")
    return pq
