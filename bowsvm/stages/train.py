"""Stage ``train``: one-vs-all linear SVMs (ASGD or DCD) on one feature set's train split.

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
    (``<models>/.NAME.groups/epoch-E/setting-K-group-G.npz``); the driver gathers them,
    evaluates every epoch's gathered model on val (so ``log.jsonl`` matches the
    local run) and writes the model. The gathered model equals the local model
    trained with the same ``--groups`` and seed. ``--n-jobs`` is per task
    (default 1: keep tasks x threads <= cores); ``--resume`` is not supported
    there (tasks restart from zero). The models folder must be on a file
    system every executor sees; the shards too, or at a URI (``--features
    s3://...``: every task opens it with pyarrow).

Determinism: epoch ``e`` visits the shards in the order
``default_rng([seed, e]).permutation``, reads them ``shards_per_chunk`` at a
time side by side (each chunk takes its rows from all of them, so it mixes
their classes), and shuffles the rows of each chunk with the same generator,
so the sample sequence depends only on ``seed``, the chunk size and the number
of shards read side by side (both fixed by the memory budget;
:func:`bowsvm.io.features.rows_per_chunk`, :func:`bowsvm.io.features.shards_per_chunk`).

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
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bowsvm._validation import check_int, parse_bytes
from bowsvm.io.atomic import prepare_target
from bowsvm.io.store import absolute

if TYPE_CHECKING:  # pyarrow: kept out of every CLI start-up
    from bowsvm.io.features import FeatureShards

NAME = "train"
ORDER = 50
HELP = "train one-vs-all linear SVMs (ASGD or dual coordinate descent) on one feature set"
DESCRIPTION = (
    "Train one-vs-all linear SVMs (hinge loss, L2) on the train split of FEATURES/NAME by "
    "averaged SGD (--solver asgd, the default) or averaged dual coordinate descent (--solver "
    "dcd), streaming the Parquet shards chunk by chunk within --memory-budget "
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

#: The solvers of ``--solver`` (the first is the default; docs/DESIGN.md, "Dual
#: coordinate descent", and docs/BENCHMARKS.md, "Dual coordinate descent in bowsvm train").
SOLVERS = ("asgd", "dcd")

#: Defaults of the options that only ASGD reads (None on the command line: not given).
ASGD_DEFAULTS = {"eta0": "auto", "power": 2 / 3, "average_decay": 3.0, "bias_lr": 0.02}

#: A run whose dual variables and weights would take more than this fraction of the
#: machine's memory is refused before it starts (``--solver dcd``).
DUAL_MEMORY_FRACTION = 0.6


def add_arguments(parser) -> None:
    """The options of ``bowsvm train`` and ``jobs/train_groups.py``."""
    parser.add_argument("--feature-set", required=True, metavar="NAME", help="feature set to train on")
    parser.add_argument("--features", default="features", metavar="DIR",
                        help="root folder holding features/NAME/, or a URI (docs/SCALING.md)")
    parser.add_argument("--models", default="models", metavar="DIR", help="root folder for models/NAME/")
    parser.add_argument("--reg", default="1e-4", metavar="LAMBDA[,LAMBDA...]",
                        help="L2 penalty lambda; a comma-separated list trains every value in "
                             "the same data pass and keeps the best on val")
    parser.add_argument("--solver", default=SOLVERS[0], choices=SOLVERS,
                        help="asgd: averaged SGD (options marked 'asgd' apply to it only); "
                             "dcd: dual coordinate descent (liblinear's solver, no step size; "
                             "keeps one float32 per class and train row: C x n x 4 bytes, "
                             "split over --groups)")
    parser.add_argument("--eta0", default=None, metavar="ETA0[,ETA0...]",
                        help="asgd: initial step, or 'auto' (the default): a quarter of the "
                             "step that does best in one pass over a sample of 1000 rows (per "
                             "--reg and --pos-weight value); a list as for --reg")
    parser.add_argument("--pos-weight", default="auto", metavar="Q[,Q...]",
                        help="weight of a positive sample's hinge loss in each one-vs-all "
                             "problem (negatives weigh 1); 'auto' is (C-1)/C^(2/3) for C "
                             "classes, at least 1 (10 for 1000 classes); a list as for --reg")
    parser.add_argument("--early-stop", type=int, default=0, metavar="N",
                        help="keep the epoch with the best val score and stop after N epochs "
                             "without a gain (0: off, the model is the last epoch's)")
    parser.add_argument("--select", default="top1", choices=("top1", "top5"),
                        help="val score that early stopping and the lists follow")
    parser.add_argument("--power", type=float, default=None,
                        help="asgd: step decay: eta_t = eta0 / (1 + reg eta0 t)^power "
                             f"(default {ASGD_DEFAULTS['power']:.4g})")
    parser.add_argument("--average-start", default="auto", metavar="N",
                        help="start averaging after this many samples; 'auto': after the "
                             "first epoch (from the start when --epochs is 1); dcd averages "
                             "the iterates at the end of each block")
    parser.add_argument("--average-decay", type=float, default=None, metavar="K",
                        help="asgd: weight recent iterates more in the average: alpha_t = "
                             "(K + 1) / (t - start + K) after the start (the weight of "
                             "iterate s grows like s^K); 0 is the plain mean (default "
                             f"{ASGD_DEFAULTS['average_decay']:g})")
    parser.add_argument("--bias-lr", type=float, default=None,
                        help="asgd: bias step factor: b += bias-lr x the weights' step (the "
                             f"bias is not regularised; default {ASGD_DEFAULTS['bias_lr']:g})")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the train split")
    parser.add_argument("--memory-budget", default="2GB",
                        help="bytes for data chunks in memory (weights come on top: 2 x C x dim x 4, "
                             "twice that while CSR rows sparser than 3.3%% are walked with "
                             "hundreds of classes per thread)")
    parser.add_argument("--block-size", type=int, default=256, help="samples per GEMM block")
    parser.add_argument("--groups", type=int, default=1,
                        help="class groups (units of distributed work; same data pass on one machine)")
    parser.add_argument("--n-jobs", type=int, default=None,
                        help="threads; unset means all (in jobs/train_groups.py: per task, unset means 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-epoch shuffles")
    parser.add_argument("--no-average", action="store_true",
                        help="no averaging: the last iterate (plain SGD for asgd)")
    parser.add_argument("--no-validate", action="store_true", help="skip the per-epoch val evaluation")
    parser.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model")
    parser.add_argument("--quiet", action="store_true", help="do not print per-epoch lines")


# -------------------------------------------------------------------- options

def parse_values(option: str, text, *, auto: bool = False) -> list:
    """A comma-separated list of numbers (``auto`` -> None where allowed), in order, no repeats.

    Raises
    ------
    ValueError
        Naming ``option`` and the item that is not a number (or ``auto``).
    """
    out = []
    for item in str(text).split(","):
        item = item.strip()
        if auto and item.lower() == "auto":
            v = None
        else:
            try:
                v = float(item)
            except ValueError:
                want = "a number or 'auto'" if auto else "a number"
                where = f"{option} {item!r}" if item == str(text).strip() else \
                    f"{option} {text!r}: {item!r}"
                raise ValueError(
                    f"{where} is not {want}; pass one value or a comma-separated list "
                    f"such as 1e-4,1e-5."
                ) from None
        if v not in out:
            out.append(v)
    return out


def average_start(args, n_train: int | None) -> int:
    """``--average-start`` in samples: ``auto`` is one epoch of ``n_train`` rows (0 for
    ``--epochs 1``, or while ``n_train`` is unknown, when only checking the options).

    Averaging from the first epoch on averages in the iterates of a cold start;
    starting after one epoch is the default of Bottou's svmasgd (``-avgstart 1``)
    and measured better on both benchmarks (docs/BENCHMARKS.md, "Defaults that
    converge in 5 epochs").

    Raises
    ------
    ValueError
        If the value is neither ``auto`` nor a whole number >= 0.
    """
    text = str(args.average_start).strip()
    if text.lower() == "auto":
        return int(n_train) if (n_train and args.epochs > 1) else 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"--average-start {args.average_start!r} is not a whole number >= 0 "
                         f"or 'auto'; pass e.g. --average-start 0 to average from the start.")
    return value


def train_rows(fs) -> int | None:
    """Rows of the train split as the feature set's manifest counts them (None if absent)."""
    counts = (fs.manifest.get("counts") or {}).get("train")  # extract: {split: rows}
    if isinstance(counts, dict):  # {class: rows}, as prepare counts images
        return int(sum(counts.values()))
    return int(counts) if isinstance(counts, int) else None


def hypers_from_args(args, n_classes: int, n_train: int | None = None) -> tuple[list, list]:
    """Validated hyper-parameter settings from parsed arguments: (hypers, eta0_auto).

    One :class:`Hyper` per combination of the ``--reg``, ``--eta0`` and
    ``--pos-weight`` values (in that nesting order); ``eta0_auto[k]`` says
    whether setting ``k``'s eta0 is still to be calibrated. Validated by
    :class:`bowsvm.asgd.ASGDClassifier`, so the CLI and the estimator accept
    exactly the same values. ``n_train`` resolves ``--average-start auto``
    (:func:`average_start`). With ``--solver dcd`` there is no eta0 (the
    settings are the ``--reg`` x ``--pos-weight`` values; the ASGD-only fields
    eta0, power, average_decay and bias_lr are 0) and giving an ASGD-only option
    is an error.

    Raises
    ------
    ValueError
        Naming the option of a bad value.
    """
    from dataclasses import replace

    from bowsvm.asgd import ASGDClassifier
    from bowsvm.asgd.trainer import auto_pos_weight

    solver = getattr(args, "solver", "asgd")
    asgd = {k: getattr(args, k, None) for k in ASGD_DEFAULTS}
    if solver not in SOLVERS:
        raise ValueError(f"--solver {solver!r} is not one of {', '.join(SOLVERS)}.")
    if solver == "dcd":
        given = [f"--{k.replace('_', '-')}" for k, v in asgd.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} set{'s' if len(given) == 1 else ''} the "
                             f"step of --solver asgd; dual coordinate descent (--solver dcd) "
                             f"has no step: drop {' and '.join(given)} or pass --solver asgd.")
    asgd = {k: ASGD_DEFAULTS[k] if v is None else v for k, v in asgd.items()}
    hypers, autos = [], []
    regs = parse_values("--reg", args.reg)
    etas = parse_values("--eta0", asgd["eta0"], auto=True) if solver == "asgd" else [0.1]
    weights = parse_values("--pos-weight", args.pos_weight, auto=True)
    avg_start = average_start(args, n_train)
    for e in etas:
        if e is not None and not e > 0:
            raise ValueError(f"--eta0 {asgd['eta0']!r}: {e:g} must be positive, or 'auto'.")
    for q in weights:
        if q is not None and not q > 0:
            raise ValueError(f"--pos-weight {args.pos_weight!r}: {q:g} must be positive, or "
                             f"'auto'.")
    for reg in regs:
        for eta0 in etas:
            for q in weights:
                q = auto_pos_weight(n_classes) if q is None else q
                est = ASGDClassifier(reg=reg, eta0=eta0 if eta0 is not None else 1e-3,
                                     power=asgd["power"], average_start=avg_start,
                                     average_decay=asgd["average_decay"],
                                     bias_lr=asgd["bias_lr"], block_size=args.block_size,
                                     averaged=not args.no_average, pos_weight=q)
                try:
                    h = est._hyper()
                except (TypeError, ValueError) as exc:
                    msg = str(exc)
                    for py, opt in _OPTION_NAMES:
                        msg = re.sub(rf"(?<![-\w]){py}\b(?=[ =*.,;)]|$)", opt, msg)
                    step = (f" with --eta0 {'auto' if eta0 is None else f'{eta0:g}'}"
                            if solver == "asgd" else "")
                    where = "" if len(regs) * len(etas) * len(weights) == 1 else (
                        f"--reg {reg:g}{step} and --pos-weight {q:g}: ")
                    raise type(exc)(where + msg) from None
                if solver == "dcd":  # no step: the ASGD-only fields are zero
                    h = replace(h, solver="dcd", eta0=0.0, power=0.0, average_decay=0.0,
                                bias_lr=0.0)
                if (h, eta0 is None) not in zip(hypers, autos):
                    hypers.append(h)
                    autos.append(eta0 is None)
    return hypers, autos


