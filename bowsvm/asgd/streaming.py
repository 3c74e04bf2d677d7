"""Training from feature shards: streaming, class groups, validation, checkpoints.

The library behind ``bowsvm train`` and ``jobs/train_groups.py``. Feature
shards (docs/FORMATS.md, stage "extract") are read chunk by chunk within a
memory budget, on a background thread one chunk ahead of the trainer; every
class group trains on each chunk while it is in memory, so an epoch reads the
data once whatever the number of groups.

Determinism: epoch ``e`` visits the shards in the order
``default_rng([seed, e]).permutation`` and shuffles the rows of each chunk with
the same generator, so the sample sequence depends only on ``seed`` and the
chunk size (itself fixed by the memory budget). P is folded at the end of
every epoch; a run resumed from an epoch checkpoint therefore repeats the
uninterrupted run exactly on the same machine with the same ``n_jobs`` (the
dense path's margins are BLAS GEMMs, whose rounding depends on the thread
count and the CPU; the sparse path uses no BLAS).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bowsvm._validation import check_int
from bowsvm.asgd import _kernels
from bowsvm.asgd._parallel import resolve_n_jobs, thread_limit
from bowsvm.asgd.core import GroupState, Hyper, train_chunk
from bowsvm.io import atomic_output_dir, content_hash, parquet, read_manifest, write_json_atomic
from bowsvm.io.arrays import load_npz
from bowsvm.io.features import (
    check_feature_values, iter_shard_batches, shard_files, value_bound, verified_shard_files,
)

__all__ = [
    "FeatureSet",
    "SplitInfo",
    "auto_eta0",
    "check_divergence",
    "gather",
    "calibrate_eta0",
    "class_groups",
    "evaluate",
    "iter_chunks",
    "open_feature_set",
    "parse_bytes",
    "rows_per_chunk",
    "scan_split",
    "train_feature_set",
    "write_model",
]

#: Environment variable used by the tests only: after writing the checkpoint
#: of this epoch the process kills itself with SIGKILL (a real crash).
KILL_ENV = "BOWSVM_TEST_KILL_AFTER_EPOCH"

#: Chunk buffers alive at once: the trainer's, the read-ahead one, and the
#: one being decoded (Arrow batch + NumPy copy + shuffled copy).
_CHUNK_COPIES = 5

#: Decoded Parquet row groups alive at once (the trainer's and the read-ahead's).
_ROW_GROUP_COPIES = 2

#: Training stops when an epoch's objective exceeds this multiple of the
#: zero-weight objective (1.0: every hinge loss is 1), or is not finite.
DIVERGENCE_FACTOR = 100.0

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "T": 1 << 40, "TB": 1 << 40}


def parse_bytes(text) -> int:
    """Parse a size such as ``"2GB"``, ``"512M"`` or ``1000000`` into bytes.

    Raises
    ------
    ValueError
        If the text is not a positive number with an optional unit.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?B?)\s*", str(text).upper())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(
            f"memory budget {text!r} is not a size; write it like 2GB, 512MB or 1e9 bytes "
            f"as 1000000000."
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


@dataclass
class FeatureSet:
    """A feature-set folder: its manifest and what training needs from it."""

    name: str
    folder: Path
    manifest: dict
    dim: int
    layout: str
    classes: list
    preset_hash: str | None


@dataclass
class SplitInfo:
    """The shards of one split, their row counts and the class counts."""

    split: str
    files: list
    rows: list
    counts: np.ndarray
    bound: float | None = None  # largest |value| the preset allows (None: no bound)

    @property
    def n(self) -> int:
        return int(sum(self.rows))


def open_feature_set(features_root, name: str) -> FeatureSet:
    """Read and check ``<features_root>/<name>/manifest.json`` (stage "extract").

    Raises
    ------
    FileNotFoundError
        If the folder is missing or incomplete.
    ValueError
        If the manifest is from another stage or lacks dim/layout/classes.
    """
    folder = Path(features_root) / name
    m = read_manifest(folder, stage="extract")
    missing = [k for k in ("dim", "layout", "classes") if k not in m]
    if missing:
        raise ValueError(
            f"feature-set manifest {str(folder / 'manifest.json')!r} lacks {missing}; "
            f"re-run `bowsvm extract` for it."
        )
    if m["layout"] not in ("dense", "sparse"):
        raise ValueError(f"feature set {name!r} has layout {m['layout']!r}; expected dense or sparse.")
    return FeatureSet(name, folder, m, int(m["dim"]), m["layout"], list(m["classes"]),
                      m.get("preset_hash"))


