"""``ASGDClassifier``: one-vs-all linear SVMs trained by averaged SGD (scikit-learn API)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bowsvm._validation import check_int, check_real
from bowsvm.asgd._parallel import resolve_n_jobs, thread_limit
from bowsvm.asgd.core import GroupState, Hyper, decision_scores, train_chunk
from bowsvm.asgd.trainer import auto_pos_weight

__all__ = ["ASGDClassifier"]

#: Rows per internal chunk when ``fit`` visits a shuffled order (bounds the
#: copy made by fancy indexing to about this many bytes).
_CHUNK_BYTES = 64 << 20


class ASGDClassifier(ClassifierMixin, BaseEstimator):
    """One-vs-all linear SVMs (hinge loss, L2 penalty) trained by averaged SGD.

    Every class gets a binary problem (its samples +1, all others -1). All
    problems are trained together, sample by sample, with the projection-matrix
    transform of Xu (2011) and the block-exact GEMM formulation (docs/DESIGN.md).

    Parameters
    ----------
    reg : float, default=1e-4
        L2 penalty lambda (objective ``lambda/2 ||w||^2 + mean hinge``).
    eta0 : float, default=0.1
        Initial step; ``reg * eta0`` must be below 1.
    power : float, default=2/3
        Step decay: ``eta_t = eta0 / (1 + reg eta0 t) ** power``.
    average_start : int, default=0
        Averaging weight ``alpha_t = 1`` for ``t <= average_start`` and
        ``1 / (t - average_start)`` after.
    average_decay : float, default=0.0
        Weight recent iterates more in the average: after ``average_start``,
        ``alpha_t = (k + 1) / (t - average_start + k)`` with ``k`` this value
        (Shamir and Zhang's polynomial-decay averaging); 0 is the plain mean.
    bias_lr : float, default=0.1
        Step factor of the bias: on a violation ``b += bias_lr * eta_t * y``.
        The bias is not regularised (never shrunk).
    max_epochs : int, default=5
        Passes over the data in :meth:`fit`.
    shuffle : bool, default=True
        Visit the samples of each epoch in a fresh random order.
    random_state : int, RandomState or None, default=None
        Seed of the shuffles.
    block_size : int, default=256
        Samples per block of the block-exact formulation (speed only: the
        result does not depend on it beyond rounding).
    n_jobs : int or None, default=None
        Threads (numba and BLAS); None or -1 for all.
    averaged : bool, default=True
        False gives plain SGD (``coef_`` are the last iterates), for the
        convergence comparison of the paper's Fig. 3.
    pos_weight : float or "auto", default=1.0
        Weight ``q`` of a positive sample's hinge loss in each one-vs-all
        problem (negatives weigh 1); ``"auto"`` is ``(C - 1) / C^(2/3)`` for C
        classes (at least 1), as if each positive met C^(2/3) negatives.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training rows (stratified:
        ``sklearn.model_selection.train_test_split(arange(n),
        test_size=validation_fraction, stratify=y, random_state=random_state)``,
        training on the first part in that order), score top-1 accuracy on the
        rest after every epoch, stop after ``n_iter_no_change`` epochs without a
        higher score, and keep the best epoch's model (its exact weights and
        state: ``partial_fit`` continues from there). Unlike scikit-learn's
        SGDClassifier, which keeps the last epoch's weights.
    validation_fraction : float, default=0.1
        In (0, 1); used with ``early_stopping``.
    n_iter_no_change : int, default=5
        Epochs without a better validation score before stopping.

    Attributes
    ----------
    coef_ : ndarray (n_classes, n_features), or (1, n_features) for two classes
        Averaged weights (row ``k`` for ``classes_[k]``; with two classes one
        row for ``classes_[1]`` as the positive class). Same dtype as the
        training data (float32 or float64).
    intercept_ : ndarray (n_classes,) or (1,)
        Averaged biases.
    classes_ : ndarray (n_classes,)
        Sorted class labels.
    t_ : int
        Samples seen (the step counter t).
    n_epochs_ : int
        Epochs run by :meth:`fit`.
    best_epoch_ : int
        The epoch whose model was kept (``n_epochs_`` without early stopping).
    validation_scores_ : list of float
        With ``early_stopping``: the validation accuracy after each epoch.
    n_features_in_ : int

    Notes
    -----
    Exactly, for each class and each sample in turn (t counting from 1 across
    epochs and ``partial_fit`` calls): ``eta = eta0 / (1 + reg eta0 t)**power``;
    the sample violates when ``y (w.x + b) < 1`` (a margin of exactly 1 does
    not); then ``w <- (1 - reg eta) w + eta y x`` and
    ``b <- b + bias_lr eta y``, otherwise ``w <- (1 - reg eta) w``; finally
    ``wbar <- (1 - alpha) wbar + alpha w`` and the same for the bias.
    ``partial_fit`` makes one pass in the given order (no shuffle).

    With ``pos_weight`` q, a violating positive steps ``q`` times further
    (``w += q eta x``, ``b += q bias_lr eta``): the objective minimised is
    ``lambda/2 ||w||^2 + (1/n) sum_i q_i hinge_i`` with ``q_i = q`` for the
    class's samples and 1 for the others, exactly as in the block GEMM form.

    References
    ----------
    Lin et al., "Large-scale image classification: fast feature extraction and
    SVM training", CVPR 2011 (ASGD, eq. 8-9). W. Xu, "Towards optimal one pass
    large scale learning with averaged stochastic gradient descent", 2011.
    """

    def __init__(self, reg=1e-4, eta0=0.1, power=2 / 3, average_start=0, bias_lr=0.1,
                 max_epochs=5, shuffle=True, random_state=None, block_size=256,
                 n_jobs=None, averaged=True, pos_weight=1.0, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=5, average_decay=0.0):
        self.reg = reg
        self.eta0 = eta0
        self.power = power
        self.average_start = average_start
        self.average_decay = average_decay
        self.bias_lr = bias_lr
        self.max_epochs = max_epochs
        self.shuffle = shuffle
        self.random_state = random_state
        self.block_size = block_size
        self.n_jobs = n_jobs
        self.averaged = averaged
        self.pos_weight = pos_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # -- validation -------------------------------------------------------------
    def _hyper(self, n_classes=None) -> Hyper:
        reg = check_real("reg", self.reg, low=0.0)
        eta0 = check_real("eta0", self.eta0, low=0.0, low_open=True)
        if reg * eta0 >= 1.0:
            raise ValueError(
                f"reg * eta0 = {reg * eta0:g} must be below 1 (the weights would flip "
                f"sign at the first step); lower eta0 or reg."
            )
        power = check_real("power", self.power, low=0.0)
        if not isinstance(self.averaged, (bool, np.bool_)):
            raise TypeError(f"averaged must be True or False, got {self.averaged!r}.")
        if not isinstance(self.shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {self.shuffle!r}.")
        if isinstance(self.pos_weight, str) and self.pos_weight == "auto":
            pos_weight = auto_pos_weight(n_classes) if n_classes is not None else 1.0
        elif isinstance(self.pos_weight, str):
            raise ValueError(f"pos_weight={self.pos_weight!r} is not a number or 'auto'.")
        else:
            pos_weight = check_real("pos_weight", self.pos_weight, low=0.0, low_open=True)
        return Hyper(
            reg=reg, eta0=eta0, power=power, pos_weight=pos_weight,
            average_start=check_int("average_start", self.average_start, low=0),
            average_decay=check_real("average_decay", self.average_decay, low=0.0),
            bias_lr=check_real("bias_lr", self.bias_lr, low=0.0),
            averaged=bool(self.averaged),
            block_size=check_int("block_size", self.block_size, low=1),
        )

    def _validate_X(self, X, reset):
        return validate_data(self, X, reset=reset, accept_sparse="csr",
                             dtype=[np.float64, np.float32], order="C")

    # -- training ---------------------------------------------------------------
    def fit(self, X, y):
        """Train for ``max_epochs`` passes from zero weights.

        Parameters
        ----------
        X : array-like or CSR (n_samples, n_features), float32 or float64
        y : array-like (n_samples,)

        Returns
        -------
        self

        Raises
        ------
        ValueError
            On bad hyper-parameters, NaN/Inf input, or fewer than 2 classes.
        """
        hyper = self._hyper()
        epochs = check_int("max_epochs", self.max_epochs, low=1)
        n_threads = resolve_n_jobs(self.n_jobs)
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise TypeError(f"early_stopping must be True or False, got {self.early_stopping!r}.")
        if self.early_stopping:
            frac = check_real("validation_fraction", self.validation_fraction, low=0.0,
                              low_open=True)
            if frac >= 1.0:
                raise ValueError(f"validation_fraction={frac} is out of range; expected "
                                 f"0 < validation_fraction < 1.")
            patience = check_int("n_iter_no_change", self.n_iter_no_change, low=1)
        X, y = validate_data(self, X, y, accept_sparse="csr",
                             dtype=[np.float64, np.float32], order="C")
        check_classification_targets(y)
        self._init_state(np.unique(y), X, hyper)
        hyper = self._hyper(len(self.classes_))
        yi = np.searchsorted(self.classes_, y)
        Xv = yv = None
        if self.early_stopping:
            X, yi, Xv, yv = self._split_validation(X, yi, frac)
        rs = check_random_state(self.random_state)
        self.validation_scores_ = []
        best = None
        self.n_epochs_ = self.best_epoch_ = 0
        with thread_limit(n_threads):
            for epoch in range(1, epochs + 1):
                order = rs.permutation(X.shape[0]) if self.shuffle else None
                self._pass(X, yi, order, hyper)
                self._state.fold()  # as bowsvm train does: the same bits with early stopping
                self.n_epochs_ = epoch
                if Xv is None:
                    continue
                score = self._val_accuracy(Xv, yv)
                self.validation_scores_.append(score)
                if best is None or score > best[0]:
                    best = (score, GroupState.from_arrays(self._state.to_arrays()))
                    self.best_epoch_ = epoch
                elif epoch - self.best_epoch_ >= patience:
                    break
        if best is not None:
            self._state = best[1]
        else:
            self.best_epoch_ = self.n_epochs_
        self._publish()
        return self

    def _split_validation(self, X, yi, frac):
        from sklearn.model_selection import train_test_split

        try:
            tr, va = train_test_split(np.arange(X.shape[0]), test_size=frac, stratify=yi,
                                      random_state=self.random_state)
        except ValueError as exc:
            raise ValueError(
                f"early_stopping: cannot hold out validation_fraction={self.validation_fraction!r} "
                f"of {X.shape[0]} rows with every class in both parts ({exc}); raise "
                f"validation_fraction or pass more samples per class."
            ) from None
        return X[tr], yi[tr], X[va], yi[va]

    def _val_accuracy(self, Xv, yv) -> float:
        W, b = self._state.averaged()
        S = decision_scores(Xv, W, b)
        pred = (S[:, 0] > 0).astype(np.int64) if S.shape[1] == 1 else np.argmax(S, axis=1)
        return float(np.mean(pred == yv))

    def partial_fit(self, X, y, classes=None):
        """One pass over ``X`` in the given order, continuing from the current state.

        Parameters
        ----------
        X : array-like or CSR (n_samples, n_features)
        y : array-like (n_samples,)
        classes : array-like, required on the first call
            Every class that will ever appear.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If ``classes`` is missing on the first call, differs later, or
            ``y`` holds a label outside it.
        """
        hyper = self._hyper()
        n_threads = resolve_n_jobs(self.n_jobs)
        first = not hasattr(self, "classes_")
        X, y = validate_data(self, X, y, accept_sparse="csr",
                             dtype=[np.float64, np.float32], order="C", reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._init_state(np.unique(classes), X, hyper)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={classes!r} is not the same as on the first call to "
                f"partial_fit ({self.classes_!r}); pass the same classes every time."
            )
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y contains labels {unknown[:10]!r} that are not in classes "
                f"{self.classes_[:10]!r}; pass every label in classes on the first call."
            )
        if X.dtype != self._state.dtype:
            X = X.astype(self._state.dtype)
        hyper = self._hyper(len(self.classes_))
        yi = np.searchsorted(self.classes_, y)
        with thread_limit(n_threads):
            self._pass(X, yi, None, hyper)
        self._publish()
        return self

    def _init_state(self, classes, X, hyper):
        if classes.shape[0] < 2:
            raise ValueError(
                f"ASGDClassifier needs samples of at least 2 classes, got only one class: "
                f"{classes!r}."
            )
        self.classes_ = classes
        row_class = np.array([1]) if classes.shape[0] == 2 else np.arange(classes.shape[0])
        self._state = GroupState(row_class, X.shape[1], X.dtype, averaged=hyper.averaged)

    def _pass(self, X, yi, order, hyper):
        n = X.shape[0]
        if order is None:
            train_chunk(self._state, X, yi, hyper)
            return
        row_bytes = max(1, (X.nnz // max(n, 1)) * 12 if sp.issparse(X) else X.shape[1] * X.itemsize)
        step = max(hyper.block_size, _CHUNK_BYTES // row_bytes)
        for s in range(0, n, step):
            idx = order[s:s + step]
            train_chunk(self._state, X[idx], yi[idx], hyper)

    def _publish(self):
        W, b = self._state.averaged()
        self.coef_ = W
        self.intercept_ = b.copy()
        self.t_ = int(self._state.t)

    # -- prediction -------------------------------------------------------------
    def decision_function(self, X):
        """Scores ``X coef_^T + intercept_``.

        Returns
        -------
        scores : ndarray (n_samples, n_classes), or (n_samples,) for two classes
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        S = decision_scores(X, self.coef_, self.intercept_)
        return S[:, 0] if S.shape[1] == 1 else S

    def predict(self, X):
        """Class labels: the arg-max score (or the sign for two classes)."""
        S = self.decision_function(X)
        if S.ndim == 1:
            return self.classes_[(S > 0).astype(np.intp)]
        return self.classes_[np.argmax(S, axis=1)]
