"""ASGD one-vs-all linear SVMs (DESIGN.md, "ASGD one-vs-all SVM").

:class:`ASGDClassifier` is the scikit-learn estimator; :mod:`bowsvm.asgd.core`
holds the class-group state and the block-exact chunk trainer used by
``bowsvm train`` and ``jobs/train_groups.py``.
"""

from bowsvm.asgd import _parallel  # noqa: F401  (sets OMP_WAIT_POLICY first)
from bowsvm.asgd.estimator import ASGDClassifier

__all__ = ["ASGDClassifier"]
