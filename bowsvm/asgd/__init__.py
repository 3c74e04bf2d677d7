"""ASGD one-vs-all linear SVMs (docs/DESIGN.md, "ASGD one-vs-all SVM").

:class:`ASGDClassifier` is the scikit-learn estimator; :mod:`bowsvm.asgd.core`
holds the class-group state, the block-exact chunk trainer and the one
``decision_scores``; :mod:`bowsvm.asgd.trainer` runs epochs over the chunks it is
handed (``bowsvm train`` and ``jobs/train_groups.py``, :mod:`bowsvm.stages.train`).
"""

from bowsvm.asgd import _parallel  # noqa: F401  (sets OMP_WAIT_POLICY first)
from bowsvm.asgd.estimator import ASGDClassifier

__all__ = ["ASGDClassifier"]