def scan_split(fs: FeatureSet, split: str, *, require_all_classes: bool = False,
               check_hash: bool = True) -> SplitInfo:
    """Check every shard of a split against the manifest, its schema and labels.

    The shards on disk must be exactly the manifest's ``shards`` entries for
    the split, with their recorded sizes, row counts and (with ``check_hash``)
    SHA-256 (:func:`bowsvm.io.features.verified_shard_files`); feature data
    is otherwise not decoded here.

    Raises
    ------
    ValueError
        If the manifest has no shard entries, a shard is missing, extra,
        changed or corrupt, the split has no rows, a shard's dimension, layout
        or preset hash differs from the manifest, a label is outside the class
        list, or (with ``require_all_classes``, i.e. for training) a class has
        no example or there are fewer than 2 classes.
    """
    files = verified_shard_files(fs.folder, fs.manifest, split, check_hash=check_hash)
    C = len(fs.classes)
    counts = np.zeros(C, dtype=np.int64)
    rows = []
    for f in files:
        pf = parquet.open_file(f, "feature shard")
        schema = pf.schema_arrow
        if fs.layout == "dense":
            if "x" not in schema.names:
                raise ValueError(f"shard {str(f)!r} has no column 'x' but the feature set is dense.")
            size = getattr(schema.field("x").type, "list_size", None)
            if size is None and pf.metadata.num_rows:  # variable list (Spark): first row
                first = next(parquet.iter_batches(f, "feature shard", batch_size=1, columns=["x"]))
                size = len(first.column(0)[0])
            if size is not None and size != fs.dim:
                raise ValueError(
                    f"shard {str(f)!r} has feature dimension {size}, but the manifest says "
                    f"dim={fs.dim}; the folder mixes shards of different feature sets: re-extract it."
                )
        elif not {"indices", "values"} <= set(schema.names):
            raise ValueError(f"shard {str(f)!r} lacks 'indices'/'values' but the feature set is sparse.")
        meta = schema.metadata or {}
        ph = meta.get(b"preset_hash")
        if ph is not None and fs.preset_hash is not None and ph.decode() != fs.preset_hash:
            raise ValueError(
                f"shard {str(f)!r} was built with preset hash {ph.decode()!r}, but the manifest "
                f"says {fs.preset_hash!r}; re-extract the feature set."
            )
        lab = parquet.read_table(f, "feature shard", columns=["label"]).column("label").to_numpy()
        bad = np.flatnonzero((lab < 0) | (lab >= C))
        if bad.size:
            raise ValueError(
                f"shard {str(f)!r} row {int(bad[0])} has label {int(lab[bad[0]])}, outside the "
                f"class list of {C} classes in the manifest; re-extract the feature set."
            )
        counts += np.bincount(lab, minlength=C)
        rows.append(int(lab.shape[0]))
    info = SplitInfo(split, files, rows, counts, value_bound(fs.manifest))
    if require_all_classes and C < 2:
        raise ValueError(
            f"feature set {fs.name!r} has {C} class ({fs.classes}); a one-vs-all classifier "
            f"needs at least 2 classes (it would score top-1 1.0 without learning anything): "
            f"prepare the images with two or more classes."
        )
    if info.n == 0:
        raise ValueError(
            f"split {split!r} of feature set {fs.name!r} is empty (no rows in "
            f"{str(fs.folder / split)!r}); extract it first."
        )
    if require_all_classes and (counts == 0).any():
        empty = [fs.classes[i] for i in np.flatnonzero(counts == 0)[:10]]
        raise ValueError(
            f"split {split!r} of feature set {fs.name!r} has no example of class(es) "
            f"{empty}; every class needs training examples."
        )
    return info


