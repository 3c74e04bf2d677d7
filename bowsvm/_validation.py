"""The one validation module: every public function checks its input here.

Messages name the argument, what was received, what was expected and how to
fix it. ValueError for bad values and shapes, TypeError for bad types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np

__all__ = [
    "check_array",
    "check_bool",
    "check_choice",
    "check_int",
    "check_real",
    "parse_bytes",
]


def check_choice(name: str, value, table: Mapping):
    """Resolve a string option through a module-level table.

    Raises
    ------
    ValueError
        If ``value`` is not a key of ``table``; the message lists valid names.
    """
    try:
        return table[value]
    except (KeyError, TypeError):
        valid = ", ".join(repr(k) for k in table)
        raise ValueError(
            f"{name}={value!r} is not a valid option; expected one of {valid}."
        ) from None


def check_int(name: str, value, *, low=None, high=None) -> int:
    """Check that ``value`` is an integer in ``[low, high]`` and return it as int."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}; "
            f"pass a whole number."
        )
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name}={value} is too small; expected {name} >= {low}.")
    if high is not None and value > high:
        raise ValueError(f"{name}={value} is too large; expected {name} <= {high}.")
    return value


def check_real(name: str, value, *, low=None, high=None, low_open=False) -> float:
    """Check that ``value`` is a finite real number in range and return a float."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"{name} must be a real number, got {type(value).__name__} {value!r}."
        )
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name}={value} is not finite; pass a finite number.")
    if low is not None:
        if low_open and value <= low:
            raise ValueError(f"{name}={value} is out of range; expected {name} > {low}.")
        if not low_open and value < low:
            raise ValueError(f"{name}={value} is out of range; expected {name} >= {low}.")
    if high is not None and value > high:
        raise ValueError(f"{name}={value} is out of range; expected {name} <= {high}.")
    return value


def check_array(
    name: str,
    X,
    *,
    ndim: int | None = None,
    dtypes=(np.float32, np.float64),
    allow_nonfinite: bool = False,
    min_rows: int = 0,
):
    """Validate a numeric array and return it C-contiguous.

    float32 stays float32; every other numeric dtype becomes float64 (unless
    ``dtypes`` says otherwise: the first entry of ``dtypes`` is the fallback).

    Raises
    ------
    TypeError
        If ``X`` is not numeric.
    ValueError
        If ``X`` has the wrong number of dimensions, too few rows, or NaN/Inf.
    """
    arr = np.asarray(X)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ):
        raise TypeError(
            f"{name} must be a numeric array, got dtype {arr.dtype}; "
            f"convert it with np.asarray(..., dtype=np.float32)."
        )
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real-valued, got complex dtype {arr.dtype}.")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-dimensional, got an array of shape {arr.shape}; "
            f"reshape it to {ndim} dimensions."
        )
    if arr.ndim >= 1 and arr.shape[0] < min_rows:
        raise ValueError(
            f"{name} must have at least {min_rows} row(s), got shape {arr.shape}."
        )
    if dtypes is not None and arr.dtype not in [np.dtype(d) for d in dtypes]:
        target = np.float64 if np.dtype(np.float64) in [np.dtype(d) for d in dtypes] else dtypes[0]
        arr = arr.astype(target)
    if not allow_nonfinite and arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)}); "
            f"clean or impute the input first."
        )
    return np.ascontiguousarray(arr)


def check_bool(name: str, value) -> bool:
    """Check that ``value`` is a bool (or numpy bool) and return it as bool.

    Raises
    ------
    TypeError
        If ``value`` is anything else (0/1, strings, None).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be True or False, got {type(value).__name__} {value!r}."
        )
    return bool(value)


def check_grids(grids) -> list[tuple[int, int]]:
    """Validate a spatial pyramid: a non-empty list of (rows, cols) positive int pairs.

    Shared by the presets (``pooling.grids``) and the pooling functions, so a
    pyramid is checked the same way wherever it comes from.

    Raises
    ------
    TypeError
        If ``grids`` is not iterable, or an entry is not.
    ValueError
        If it is empty, an entry is not a pair, or a count is below 1.
    """
    try:
        out = [tuple(g) for g in grids]
    except TypeError:
        raise TypeError(
            f"grids must be a list of (rows, cols) pairs, got {grids!r}; "
            f"e.g. [(1, 1), (3, 3)]."
        ) from None
    if not out:
        raise ValueError("grids is empty; pass at least one grid, e.g. [(1, 1)].")
    res = []
    for g in out:
        if len(g) != 2:
            raise ValueError(
                f"grids entry {g!r} is not a (rows, cols) pair; e.g. [(1, 1), (3, 3)]."
            )
        res.append((check_int("grid rows", g[0], low=1), check_int("grid cols", g[1], low=1)))
    return res


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "T": 1 << 40, "TB": 1 << 40}


def parse_bytes(text, option: str = "--memory-budget") -> int:
    """Parse a size such as ``"2GB"``, ``"512M"`` or ``1000000`` into bytes.

    The one parser of ``--memory-budget`` (the train and codebook stages).

    Raises
    ------
    ValueError
        If the text is not a positive number with an optional unit (names ``option``).
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?B?)\s*", str(text).upper())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(
            f"memory budget {text!r} is not a size ({option}); write it like 2GB, 512MB or "
            f"1e9 bytes as 1000000000."
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])
