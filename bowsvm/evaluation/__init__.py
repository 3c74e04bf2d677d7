"""Scoring, score fusion, metrics, the HTML report and end-to-end prediction.

Modules (numpy/BLAS only: no numba kernels are needed here, the work is one GEMM
per batch for scoring and vectorised reductions for metrics and fusion):

* :mod:`~bowsvm.evaluation.metrics`: top-k accuracy, per-class hit rates, confusion pairs.
* :mod:`~bowsvm.evaluation.fusion`: z-scoring + simplex weights learned on val only.
* :mod:`~bowsvm.evaluation.report`: the self-contained HTML report and its JSON.
* :mod:`~bowsvm.evaluation.predict`: classify raw image files end to end.
"""

from bowsvm.evaluation.fusion import (
    FusionModel,
    align_score_sets,
    apply_fusion,
    fit_fusion,
    fuse_feature_sets,
    read_fused,
)
from bowsvm.evaluation.metrics import (
    confusion_pairs,
    per_class_hit_rates,
    top_k_accuracy,
    top_k_indices,
    true_class_ranks,
)

__all__ = [
    "FusionModel",
    "align_score_sets",
    "apply_fusion",
    "confusion_pairs",
    "fit_fusion",
    "fuse_feature_sets",
    "per_class_hit_rates",
    "read_fused",
    "top_k_accuracy",
    "top_k_indices",
    "true_class_ranks",
]
