"""Stage "fuse": score sets -> fusion weights (learned on val only) + fused scores.

``bowsvm fuse --feature-sets A,B`` reads ``SCORES/NAME/SPLIT/`` (``bowsvm score``) for
every named set, checks that the sets agree (classes, ids, labels, one model per set),
learns the fusion on val (:func:`bowsvm.evaluation.fusion.fit_fusion`: z-scoring with
val statistics, non-negative weights summing to 1), applies it to every split all sets
have, and writes the fusion folder (:mod:`bowsvm.io.fusion`; docs/FORMATS.md, "Fusion").
Its manifest records ``seconds``, the stage's wall time.
"""

from __future__ import annotations

import time
from pathlib import Path

from bowsvm._validation import check_int
from bowsvm.evaluation.fusion import align_score_sets, apply_fusion, fit_fusion
from bowsvm.evaluation.metrics import top_k_accuracy
from bowsvm.io.scores import read_scores
from bowsvm.io import content_hash
from bowsvm.io.atomic import check_target
from bowsvm.io.fusion import STAGE, write_fusion

__all__ = ["fuse_feature_sets", "feature_set_names"]

NAME = "fuse"
ORDER = 70
HELP = "fuse the scores of several feature sets (weights learned on val only)"
DESCRIPTION = (
    "Z-score each feature set's scores with its val mean/std, learn non-negative weights "
    "summing to 1 by coordinate search maximising val top-1 (log-loss tie-break), apply "
    "them to test, and write OUT/{weights.json,metrics.json,val.parquet,test.parquet}."
)


def add_arguments(p):
    p.add_argument("--scores", default="scores", help="root of the score folders (NAME/SPLIT)")
    p.add_argument("--feature-sets", required=True, help="comma-separated feature-set names")
    p.add_argument("--out", default="fusion", help="output folder")
    p.add_argument("--grid", type=int, default=20, help="weight grid steps per coordinate")
    p.add_argument("--max-rounds", type=int, default=10, help="coordinate-search rounds at most")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def feature_set_names(text: str) -> list:
    """The names of ``--feature-sets A,B,...`` (blanks dropped)."""
    return [s.strip() for s in str(text).split(",") if s.strip()]


def _check_names(feature_sets: list) -> list:
    feature_sets = [str(s) for s in feature_sets]
    if not feature_sets:
        raise ValueError("feature_sets is empty; pass at least one feature-set name.")
    if len(set(feature_sets)) != len(feature_sets):
        raise ValueError(f"feature_sets={feature_sets} repeats a name; list each set once.")
    return feature_sets


def check_arguments(args) -> None:
    """Validate the options and refuse ``--out`` before any score is read.

    Raises
    ------
    ValueError
        If ``--feature-sets`` is empty or repeats a name, ``--grid`` < 1,
        ``--max-rounds`` < 0, or ``--out`` overlaps a score folder.
    FileExistsError
        If ``--out`` may not be written (:func:`bowsvm.io.atomic.check_target`).
    """
    names = feature_set_names(args.feature_sets)
    if not names:
        raise ValueError(f"--feature-sets {args.feature_sets!r} names no feature set; "
                         f"pass a comma-separated list such as --feature-sets A,B.")
    if len(set(names)) != len(names):
        raise ValueError(f"--feature-sets {args.feature_sets!r} repeats a name; "
                         f"list each set once.")
    check_int("--grid", args.grid, low=1)
    check_int("--max-rounds", args.max_rounds, low=0)
    check_target(args.out, args.overwrite, STAGE, [Path(args.scores) / s for s in names], "--out")


def _metrics(S, labels) -> dict:
    return {"top1": top_k_accuracy(S, labels, 1), "top5": top_k_accuracy(S, labels, 5)}