def rows_per_chunk(fs: FeatureSet, info: SplitInfo, budget_bytes: int) -> int:
    """Rows per chunk so that every chunk buffer alive at once fits the budget.

    Counted per row: the chunk buffers alive at once (``_CHUNK_COPIES`` of
    them) and a validation chunk's scores. Counted once: pyarrow decodes a
    whole Parquet row group at a time, so ``_ROW_GROUP_COPIES`` times the
    largest row group of the split is taken off the budget first (if that
    leaves less than a quarter of the budget, a quarter is used and a warning
    says so). The weights (2 x C x dim x 4 bytes) come on top of the budget.
    """
    if fs.layout == "dense":
        row_bytes = fs.dim * 4 + 64
    else:  # estimate non-zeros per row from the first shard's first rows
        nnz = []
        for _, _, X in iter_shard_batches(info.files[0], fs.dim, 256):
            nnz.append(X.nnz / max(X.shape[0], 1))
            break
        row_bytes = int(max(nnz[0] if nnz else 1.0, 1.0) * 12) + 64
    metas = [parquet.open_file(f, "feature shard").metadata for f in info.files]
    rg = max((md.row_group(i).total_byte_size for md in metas for i in range(md.num_row_groups)),
             default=0)
    room = budget_bytes - _ROW_GROUP_COPIES * rg
    if room < budget_bytes // 4:
        warnings.warn(
            f"the shards' Parquet row groups (up to {rg} bytes, decoded whole) leave little "
            f"of the {budget_bytes}-byte memory budget for chunks; peak memory will exceed "
            f"the budget: raise --memory-budget or write shards with smaller row groups.",
            stacklevel=2)
        room = budget_bytes // 4
    # Scores of a validation chunk (rows x C float32, plus a copy) count too.
    rows = room // (_CHUNK_COPIES * row_bytes + 8 * len(fs.classes))
    if rows < 1:
        raise ValueError(
            f"memory budget of {budget_bytes} bytes is too small for one row of "
            f"{row_bytes} bytes; raise --memory-budget."
        )
    return int(rows)


def _lean_batches(path, dim, rows):
    """:func:`bowsvm.io.features.iter_shard_batches` with less buffering.

    No pre-buffering, a 1 MB read buffer and no decode threads: measured about
    50 MB less peak RSS per 65 MB row group. Parquet row groups are still
    decoded whole, so a shard's row-group size adds to the memory budget.
    """
    return iter_shard_batches(path, dim, rows, lean=True)


def _batches(path, dim, rows):
    it = _lean_batches(path, dim, rows)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except ValueError as exc:
            if str(path) in str(exc):  # corrupt file, already named
                raise
            # a dense row of another length cannot be reshaped
            raise ValueError(
                f"shard {str(path)!r} holds feature rows whose length is not dim={dim} "
                f"({exc}); re-extract that shard."
            ) from None
        yield item


def iter_chunks(info: SplitInfo, dim: int, rows: int, rng=None):
    """Yield ``(path, labels, X)`` chunks of at most ``rows`` rows, checked.

    With ``rng``, shard order and the rows of each chunk are shuffled from it;
    without, files and rows come in stored order.

    Raises
    ------
    ValueError
        If a chunk holds NaN/Inf or a value beyond ``info.bound`` (names the
        shard and row), a sparse index outside ``[0, dim)``, or a shard is
        corrupt (page checksum, truncation; names the shard).
    """
    order = rng.permutation(len(info.files)) if rng is not None else range(len(info.files))
    for fi in order:
        path = info.files[fi]
        row0 = 0
        for _, labels, X in _batches(path, dim, rows):
            check_feature_values(path, row0, X, info.bound)
            if sp.issparse(X) and X.nnz and (X.indices.min() < 0 or X.indices.max() >= dim):
                raise ValueError(f"shard {str(path)!r} has a feature index outside [0, {dim}).")
            n = labels.shape[0]
            if rng is not None:
                perm = rng.permutation(n)
                X = X[perm]
                labels = labels[perm]
            row0 += n
            yield path, labels, X


def _first_rows(info: SplitInfo, dim: int, rows: int, n: int):
    """``(path, labels, X)`` of the first ``min(n, info.n)`` rows in stored order (checked)."""
    labels, Xs, got = [], [], 0
    for _, lab, X in iter_chunks(info, dim, min(rows, n)):
        take = min(n - got, lab.shape[0])
        labels.append(lab[:take])
        Xs.append(X[:take])
        got += take
        if got >= n:
            break
    X = sp.vstack(Xs, format="csr") if sp.issparse(Xs[0]) else np.concatenate(Xs)
    return None, np.concatenate(labels), X


