"""The streaming one-vs-all trainer: epochs over the chunks it is handed.

Sees only arrays. The caller hands it, per epoch, an iterable of ``(X, y)``
chunks (dense C-contiguous float32 or CSR, int64 labels), and callables for
what happens around an epoch (validation, checkpoints); it reads no file and
knows no folder. ``bowsvm train`` (:mod:`bowsvm.stages.train`) streams the
chunks from feature shards; every class group trains on each chunk while it
is in memory, so an epoch reads the data once whatever the number of groups.

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

__all__ = [
    "DIVERGENCE_FACTOR",
    "calibrate_eta0",
    "check_divergence",
    "class_groups",
    "evaluate",
    "gather",
    "new_states",
    "objective",
    "states_from_arrays",
    "states_to_arrays",
    "train_epochs",
    "with_eta0",
]

#: Training stops when an epoch's objective exceeds this multiple of the
#: zero-weight objective (1.0: every hinge loss is 1), or is not finite.
DIVERGENCE_FACTOR = 100.0


def class_groups(n_classes: int, n_groups: int) -> list[np.ndarray]:
    """Split classes ``0..C-1`` into ``n_groups`` contiguous ranges (the units of work).

    Raises
    ------
    ValueError
        If ``n_groups`` is not in ``[1, n_classes]``.
    """
    n_groups = check_int("groups", n_groups, low=1, high=max(n_classes, 1))
    return [g.astype(np.int64) for g in np.array_split(np.arange(n_classes), n_groups)]


def new_states(parts, groups, dim: int, hyper: Hyper) -> dict:
    """Zero float32 states ``{g: GroupState}`` of the class groups ``groups`` of ``parts``."""
    return {g: GroupState(parts[g], dim, np.float32, averaged=hyper.averaged) for g in groups}


def states_to_arrays(states: dict) -> dict:
    """The states of several groups as one dict of arrays (keys ``g<G>_...``); folds them."""
    arrays = {}
    for g, st in states.items():
        arrays.update(st.to_arrays(prefix=f"g{g}_"))
    return arrays


def states_from_arrays(arrays) -> dict:
    """Inverse of :func:`states_to_arrays`: ``{g: GroupState}`` in group order."""
    return {g: GroupState.from_arrays(arrays, prefix=f"g{g}_")
            for g in sorted({int(k.split("_")[0][1:]) for k in arrays})}


def gather(states: dict):
    """Concatenate the groups' averaged weights in class order: (coef, intercept)."""
    W, b = zip(*(states[g].averaged() for g in sorted(states)))
    return np.concatenate(W, axis=0), np.concatenate(b)


def objective(W, b, X, y, row_class, reg: float) -> float:
    """The one-vs-all objective of weights ``(W, b)`` on one in-memory chunk.

    Mean over the rows of ``W`` of ``reg/2 ||w_c||^2 + mean_i hinge``, where
    row ``c`` scores samples of class ``row_class[c]`` as positive.
    """
    S = np.asarray(X @ W.T) + b[None, :].astype(W.dtype)
    loss = np.empty(W.shape[0])
    _kernels.hinge_stats(S, np.ascontiguousarray(y, dtype=np.int64), row_class, loss,
                         numba.get_num_threads())
    sq = np.einsum("ij,ij->i", W, W, dtype=np.float64)
    return float(np.mean(0.5 * reg * sq + loss / max(X.shape[0], 1)))


