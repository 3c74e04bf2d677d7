"""Linear score fusion of several feature sets, learned on the validation split only.

Method (documented choice)
--------------------------
1. **Standardisation.** The one-vs-all SVM scores of different feature sets live
   on different scales. Each set ``s`` is z-scored with ONE scalar mean and
   standard deviation taken over all entries of its *validation* score matrix:
   ``Z_s = (S_s - mean_s) / std_s`` (``std_s = 1`` if the scores are constant).
   A scalar affine map keeps every row's class ranking, so a set's own top-k
   accuracy is unchanged; the same val statistics are applied to test.
2. **Weights.** Non-negative weights summing to 1 (a point on the simplex),
   fused scores ``F = sum_s w_s Z_s``. They are found by coordinate search on
   the validation split: start from the best of {uniform weights, each single
   set}; then, in rounds, for each set ``s`` try
   ``w' = a e_s + (1 - a) w_{-s} / sum(w_{-s})`` for ``a`` on a grid of
   ``grid + 1`` points in [0, 1] and keep the best; stop when a round brings
   no improvement (or after ``max_rounds``). The objective is validation top-1
   accuracy; ties are broken by the lower validation log-loss of
   ``softmax(F)`` (temperature 1 on the z-scored scale), then by keeping the
   current weights. Nothing from the test split is used.

This follows the paper's linear combination of the six feature sets' scores
(Lin et al. 2011, Sec. 5), whose weights the paper does not specify; a grid
coordinate search is our own choice.

The stage that reads score folders and writes the fusion folder is
:mod:`bowsvm.stages.fuse`; the folder's format is :mod:`bowsvm.io.fusion`.

References
----------
Lin, Y., Lv, F., Zhu, S., Yang, M., Cour, T., Yu, K., Cao, L., Huang, T.
"Large-scale image classification: fast feature extraction and SVM training",
CVPR 2011.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bowsvm._validation import check_int
from bowsvm.evaluation.metrics import check_scores_labels
from bowsvm.io.scores import ScoreSet

__all__ = [
    "FusionModel",
    "align_score_sets",
    "apply_fusion",
    "fit_fusion",
    "standardisation_stats",
]


@dataclass
class FusionModel:
    """Learned fusion: per-set standardisation and simplex weights.

    Attributes
    ----------
    feature_sets : list of str
    weights : ndarray of shape (S,), float64, non-negative, sums to 1
    means, stds : ndarray of shape (S,), float64
        Val statistics used to z-score each set.
    val_top1, val_log_loss : float
        Objective at the chosen weights.
    rounds : int
        Coordinate-search rounds run.
    grid : int
    """

    feature_sets: list
    weights: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    val_top1: float = float("nan")
    val_log_loss: float = float("nan")
    rounds: int = 0
    grid: int = 20

    def to_json(self) -> dict:
        return {
            "feature_sets": list(self.feature_sets),
            "weights": {s: float(w) for s, w in zip(self.feature_sets, self.weights)},
            "standardisation": {
                "method": "z-score per feature set, scalar mean/std over the val score matrix",
                **{s: {"mean": float(m), "std": float(d)}
                   for s, m, d in zip(self.feature_sets, self.means, self.stds)},
            },
            "val_objective": {"top1": self.val_top1, "log_loss": self.val_log_loss},
            "search": {"method": "coordinate search on the simplex, val top-1 then log-loss",
                       "grid": self.grid, "rounds": self.rounds},
        }

    @classmethod
    def from_json(cls, d: dict) -> "FusionModel":
        names = list(d["feature_sets"])
        st = d["standardisation"]
        return cls(names, np.array([d["weights"][s] for s in names], dtype=np.float64),
                   np.array([st[s]["mean"] for s in names], dtype=np.float64),
                   np.array([st[s]["std"] for s in names], dtype=np.float64),
                   float(d.get("val_objective", {}).get("top1", np.nan)),
                   float(d.get("val_objective", {}).get("log_loss", np.nan)),
                   int(d.get("search", {}).get("rounds", 0)),
                   int(d.get("search", {}).get("grid", 20)))


def standardisation_stats(scores) -> tuple[float, float]:
    """Scalar mean and standard deviation of a score matrix (std 1 if constant).

    Parameters
    ----------
    scores : ndarray of shape (n, C)

    Returns
    -------
    mean, std : float
    """
    S = np.asarray(scores)
    if S.size == 0:
        return 0.0, 1.0
    mean = float(np.mean(S, dtype=np.float64))
    std = float(np.std(S, dtype=np.float64))
    if not np.isfinite(std) or std <= 1e-12 * max(1.0, abs(mean)):
        std = 1.0
    return mean, std


def _zscore(S, mean, std) -> np.ndarray:
    return ((np.asarray(S, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(
        np.float32, copy=False)


def _top1(F, labels) -> float:
    """Top-1 accuracy; ``np.argmax`` breaks ties to the lower index like metrics.py."""
    return float(np.mean(np.argmax(F, axis=1) == labels))


def _log_loss(F, labels) -> float:
    """Mean log-loss of softmax(F) (temperature 1) on float32 fused scores."""
    n = F.shape[0]
    mx = F.max(axis=1, keepdims=True)
    E = np.subtract(F, mx)  # one float32 buffer, exponentiated in place
    np.exp(E, out=E)
    lse = np.log(E.sum(axis=1, dtype=np.float64)) + mx[:, 0]
    return float(np.mean(lse - F[np.arange(n), labels]))


def _objective(F, labels, floor=None):
    """(top-1, log-loss), or None when top-1 is below ``floor`` (log-loss not needed)."""
    t1 = _top1(F, labels)
    if floor is not None and t1 < floor:
        return None
    return t1, _log_loss(F, labels)


def _better(a, b) -> bool:
    """Lexicographic: higher top-1, then lower log-loss (with a small tolerance)."""
    if a[0] != b[0]:
        return a[0] > b[0]
    return a[1] < b[1] - 1e-9


def fit_fusion(val_scores: list, labels, feature_sets: list | None = None,
               grid: int = 20, max_rounds: int = 10) -> FusionModel:
    """Learn standardisation and fusion weights from validation scores only.

    Parameters
    ----------
    val_scores : list of ndarray of shape (n, C)
        One validation score matrix per feature set, rows aligned.
    labels : ndarray of shape (n,)
        Validation labels.
    feature_sets : list of str, optional
        Names (default "set0", "set1", ...).
    grid : int, default 20
        Steps of the weight grid per coordinate (step 1/grid).
    max_rounds : int, default 10

    Returns
    -------
    FusionModel

    Raises
    ------
    ValueError
        If no set is given, shapes differ, labels are out of range, or n == 0.
    TypeError
        If scores are not numeric or labels not integer.
    """
    if len(val_scores) == 0:
        raise ValueError("val_scores is empty; pass the validation scores of at least one feature set.")
    grid = check_int("grid", grid, low=1)
    max_rounds = check_int("max_rounds", max_rounds, low=0)
    names = list(feature_sets) if feature_sets is not None else [f"set{i}" for i in range(len(val_scores))]
    if len(names) != len(val_scores):
        raise ValueError(f"got {len(val_scores)} score matrices but {len(names)} feature-set names.")
    Zs, means, stds = [], [], []
    shape = np.shape(val_scores[0])
    for name, S in zip(names, val_scores):
        if np.shape(S) != shape:
            raise ValueError(f"val scores of {name!r} have shape {np.shape(S)}, expected {shape} "
                             f"like {names[0]!r}; align the score sets first.")
        S, y = check_scores_labels(S, labels)
        m, d = standardisation_stats(S)
        means.append(m)
        stds.append(d)
        Zs.append(_zscore(S, m, d))
    if y.size == 0:
        raise ValueError("the validation split has no rows; fusion weights cannot be learned.")
    k = len(Zs)

    tmp = np.empty_like(Zs[0])

    def fused(w):
        F = np.zeros_like(Zs[0])
        for wi, Z in zip(w, Zs):
            if wi:
                np.multiply(Z, np.float32(wi), out=tmp)
                F += tmp
        return F

    cands = [np.full(k, 1.0 / k)] + [np.eye(k)[i] for i in range(k)]
    best_w, best_obj = None, None
    for w in cands:
        obj = _objective(fused(w), y)
        if best_obj is None or _better(obj, best_obj):
            best_w, best_obj = w, obj
    rounds = 0
    if k > 1:
        for rounds in range(1, max_rounds + 1):
            improved = False
            for s in range(k):
                rest = best_w.copy()
                rest[s] = 0.0
                tot = rest.sum()
                rest = rest / tot if tot > 0 else np.where(np.arange(k) == s, 0.0, 1.0 / (k - 1))
                R = fused(rest)
                F = np.empty_like(R)
                T = np.empty_like(R)
                for a in np.linspace(0.0, 1.0, grid + 1):
                    w = (1.0 - a) * rest
                    w[s] += a
                    np.multiply(R, np.float32(1.0 - a), out=F)  # F = (1-a) R + a Z_s, no temporaries
                    np.multiply(Zs[s], np.float32(a), out=T)
                    F += T
                    obj = _objective(F, y, floor=best_obj[0])
                    if obj is not None and _better(obj, best_obj):
                        best_w, best_obj, improved = w, obj, True
            if not improved:
                break
    w = np.clip(best_w, 0.0, None)
    w = w / w.sum()
    # the reported objective is that of exactly what apply_fusion computes
    best_obj = _objective(fused(w), y)
    return FusionModel(names, w, np.array(means), np.array(stds),
                       best_obj[0], best_obj[1], rounds, grid)


def apply_fusion(model: FusionModel, scores: list) -> np.ndarray:
    """Fused scores ``sum_s w_s (S_s - mean_s) / std_s`` (float32).

    Parameters
    ----------
    model : FusionModel
    scores : list of ndarray of shape (n, C)
        In the order of ``model.feature_sets``.

    Returns
    -------
    ndarray of shape (n, C), float32

    Raises
    ------
    ValueError
        If the number of matrices or their shapes do not match.
    """
    if len(scores) != len(model.feature_sets):
        raise ValueError(f"got {len(scores)} score matrices for {len(model.feature_sets)} "
                         f"feature sets {model.feature_sets}.")
    F = None
    for w, m, d, S in zip(model.weights, model.means, model.stds, scores):
        Z = np.float32(w) * _zscore(S, m, d)
        if F is None:
            F = Z
        elif Z.shape != F.shape:
            raise ValueError(f"score matrices have different shapes {F.shape} and {Z.shape}.")
        else:
            F += Z
    return np.ascontiguousarray(F, dtype=np.float32)


def _examples(values, n=3) -> str:
    vals = sorted(values)[:n]
    return ", ".join(repr(v) for v in vals) + (", ..." if len(values) > n else "")


def align_score_sets(sets: dict, split: str) -> dict:
    """Check that score sets share classes, ids and labels; reorder rows to the first set.

    Parameters
    ----------
    sets : dict of str -> ScoreSet
        Scores of one split, keyed by feature-set name (the first is the reference).
    split : str
        Only used in messages.

    Returns
    -------
    dict of str -> ScoreSet
        Same keys; every set's rows in the reference set's id order.

    Raises
    ------
    ValueError
        If class lists, id sets or labels differ, or ids repeat; the message names
        the feature set and what differs.
    """
    names = list(sets)
    ref_name = names[0]
    ref = sets[ref_name]
    ref_ids = ref.ids
    if len(set(ref_ids)) != len(ref_ids):
        raise ValueError(f"{split} scores of feature set {ref_name!r} repeat some ids; rescore it.")
    out = {ref_name: ref}
    pos = None
    for name in names[1:]:
        s = sets[name]
        if list(s.classes) != list(ref.classes):
            diff = next((f"index {i}: {a!r} vs {b!r}" for i, (a, b) in
                         enumerate(zip(ref.classes, s.classes)) if a != b),
                        f"lengths {len(ref.classes)} vs {len(s.classes)}")
            raise ValueError(
                f"class lists differ between feature sets {ref_name!r} and {name!r} "
                f"({split} split; {len(ref.classes)} vs {len(s.classes)} classes, first "
                f"difference at {diff}); all sets must be trained on the same class list."
            )
        if len(s.ids) == len(ref_ids) and np.array_equal(s.ids, ref_ids):
            aligned = s
        else:
            if pos is None:
                pos = {v: i for i, v in enumerate(ref_ids)}
            ids_s = set(s.ids)
            missing = set(ref_ids) - ids_s
            extra = ids_s - set(ref_ids)
            if missing or extra or len(ids_s) != len(s.ids):
                parts = []
                if missing:
                    parts.append(f"{len(missing)} id(s) of {ref_name!r} missing "
                                 f"(e.g. {_examples(missing)})")
                if extra:
                    parts.append(f"{len(extra)} id(s) not in {ref_name!r} "
                                 f"(e.g. {_examples(extra)})")
                if len(ids_s) != len(s.ids):
                    parts.append("repeated ids")
                raise ValueError(
                    f"ids of the {split} scores of feature set {name!r} do not match "
                    f"those of {ref_name!r}: " + "; ".join(parts)
                    + ". Score every feature set on the same images."
                )
            order = np.empty(len(ref_ids), dtype=np.int64)
            order[[pos[v] for v in s.ids]] = np.arange(len(s.ids))
            aligned = ScoreSet(ref_ids, s.labels[order], s.scores[order], s.classes, s.manifest)
        bad = np.flatnonzero(aligned.labels != ref.labels)
        if bad.size:
            i = bad[0]
            raise ValueError(
                f"labels of the {split} scores of feature set {name!r} differ from those of "
                f"{ref_name!r} for {bad.size} id(s) (e.g. id {ref_ids[i]!r}: "
                f"{int(aligned.labels[i])} vs {int(ref.labels[i])}); the sets were built "
                f"from different label lists."
            )
        out[name] = aligned
    return out