def read_ahead(gen, depth: int = 1):
    """Run a generator on a background thread, ``depth`` items ahead; re-raise its errors."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", done))
        except BaseException as exc:  # handed to the consumer
            q.put(("error", exc))

    th = threading.Thread(target=work, name="bowsvm-read-ahead", daemon=True)
    th.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "item":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        stop.set()
        th.join(timeout=5)


def class_groups(n_classes: int, n_groups: int) -> list[np.ndarray]:
    """Split classes ``0..C-1`` into ``n_groups`` contiguous ranges (the units of work).

    Raises
    ------
    ValueError
        If ``n_groups`` is not in ``[1, n_classes]``.
    """
    n_groups = check_int("groups", n_groups, low=1, high=max(n_classes, 1))
    return [g.astype(np.int64) for g in np.array_split(np.arange(n_classes), n_groups)]


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

    def objective(eta0):
        if eta0 not in cache:
            st = GroupState(row_class, X.shape[1], X.dtype, averaged=False)
            h = Hyper(reg=reg, eta0=eta0, power=power, bias_lr=bias_lr, averaged=False,
                      block_size=block_size)
            train_chunk(st, X, y, h)
            W, b = st.weights()
            obj = _objective_parts(W, b, X, y, row_class, reg)
            cache[eta0] = obj if np.isfinite(obj) else np.inf
        return cache[eta0]

    if candidates is not None:
        for e in candidates:
            if reg * e < 1.0:
                objective(float(e))
    else:
        e = 1.0
        while reg * e >= 1.0:
            e /= 2.0
        objective(e)
        step = 0.5 if objective(e / 2.0) < objective(e) else 2.0
        e = e * step if step == 0.5 else e
        for _ in range(12):
            nxt = e * step
            if reg * nxt >= 1.0 or objective(nxt) >= objective(e):
                break
            e = nxt
    finite = {k: v for k, v in cache.items() if np.isfinite(v)}
    if not finite:
        raise ValueError("eta0 calibration failed: every candidate diverged; pass --eta0.")
    return float(min(finite, key=lambda k: (finite[k], k)))


def auto_eta0(fs: FeatureSet, train: SplitInfo, hyper: Hyper, seed: int, rows: int) -> Hyper:
    """``hyper`` with eta0 calibrated on the first 1000 rows of the seed's order."""
    sample = next(iter_chunks(train, fs.dim, min(rows, 1000), np.random.default_rng([seed, 0])))
    eta0 = calibrate_eta0(sample[2], sample[1], len(fs.classes), hyper.reg, hyper.power,
                          hyper.bias_lr, hyper.block_size)
    return Hyper(**{**asdict(hyper), "eta0": eta0})


def _objective_parts(W, b, X, y, row_class, reg):
    S = np.asarray(X @ W.T) + b[None, :].astype(W.dtype)
    loss = np.empty(W.shape[0])
    import numba

    _kernels.hinge_stats(S, np.ascontiguousarray(y, dtype=np.int64), row_class, loss,
                         numba.get_num_threads())
    sq = np.einsum("ij,ij->i", W, W, dtype=np.float64)
    return float(np.mean(0.5 * reg * sq + loss / max(X.shape[0], 1)))


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


def evaluate(groups_wb, info: SplitInfo, dim: int, rows: int, reg: float) -> dict:
    """Top-1, top-5 and the one-vs-all objective of a model on one split.

    Parameters
    ----------
    groups_wb : list of (W (C_g, d), b (C_g,)) in class order
    Returns
    -------
    dict with top1, top5, objective (mean over classes of
    ``reg/2 ||w_c||^2 + mean_i hinge``), n
    """
    import numba

    from bowsvm.evaluation.metrics import true_class_ranks

    C = sum(W.shape[0] for W, _ in groups_wb)
    loss = np.zeros(C)
    hits1 = hits5 = n = 0
    row_class = np.arange(C)
    for _, labels, X in read_ahead(iter_chunks(info, dim, rows)):
        S = np.concatenate([np.asarray(X @ W.T) + b[None, :].astype(W.dtype) for W, b in groups_wb],
                           axis=1)
        ranks = true_class_ranks(S, labels)
        hits1 += int((ranks < 1).sum())
        hits5 += int((ranks < 5).sum())
        part = np.empty(C)
        _kernels.hinge_stats(np.ascontiguousarray(S), labels.astype(np.int64), row_class, part,
                             numba.get_num_threads())
        loss += part
        n += labels.shape[0]
    sq = np.concatenate([np.einsum("ij,ij->i", W, W, dtype=np.float64) for W, _ in groups_wb])
    return {"top1": hits1 / n, "top5": hits5 / n,
            "objective": float(np.mean(0.5 * reg * sq + loss / n)), "n": n}


@dataclass
class TrainConfig:
    """Everything that fixes the sample sequence and the arithmetic of a run."""

    hyper: dict
    seed: int
    epochs: int
    groups: int
    rows_per_chunk: int
    feature_set: str
    manifest_hash: str
    eta0_auto: bool = False
    only_groups: list = field(default_factory=list)