#: Estimator parameter names -> the options of ``bowsvm train`` (in error messages).
_OPTION_NAMES = (("average_start", "--average-start"), ("average_decay", "--average-decay"),
                 ("bias_lr", "--bias-lr"),
                 ("block_size", "--block-size"), ("pos_weight", "--pos-weight"),
                 ("power", "--power"), ("eta0", "--eta0"), ("reg", "--reg"))


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

    from bowsvm.io.features import shard_files

    parse_bytes(args.memory_budget)
    check_int("epochs", args.epochs, low=1)
    check_int("seed", args.seed, low=0)
    check_int("early-stop", args.early_stop, low=0)
    fs = open_feature_set(args.features, args.feature_set)
    hypers, _ = hypers_from_args(args, len(fs.classes))
    class_groups(len(fs.classes), args.groups)
    if len(hypers) > 1 or args.early_stop:
        what = ("--early-stop" if len(hypers) == 1 else
                f"{len(hypers)} hyper-parameter settings (lists in --reg/--eta0/--pos-weight)")
        if args.no_validate:
            raise ValueError(f"{what} choose on the val split; drop --no-validate.")
        if not shard_files(fs.folder, "val"):
            raise ValueError(
                f"{what} choose on the val split, and feature set {fs.folder} has none; "
                f"extract features with a val split (bowsvm prepare --val-per-class) or pass "
                f"one value per option without --early-stop."
            )
    prepare_target(_model_dir(args, fs), args.overwrite, "train", [fs.folder], "--models/NAME")


