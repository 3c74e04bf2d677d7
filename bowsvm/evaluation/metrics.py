"""Classification metrics on decision-score matrices.

Every function takes a score matrix ``scores`` of shape (n, C) (one row per
sample, one column per class, larger is better) and integer ``labels`` of
shape (n,) in ``[0, C)``.

Ties are broken deterministically in favour of the LOWER class index, exactly
as ``np.argsort(-scores, axis=1, kind="stable")`` orders classes. So the rank
of the true class ``y`` in a row ``s`` is::

    rank = #{c : s[c] > s[y]} + #{c < y : s[c] == s[y]}

and a sample is a top-k hit when ``rank < k``. This makes every number here
reproducible (no dependence on ``argpartition``'s arbitrary tie order).

The work is a few vectorised passes over the score matrix done in row blocks
(memory stays O(block x C)); there is no numba kernel because numpy's
comparisons and reductions are already memory-bound here.
"""

from __future__ import annotations

import numpy as np

from bowsvm._validation import check_array, check_int

__all__ = [
    "check_scores_labels",
    "confusion_pairs",
    "per_class_hit_rates",
    "top_k_accuracy",
    "top_k_indices",
    "true_class_ranks",
]

_BLOCK_ROWS = 4096


def check_scores_labels(scores, labels, n_classes: int | None = None):
    """Validate a score matrix and its labels; return (scores, labels).

    Parameters
    ----------
    scores : array-like of shape (n, C)
        Decision scores; float32 stays float32, other dtypes become float64.
    labels : array-like of shape (n,)
        Integer class indices in ``[0, C)``.
    n_classes : int, optional
        Expected number of columns ``C``.

    Returns
    -------
    scores : ndarray of shape (n, C), C-contiguous
    labels : ndarray of shape (n,), int64

    Raises
    ------
    TypeError
        If ``scores`` is not numeric or ``labels`` is not integer.
    ValueError
        If shapes disagree, scores hold NaN/Inf, or a label is out of range.
    """
    scores = check_array("scores", scores, ndim=2)
    labels_arr = np.asarray(labels)
    if labels_arr.dtype == object or not np.issubdtype(labels_arr.dtype, np.integer):
        raise TypeError(
            f"labels must be an integer array, got dtype {labels_arr.dtype}; "
            f"pass class indices (0..C-1), not class names."
        )
    if labels_arr.ndim != 1:
        raise ValueError(f"labels must be 1-dimensional, got shape {labels_arr.shape}.")
    n, C = scores.shape
    if labels_arr.shape[0] != n:
        raise ValueError(
            f"labels has {labels_arr.shape[0]} entries but scores has {n} rows; "
            f"pass one label per score row."
        )
    if n_classes is not None and C != n_classes:
        raise ValueError(f"scores has {C} columns, expected n_classes={n_classes}.")
    labels_arr = labels_arr.astype(np.int64)
    if n and (labels_arr.min() < 0 or labels_arr.max() >= C):
        bad = labels_arr[(labels_arr < 0) | (labels_arr >= C)][0]
        raise ValueError(
            f"labels must lie in [0, {C}) (the score matrix has {C} classes), found {bad}."
        )
    return scores, labels_arr


def true_class_ranks(scores, labels) -> np.ndarray:
    """Rank of the true class in each row (0 = top), ties to the lower index.

    Parameters
    ----------
    scores : array-like of shape (n, C)
    labels : array-like of shape (n,)

    Returns
    -------
    ranks : ndarray of shape (n,), int64

    Raises
    ------
    TypeError, ValueError
        See :func:`check_scores_labels`.
    """
    scores, labels = check_scores_labels(scores, labels)
    n, C = scores.shape
    ranks = np.empty(n, dtype=np.int64)
    cols = np.arange(C)
    for a in range(0, n, _BLOCK_ROWS):
        S = scores[a:a + _BLOCK_ROWS]
        y = labels[a:a + _BLOCK_ROWS]
        sy = S[np.arange(S.shape[0]), y][:, None]
        above = (S > sy).sum(axis=1)
        tied_before = ((S == sy) & (cols[None, :] < y[:, None])).sum(axis=1)
        ranks[a:a + _BLOCK_ROWS] = above + tied_before
    return ranks