def _ckpt_dir(models_root, name) -> Path:
    return Path(models_root) / f".{name}.checkpoint"


def _save_checkpoint(path: Path, epoch: int, states, cfg: TrainConfig, log_rows) -> None:
    path.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for g, st in states.items():
        arrays.update(st.to_arrays(prefix=f"g{g}_"))
    tmp = path / f".state-{epoch}.npz.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / f"state-{epoch}.npz")
    write_json_atomic(path / "checkpoint.json", {
        "epoch": epoch, "state": f"state-{epoch}.npz", "config": asdict(cfg), "log": log_rows,
    })
    for old in path.glob("state-*.npz"):
        if old.name != f"state-{epoch}.npz":
            old.unlink()


def _load_checkpoint(path: Path, cfg: TrainConfig):
    meta_path = path / "checkpoint.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        meta["config"], meta["state"], meta["epoch"], meta["log"]  # noqa: B018 (all present)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"training checkpoint {str(meta_path)!r} is corrupt ({type(exc).__name__}: {exc}); "
            f"delete {str(path)!r} and rerun without --resume."
        ) from None
    if meta["config"] != json.loads(json.dumps(asdict(cfg))):
        diffs = [k for k in meta["config"] if meta["config"][k] != json.loads(json.dumps(asdict(cfg)))[k]]
        raise ValueError(
            f"checkpoint {str(path)!r} was written with different settings ({diffs}); "
            f"rerun with the same options, or without --resume to start over."
        )
    arrays = load_npz(path / meta["state"], "training checkpoint")
    states = {}
    for g in sorted({int(k.split("_")[0][1:]) for k in arrays}):
        states[g] = GroupState.from_arrays(arrays, prefix=f"g{g}_")
    return int(meta["epoch"]), states, list(meta["log"])


def train_feature_set(fs: FeatureSet, *, hyper: Hyper, epochs: int = 5, seed: int = 0,
                      memory_budget="2GB", n_jobs=None, groups: int = 1,
                      only_groups=None, eta0_auto: bool = False, validate: bool = True,
                      checkpoint_dir=None, resume: bool = False, progress=None,
                      on_epoch=None):
    """Train one-vs-all ASGD on a feature set's train split, streaming its shards.

    Parameters
    ----------
    fs : FeatureSet
    hyper : Hyper
        ``hyper.eta0`` is used unless ``eta0_auto``.
    groups : int
        Number of class groups; ``only_groups`` restricts training to some of
        them (distributed work). The sample sequence does not depend on either.
    validate : bool
        Evaluate on the "val" split after each epoch (if it exists and all
        groups are trained here).
    checkpoint_dir : path or None
        Where to write a checkpoint after every epoch.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` if there is one.
    progress : callable or None
        Called with each log row.
    on_epoch : callable or None
        Called as ``on_epoch(epoch, states)`` after each epoch (states folded).

    Returns
    -------
    states : dict group index -> GroupState (folded)
    log_rows : list of dict
    info : dict (eta0, rows_per_chunk, n_train, timings)

    Raises
    ------
    ValueError
        On bad shards (see :func:`scan_split`, :func:`iter_chunks`) or a
        checkpoint written with other settings.
    """
    t_start = time.perf_counter()
    epochs = check_int("epochs", epochs, low=1)
    seed = check_int("seed", seed, low=0)
    budget = parse_bytes(memory_budget)
    n_threads = resolve_n_jobs(n_jobs)
    C = len(fs.classes)
    parts = class_groups(C, groups)
    todo = list(range(len(parts))) if only_groups is None else sorted(int(g) for g in only_groups)
    for g in todo:
        if not 0 <= g < len(parts):
            raise ValueError(f"group {g} does not exist; expected 0..{len(parts) - 1}.")
    train = scan_split(fs, "train", require_all_classes=True)
    val = None
    if validate and len(todo) == len(parts) and shard_files(fs.folder, "val"):
        val = scan_split(fs, "val")
    rows = rows_per_chunk(fs, train, budget)
    with thread_limit(n_threads):
        if eta0_auto:
            hyper = auto_eta0(fs, train, hyper, seed, rows)
        cfg = TrainConfig(hyper=asdict(hyper), seed=seed, epochs=epochs, groups=len(parts),
                          rows_per_chunk=rows, feature_set=fs.name,
                          manifest_hash=content_hash(fs.manifest), eta0_auto=eta0_auto,
                          only_groups=todo)
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        loaded = _load_checkpoint(ckpt, cfg) if (resume and ckpt is not None) else None
        if loaded is not None:
            done, states, log_rows = loaded
        else:
            done, log_rows = 0, []
            states = {g: GroupState(parts[g], fs.dim, np.float32, averaged=hyper.averaged)
                      for g in todo}
        # Without a validation split, divergence is judged on the first rows of the
        # train split (stored order), on the classes trained here.
        probe = None if val is not None else _first_rows(train, fs.dim, rows, 1000)
        for epoch in range(done + 1, epochs + 1):
            t0 = time.perf_counter()
            rng = np.random.default_rng([seed, epoch])
            for _, labels, X in read_ahead(iter_chunks(train, fs.dim, rows, rng)):
                for g in todo:
                    train_chunk(states[g], X, labels, hyper)
            for st in states.values():
                st.fold()
            row = {"epoch": epoch, "t": int(states[todo[0]].t),
                   "method": "asgd" if hyper.averaged else "sgd",
                   "seconds": round(time.perf_counter() - t0, 3)}
            if val is not None:
                ev = evaluate([states[g].averaged() for g in todo], val, fs.dim, rows, hyper.reg)
                row.update(top1=ev["top1"], top5=ev["top5"], objective=ev["objective"])
                judged = (ev["objective"], "val")
            else:
                W, b = (np.concatenate(a) for a in zip(*(states[g].averaged() for g in todo)))
                rc = np.concatenate([parts[g] for g in todo])
                judged = (_objective_parts(W, b, probe[2], probe[1], rc, hyper.reg),
                          f"train-sample ({probe[1].shape[0]} rows)")
            log_rows.append(row)
            if progress is not None:
                progress(row)
            check_divergence(epoch, *judged, hyper)
            if on_epoch is not None:
                on_epoch(epoch, states)
            if ckpt is not None:
                _save_checkpoint(ckpt, epoch, states, cfg, log_rows)
            if os.environ.get(KILL_ENV) == str(epoch):
                os.kill(os.getpid(), signal.SIGKILL)
    info = {"eta0": hyper.eta0, "rows_per_chunk": rows, "n_train": train.n,
            "seconds": round(time.perf_counter() - t_start, 3), "hyper": asdict(hyper),
            "seed": seed, "groups": len(parts)}
    return states, log_rows, info


