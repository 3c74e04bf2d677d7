"""Stage ``train``: one-vs-all linear SVMs (ASGD) on one feature set's train split.

Two ways to run it, one stage:

``bowsvm train`` (:func:`run`)
    local: streams the train shards chunk by chunk within ``--memory-budget``
    (read ahead on a background thread); every class group trains on each
    chunk while it is in memory, so an epoch reads the data once whatever
    ``--groups``. Validates on the val split after every epoch (top-1, top-5,
    objective -> ``log.jsonl``), checkpoints after every epoch (``--resume``
    continues a killed run exactly, given the same ``--n-jobs``), and writes
    ``MODELS/NAME`` atomically.
``jobs/train_groups.py`` (:data:`JOB`, :func:`run_spark`)
    the class groups as parallel Spark tasks. Each task trains one group over
    ALL train shards with exactly the local sample sequence (same seed, same
    memory budget -> same chunks) and writes its group's averaged weights after
    every epoch to a staging folder beside the model
    (``<models>/.NAME.groups/epoch-E/group-G.npz``); the driver gathers them,
    evaluates every epoch's gathered model on val (so ``log.jsonl`` matches the
    local run) and writes the model. The gathered model equals the local model
    trained with the same ``--groups`` and seed. ``--n-jobs`` is per task
    (default 1: keep tasks x threads <= cores); ``--resume`` is not supported
    there (tasks restart from zero). Shards and the models folder must be on a
    filesystem every executor sees.

Determinism: epoch ``e`` visits the shards in the order
``default_rng([seed, e]).permutation`` and shuffles the rows of each chunk with
the same generator, so the sample sequence depends only on ``seed`` and the
chunk size (itself fixed by the memory budget; :func:`bowsvm.io.features.rows_per_chunk`).

Pieces: the shard reader is :mod:`bowsvm.io.features`, the trainer (epochs over
the chunks it is handed) :mod:`bowsvm.asgd.trainer`, the model folder
:mod:`bowsvm.io.models`, the checkpoint :mod:`bowsvm.io.checkpoints`; this
module wires them and owns the options and the manifest (docs/FORMATS.md,
"Models"). NumPy, numba, pyarrow and scikit-learn are imported inside the
functions: every ``bowsvm`` start-up imports this module.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bowsvm._validation import check_int
from bowsvm.io.atomic import prepare_target

if TYPE_CHECKING:  # numba and scikit-learn: kept out of every CLI start-up
    from bowsvm.asgd.core import Hyper
    from bowsvm.io.features import FeatureShards

NAME = "train"
ORDER = 50
HELP = "train ASGD one-vs-all linear SVMs on one feature set"
DESCRIPTION = (
    "Train one-vs-all linear SVMs (hinge loss, L2) by averaged SGD on the train split of "
    "FEATURES/NAME, streaming the Parquet shards chunk by chunk within --memory-budget "
    "(read ahead on a background thread). Validates on the val split after every epoch "
    "(top-1, top-5, objective -> log.jsonl), checkpoints after every epoch (--resume "
    "continues a killed run exactly, given the same --n-jobs), and writes MODELS/NAME "
    "atomically."
)
JOB = "train_groups.py"

#: Environment variable used by the tests only: after writing the checkpoint
#: of this epoch the process kills itself with SIGKILL (a real crash).
KILL_ENV = "BOWSVM_TEST_KILL_AFTER_EPOCH"

#: Rows of the train split's start on which divergence is judged without a val split.
PROBE_ROWS = 1000

#: Rows of the seed's first chunk on which ``--eta0 auto`` calibrates.
CALIBRATION_ROWS = 1000


def add_arguments(parser) -> None:
    """The options of ``bowsvm train`` and ``jobs/train_groups.py``."""
    parser.add_argument("--feature-set", required=True, metavar="NAME", help="feature set to train on")
    parser.add_argument("--features", default="features", metavar="DIR",
                        help="root folder holding features/NAME/")
    parser.add_argument("--models", default="models", metavar="DIR", help="root folder for models/NAME/")
    parser.add_argument("--reg", type=float, default=1e-4, help="L2 penalty lambda")
    parser.add_argument("--eta0", default="auto",
                        help="initial step, or 'auto' to calibrate on a sample of 1000 rows")
    parser.add_argument("--power", type=float, default=2 / 3,
                        help="step decay: eta_t = eta0 / (1 + reg eta0 t)^power")
    parser.add_argument("--average-start", type=int, default=0,
                        help="start averaging after this many samples")
    parser.add_argument("--bias-lr", type=float, default=0.1, help="bias step factor (bias unregularised)")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the train split")
    parser.add_argument("--memory-budget", default="2GB",
                        help="bytes for data chunks in memory (weights come on top: 2 x C x dim x 4)")
    parser.add_argument("--block-size", type=int, default=256, help="samples per GEMM block")
    parser.add_argument("--groups", type=int, default=1,
                        help="class groups (units of distributed work; same data pass on one machine)")
    parser.add_argument("--n-jobs", type=int, default=None,
                        help="threads; unset means all (in jobs/train_groups.py: per task, unset means 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-epoch shuffles")
    parser.add_argument("--no-average", action="store_true", help="plain SGD (no averaging)")
    parser.add_argument("--no-validate", action="store_true", help="skip the per-epoch val evaluation")
    parser.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model")
    parser.add_argument("--quiet", action="store_true", help="do not print per-epoch lines")


# -------------------------------------------------------------------- options

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


def parse_eta0(text):
    """``"auto"`` -> None; otherwise a positive float.

    Raises
    ------
    ValueError
        If ``text`` is neither ``auto`` nor a positive number.
    """
    if str(text).lower() == "auto":
        return None
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--eta0 {text!r} is not a number; pass a positive number or 'auto'.") from None
    if not v > 0:
        raise ValueError(f"--eta0 {text!r} must be positive, or 'auto'.")
    return v


def hyper_from_args(args) -> tuple[Hyper, bool]:
    """Validated hyper-parameters from parsed arguments: (Hyper, eta0_auto).

    Validated by :class:`bowsvm.asgd.ASGDClassifier`, so the CLI and the
    estimator accept exactly the same values.
    """
    from bowsvm.asgd import ASGDClassifier

    eta0 = parse_eta0(args.eta0)
    est = ASGDClassifier(reg=args.reg, eta0=eta0 if eta0 is not None else 1e-3,
                         power=args.power, average_start=args.average_start,
                         bias_lr=args.bias_lr, block_size=args.block_size,
                         averaged=not args.no_average)
    return est._hyper(), eta0 is None


def _model_dir(args, fs) -> Path:
    return Path(os.path.abspath(Path(args.models) / fs.name))


def check_arguments(args) -> None:
    """Validate the options and refuse a model folder that may not be written.

    Reads the feature set's manifest only (no shard is opened).

    Raises
    ------
    ValueError
        On a bad option value (names the option), a ``--groups`` above the
        number of classes, or a model folder overlapping the feature set.
    FileNotFoundError
        If the feature set is missing or incomplete.
    FileExistsError
        If the model exists (without ``--overwrite``) or the folder there is
        not a model.
    """
    from bowsvm.asgd.trainer import class_groups
    from bowsvm.io.features import open_feature_set

    hyper_from_args(args)
    parse_bytes(args.memory_budget)
    check_int("epochs", args.epochs, low=1)
    check_int("seed", args.seed, low=0)
    fs = open_feature_set(args.features, args.feature_set)
    class_groups(len(fs.classes), args.groups)
    prepare_target(_model_dir(args, fs), args.overwrite, "train", [fs.folder], "--models/NAME")


# -------------------------------------------------------------- the training

@dataclass
class TrainConfig:
    """Everything that fixes the sample sequence and the arithmetic of a run.

    Stored in the checkpoint; a resumed run must have the same.
    """

    hyper: dict
    seed: int
    epochs: int
    groups: int
    rows_per_chunk: int
    feature_set: str
    manifest_hash: str
    eta0_auto: bool = False
    only_groups: list = field(default_factory=list)


def _xy(chunks):
    """``(X, y)`` pairs, the trainer's chunks, from the reader's ``(path, labels, X)``."""
    for _, labels, X in chunks:
        yield X, labels


def validation(groups_wb, val, dim: int, rows: int, reg: float) -> dict:
    """Top-1, top-5 and objective of a model on the val split: the log row's fields.

    The one validation of an epoch, for the local run and the Spark driver alike.
    """
    from bowsvm.asgd.trainer import evaluate
    from bowsvm.evaluation.metrics import true_class_ranks
    from bowsvm.io.features import iter_chunks, read_ahead

    ev = evaluate(groups_wb, _xy(read_ahead(iter_chunks(val, dim, rows))), reg, true_class_ranks)
    return {"top1": ev["top1"], "top5": ev["top5"], "objective": ev["objective"]}


def auto_eta0(fs: FeatureShards, train, hyper: Hyper, seed: int, rows: int) -> Hyper:
    """``hyper`` with eta0 calibrated on the first 1000 rows of the seed's order."""
    import numpy as np

    from bowsvm.asgd.trainer import with_eta0
    from bowsvm.io.features import iter_chunks

    _, labels, X = next(iter_chunks(train, fs.dim, min(rows, CALIBRATION_ROWS),
                                    np.random.default_rng([seed, 0])))
    return with_eta0(hyper, X, labels, len(fs.classes))


