"""``bowsvm train``: ASGD one-vs-all SVMs for one feature set, streamed from its shards."""

from __future__ import annotations

import json
import shutil
import sys
from typing import TYPE_CHECKING

from bowsvm.io.atomic import prepare_target

if TYPE_CHECKING:  # the trainer imports scikit-learn: keep it out of every CLI start-up
    from bowsvm.asgd.core import Hyper

NAME = "train"
HELP = "train ASGD one-vs-all linear SVMs on one feature set"
DESCRIPTION = (
    "Train one-vs-all linear SVMs (hinge loss, L2) by averaged SGD on the train split of "
    "FEATURES/NAME, streaming the Parquet shards chunk by chunk within --memory-budget "
    "(read ahead on a background thread). Validates on the val split after every epoch "
    "(top-1, top-5, objective -> log.jsonl), checkpoints after every epoch (--resume "
    "continues a killed run exactly, given the same --n-jobs), and writes MODELS/NAME "
    "atomically."
)
ORDER = 50


def add_arguments(parser) -> None:
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
    parser.add_argument("--n-jobs", type=int, default=None, help="threads; unset means all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-epoch shuffles")
    parser.add_argument("--no-average", action="store_true", help="plain SGD (no averaging)")
    parser.add_argument("--no-validate", action="store_true", help="skip the per-epoch val evaluation")
    parser.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model")
    parser.add_argument("--quiet", action="store_true", help="do not print per-epoch lines")


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
    """Validated hyper-parameters from parsed arguments: (Hyper, eta0_auto)."""
    from bowsvm.asgd import ASGDClassifier

    eta0 = parse_eta0(args.eta0)
    est = ASGDClassifier(reg=args.reg, eta0=eta0 if eta0 is not None else 1e-3,
                         power=args.power, average_start=args.average_start,
                         bias_lr=args.bias_lr, block_size=args.block_size,
                         averaged=not args.no_average)
    return est._hyper(), eta0 is None


def run(args) -> int:
    from bowsvm.asgd.streaming import (
        _ckpt_dir, gather, open_feature_set, train_feature_set, write_model,
    )

    hyper, auto = hyper_from_args(args)
    fs = open_feature_set(args.features, args.feature_set)
    out = prepare_target(f"{args.models}/{fs.name}", args.overwrite, "train",  # refuse early
                         [fs.folder], "--models/NAME")
    ckpt = _ckpt_dir(args.models, fs.name)

    def progress(row):
        if not args.quiet:
            print(json.dumps(row), file=sys.stderr, flush=True)

    states, log_rows, info = train_feature_set(
        fs, hyper=hyper, epochs=args.epochs, seed=args.seed, memory_budget=args.memory_budget,
        n_jobs=args.n_jobs, groups=args.groups, eta0_auto=auto,
        validate=not args.no_validate, checkpoint_dir=ckpt, resume=args.resume,
        progress=progress)
    coef, intercept = gather(states)
    write_model(args.models, fs, coef, intercept, log_rows, info, overwrite=args.overwrite)
    shutil.rmtree(ckpt, ignore_errors=True)
    if not args.quiet:
        print(f"model written to {out}", file=sys.stderr)
    return 0