# -------------------------------------------------------------- the training

@dataclass
class TrainConfig:
    """Everything that fixes the sample sequence and the arithmetic of a run.

    Stored in the checkpoint; a resumed run must have the same.
    """

    hypers: list
    seed: int
    epochs: int
    groups: int
    rows_per_chunk: int
    feature_set: str
    manifest_hash: str
    shards_per_chunk: int = 1
    eta0_auto: list = field(default_factory=list)
    only_groups: list = field(default_factory=list)
    early_stop: int = 0
    select: str = "top1"


def _xy(chunks):
    """``(X, y[, idx])``, the trainer's chunks, from the reader's ``(path, labels, X[, idx])``."""
    for _, labels, X, *idx in chunks:
        yield (X, labels, *idx)


def validation(groups_wb, val, dim: int, rows: int, reg: float, pos_weight: float = 1.0) -> dict:
    """Top-1, top-5 and objective of a model on the val split: the log row's fields.

    The one validation of an epoch, for the local run and the Spark driver alike;
    the objective is the trained one (``reg``, ``pos_weight``).
    """
    from bowsvm.asgd.trainer import evaluate
    from bowsvm.evaluation.metrics import true_class_ranks
    from bowsvm.io.features import iter_chunks, read_ahead

    ev = evaluate(groups_wb, _xy(read_ahead(iter_chunks(val, dim, rows))), reg, true_class_ranks,
                  pos_weight)
    return {"top1": ev["top1"], "top5": ev["top5"], "objective": ev["objective"]}