def train_feature_set(fs: FeatureShards, *, hyper: Hyper, epochs: int = 5, seed: int = 0,
                      memory_budget="2GB", n_jobs=None, groups: int = 1,
                      only_groups=None, eta0_auto: bool = False, validate: bool = True,
                      checkpoint_dir=None, resume: bool = False, progress=None,
                      on_epoch=None):
    """Train one-vs-all ASGD on a feature set's train split, streaming its shards.

    Parameters
    ----------
    fs : FeatureShards
    hyper : Hyper
        ``hyper.eta0`` is used unless ``eta0_auto``.
    groups : int
        Number of class groups; ``only_groups`` restricts training to some of
        them (distributed work). The sample sequence does not depend on either.
    validate : bool
        Evaluate on the "val" split after each epoch (if it exists and all
        groups are trained here); otherwise divergence is judged on the first
        1000 rows of the train split.
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
    info : dict (eta0, rows_per_chunk, n_train, seconds, hyper, seed, groups)

    Raises
    ------
    ValueError
        On bad shards (see :func:`bowsvm.io.features.scan_split`,
        :func:`bowsvm.io.features.iter_chunks`), a diverging run, or a
        checkpoint written with other settings.
    """
    import numpy as np

    from bowsvm.asgd._parallel import resolve_n_jobs, thread_limit
    from bowsvm.asgd.trainer import (
        class_groups, new_states, objective, states_from_arrays, states_to_arrays, train_epochs,
    )
    from bowsvm.io import content_hash
    from bowsvm.io.checkpoints import read_checkpoint, write_checkpoint
    from bowsvm.io.features import (
        first_rows, iter_chunks, read_ahead, rows_per_chunk, scan_split, shard_files,
    )

    t_start = time.perf_counter()
    epochs = check_int("epochs", epochs, low=1)
    seed = check_int("seed", seed, low=0)
    budget = parse_bytes(memory_budget)
    n_threads = resolve_n_jobs(n_jobs)
    parts = class_groups(len(fs.classes), groups)
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
        cfg = asdict(TrainConfig(hyper=asdict(hyper), seed=seed, epochs=epochs, groups=len(parts),
                                 rows_per_chunk=rows, feature_set=fs.name,
                                 manifest_hash=content_hash(fs.manifest), eta0_auto=eta0_auto,
                                 only_groups=todo))
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        loaded = read_checkpoint(ckpt, cfg) if (resume and ckpt is not None) else None
        if loaded is not None:
            done, arrays, log_rows = loaded
            states = states_from_arrays(arrays)
        else:
            done, log_rows = 0, []
            states = new_states(parts, todo, fs.dim, hyper)

        if val is not None:
            def judge(states):
                ev = validation([states[g].averaged() for g in todo], val, fs.dim, rows, hyper.reg)
                return ev, ev["objective"], "val"
        else:  # divergence judged on the first rows of the train split, classes trained here
            probe_y, probe_X = first_rows(train, fs.dim, rows, PROBE_ROWS)
            rc = np.concatenate([parts[g] for g in todo])

            def judge(states):
                W, b = (np.concatenate(a) for a in zip(*(states[g].averaged() for g in todo)))
                return ({}, objective(W, b, probe_X, probe_y, rc, hyper.reg),
                        f"train-sample ({probe_y.shape[0]} rows)")

        def chunks(epoch):
            rng = np.random.default_rng([seed, epoch])
            return _xy(read_ahead(iter_chunks(train, fs.dim, rows, rng)))

        def after(epoch, states, log_rows):
            if on_epoch is not None:
                on_epoch(epoch, states)
            if ckpt is not None:
                write_checkpoint(ckpt, epoch, states_to_arrays(states), cfg, log_rows)
            if os.environ.get(KILL_ENV) == str(epoch):
                os.kill(os.getpid(), signal.SIGKILL)

        train_epochs(states, chunks, hyper, epochs, done=done, log_rows=log_rows, judge=judge,
                     progress=progress, on_epoch=after)
    info = {"eta0": hyper.eta0, "rows_per_chunk": rows, "n_train": train.n,
            "seconds": round(time.perf_counter() - t_start, 3), "hyper": asdict(hyper),
            "seed": seed, "groups": len(parts)}
    return states, log_rows, info