def calibrate_eta0(X, y, n_classes: int, reg: float, power: float, bias_lr: float,
                   block_size: int = 256, candidates=None) -> float:
    """Pick eta0 by trying plain SGD for one pass over a sample (Bottou's sgd style).

    Each tried eta0 trains from zero for one pass over the sample; the one with
    the lowest one-vs-all objective on the same sample wins. Without
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
                      block_size=block_size)
            train_chunk(st, X, y, h)
            W, b = st.weights()
            obj = objective(W, b, X, y, row_class, reg)
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


def with_eta0(hyper: Hyper, X, y, n_classes: int) -> Hyper:
    """``hyper`` with eta0 calibrated on the sample ``(X, y)`` (:func:`calibrate_eta0`)."""
    eta0 = calibrate_eta0(X, y, n_classes, hyper.reg, hyper.power, hyper.bias_lr,
                          hyper.block_size)
    return Hyper(**{**asdict(hyper), "eta0": eta0})


def check_divergence(epoch: int, objective: float, where: str, hyper: Hyper) -> None:
    """Stop training whose objective is not finite or far above the zero-weight one.

    With w = 0 and b = 0 every hinge loss is 1, so the one-vs-all objective is
    1.0; a run whose objective after an epoch exceeds
    ``DIVERGENCE_FACTOR`` (100) times that, or is NaN/Inf, has diverged.

    Raises
    ------
    ValueError
        Naming the epoch, the objective and the step/regularisation to lower.
    """
    if np.isfinite(objective) and objective <= DIVERGENCE_FACTOR:
        return
    raise ValueError(
        f"training diverged: after epoch {epoch} the {where} objective is {objective:.4g} "
        f"(the all-zero model scores 1.0; the limit is {DIVERGENCE_FACTOR:g}) with "
        f"eta0={hyper.eta0:g}, reg={hyper.reg:g}; retry with a smaller --eta0 (e.g. "
        f"{hyper.eta0 / 10:g}, or --eta0 auto) or a smaller --reg. No model was written."
    )


def evaluate(groups_wb, chunks, reg: float, ranks) -> dict:
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
    ``reg/2 ||w_c||^2 + mean_i hinge``), n
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
        _kernels.hinge_stats(np.ascontiguousarray(S), labels.astype(np.int64), row_class, part,
                             numba.get_num_threads())
        loss += part
        n += labels.shape[0]
    sq = np.concatenate([np.einsum("ij,ij->i", W, W, dtype=np.float64) for W, _ in groups_wb])
    return {"top1": hits1 / n, "top5": hits5 / n,
            "objective": float(np.mean(0.5 * reg * sq + loss / n)), "n": n}


def train_epochs(states: dict, chunks, hyper: Hyper, epochs: int, *, done: int = 0,
                 log_rows=None, judge, progress=None, on_epoch=None) -> list:
    """Run epochs ``done + 1 .. epochs`` of one-vs-all ASGD over the chunks handed in.

    Parameters
    ----------
    states : dict group index -> GroupState
        Trained in place (folded after every epoch).
    chunks : callable
        ``chunks(epoch)``: an iterable of ``(X, y)`` chunks, the epoch's
        sample sequence; every group trains on each chunk in turn.
    hyper : Hyper
    epochs : int
        The last epoch to run.
    done : int
        Epochs already done (a resumed run); ``log_rows`` holds their rows.
    log_rows : list of dict or None
        Appended to; one row per epoch: epoch, t, method, seconds (the
        epoch's training time) and what ``judge`` adds.
    judge : callable
        ``judge(states) -> (extra, objective, where)``: log fields to add
        (e.g. validation top-1), and the objective that decides divergence
        with a phrase naming where it was measured.
    progress : callable or None
        Called with each log row.
    on_epoch : callable or None
        Called as ``on_epoch(epoch, states, log_rows)`` after each epoch that
        did not diverge (checkpoints, per-group outputs).

    Returns
    -------
    list of dict
        ``log_rows``.

    Raises
    ------
    ValueError
        If an epoch diverges (:func:`check_divergence`), after its row was
        logged and reported.
    """
    log_rows = [] if log_rows is None else log_rows
    order = sorted(states)
    for epoch in range(done + 1, epochs + 1):
        t0 = time.perf_counter()
        for X, y in chunks(epoch):
            for g in order:
                train_chunk(states[g], X, y, hyper)
        for st in states.values():
            st.fold()
        row = {"epoch": epoch, "t": int(states[order[0]].t),
               "method": "asgd" if hyper.averaged else "sgd",
               "seconds": round(time.perf_counter() - t0, 3)}
        extra, obj, where = judge(states)
        row.update(extra)
        log_rows.append(row)
        if progress is not None:
            progress(row)
        check_divergence(epoch, obj, where, hyper)
        if on_epoch is not None:
            on_epoch(epoch, states, log_rows)
    return log_rows
