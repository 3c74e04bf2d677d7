"""The streaming one-vs-all trainer: epochs of ASGD or DCD over the chunks it is handed.

Sees only arrays. The caller hands it, per epoch, an iterable of ``(X, y)``
chunks (dense C-contiguous float32 or CSR, int64 labels), and callables for
what happens around an epoch (validation, checkpoints); it reads no file and
knows no folder. ``bowsvm train`` (:mod:`bowsvm.stages.train`) streams the
chunks from feature shards; every class group trains on each chunk while it
is in memory, so an epoch reads the data once whatever the number of groups.

Each setting's class groups hold :class:`~bowsvm.asgd.core.GroupState` (ASGD)
or :class:`~bowsvm.asgd.dcd.DualState` (DCD, ``Hyper.solver == "dcd"``, whose
chunks come with each row's index in the train split); lists, early stopping
and checkpoints treat both alike.

Determinism: the sample sequence is the caller's (the train stage derives it
from the seed and the chunk size). P is folded at the end of every epoch, so
a run resumed from the states after an epoch (:func:`states_to_arrays`,
:func:`states_from_arrays`) repeats the uninterrupted run exactly on the same
machine with the same thread count (the dense path's margins are BLAS GEMMs,
whose rounding depends on the thread count and the CPU; the sparse path uses
no BLAS).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numba
import numpy as np

from bowsvm._validation import check_int
from bowsvm.asgd import _kernels
from bowsvm.asgd.core import GroupState, Hyper, train_chunk
from bowsvm.asgd.dcd import DualState, dcd_chunk

__all__ = [
    "DIVERGENCE_FACTOR",
    "ETA0_AUTO_FRACTION",
    "SELECT_METRICS",
    "Candidate",
    "EarlyStopping",
    "auto_pos_weight",
    "calibrate_eta0",
    "check_divergence",
    "choose",
    "class_groups",
    "evaluate",
    "gather",
    "method",
    "new_states",
    "objective",
    "states_from_arrays",
    "states_to_arrays",
    "train_chunk_any",
    "train_epochs",
    "with_eta0",
]

#: Training stops when an epoch's objective exceeds this multiple of the
#: zero-weight objective (1.0: every hinge loss is 1), or is not finite.
DIVERGENCE_FACTOR = 100.0


def method(hyper: Hyper) -> str:
    """The log's and the manifest's name of a setting's method: asgd, sgd, dcd or dcd-last."""
    if hyper.solver == "dcd":
        return "dcd" if hyper.averaged else "dcd-last"
    return "asgd" if hyper.averaged else "sgd"


def auto_pos_weight(n_classes: int) -> float:
    """``pos_weight="auto"``: ``(C - 1) / C^(2/3)``, at least 1 (10 for 1000 classes).

    With balanced classes each one-vs-all problem has C - 1 negatives per
    positive; this weight makes them weigh like C^(2/3) negatives per positive.
    Perronnin et al. (CVPR 2012) rebalanced one-vs-rest SGD on ImageNet to about
    sqrt(C) by subsampling negatives (here exact, by weighting); on rows whose
    classes are mixed, 5 epochs did better with less weight (q 3-10 against
    sqrt(C)'s 31.6 for 1000 classes; docs/BENCHMARKS.md, "Positive weight on
    mixed rows").
    """
    C = check_int("n_classes", n_classes, low=1)
    return max(1.0, (C - 1) / C ** (2 / 3))


def class_groups(n_classes: int, n_groups: int) -> list[np.ndarray]:
    """Split classes ``0..C-1`` into ``n_groups`` contiguous ranges (the units of work).

    Raises
    ------
    ValueError
        If ``n_groups`` is not in ``[1, n_classes]``.
    """
    n_groups = check_int("groups", n_groups, low=1, high=max(n_classes, 1))
    return [g.astype(np.int64) for g in np.array_split(np.arange(n_classes), n_groups)]