def model_manifest(fs: FeatureShards, log_rows: list, info: dict, seconds: float) -> dict:
    """The model folder's ``manifest.json`` (keys: docs/FORMATS.md, "Models")."""
    return {
        "stage": "train", "feature_set": fs.name, "preset": fs.manifest.get("preset"),
        "preset_hash": fs.preset_hash, "codebook_hash": fs.manifest.get("codebook_hash"),
        "dim": fs.dim, "classes": fs.classes, "layout": fs.layout,
        "hyper_parameters": info["hyper"], "epochs": len(log_rows),
        "t": log_rows[-1]["t"] if log_rows else 0, "seed": info["seed"],
        "groups": info["groups"], "eta0": info["eta0"],
        "rows_per_chunk": info["rows_per_chunk"], "n_train": info["n_train"],
        "seconds": round(seconds, 3),
        "timings": {"train_seconds": info["seconds"],
                    "epoch_seconds": [r.get("seconds") for r in log_rows]},
        "method": "asgd" if info["hyper"]["averaged"] else "sgd",
    }


def run(args) -> int:
    """``bowsvm train``: train on this machine and write ``MODELS/NAME``."""
    import json

    from bowsvm.asgd.trainer import gather
    from bowsvm.io.checkpoints import checkpoint_dir
    from bowsvm.io.features import open_feature_set
    from bowsvm.io.models import write_model

    t0 = time.perf_counter()
    check_arguments(args)
    hyper, auto = hyper_from_args(args)
    fs = open_feature_set(args.features, args.feature_set)
    out = _model_dir(args, fs)
    ckpt = checkpoint_dir(args.models, fs.name)

    def progress(row):
        if not args.quiet:
            print(json.dumps(row), file=sys.stderr, flush=True)

    states, log_rows, info = train_feature_set(
        fs, hyper=hyper, epochs=args.epochs, seed=args.seed, memory_budget=args.memory_budget,
        n_jobs=args.n_jobs, groups=args.groups, eta0_auto=auto,
        validate=not args.no_validate, checkpoint_dir=ckpt, resume=args.resume,
        progress=progress)
    coef, intercept = gather(states)
    write_model(out, coef, intercept, log_rows,
                model_manifest(fs, log_rows, info, time.perf_counter() - t0),
                overwrite=args.overwrite, inputs=[fs.folder])
    shutil.rmtree(ckpt, ignore_errors=True)
    if not args.quiet:
        print(f"model written to {out}", file=sys.stderr)
    return 0