def check_dual_memory(hypers, n_classes: int, n_train: int, dim: int) -> None:
    """Refuse a DCD run whose dual variables and weights would not fit in memory.

    Each ``--solver dcd`` setting keeps one float32 per (class trained here, train
    row) and three weight matrices (C x dim float32: weights, mean, GEMM buffer).

    Raises
    ------
    ValueError
        If they exceed :data:`DUAL_MEMORY_FRACTION` of the machine's memory, with the
        sizes and the ways out (class groups on Spark, or --solver asgd).
    """
    from bowsvm.asgd.dcd import dual_bytes

    k = sum(h.solver == "dcd" for h in hypers)
    if not k:
        return
    need = k * (dual_bytes(n_classes, n_train) + 3 * 4 * n_classes * dim)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return
    if need > DUAL_MEMORY_FRACTION * total:
        raise ValueError(
            f"--solver dcd needs {need / 2**30:.1f} GiB here ({k} setting(s) x {n_classes} "
            f"classes x {n_train} train rows of dual variables, plus weights), more than "
            f"{DUAL_MEMORY_FRACTION:.0%} of this machine's {total / 2**30:.1f} GiB; split the "
            f"classes over Spark tasks (jobs/train_groups.py --groups G), train fewer --reg/"
            f"--pos-weight values at once, or pass --solver asgd (no per-row state)."
        )


def warn_if_grouped(fs: FeatureShards, train) -> None:
    """Warn when the train split's rows come class after class (they train worse streamed)."""
    if train.grouped_by_class():
        warnings.warn(
            f"the train rows of feature set {fs.name!r} come class after class ({train.runs} "
            f"runs of one label in {train.n} rows): streamed chunks then hold few classes, and "
            f"training converges slower (on the many-class benchmark, val top-1 after 4-5 "
            f"epochs was 3 points lower for ASGD and 8 for DCD). Re-extract the feature set "
            f"(bowsvm extract --overwrite), which writes rows in a mixed order.", stacklevel=3)


def auto_eta0(fs: FeatureShards, train, hypers, eta0_auto, seed: int, rows: int,
              mix: int = 1) -> tuple:
    """``(hypers, eta0_auto)`` with eta0 calibrated, where ``eta0_auto`` says so, on the first
    1000 rows of the seed's order (``mix`` shards side by side, as training reads them);
    settings that become equal are kept once (the first)."""
    import numpy as np

    from bowsvm.asgd.trainer import with_eta0
    from bowsvm.io.features import iter_chunks

    if any(eta0_auto):
        _, labels, X = next(iter_chunks(train, fs.dim, min(rows, CALIBRATION_ROWS),
                                        np.random.default_rng([seed, 0]), mix=mix))
    out, autos = [], []
    for h, auto in zip(hypers, eta0_auto):
        h = with_eta0(h, X, labels, len(fs.classes)) if auto else h
        if h not in out:
            out.append(h)
            autos.append(bool(auto))
    return out, autos