def new_states(parts, groups, dim: int, hyper: Hyper, n_rows: int | None = None) -> dict:
    """Zero float32 states of the class groups ``groups`` of ``parts``.

    ``{g: GroupState}`` for ``hyper.solver == "asgd"``, ``{g: DualState}`` for
    ``"dcd"`` (whose dual variables need ``n_rows``, the train split's rows).
    """
    if hyper.solver == "dcd":
        if n_rows is None:
            raise ValueError("solver 'dcd' needs the number of train rows (n_rows).")
        return {g: DualState(parts[g], dim, n_rows, np.float32, averaged=hyper.averaged)
                for g in groups}
    return {g: GroupState(parts[g], dim, np.float32, averaged=hyper.averaged) for g in groups}


def train_chunk_any(state, X, y, idx, hyper: Hyper) -> None:
    """One chunk of either solver: :func:`~bowsvm.asgd.core.train_chunk` (ASGD, ``idx``
    unused) or :func:`~bowsvm.asgd.dcd.dcd_chunk` (DCD, ``idx`` the train-split rows)."""
    if isinstance(state, DualState):
        dcd_chunk(state, X, y, idx, hyper)
    else:
        train_chunk(state, X, y, hyper)


def states_to_arrays(states: dict) -> dict:
    """The states of several groups as one dict of arrays (keys ``g<G>_...``); folds them."""
    arrays = {}
    for g, st in states.items():
        arrays.update(st.to_arrays(prefix=f"g{g}_"))
    return arrays


def states_from_arrays(arrays) -> dict:
    """Inverse of :func:`states_to_arrays`: ``{g: GroupState or DualState}`` in group order."""
    return {g: (DualState if f"g{g}_alpha" in arrays else GroupState).from_arrays(
                arrays, prefix=f"g{g}_")
            for g in sorted({int(k.split("_")[0][1:]) for k in arrays})}


def gather(states: dict):
    """Concatenate the groups' averaged weights in class order: (coef, intercept)."""
    W, b = zip(*(states[g].averaged() for g in sorted(states)))
    return np.concatenate(W, axis=0), np.concatenate(b)


def objective(W, b, X, y, row_class, reg: float, pos_weight: float = 1.0) -> float:
    """The one-vs-all objective of weights ``(W, b)`` on one in-memory chunk.

    Mean over the rows of ``W`` of ``reg/2 ||w_c||^2 + mean_i q_ci hinge``, where
    row ``c`` scores samples of class ``row_class[c]`` as positive and a
    positive's loss weighs ``q_ci = pos_weight`` (a negative's 1).
    """
    S = np.asarray(X @ W.T) + b[None, :].astype(W.dtype)
    loss = np.empty(W.shape[0])
    _kernels.hinge_stats(S, np.ascontiguousarray(y, dtype=np.int64), row_class,
                         float(pos_weight), loss, numba.get_num_threads())
    sq = np.einsum("ij,ij->i", W, W, dtype=np.float64)
    return float(np.mean(0.5 * reg * sq + loss / max(X.shape[0], 1)))


def calibrate_eta0(X, y, n_classes: int, reg: float, power: float, bias_lr: float,
                   block_size: int = 256, candidates=None, pos_weight: float = 1.0) -> float:
    """Pick eta0 by trying plain SGD for one pass over a sample (Bottou's sgd style).

    Each tried eta0 trains from zero for one pass over the sample; the one with
    the lowest one-vs-all objective (weighted by ``pos_weight`` as trained) on
    the same sample wins. Without
    ``candidates`` the search starts at 1 (halved until ``reg * eta0 < 1``) and
    walks by factors of 2 in the improving direction while the objective
    improves (at most 12 steps); with ``candidates`` it tries each of them.

    Raises
    ------
    ValueError
        If every tried eta0 diverges.
    """
    row_class = np.arange(n_classes)
    cache = {}

    def tried(eta0):
        if eta0 not in cache:
            st = GroupState(row_class, X.shape[1], X.dtype, averaged=False)
            h = Hyper(reg=reg, eta0=eta0, power=power, bias_lr=bias_lr, averaged=False,
                      block_size=block_size, pos_weight=pos_weight)
            train_chunk(st, X, y, h)
            W, b = st.weights()
            obj = objective(W, b, X, y, row_class, reg, pos_weight)
            cache[eta0] = obj if np.isfinite(obj) else np.inf
        return cache[eta0]

    if candidates is not None:
        for e in candidates:
            if reg * e < 1.0:
                tried(float(e))
    else:
        e = 1.0
        while reg * e >= 1.0:
            e /= 2.0
        tried(e)
        step = 0.5 if tried(e / 2.0) < tried(e) else 2.0
        e = e * step if step == 0.5 else e
        for _ in range(12):
            nxt = e * step
            if reg * nxt >= 1.0 or tried(nxt) >= tried(e):
                break
            e = nxt
    finite = {k: v for k, v in cache.items() if np.isfinite(v)}
    if not finite:
        raise ValueError("eta0 calibration failed: every candidate diverged; pass --eta0.")
    return float(min(finite, key=lambda k: (finite[k], k)))