def write_model(models_root, fs: FeatureSet, coef, intercept, log_rows, info: dict,
                overwrite: bool = False) -> Path:
    """Write ``<models_root>/<name>/`` atomically (docs/FORMATS.md, "Models").

    Raises
    ------
    FileExistsError
        If the model exists and ``overwrite`` is False, or the folder there is
        not a complete model (see :func:`bowsvm.io.atomic.check_target`).
    ValueError
        If the model folder is, contains or lies inside the feature set's folder.
    """
    out = Path(models_root) / fs.name
    with atomic_output_dir(out, overwrite, "train", [fs.folder], "--models/NAME") as tmp:
        np.save(tmp / "coef.npy", np.ascontiguousarray(coef, dtype=np.float32))
        np.save(tmp / "intercept.npy", np.ascontiguousarray(intercept, dtype=np.float32))
        with open(tmp / "log.jsonl", "w") as f:
            for r in log_rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        write_json_atomic(tmp / "manifest.json", {
            "stage": "train", "feature_set": fs.name, "preset": fs.manifest.get("preset"),
            "preset_hash": fs.preset_hash, "codebook_hash": fs.manifest.get("codebook_hash"),
            "dim": fs.dim, "classes": fs.classes, "layout": fs.layout,
            "hyper_parameters": info["hyper"], "epochs": len(log_rows),
            "t": log_rows[-1]["t"] if log_rows else 0, "seed": info["seed"],
            "groups": info["groups"], "eta0": info["eta0"],
            "rows_per_chunk": info["rows_per_chunk"], "n_train": info["n_train"],
            "timings": {"train_seconds": info["seconds"],
                        "epoch_seconds": [r.get("seconds") for r in log_rows]},
            "method": "asgd" if info["hyper"]["averaged"] else "sgd",
        })
    return out


def gather(states: dict):
    """Concatenate the groups' averaged weights in class order: (coef, intercept)."""
    W, b = zip(*(states[g].averaged() for g in sorted(states)))
    return np.concatenate(W, axis=0), np.concatenate(b)