def top_k_accuracy(scores, labels, k: int = 1) -> float:
    """Fraction of rows whose true class is among the ``k`` best scores.

    Parameters
    ----------
    scores : array-like of shape (n, C)
    labels : array-like of shape (n,)
    k : int, default 1
        ``1 <= k``; ``k >= C`` gives 1.0.

    Returns
    -------
    float
        In [0, 1]; NaN when ``n == 0``.

    Raises
    ------
    TypeError, ValueError
        See :func:`check_scores_labels`; ValueError if ``k < 1``.
    """
    k = check_int("k", k, low=1)
    ranks = true_class_ranks(scores, labels)
    if ranks.size == 0:
        return float("nan")
    return float(np.mean(ranks < k))


def top_k_indices(scores, k: int = 5) -> np.ndarray:
    """Indices of the ``k`` best classes per row, best first, ties to the lower index.

    Parameters
    ----------
    scores : array-like of shape (n, C)
    k : int, default 5
        Clipped to ``C``.

    Returns
    -------
    ndarray of shape (n, min(k, C)), int64

    Raises
    ------
    TypeError, ValueError
        If ``scores`` is not a finite 2-D numeric array or ``k < 1``.
    """
    scores = check_array("scores", scores, ndim=2)
    k = min(check_int("k", k, low=1), scores.shape[1])
    out = np.empty((scores.shape[0], k), dtype=np.int64)
    for a in range(0, scores.shape[0], _BLOCK_ROWS):
        out[a:a + _BLOCK_ROWS] = np.argsort(-scores[a:a + _BLOCK_ROWS], axis=1, kind="stable")[:, :k]
    return out


def per_class_hit_rates(scores, labels, k: int = 5):
    """Per-class top-k hit rate (per-class recall at k).

    Parameters
    ----------
    scores : array-like of shape (n, C)
    labels : array-like of shape (n,)
    k : int, default 5

    Returns
    -------
    rates : ndarray of shape (C,), float64
        Hit rate of each class; NaN for classes with no sample.
    counts : ndarray of shape (C,), int64
        Number of samples of each class.

    Raises
    ------
    TypeError, ValueError
        See :func:`check_scores_labels`; ValueError if ``k < 1``.
    """
    k = check_int("k", k, low=1)
    scores, labels = check_scores_labels(scores, labels)
    C = scores.shape[1]
    hits = true_class_ranks(scores, labels) < k
    counts = np.bincount(labels, minlength=C).astype(np.int64)
    nhit = np.bincount(labels, weights=hits.astype(np.float64), minlength=C)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(counts > 0, nhit / np.maximum(counts, 1), np.nan)
    return rates, counts


def confusion_pairs(scores, labels, top: int = 10):
    """Most frequent (true class -> predicted class) top-1 mistakes.

    Parameters
    ----------
    scores : array-like of shape (n, C)
    labels : array-like of shape (n,)
    top : int, default 10
        How many pairs to return at most.

    Returns
    -------
    list of dict
        Each ``{"true": int, "predicted": int, "count": int, "rate": float}``
        where ``rate`` is ``count`` over the number of samples of the true
        class; sorted by count (descending), then true, then predicted index.

    Raises
    ------
    TypeError, ValueError
        See :func:`check_scores_labels`; ValueError if ``top < 1``.
    """
    top = check_int("top", top, low=1)
    scores, labels = check_scores_labels(scores, labels)
    C = scores.shape[1]
    pred = top_k_indices(scores, 1)[:, 0]
    wrong = pred != labels
    counts = np.bincount(labels, minlength=C)
    pair = labels[wrong] * C + pred[wrong]
    if pair.size == 0:
        return []
    uniq, cnt = np.unique(pair, return_counts=True)
    order = np.lexsort((uniq, -cnt))[:top]
    out = []
    for i in order:
        t, p = divmod(int(uniq[i]), C)
        out.append({"true": t, "predicted": p, "count": int(cnt[i]),
                    "rate": float(cnt[i] / counts[t])})
    return out