def train_feature_set(fs: FeatureShards, *, hyper, epochs: int = 5, seed: int = 0,
                      memory_budget="2GB", n_jobs=None, groups: int = 1,
                      only_groups=None, eta0_auto=False, validate: bool = True,
                      early_stop: int = 0, select: str = "top1",
                      checkpoint_dir=None, resume: bool = False, progress=None,
                      on_epoch=None):
    """Train one-vs-all ASGD on a feature set's train split, streaming its shards.

    Parameters
    ----------
    fs : FeatureShards
    hyper : Hyper or list of Hyper
        The setting(s) to train; several train in the same data pass (each as
        if alone) and the best on val is chosen (:func:`bowsvm.asgd.trainer.choose`).
    eta0_auto : bool or list of bool
        Per setting: calibrate its eta0 first (:func:`auto_eta0`).
    groups : int
        Number of class groups; ``only_groups`` restricts training to some of
        them (distributed work). The sample sequence does not depend on either.
    validate : bool
        Evaluate on the "val" split after each epoch (if it exists and all
        groups are trained here); otherwise divergence is judged on the first
        1000 rows of the train split.
    early_stop : int
        With val: keep each setting's epoch with the best ``select`` score and
        stop it after this many epochs without a gain (0: the last epoch).
    select : "top1" or "top5"
        The val score early stopping and the choice among settings follow.
    checkpoint_dir : path or None
        Where to write a checkpoint after every epoch.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` if there is one.
    progress : callable or None
        Called as ``progress(row, k)`` with each log row and its setting's index.
    on_epoch : callable or None
        Called as ``on_epoch(epoch, candidates)`` after each epoch (states folded).

    Returns
    -------
    candidates : list of :class:`bowsvm.asgd.trainer.Candidate`
        One per distinct setting (after calibration), states folded.
    chosen : int or None
        Index of the setting chosen on val (None without val and with one
        setting: 0 is then the only one).
    info : dict (eta0, rows_per_chunk, n_train, seconds, hyper, seed, groups,
        model_epoch, selection)

    Raises
    ------
    ValueError
        On bad shards (see :func:`bowsvm.io.features.scan_split`,
        :func:`bowsvm.io.features.iter_chunks`), a diverging run (all settings
        diverged), a checkpoint written with other settings, or several
        settings / early stopping without a val split.
    """
    import numpy as np

    from bowsvm.asgd._parallel import resolve_n_jobs, thread_limit
    from bowsvm.asgd.trainer import (
        Candidate, EarlyStopping, choose, class_groups, new_states, objective, train_epochs,
    )
    from bowsvm.io import content_hash
    from bowsvm.io.checkpoints import read_checkpoint, write_checkpoint
    from bowsvm.io.features import (
        first_rows, iter_chunks, read_ahead, rows_per_chunk, scan_split, shard_files,
        shards_per_chunk,
    )

    t_start = time.perf_counter()
    hypers = list(hyper) if isinstance(hyper, (list, tuple)) else [hyper]
    autos = (list(eta0_auto) if isinstance(eta0_auto, (list, tuple))
             else [bool(eta0_auto)] * len(hypers))
    if len(autos) != len(hypers):
        raise ValueError(f"eta0_auto has {len(autos)} entries for {len(hypers)} settings.")
    epochs = check_int("epochs", epochs, low=1)
    seed = check_int("seed", seed, low=0)
    early_stop = check_int("early_stop", early_stop, low=0)
    EarlyStopping(select)  # validates the metric name
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
    choosing = len(hypers) > 1 or early_stop > 0
    if choosing and val is None and validate:
        raise ValueError(
            f"{len(hypers)} hyper-parameter settings or early stopping choose on the val split, "
            f"and feature set {fs.folder} has none (or only some class groups train here)."
        )
    rows = rows_per_chunk(fs, train, budget)
    mix = shards_per_chunk(train, budget)
    if only_groups is None:  # (the Spark driver warns once for its tasks)
        warn_if_grouped(fs, train)
    with thread_limit(n_threads):
        hypers, autos = auto_eta0(fs, train, hypers, autos, seed, rows, mix)
        cfg = asdict(TrainConfig(hypers=[asdict(h) for h in hypers], seed=seed, epochs=epochs,
                                 groups=len(parts), rows_per_chunk=rows, feature_set=fs.name,
                                 shards_per_chunk=mix,
                                 manifest_hash=content_hash(fs.manifest), eta0_auto=autos,
                                 only_groups=todo, early_stop=early_stop, select=select))

        def stopping():
            return EarlyStopping(select, early_stop) if (early_stop and val is not None) else None

        check_dual_memory(hypers, sum(len(parts[g]) for g in todo), train.n, fs.dim)
        cands = [Candidate(h, new_states(parts, todo, fs.dim, h, train.n), stopping())
                 for h in hypers]
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        loaded = read_checkpoint(ckpt, cfg) if (resume and ckpt is not None) else None
        done = 0
        if loaded is not None:
            done, arrays, log = loaded
            for k, c in enumerate(cands):
                c.load_arrays(arrays, f"c{k}_")
                c.log_rows = list(log["rows"][k])
                c.finished, c.error = log["finished"][k], log["errors"][k]
                if c.stopping is not None:
                    c.stopping = EarlyStopping.replay(select, early_stop, c.log_rows)

        if val is not None:
            def judge(c):
                ev = validation([c.states[g].averaged() for g in todo], val, fs.dim, rows,
                                c.hyper.reg, c.hyper.pos_weight)
                return ev, ev["objective"], "val"
        else:  # divergence judged on the first rows of the train split, classes trained here
            probe_y, probe_X = first_rows(train, fs.dim, rows, PROBE_ROWS)
            rc = np.concatenate([parts[g] for g in todo])

            def judge(c):
                W, b = (np.concatenate(a) for a in zip(*(c.states[g].averaged() for g in todo)))
                return ({}, objective(W, b, probe_X, probe_y, rc, c.hyper.reg, c.hyper.pos_weight),
                        f"train-sample ({probe_y.shape[0]} rows)")

        dual = any(h.solver == "dcd" for h in hypers)

        def chunks(epoch):
            rng = np.random.default_rng([seed, epoch])
            return _xy(read_ahead(iter_chunks(train, fs.dim, rows, rng, with_index=dual,
                                              mix=mix)))

        def after(epoch, cands):
            if on_epoch is not None:
                on_epoch(epoch, cands)
            if ckpt is not None:
                arrays = {}
                for k, c in enumerate(cands):
                    arrays.update(c.to_arrays(f"c{k}_"))
                write_checkpoint(ckpt, epoch, arrays, cfg, {
                    "rows": [c.log_rows for c in cands],
                    "finished": [c.finished for c in cands],
                    "errors": [c.error for c in cands]})
            if os.environ.get(KILL_ENV) == str(epoch):
                os.kill(os.getpid(), signal.SIGKILL)

        train_epochs(cands, chunks, epochs, done=done, judge=judge, progress=progress,
                     on_epoch=after)
    chosen = choose(cands, select) if val is not None else (0 if len(cands) == 1 else None)
    c = cands[chosen if chosen is not None else 0]
    info = {"eta0": c.hyper.eta0, "rows_per_chunk": rows, "shards_per_chunk": mix,
            "n_train": train.n,
            "seconds": round(time.perf_counter() - t_start, 3), "hyper": asdict(c.hyper),
            "seed": seed, "groups": len(parts), "model_epoch": c.model_epoch,
            "selection": selection_record(cands, chosen, select, early_stop)}
    return cands, chosen, info