def fuse_feature_sets(scores_dir, feature_sets: list, out, splits=("val", "test"),
                      grid: int = 20, max_rounds: int = 10, overwrite: bool = False) -> dict:
    """Read scores, learn fusion on val, apply to every split, write ``out``.

    Parameters
    ----------
    scores_dir : str or Path
        Root holding ``NAME/SPLIT/`` score folders.
    feature_sets : list of str
        At least one name.
    out : str or Path
        Output folder (:mod:`bowsvm.io.fusion`).
    splits : sequence of str, default ("val", "test")
        The first must be "val"; later splits are fused when every set has them.
    grid, max_rounds : int
        See :func:`bowsvm.evaluation.fusion.fit_fusion`.
    overwrite : bool, default False

    Returns
    -------
    dict
        The metrics written to ``metrics.json``.

    Raises
    ------
    FileNotFoundError
        If a set lacks val scores.
    FileExistsError
        If ``out`` exists and ``overwrite`` is False, or it may not be replaced
        (not a complete fuse output, the working directory, ...; see
        :func:`bowsvm.io.atomic.check_target`).
    ValueError
        If names repeat, ids, labels or class lists disagree between sets, a
        set's val and test scores come from different models, or ``out`` is,
        contains or lies inside a set's score folder.
    """
    t0 = time.perf_counter()
    feature_sets = _check_names(feature_sets)
    if list(splits)[0] != "val":
        raise ValueError(f"splits must start with 'val' (weights are learned on val), got {splits}.")
    scores_dir = Path(scores_dir)
    inputs = [scores_dir / s for s in feature_sets]
    check_target(out, overwrite, STAGE, inputs, "--out")  # refuse before reading scores
    data = {}
    for split in splits:
        folders = {s: scores_dir / s / split for s in feature_sets}
        present = [s for s, f in folders.items() if (f / "manifest.json").exists()]
        if split == "val" and len(present) < len(feature_sets):
            missing = [s for s in feature_sets if s not in present]
            raise FileNotFoundError(
                f"no val scores for feature set(s) {missing} under {str(scores_dir)!r}; "
                f"run `bowsvm score --feature-set NAME --split val` first."
            )
        if len(present) < len(feature_sets):
            continue
        data[split] = align_score_sets({s: read_scores(folders[s]) for s in feature_sets}, split)
    val = data["val"]
    ref = val[feature_sets[0]]
    model = fit_fusion([val[s].scores for s in feature_sets], ref.labels, feature_sets,
                       grid=grid, max_rounds=max_rounds)
    weights = model.to_json()
    metrics = {"feature_sets": feature_sets, "weights": weights["weights"]}
    fused = {}
    for split, sets in data.items():
        for name in feature_sets:
            mv, ms = val[name].manifest.get("model_hash"), sets[name].manifest.get("model_hash")
            if mv is not None and ms is not None and mv != ms:
                raise ValueError(
                    f"the {split} and val scores of feature set {name!r} come from different "
                    f"models (model_hash {ms!r} vs {mv!r}); rescore both splits with the same "
                    f"model (bowsvm score --overwrite)."
                )
        if list(sets[feature_sets[0]].classes) != list(ref.classes):
            raise ValueError(f"class lists of the {split} and val scores of feature set "
                             f"{feature_sets[0]!r} differ; rescore both splits with one model.")
        F = apply_fusion(model, [sets[s].scores for s in feature_sets])
        y = sets[feature_sets[0]].labels
        fused[split] = (sets[feature_sets[0]].ids, y, F)
        metrics[split] = {
            "n": int(len(y)),
            "sets": {s: _metrics(sets[s].scores, y) for s in feature_sets},
            "fused": _metrics(F, y),
        }
    manifest = {
        "stage": STAGE,
        "feature_sets": feature_sets,
        "classes": list(ref.classes),
        "weights": metrics["weights"],
        "standardisation": weights["standardisation"],
        "splits": list(fused),
        "n": {sp: int(len(v[0])) for sp, v in fused.items()},
        "inputs": {s: {sp: content_hash(data[sp][s].manifest) for sp in data}
                   for s in feature_sets},
    }
    manifest["seconds"] = round(time.perf_counter() - t0, 3)  # wall time (the final write aside)
    write_fusion(out, fused, weights, metrics, manifest, overwrite, inputs, "--out")
    return metrics


def run(args) -> int:
    """``bowsvm fuse``: fuse, then print each set's and the fused top-1/top-5."""
    check_arguments(args)
    m = fuse_feature_sets(args.scores, feature_set_names(args.feature_sets), args.out,
                          grid=args.grid, max_rounds=args.max_rounds, overwrite=args.overwrite)
    print("weights: " + ", ".join(f"{s}={w:.3f}" for s, w in m["weights"].items()))
    for split in ("val", "test"):
        if split not in m:
            continue
        r = m[split]
        for s, v in r["sets"].items():
            print(f"{split:5s} {s:24s} top-1 {100 * v['top1']:6.2f}%  top-5 {100 * v['top5']:6.2f}%")
        f = r["fused"]
        print(f"{split:5s} {'FUSED':24s} top-1 {100 * f['top1']:6.2f}%  top-5 {100 * f['top5']:6.2f}%")
    print(f"wrote {args.out}")
    return 0
