"""Scoring, score fusion, metrics and the HTML report (prediction: bowsvm.stages.predict).

Modules (numpy/BLAS only: no numba kernels are needed here, the work is one GEMM
per batch for scoring and vectorised reductions for metrics and fusion):

* :mod:`~bowsvm.evaluation.metrics`: top-k accuracy, per-class hit rates, confusion pairs.
* :mod:`~bowsvm.evaluation.fusion`: z-scoring + simplex weights learned on val only.
* :mod:`~bowsvm.evaluation.report`: the HTML report's numbers, figures and page
  (collect / figures / html).
"""

from bowsvm.evaluation.fusion import (
    FusionModel,
    align_score_sets,
    apply_fusion,
    fit_fusion,
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
    "per_class_hit_rates",
    "top_k_accuracy",
    "top_k_indices",
    "true_class_ranks",
]