#: ``eta0 auto`` trains with this fraction of the step that :func:`calibrate_eta0`
#: finds best for one plain-SGD pass over its sample. That pass sees each class a
#: few times; epochs of averaged SGD over all rows do better with a smaller
#: step: on the 1000-class benchmark val top-1 after 5 epochs was 0.572 / 0.585 /
#: 0.593 / 0.590 at 1, 1/2, 1/4 and 1/8 of the calibrated step, and Fashion-MNIST
#: does not lose by it (docs/BENCHMARKS.md, "Defaults that converge in 5 epochs").
ETA0_AUTO_FRACTION = 0.25


def with_eta0(hyper: Hyper, X, y, n_classes: int) -> Hyper:
    """``hyper`` with ``eta0 auto``: :data:`ETA0_AUTO_FRACTION` of the step
    :func:`calibrate_eta0` picks on the sample ``(X, y)``."""
    eta0 = calibrate_eta0(X, y, n_classes, hyper.reg, hyper.power, hyper.bias_lr,
                          hyper.block_size, pos_weight=hyper.pos_weight)
    return Hyper(**{**asdict(hyper), "eta0": ETA0_AUTO_FRACTION * eta0})


def check_divergence(epoch: int, objective: float, where: str, hyper: Hyper,
                     alone: bool = True) -> None:
    """Stop training whose objective is not finite or far above the zero-weight one.

    With w = 0 and b = 0 every hinge loss is 1, so the one-vs-all objective is
    1.0 (about 1 + (q - 1) / C with ``pos_weight`` q); a run whose objective
    after an epoch exceeds ``DIVERGENCE_FACTOR`` (100) or is NaN/Inf has
    diverged. ``alone``: the run's only setting (the message then says that no
    model was written).

    Raises
    ------
    ValueError
        Naming the epoch, the objective and the step/regularisation to lower.
    """
    if np.isfinite(objective) and objective <= DIVERGENCE_FACTOR:
        return
    weighted = f", pos_weight={hyper.pos_weight:g}" if hyper.pos_weight != 1.0 else ""
    raise ValueError(
        f"training diverged: after epoch {epoch} the {where} objective is {objective:.4g} "
        f"(the all-zero model scores about 1; the limit is {DIVERGENCE_FACTOR:g}) with "
        f"eta0={hyper.eta0:g}, reg={hyper.reg:g}{weighted}; retry with a smaller --eta0 (e.g. "
        f"{hyper.eta0 / 10:g}, or --eta0 auto)"
        + (", a smaller --pos-weight" if weighted else "")
        + " or a smaller --reg." + (" No model was written." if alone else "")
    )


def evaluate(groups_wb, chunks, reg: float, ranks, pos_weight: float = 1.0) -> dict:
    """Top-1, top-5 and the one-vs-all objective of a model on a stream of chunks.

    Parameters
    ----------
    groups_wb : list of (W (C_g, d), b (C_g,)) in class order
    chunks : iterable of (X (n, d), y (n,) int)
    reg : float
    ranks : callable
        ``ranks(S, y)``: the rank of the true class in each row of the scores
        ``S`` (0 = top), e.g. :func:`bowsvm.evaluation.metrics.true_class_ranks`.

    Returns
    -------
    dict with top1, top5, objective (mean over classes of
    ``reg/2 ||w_c||^2 + mean_i q_ci hinge``, see :func:`objective`), n
    """
    C = sum(W.shape[0] for W, _ in groups_wb)
    loss = np.zeros(C)
    hits1 = hits5 = n = 0
    row_class = np.arange(C)
    for X, labels in chunks:
        S = np.concatenate([np.asarray(X @ W.T) + b[None, :].astype(W.dtype) for W, b in groups_wb],
                           axis=1)
        r = ranks(S, labels)
        hits1 += int((r < 1).sum())
        hits5 += int((r < 5).sum())
        part = np.empty(C)
        _kernels.hinge_stats(np.ascontiguousarray(S), labels.astype(np.int64), row_class,
                             float(pos_weight), part, numba.get_num_threads())
        loss += part
        n += labels.shape[0]
    sq = np.concatenate([np.einsum("ij,ij->i", W, W, dtype=np.float64) for W, _ in groups_wb])
    return {"top1": hits1 / n, "top5": hits5 / n,
            "objective": float(np.mean(0.5 * reg * sq + loss / n)), "n": n}