# ------------------------------------------------------- class groups on Spark

def _group_file(staging, epoch: int, g: int) -> Path:
    return Path(staging) / f"epoch-{epoch:04d}" / f"group-{g:05d}.npz"


def train_group(g: int, features: str, name: str, hyper: dict, epochs: int, seed: int,
                budget: str, n_jobs: int, groups: int, staging: str) -> tuple:
    """Executor side: train group ``g`` over all shards; write its weights each epoch.

    Returns
    -------
    (g, log_rows, info) of :func:`train_feature_set`.
    """
    from bowsvm.asgd.core import Hyper
    from bowsvm.io.features import open_feature_set
    from bowsvm.io.models import write_group_weights

    def save(epoch, states):
        W, b = states[g].averaged()
        path = _group_file(staging, epoch, g)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_group_weights(path, W, b)

    fs = open_feature_set(features, name)
    states, log_rows, info = train_feature_set(
        fs, hyper=Hyper(**hyper), epochs=epochs, seed=seed, memory_budget=budget,
        n_jobs=n_jobs, groups=groups, only_groups=[g], validate=False, on_epoch=save)
    return g, log_rows, info


def run_spark(spark, args) -> int:
    """``jobs/train_groups.py``: one Spark task per class group; the driver writes the model."""
    from bowsvm.io.features import (
        open_feature_set, rows_per_chunk, scan_split, shard_files,
    )
    from bowsvm.io.models import read_group_weights, write_model

    t0 = time.perf_counter()
    n_jobs = 1 if args.n_jobs is None else args.n_jobs  # per task: tasks x threads <= cores
    hyper, auto = hyper_from_args(args)
    fs = open_feature_set(args.features, args.feature_set)
    out = _model_dir(args, fs)
    train = scan_split(fs, "train", require_all_classes=True)  # errors before any task
    val = scan_split(fs, "val") if (not args.no_validate and shard_files(fs.folder, "val")) else None
    rows = rows_per_chunk(fs, train, parse_bytes(args.memory_budget))
    if auto:
        hyper = auto_eta0(fs, train, hyper, args.seed, rows)

    staging = Path(args.models).absolute() / f".{fs.name}.groups"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    features = str(Path(args.features).absolute())
    job = (args.feature_set, asdict(hyper), args.epochs, args.seed, args.memory_budget, n_jobs,
           args.groups, str(staging))
    results = (spark.sparkContext.parallelize(range(args.groups), args.groups)
               .map(lambda g: train_group(g, features, *job))
               .collect())
    results.sort(key=lambda r: r[0])

    def gathered(epoch):
        return read_group_weights([_group_file(staging, epoch, g) for g, _, _ in results])

    log_rows = []
    for e, row in enumerate(results[0][1]):
        r = dict(row)
        r["seconds"] = max(res[1][e]["seconds"] for res in results)
        if val is not None:  # the epoch's validation, of the gathered model, on the driver
            r.update(validation([gathered(r["epoch"])], val, fs.dim, rows, hyper.reg))
        log_rows.append(r)
    coef, intercept = gathered(results[0][1][-1]["epoch"])
    info = dict(results[0][2])
    info["seconds"] = round(time.perf_counter() - t0, 3)
    write_model(out, coef, intercept, log_rows,
                model_manifest(fs, log_rows, info, time.perf_counter() - t0),
                overwrite=args.overwrite, inputs=[fs.folder])
    shutil.rmtree(staging, ignore_errors=True)
    print(f"[train_groups] {args.groups} groups trained; model written to {out}", file=sys.stderr)
    return 0