def selection_record(cands, chosen, select: str, early_stop: int) -> dict:
    """The manifest's ``selection``: every setting tried, its kept epoch and val scores."""
    tried = []
    for c in cands:
        e = c.model_epoch
        row = next((r for r in c.log_rows if r["epoch"] == e), {})
        tried.append({"solver": c.hyper.solver, "reg": c.hyper.reg, "eta0": c.hyper.eta0,
                      "pos_weight": c.hyper.pos_weight,
                      "epochs": len(c.log_rows), "model_epoch": e,
                      "top1": row.get("top1"), "top5": row.get("top5"),
                      "finished": c.finished, "error": c.error})
    return {"metric": select, "early_stop": early_stop, "chosen": chosen, "settings": tried}


def model_manifest(fs: FeatureShards, log_rows: list, info: dict, seconds: float) -> dict:
    """The model folder's ``manifest.json`` (keys: docs/FORMATS.md, "Models")."""
    from bowsvm.asgd.core import Hyper
    from bowsvm.asgd.trainer import method

    return {
        "stage": "train", "feature_set": fs.name, "preset": fs.manifest.get("preset"),
        "preset_hash": fs.preset_hash, "codebook_hash": fs.manifest.get("codebook_hash"),
        "dim": fs.dim, "classes": fs.classes, "layout": fs.layout,
        "hyper_parameters": info["hyper"], "epochs": len(log_rows),
        "t": log_rows[-1]["t"] if log_rows else 0, "seed": info["seed"],
        "groups": info["groups"], "eta0": info["eta0"], "model_epoch": info["model_epoch"],
        "selection": info["selection"],
        "rows_per_chunk": info["rows_per_chunk"],
        "shards_per_chunk": info["shards_per_chunk"], "n_train": info["n_train"],
        "seconds": round(seconds, 3),
        "timings": {"train_seconds": info["seconds"],
                    "epoch_seconds": [r.get("seconds") for r in log_rows]},
        "method": method(Hyper(**info["hyper"])),
    }


