"""Loading NumPy ``.npy`` / ``.npz`` files (models, codebooks, checkpoints) safely.

Never with pickle; every failure (object arrays, a truncated or corrupt file,
a zip that is not one) becomes one ValueError that names the file.
"""

from __future__ import annotations

import zipfile

import numpy as np

__all__ = ["load_npy", "load_npz"]


def _fail(path, what, exc):
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Object arrays cannot be loaded" in msg:
        why = "holds an object array (pickled Python objects), which bowsvm never loads"
    else:
        why = f"is corrupt or truncated ({type(exc).__name__}: {msg})"
    return ValueError(f"{what} {str(path)!r} {why}; re-create it with the bowsvm stage "
                      f"that writes it.")


def load_npy(path, what: str = "array file") -> np.ndarray:
    """``np.load(path, allow_pickle=False)`` of one ``.npy`` array, errors named.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If it holds object arrays, is not a ``.npy`` array, or is corrupt/truncated.
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(path, what, exc) from exc
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise ValueError(f"{what} {str(path)!r} is a .npz archive, not a .npy array; "
                         f"re-create it with the bowsvm stage that writes it.")
    return arr


def load_npz(path, what: str = "array archive") -> dict:
    """All arrays of a ``.npz`` archive as a dict, loaded without pickle, errors named.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If it holds object arrays, is not a ``.npz`` archive, or a member is
        corrupt/truncated.
    """
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(path, what, exc) from exc
    if isinstance(z, np.ndarray):
        raise ValueError(f"{what} {str(path)!r} is a .npy array, not a .npz archive; "
                         f"re-create it with the bowsvm stage that writes it.")
    try:
        with z:
            return {name: z[name] for name in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _fail(path, what, exc) from exc
