"""The fusion folder written by ``bowsvm fuse`` (stage "fuse"): writer beside readers.

Layout (docs/FORMATS.md, "Fusion")::

    fusion/manifest.json   stage, seconds, feature_sets, classes, weights, standardisation,
                           splits, n[split], inputs
    fusion/weights.json    feature_sets, weights {name: w}, standardisation {name: {mean, std}},
                           val_objective {top1, log_loss}, search {grid, rounds}
    fusion/metrics.json    feature_sets, weights, {split: {"sets": {name: {top1, top5}},
                           "fused": {top1, top5}, "n"}}
    fusion/SPLIT.parquet   fused scores of SPLIT (val, and test when every set has it),
                           the columns of a scores.parquet
    fusion/_SUCCESS
"""

from __future__ import annotations

import json
from pathlib import Path

from bowsvm.io.scores import (
    PARQUET_OPTIONS,
    ScoreSet,
    read_scores_file,
    scores_table,
)
from bowsvm.io import parquet
from bowsvm.io.atomic import atomic_output_dir
from bowsvm.io.manifest import read_manifest, write_json_atomic

__all__ = [
    "METRICS_FILE",
    "STAGE",
    "WEIGHTS_FILE",
    "read_fused",
    "read_fusion_manifest",
    "read_fusion_metrics",
    "read_fusion_weights",
    "write_fusion",
]

STAGE = "fuse"
WEIGHTS_FILE = "weights.json"
METRICS_FILE = "metrics.json"


def write_fusion(out, fused: dict, weights: dict, metrics: dict, manifest: dict,
                 overwrite: bool = False, inputs=(), option: str = "--out") -> Path:
    """Write a complete fusion folder atomically.

    Parameters
    ----------
    out : str or Path
        The folder.
    fused : dict of str -> (ids, labels, scores)
        Fused scores per split: ids (n,), labels (n,), scores ndarray of shape (n, C).
    weights : dict
        What goes to ``weights.json`` (:meth:`bowsvm.evaluation.fusion.FusionModel.to_json`).
    metrics : dict
        What goes to ``metrics.json``.
    manifest : dict
        What goes to ``manifest.json``; its ``stage`` must be "fuse".
    overwrite : bool, default False
    inputs : iterable of str or Path
        The score folders read (``out`` may not overlap them).
    option : str
        How ``out`` is named in messages.

    Returns
    -------
    Path

    Raises
    ------
    FileExistsError, ValueError
        If ``out`` may not be written (:func:`bowsvm.io.atomic.check_target`).
    """
    with atomic_output_dir(out, overwrite, STAGE, inputs, option) as tmp:
        for split, (ids, y, F) in fused.items():
            parquet.write_table(scores_table(ids, y, F), tmp / f"{split}.parquet",
                                **PARQUET_OPTIONS)
        write_json_atomic(tmp / WEIGHTS_FILE, weights)
        write_json_atomic(tmp / METRICS_FILE, metrics)
        write_json_atomic(tmp / "manifest.json", manifest)
    return Path(out)


def read_fusion_manifest(folder) -> dict:
    """The manifest of a complete fusion folder.

    Raises
    ------
    FileNotFoundError
        If the folder or its manifest is missing or incomplete.
    ValueError
        If the folder holds another stage's output.
    """
    return read_manifest(folder, stage=STAGE)


def _read_json(folder, name: str) -> dict:
    folder = Path(folder)
    read_fusion_manifest(folder)
    path = folder / name
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"fusion folder {str(folder)!r} has no {name}; "
                                f"rerun `bowsvm fuse --overwrite`.") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc}); "
                         f"rerun `bowsvm fuse --overwrite`.") from None


def read_fusion_weights(folder) -> dict:
    """``weights.json`` of a complete fusion folder (``FusionModel.from_json`` reads it).

    Raises
    ------
    FileNotFoundError
        If the folder is incomplete or lacks the file.
    ValueError
        If the folder is not a fuse output or the file is not valid JSON.
    """
    return _read_json(folder, WEIGHTS_FILE)


def read_fusion_metrics(folder) -> dict:
    """``metrics.json`` of a complete fusion folder.

    Raises
    ------
    FileNotFoundError
        If the folder is incomplete or lacks the file.
    ValueError
        If the folder is not a fuse output or the file is not valid JSON.
    """
    return _read_json(folder, METRICS_FILE)


def read_fused(folder, split: str) -> ScoreSet:
    """Read the fused scores of one split from a ``bowsvm fuse`` folder.

    Raises
    ------
    FileNotFoundError
        If the folder is incomplete or lacks the split.
    """
    folder = Path(folder)
    m = read_fusion_manifest(folder)
    path = folder / f"{split}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"fusion folder {str(folder)!r} has no {split!r} scores "
                                f"(splits: {m.get('splits')}).")
    ids, labels, S = read_scores_file(path, len(m["classes"]))
    return ScoreSet(ids, labels, S, list(m["classes"]), m)
