"""Model folders: the one-vs-all linear models written by ``bowsvm train``.

Layout (docs/FORMATS.md, "Models")::

    <models>/<name>/coef.npy        (C, dim) float32
    <models>/<name>/intercept.npy   (C,) float32
    <models>/<name>/log.jsonl       one JSON object per epoch
    <models>/<name>/manifest.json   stage "train" (keys: docs/FORMATS.md)

:func:`write_model` writes the folder atomically; :func:`load_model` reads and
checks it into a :class:`LinearModel`. The class-group Spark job
(``jobs/train_groups.py``) stages each group's weights after each epoch in a
``setting-K-group-G.npz`` (:func:`write_group_weights`, :func:`read_group_weights`) that
the driver gathers into the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bowsvm._validation import check_array
from bowsvm.io.arrays import load_npy, load_npz
from bowsvm.io.atomic import atomic_file, atomic_output_dir
from bowsvm.io.manifest import read_manifest, write_json_atomic

__all__ = ["LinearModel", "load_model", "read_group_weights", "write_group_weights",
           "write_model"]


@dataclass
class LinearModel:
    """A trained one-vs-all linear model as stored by ``bowsvm train``.

    Attributes
    ----------
    coef : ndarray of shape (C, dim), float32
    intercept : ndarray of shape (C,), float32
    classes : list of str
        Class names in label order.
    manifest : dict
        The model folder's manifest.
    path : Path or None
    """

    coef: np.ndarray
    intercept: np.ndarray
    classes: list
    manifest: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.coef.shape[0])


def write_model(out, coef, intercept, log_rows, manifest: dict, *, overwrite: bool = False,
                inputs=(), option: str = "--models/NAME") -> Path:
    """Write the model folder ``out`` atomically.

    Parameters
    ----------
    out : str or Path
        ``<models>/<name>``.
    coef : array of shape (C, dim)
        Stored as float32.
    intercept : array of shape (C,)
        Stored as float32.
    log_rows : list of dict
        One row per epoch, written to ``log.jsonl`` (keys sorted).
    manifest : dict
        The stage's manifest (``stage`` "train").
    overwrite : bool
    inputs : iterable of paths
        What the model was built from (it may not be, contain or lie inside them).
    option : str
        How the output is named in messages.

    Returns
    -------
    Path

    Raises
    ------
    FileExistsError
        If the model exists and ``overwrite`` is False, or the folder there is
        not a complete model (see :func:`bowsvm.io.atomic.check_target`).
    ValueError
        If the model folder is, contains or lies inside an input.
    """
    out = Path(out)
    with atomic_output_dir(out, overwrite, "train", list(inputs), option) as tmp:
        np.save(tmp / "coef.npy", np.ascontiguousarray(coef, dtype=np.float32))
        np.save(tmp / "intercept.npy", np.ascontiguousarray(intercept, dtype=np.float32))
        with open(tmp / "log.jsonl", "w") as f:
            for r in log_rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        write_json_atomic(tmp / "manifest.json", manifest)
    return out


def load_model(folder) -> LinearModel:
    """Load and check a model folder written by ``bowsvm train``.

    Parameters
    ----------
    folder : str or Path
        ``models/NAME``.

    Returns
    -------
    LinearModel

    Raises
    ------
    FileNotFoundError
        If the folder is missing or incomplete.
    ValueError
        If the manifest is not a "train" manifest, an array file is corrupt or
        holds object arrays (names the file), or the arrays' shapes do not
        agree with each other or with the manifest's ``dim`` and ``classes``.
    """
    folder = Path(folder)
    m = read_manifest(folder, stage="train")
    coef = load_npy(folder / "coef.npy", "model file")
    intercept = load_npy(folder / "intercept.npy", "model file")
    if coef.ndim != 2 or intercept.ndim != 1 or coef.shape[0] != intercept.shape[0]:
        raise ValueError(
            f"model {str(folder)!r} is inconsistent: coef.npy has shape {coef.shape} and "
            f"intercept.npy has shape {intercept.shape}; expected (C, dim) and (C,). Retrain it."
        )
    classes = list(m.get("classes", []))
    if len(classes) != coef.shape[0]:
        raise ValueError(
            f"model {str(folder)!r} lists {len(classes)} classes in manifest.json but coef.npy "
            f"has {coef.shape[0]} rows; retrain it."
        )
    if "dim" in m and int(m["dim"]) != coef.shape[1]:
        raise ValueError(
            f"model {str(folder)!r}: manifest dim={m['dim']} but coef.npy has {coef.shape[1]} "
            f"columns; retrain it."
        )
    coef = check_array("coef", coef, ndim=2).astype(np.float32, copy=False)
    intercept = check_array("intercept", intercept, ndim=1).astype(np.float32, copy=False)
    return LinearModel(np.ascontiguousarray(coef), np.ascontiguousarray(intercept),
                       classes, m, folder)


def write_group_weights(path, coef, intercept) -> None:
    """Write one class group's weights, ``coef`` (C_g, dim) and ``intercept`` (C_g,), atomically."""
    with atomic_file(path) as f:
        np.savez(f, coef=coef, intercept=intercept)


def read_group_weights(paths):
    """The weights of the groups in ``paths`` (in that order), concatenated: (coef, intercept).

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        If a file is corrupt (names it).
    """
    parts = [load_npz(p, "group weights file") for p in paths]
    return (np.concatenate([p["coef"] for p in parts]),
            np.concatenate([p["intercept"] for p in parts]))