def _progress(args, n_settings: int):
    """The per-epoch line printer of ``bowsvm train`` (one JSON object per line)."""
    import json

    def progress(row, k):
        if not args.quiet:
            print(json.dumps({"setting": k, **row} if n_settings > 1 else row),
                  file=sys.stderr, flush=True)
    return progress


def _report_choice(args, cands, chosen: int, info: dict) -> None:
    if args.quiet or (len(cands) == 1 and not args.early_stop):
        return
    c = cands[chosen]
    h = c.hyper
    eta0 = f", eta0 {h.eta0:g}" if h.solver == "asgd" else ""
    what = (f"setting {chosen} of {len(cands)} (reg {h.reg:g}{eta0}, "
            f"pos-weight {h.pos_weight:g})" if len(cands) > 1 else "the model")
    print(f"[train] chose {what}: epoch {info['model_epoch']} of {len(c.log_rows)} trained, "
          f"val {args.select} {c.score(args.select):.4f}", file=sys.stderr)


def run(args) -> int:
    """``bowsvm train``: train on this machine and write ``MODELS/NAME``."""
    from bowsvm.io.checkpoints import checkpoint_dir
    from bowsvm.io.features import open_feature_set
    from bowsvm.io.models import write_model

    t0 = time.perf_counter()
    check_arguments(args)
    fs = open_feature_set(args.features, args.feature_set)
    hypers, autos = hypers_from_args(args, len(fs.classes), train_rows(fs))
    out = _model_dir(args, fs)
    ckpt = checkpoint_dir(args.models, fs.name)
    cands, chosen, info = train_feature_set(
        fs, hyper=hypers, epochs=args.epochs, seed=args.seed, memory_budget=args.memory_budget,
        n_jobs=args.n_jobs, groups=args.groups, eta0_auto=autos,
        validate=not args.no_validate, early_stop=args.early_stop, select=args.select,
        checkpoint_dir=ckpt, resume=args.resume, progress=_progress(args, len(hypers)))
    chosen = 0 if chosen is None else chosen
    coef, intercept = cands[chosen].model()
    _report_choice(args, cands, chosen, info)
    log_rows = cands[chosen].log_rows
    write_model(out, coef, intercept, log_rows,
                model_manifest(fs, log_rows, info, time.perf_counter() - t0),
                overwrite=args.overwrite, inputs=[fs.folder])
    shutil.rmtree(ckpt, ignore_errors=True)
    if not args.quiet:
        print(f"model written to {out}", file=sys.stderr)
    return 0


# ------------------------------------------------------- class groups on Spark

def _group_file(staging, epoch: int, g: int, k: int = 0) -> Path:
    return Path(staging) / f"epoch-{epoch:04d}" / f"setting-{k:03d}-group-{g:05d}.npz"


def train_group(g: int, features: str, name: str, hypers: list, epochs: int, seed: int,
                budget: str, n_jobs: int, groups: int, staging: str) -> tuple:
    """Executor side: train group ``g`` of every setting over all shards; write its weights
    after each epoch (settings in the same data pass, as locally).

    Returns
    -------
    (g, log rows per setting, divergence message or None per setting, info)
    """
    from bowsvm.asgd.core import Hyper
    from bowsvm.io.features import open_feature_set
    from bowsvm.io.models import write_group_weights
    from bowsvm.spark import maybe_inject_failure

    maybe_inject_failure()

    def save(epoch, cands):
        for k, c in enumerate(cands):
            if c.log_rows and c.log_rows[-1]["epoch"] == epoch and c.error is None:
                W, b = c.states[g].averaged()
                path = _group_file(staging, epoch, g, k)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_group_weights(path, W, b)

    fs = open_feature_set(features, name)
    cands, _, info = train_feature_set(
        fs, hyper=[Hyper(**h) for h in hypers], epochs=epochs, seed=seed, memory_budget=budget,
        n_jobs=n_jobs, groups=groups, only_groups=[g], validate=False, on_epoch=save)
    return g, [c.log_rows for c in cands], [c.error for c in cands], info