#: Validation scores early stopping and hyper-parameter selection can follow.
SELECT_METRICS = ("top1", "top5")


class EarlyStopping:
    """Follow one run's validation score per epoch: which epoch to keep, when to stop.

    The kept epoch is the first one with the highest ``metric``; with
    ``patience`` > 0 the run stops once that many epochs have passed without a
    higher score. With ``patience`` 0 every epoch runs and the kept epoch is
    still the best one. The same rule serves the local run (online) and the
    Spark driver (replayed over the epochs the tasks trained), so both keep the
    same epoch.
    """

    def __init__(self, metric: str = "top1", patience: int = 0):
        if metric not in SELECT_METRICS:
            raise ValueError(f"selection metric {metric!r} is not one of {SELECT_METRICS}.")
        self.metric = metric
        self.patience = check_int("patience", patience, low=0)
        self.best_epoch = 0
        self.best_score = -np.inf

    def update(self, epoch: int, row: dict) -> tuple[bool, bool]:
        """Record epoch ``epoch``'s log row: ``(improved, stop)``."""
        score = float(row[self.metric])
        improved = score > self.best_score
        if improved:
            self.best_epoch, self.best_score = epoch, score
        stop = self.patience > 0 and epoch - self.best_epoch >= self.patience
        return improved, stop

    @classmethod
    def replay(cls, metric: str, patience: int, rows) -> "EarlyStopping":
        """The rule's state after the logged ``rows`` (a resumed run)."""
        es = cls(metric, patience)
        for r in rows:
            es.update(int(r["epoch"]), r)
        return es


class Candidate:
    """One hyper-parameter setting of a run: its class groups' states, log and kept epoch.

    Attributes
    ----------
    hyper : Hyper
    states : dict group index -> GroupState or DualState
    log_rows : list of dict
        One row per epoch trained.
    stopping : EarlyStopping or None
        None: the model is the last epoch's.
    kept : dict group index -> (W, b) or None
        Copies of the averaged weights of the best epoch so far (with ``stopping``).
    finished : str or None
        Why training ended before the last epoch: "early-stop" or "diverged".
    error : str or None
        The divergence message.
    """

    def __init__(self, hyper: Hyper, states: dict, stopping: EarlyStopping | None = None):
        self.hyper = hyper
        self.states = states
        self.log_rows = []
        self.stopping = stopping
        self.kept = None
        self.finished = None
        self.error = None

    def keep(self) -> None:
        """Copy the current averaged weights as the kept epoch's."""
        self.kept = {g: (W.copy(), b.copy())
                     for g, (W, b) in ((g, st.averaged()) for g, st in self.states.items())}

    @property
    def model_epoch(self) -> int:
        """The epoch whose weights :meth:`model` returns."""
        if self.stopping is not None:
            return self.stopping.best_epoch
        return int(self.log_rows[-1]["epoch"]) if self.log_rows else 0

    def model(self):
        """``(coef, intercept)`` in class order: the kept epoch's, or the last one's."""
        if self.stopping is not None and self.kept is not None:
            W, b = zip(*(self.kept[g] for g in sorted(self.kept)))
            return np.concatenate(W, axis=0), np.concatenate(b)
        return gather(self.states)

    def score(self, metric: str) -> float:
        """The validation ``metric`` of the epoch :meth:`model` returns (-inf if diverged)."""
        if self.error is not None or not self.log_rows:
            return -np.inf
        e = self.model_epoch
        return float(next(r[metric] for r in self.log_rows if r["epoch"] == e))

    def to_arrays(self, prefix: str) -> dict:
        """States and kept weights as arrays (checkpoints), keys starting ``prefix``."""
        arrays = {prefix + k: v for k, v in states_to_arrays(self.states).items()}
        for g, (W, b) in (self.kept or {}).items():
            arrays[f"{prefix}kept_g{g}_W"] = W
            arrays[f"{prefix}kept_g{g}_b"] = b
        return arrays

    def load_arrays(self, arrays, prefix: str) -> None:
        """Inverse of :meth:`to_arrays` (the log rows are restored separately)."""
        mine = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        self.states = states_from_arrays({k: v for k, v in mine.items() if k.startswith("g")})
        kept = sorted(int(k.split("_")[1][1:]) for k in mine if k.startswith("kept_") and
                      k.endswith("_W"))
        self.kept = ({g: (np.array(mine[f"kept_g{g}_W"]), np.array(mine[f"kept_g{g}_b"]))
                      for g in kept} or None)


