"""scikit-learn's estimator checks drive ASGDClassifier."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from bowsvm.asgd import ASGDClassifier


@parametrize_with_checks([ASGDClassifier(random_state=0, n_jobs=1)])
def test_sklearn_compatible(estimator, check):
    check(estimator)