def run_spark(spark, args) -> int:
    """``jobs/train_groups.py``: one Spark task per class group; the driver writes the model.

    The tasks train every setting for all epochs (they see no val split); the
    driver validates each setting's gathered model epoch by epoch and applies
    early stopping and the choice exactly as the local run does, so the model,
    its kept epoch and the log rows kept match ``bowsvm train``.
    """
    from bowsvm.asgd.trainer import Candidate, EarlyStopping, check_divergence, choose
    from bowsvm.io.features import (
        open_feature_set, rows_per_chunk, scan_split, shard_files, shards_per_chunk,
    )
    from bowsvm.io.models import read_group_weights, write_model

    t0 = time.perf_counter()
    n_jobs = 1 if args.n_jobs is None else args.n_jobs  # per task: tasks x threads <= cores
    fs = open_feature_set(args.features, args.feature_set)
    hypers, autos = hypers_from_args(args, len(fs.classes), train_rows(fs))
    out = _model_dir(args, fs)
    train = scan_split(fs, "train", require_all_classes=True)  # errors before any task
    warn_if_grouped(fs, train)
    val = scan_split(fs, "val") if (not args.no_validate and shard_files(fs.folder, "val")) else None
    choosing = len(hypers) > 1 or args.early_stop > 0  # check_arguments made sure of val
    rows = rows_per_chunk(fs, train, parse_bytes(args.memory_budget))
    hypers, _ = auto_eta0(fs, train, hypers, autos, args.seed, rows,
                          shards_per_chunk(train, parse_bytes(args.memory_budget)))

    staging = Path(args.models).absolute() / f".{fs.name}.groups"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    features = absolute(args.features)  # a URI stays a URI
    job = (args.feature_set, [asdict(h) for h in hypers], args.epochs, args.seed,
           args.memory_budget, n_jobs, args.groups, str(staging))
    results = (spark.sparkContext.parallelize(range(args.groups), args.groups)
               .map(lambda g: train_group(g, features, *job))
               .collect())
    results.sort(key=lambda r: r[0])

    def gathered(k, epoch):
        return read_group_weights([_group_file(staging, epoch, g, k) for g, *_ in results])

    cands = []
    for k, h in enumerate(hypers):
        c = Candidate(h, {}, EarlyStopping(args.select, args.early_stop)
                      if args.early_stop else None)
        errors = [res[2][k] for res in results if res[2][k] is not None]
        # epochs whose weights every group wrote (a diverged group wrote none for its last)
        usable = min(len(res[1][k]) - (res[2][k] is not None) for res in results)
        for e, row in enumerate(results[0][1][k][:usable]):
            r = dict(row)
            r["seconds"] = max(res[1][k][e]["seconds"] for res in results)
            if val is not None:  # the epoch's validation, of the gathered model, on the driver
                r.update(validation([gathered(k, r["epoch"])], val, fs.dim, rows, h.reg,
                                    h.pos_weight))
            c.log_rows.append(r)
            if val is not None:  # divergence judged on val, as the local run does
                try:
                    check_divergence(r["epoch"], r["objective"], "val", h,
                                     alone=len(hypers) == 1)
                except ValueError as exc:
                    if len(hypers) == 1:
                        raise
                    c.finished, c.error = "diverged", str(exc)
                    break
            if c.stopping is not None and c.stopping.update(r["epoch"], r)[1]:
                c.finished = "early-stop"
                break
        else:  # every usable epoch replayed: a task's divergence ended the setting
            if errors:
                c.finished, c.error = "diverged", errors[0]
        cands.append(c)
    chosen = choose(cands, args.select) if choosing else 0
    c = cands[chosen]
    coef, intercept = gathered(chosen, c.model_epoch)
    info = dict(results[0][3])
    info.update(eta0=c.hyper.eta0, hyper=asdict(c.hyper), model_epoch=c.model_epoch,
                selection=selection_record(cands, chosen, args.select, args.early_stop),
                seconds=round(time.perf_counter() - t0, 3))
    _report_choice(args, cands, chosen, info)
    write_model(out, coef, intercept, c.log_rows,
                model_manifest(fs, c.log_rows, info, time.perf_counter() - t0),
                overwrite=args.overwrite, inputs=[fs.folder])
    shutil.rmtree(staging, ignore_errors=True)
    print(f"[train_groups] {args.groups} groups trained; model written to {out}", file=sys.stderr)
    return 0
