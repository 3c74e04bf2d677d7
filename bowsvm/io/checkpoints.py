"""Training checkpoints: the state of a ``bowsvm train`` run after an epoch.

Layout (docs/FORMATS.md, "Training checkpoints")::

    <models>/.<name>.checkpoint/checkpoint.json   epoch, state, config, log
    <models>/.<name>.checkpoint/state-<epoch>.npz the arrays of every class group

``config`` is everything that fixes the sample sequence and the arithmetic of
the run; :func:`read_checkpoint` refuses a checkpoint written with another
one. The arrays are plain NumPy arrays (no pickle); what they mean is the
trainer's business (:func:`bowsvm.asgd.trainer.states_to_arrays`). Both files
are replaced atomically (:func:`bowsvm.io.atomic.atomic_file`): the state file
first, then the JSON that names it, so a crash leaves the previous epoch's
checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bowsvm.io.arrays import load_npz
from bowsvm.io.atomic import atomic_file
from bowsvm.io.manifest import write_json_atomic

__all__ = ["checkpoint_dir", "read_checkpoint", "write_checkpoint"]

CHECKPOINT_FILE = "checkpoint.json"


def checkpoint_dir(models_root, name: str) -> Path:
    """The checkpoint folder of model ``name``: ``<models_root>/.<name>.checkpoint``."""
    return Path(models_root) / f".{name}.checkpoint"


def write_checkpoint(path, epoch: int, arrays: dict, config: dict, log_rows: list) -> None:
    """Write the checkpoint of ``epoch`` into the folder ``path``; drop older states.

    Parameters
    ----------
    path : str or Path
        The checkpoint folder (created if missing).
    epoch : int
    arrays : dict of str -> ndarray
        The training state.
    config : dict
        JSON-able settings of the run, compared on resume.
    log_rows : JSON-able
        The log of the epochs done (returned as written by :func:`read_checkpoint`).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = f"state-{epoch}.npz"
    with atomic_file(path / state) as f:
        np.savez(f, **arrays)
    write_json_atomic(path / CHECKPOINT_FILE, {
        "epoch": epoch, "state": state, "config": config, "log": log_rows,
    })
    for old in path.glob("state-*.npz"):
        if old.name != state:
            old.unlink()


def read_checkpoint(path, config: dict):
    """The checkpoint in folder ``path``: ``(epoch, arrays, log_rows)``, or None if there is none.

    Raises
    ------
    ValueError
        If ``checkpoint.json`` is corrupt, the checkpoint was written with
        another ``config`` (names the differing keys), or its state file is
        corrupt (names it).
    """
    path = Path(path)
    meta_path = path / CHECKPOINT_FILE
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
    want = json.loads(json.dumps(config))
    if meta["config"] != want:
        diffs = [k for k in sorted(set(meta["config"]) | set(want))
                 if meta["config"].get(k) != want.get(k)]
        raise ValueError(
            f"checkpoint {str(path)!r} was written with different settings ({diffs}); "
            f"rerun with the same options, or without --resume to start over."
        )
    arrays = load_npz(path / meta["state"], "training checkpoint")
    return int(meta["epoch"]), arrays, meta["log"]
