"""One-vs-all linear SVMs: ASGD and dual coordinate descent (docs/DESIGN.md,
"ASGD one-vs-all SVM" and "Dual coordinate descent (--solver dcd)").

:class:`ASGDClassifier` is the scikit-learn estimator; :mod:`bowsvm.asgd.core`
holds the ASGD class-group state, the block-exact chunk trainer and the one
``decision_scores``; :mod:`bowsvm.asgd.dcd` the DCD state and chunk trainer in
the same block form; :mod:`bowsvm.asgd.trainer` runs epochs of either over the
chunks it is handed (``bowsvm train`` and ``jobs/train_groups.py``,
:mod:`bowsvm.stages.train`).
"""

from bowsvm.asgd import _parallel  # noqa: F401  (sets OMP_WAIT_POLICY first)
from bowsvm.asgd.estimator import ASGDClassifier

__all__ = ["ASGDClassifier"]