def choose(candidates, metric: str) -> int:
    """Index of the candidate with the best validation ``metric`` (the first on ties).

    Raises
    ------
    ValueError
        If every candidate diverged (the first one's message, with the count).
    """
    live = [k for k, c in enumerate(candidates) if c.error is None]
    if not live:
        raise ValueError(f"all {len(candidates)} hyper-parameter settings diverged; the first: "
                         f"{candidates[0].error}")
    return max(live, key=lambda k: (candidates[k].score(metric), -k))


def train_epochs(candidates, chunks, epochs: int, *, done: int = 0, judge, progress=None,
                 on_epoch=None) -> list:
    """Run epochs ``done + 1 .. epochs`` of one-vs-all ASGD for every candidate setting.

    Every candidate (and each of its class groups) trains on each chunk while
    it is in memory, so an epoch reads the data once whatever the number of
    settings and groups; each candidate's arithmetic is that of training it
    alone (same chunks, same order, its own states).

    Parameters
    ----------
    candidates : list of Candidate
        Trained in place (states folded after every epoch, rows appended).
    chunks : callable
        ``chunks(epoch)``: an iterable of ``(X, y)`` or ``(X, y, idx)`` chunks,
        the epoch's sample sequence (``idx``: each row's index in the train
        split, which the DCD solver needs).
    epochs : int
        The last epoch to run.
    done : int
        Epochs already done (a resumed run; the candidates hold their rows).
    judge : callable
        ``judge(candidate) -> (extra, objective, where)``: log fields to add
        (e.g. validation top-1), and the objective that decides divergence
        with a phrase naming where it was measured.
    progress : callable or None
        Called as ``progress(row, k)`` with each log row and its candidate index.
    on_epoch : callable or None
        Called as ``on_epoch(epoch, candidates)`` after each epoch (checkpoints,
        per-group outputs).

    Returns
    -------
    list of Candidate

    Raises
    ------
    ValueError
        If the only candidate diverges (:func:`check_divergence`), after its row
        was logged and reported. With several candidates a diverging one is
        marked (``finished = "diverged"``, ``error``) and the others go on.
    """
    for epoch in range(done + 1, epochs + 1):
        live = [c for c in candidates if c.finished is None]
        if not live:
            break
        t0 = time.perf_counter()
        for X, y, *idx in chunks(epoch):
            for c in live:
                for g in sorted(c.states):
                    train_chunk_any(c.states[g], X, y, idx[0] if idx else None, c.hyper)
        seconds = round(time.perf_counter() - t0, 3)
        for c in live:
            for st in c.states.values():
                st.fold()
            first = c.states[min(c.states)]
            row = {"epoch": epoch, "t": int(first.t), "method": method(c.hyper),
                   "seconds": seconds}
            extra, obj, where = judge(c)
            row.update(extra)
            c.log_rows.append(row)
            if progress is not None:
                progress(row, candidates.index(c))
            try:
                check_divergence(epoch, obj, where, c.hyper, alone=len(candidates) == 1)
            except ValueError as exc:
                if len(candidates) == 1:
                    raise
                c.finished, c.error = "diverged", str(exc)
                continue
            if c.stopping is not None:
                improved, stop = c.stopping.update(epoch, row)
                if improved:
                    c.keep()
                if stop:
                    c.finished = "early-stop"
        if on_epoch is not None:
            on_epoch(epoch, candidates)
    return candidates
