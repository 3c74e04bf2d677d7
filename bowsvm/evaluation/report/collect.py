"""Collect the report's numbers from what the pipeline left on disk.

:func:`collect_report_data` reads the feature, model, score and fusion folders (and
optionally the image shards) and returns one JSON-able dict, the content of
``OUT.json`` (docs/FORMATS.md, "Report"); :mod:`.figures` and :mod:`.html` only
draw and render it.

Conventions (documented choices)
--------------------------------
* Feature sets are the folders of ``--features`` (stage "extract"), ``--models``
  (stage "train") and ``--scores``; a model folder named ``NAME-sgd`` is the plain
  SGD baseline of ``NAME`` and is not a feature set of its own.
* Convergence (paper Fig. 3): rows of ``models/NAME/log.jsonl``. A row may carry
  ``"method": "asgd"`` or ``"sgd"`` (``bowsvm train --solver asgd`` writes it;
  ``--no-average`` gives "sgd"; ``--solver dcd`` writes "dcd" or "dcd-last");
  rows without it count as "asgd" in ``NAME`` and as "sgd" in
  ``NAME-sgd`` or in ``BASELINE/NAME`` (``--baseline-models BASELINE``, e.g. a
  root written by ``bowsvm train --no-average --models BASELINE``). Each curve plots, per epoch, whichever of
  ``objective``, ``top1``, ``top5`` (and ``val_top1``, ``val_top5``) the rows have.
* Per-class analysis (Figs. 4-5, confusions, examples) uses the fused test scores
  when a fusion folder with test scores exists, else the test scores of the set
  with the best val top-1 (test of any set, else val). ``per_class.source`` says which.
* Extraction and training times are the ``seconds`` (wall time) of the extract and
  train manifests, the one key every stage writes (docs/FORMATS.md, "Manifests");
  a manifest without it shows "-" and is ``null`` in the JSON.
* Sparsity = mean fraction of non-zero entries: the feature manifest's
  ``density`` when recorded (``bowsvm extract`` does), else measured over up to
  512 rows of the first shard found (train, else val, else test).
"""

from __future__ import annotations

import base64
import json
import math
import time
from pathlib import Path

import numpy as np

from bowsvm.evaluation.metrics import (
    confusion_pairs,
    per_class_hit_rates,
    top_k_accuracy,
    top_k_indices,
)
from bowsvm.io.scores import read_scores
from bowsvm.io import is_complete, read_manifest
from bowsvm.io.features import iter_shard_batches, shard_files
from bowsvm.io.fusion import read_fused, read_fusion_manifest, read_fusion_metrics
from bowsvm.io.image_shards import image_shard_files

__all__ = ["N_EXAMPLES", "N_NAMED", "SPLITS", "collect_report_data",
           "public_data"]

SPLITS = ("val", "test")
N_EXAMPLES = 8
N_NAMED = 10


def _seconds(m: dict | None):
    """A stage's wall time: its manifest's ``seconds``; None if absent or not a number."""
    v = (m or {}).get("seconds")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _dir_size(folder: Path) -> int:
    return int(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))


def _sparsity(folder: Path, m: dict):
    """Mean fraction of non-zeros over a sample of rows, or None."""
    dim = int(m.get("dim", 0) or 0)
    if dim <= 0:
        return None
    for split in ("train", "val", "test"):
        files = shard_files(folder, split)
        if not files:
            continue
        for _, _, X in iter_shard_batches(files[0], dim, 512):
            if X.shape[0] == 0:
                continue
            nnz = X.count_nonzero() if hasattr(X, "count_nonzero") else np.count_nonzero(X)
            return float(nnz) / (X.shape[0] * dim)
    return None


def _complete_dirs(root, stage):
    out = {}
    if root is None or not Path(root).is_dir():
        return out
    for d in sorted(Path(root).iterdir()):
        if d.is_dir() and not d.name.startswith(".") and is_complete(d):
            try:
                out[d.name] = read_manifest(d, stage=stage)
            except (ValueError, json.JSONDecodeError):
                continue
    return out


def _read_log(path: Path) -> list:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


_CURVE_KEYS = ("objective", "top1", "top5", "val_top1", "val_top5")


def _curves(rows: list, default_method: str) -> dict:
    out = {}
    for r in rows:
        if "epoch" not in r:
            continue
        meth = str(r.get("method", default_method)).lower()
        c = out.setdefault(meth, {"epoch": []})
        c["epoch"].append(float(r["epoch"]))
        for k in _CURVE_KEYS:
            v = r.get(k)
            c.setdefault(k, []).append(float(v) if isinstance(v, (int, float)) else None)
    for c in out.values():
        for k in list(c):
            if k != "epoch" and all(v is None for v in c[k]):
                del c[k]
    return out


def _try_scores(scores_dir, name, split):
    if scores_dir is None:
        return None
    f = Path(scores_dir) / name / split
    if not is_complete(f):
        return None
    return read_scores(f)


def collect_report_data(models=None, scores=None, fusion=None, features=None, images=None,
                        baseline_models=None):
    """Gather every number of the report from the pipeline's folders.

    Parameters
    ----------
    models, scores, fusion, features, images : str or Path or None
        Roots of the model folders, score folders, the fusion folder, the
        feature-set folders and the image shards; any may be missing.
    baseline_models : str or Path or None
        Root of plain-SGD baseline models (``bowsvm train --no-average
        --models DIR``); their ``NAME/log.jsonl`` rows count as "sgd".

    Returns
    -------
    data : dict
        JSON-able; what ``OUT.json`` holds.
    eval_scores : ScoreSet or None
        The scores used for the per-class analysis (not JSON).

    Raises
    ------
    FileNotFoundError
        If none of the folders holds anything to report.
    """
    feat_m = _complete_dirs(features, "extract")
    model_m = _complete_dirs(models, "train")
    score_names = sorted(
        d.name for d in Path(scores).iterdir() if d.is_dir() and not d.name.startswith(".")
    ) if scores is not None and Path(scores).is_dir() else []
    names = sorted(set(feat_m) | {n for n in model_m if not (n.endswith("-sgd") and n[:-4] in model_m)}
                   | set(score_names))
    fusion_m = None
    if fusion is not None and is_complete(fusion):
        fusion_m = read_fusion_manifest(fusion)
    if not names and fusion_m is None:
        raise FileNotFoundError(
            "nothing to report: no feature sets, models, scores or fusion output found "
            f"(features={features}, models={models}, scores={scores}, fusion={fusion})."
        )

    data = {"generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "feature_sets": [], "accuracy": {}, "fusion": None, "convergence": {},
            "per_class": None, "confusions": [], "examples": []}
    score_sets = {}
    for name in names:
        fm, mm = feat_m.get(name), model_m.get(name)
        row = {"name": name, "preset": None, "dim": None, "layout": None, "sparsity": None,
               "size_bytes": None, "extract_seconds": None, "train_seconds": None,
               "epochs": None, "n_train": None, "classes": None}
        if fm:
            fdir = Path(features) / name
            counts = fm.get("counts") or {}
            row.update(preset=fm.get("preset"), dim=fm.get("dim"), layout=fm.get("layout"),
                       size_bytes=_dir_size(fdir), extract_seconds=_seconds(fm),
                       n_train=counts.get("train") if isinstance(counts.get("train"), int) else None,
                       classes=len(fm.get("classes", [])) or None)
            dens = fm.get("density")
            if isinstance(dens, (int, float)) and not isinstance(dens, bool):
                row["sparsity"] = float(dens)  # recorded by `bowsvm extract`
            else:
                try:
                    row["sparsity"] = _sparsity(fdir, fm)
                except Exception:  # a damaged shard must not kill the whole report
                    row["sparsity"] = None
        if mm:
            row["train_seconds"] = _seconds(mm)
            ep = mm.get("epochs")
            row["epochs"] = ep if isinstance(ep, (int, float)) else None
            row["dim"] = row["dim"] or mm.get("dim")
            row["classes"] = row["classes"] or len(mm.get("classes", [])) or None
            if row["preset"] is None:
                row["preset"] = mm.get("preset")
        data["feature_sets"].append(row)
        acc = {}
        for split in SPLITS:
            s = _try_scores(scores, name, split)
            if s is not None:
                score_sets[(name, split)] = s
                acc[split] = {"top1": top_k_accuracy(s.scores, s.labels, 1),
                              "top5": top_k_accuracy(s.scores, s.labels, 5), "n": int(len(s.labels))}
        if acc:
            data["accuracy"][name] = acc
        # convergence curves: NAME/log.jsonl and NAME-sgd/log.jsonl
        curves = {}
        if models is not None:
            curves.update(_curves(_read_log(Path(models) / name / "log.jsonl"), "asgd"))
            for meth, c in _curves(_read_log(Path(models) / f"{name}-sgd" / "log.jsonl"), "sgd").items():
                curves.setdefault(meth, c)
        if baseline_models is not None:
            for meth, c in _curves(_read_log(Path(baseline_models) / name / "log.jsonl"), "sgd").items():
                curves.setdefault(meth, c)
        if curves:
            data["convergence"][name] = curves

    fused = {}
    if fusion_m is not None:
        fpath = Path(fusion)
        metrics = read_fusion_metrics(fpath)
        data["fusion"] = {"feature_sets": fusion_m["feature_sets"], "weights": fusion_m["weights"],
                          "metrics": {sp: metrics[sp] for sp in SPLITS if sp in metrics}}
        for split in fusion_m.get("splits", []):
            if split in SPLITS:
                fused[split] = read_fused(fpath, split)

    # scores for the per-class analysis
    eval_s, source = None, None
    if "test" in fused:
        eval_s, source = fused["test"], "fused test scores"
    else:
        ranked = sorted(data["accuracy"].items(),
                        key=lambda kv: -kv[1].get("val", {}).get("top1", -1.0))
        for split in ("test", "val"):
            for name, _ in ranked:
                if (name, split) in score_sets:
                    eval_s, source = score_sets[(name, split)], f"{split} scores of {name}"
                    break
            if eval_s is not None:
                break
        if eval_s is None and "val" in fused:
            eval_s, source = fused["val"], "fused val scores"
    if eval_s is not None:
        _per_class(data, eval_s, source)
        if images is not None:
            data["examples"] = _examples(images, eval_s)
    return data, eval_s


def _per_class(data: dict, s, source: str) -> None:
    classes = list(s.classes)
    r5, counts = per_class_hit_rates(s.scores, s.labels, 5)
    r1, _ = per_class_hit_rates(s.scores, s.labels, 1)
    present = np.flatnonzero(counts > 0)
    # easiest first: by top-5 rate, then top-1 rate, then class index
    order = present[np.lexsort((present, -r1[present], -r5[present]))]
    bins = np.linspace(0.0, 1.0, 21)
    hist, _ = np.histogram(r5[present], bins=bins)

    def entry(c):
        return {"class": classes[c], "index": int(c), "top5": float(r5[c]),
                "top1": float(r1[c]), "n": int(counts[c])}

    data["per_class"] = {
        "source": source,
        "n": int(len(s.labels)),
        "top1": top_k_accuracy(s.scores, s.labels, 1),
        "top5": top_k_accuracy(s.scores, s.labels, 5),
        "classes_with_samples": int(present.size),
        "mean_class_top5": float(np.mean(r5[present])) if present.size else None,
        "sorted_top5": [float(r5[c]) for c in order],
        "sorted_top1": [float(r1[c]) for c in order],
        "sorted_classes": [classes[c] for c in order],
        "easiest": [entry(c) for c in order[:N_NAMED]],
        "hardest": [entry(c) for c in order[::-1][:N_NAMED]],
        "histogram": {"bin_edges": bins.tolist(), "counts": hist.astype(int).tolist()},
    }
    data["confusions"] = [
        {**p, "true_class": classes[p["true"]], "predicted_class": classes[p["predicted"]]}
        for p in confusion_pairs(s.scores, s.labels, top=N_NAMED)
    ]


def _examples(images, s) -> list:
    """Most confident mistakes of ``s`` whose images are in the image shards."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    files = image_shard_files(images)
    if not files:
        return []
    pred = top_k_indices(s.scores, 5)
    wrong = np.flatnonzero(pred[:, 0] != s.labels)
    if wrong.size == 0:
        return []
    margin = s.scores[wrong, pred[wrong, 0]] - s.scores[wrong, s.labels[wrong]]
    pick = wrong[np.lexsort((wrong, -margin))][:4 * N_EXAMPLES]
    want = {str(s.ids[i]): int(i) for i in pick}
    try:
        t = ds.dataset([str(f) for f in files], format="parquet").to_table(
            columns=["id", "image"], filter=pc.field("id").isin(list(want)))
    except Exception:  # unreadable image shards: the report goes on without examples
        return []
    found = dict(zip(t.column("id").to_pylist(), t.column("image").to_pylist()))
    out = []
    for i in pick:
        sid = str(s.ids[i])
        img = found.get(sid)
        if img is None:
            continue
        mime = "image/png" if img[:8] == b"\x89PNG\r\n\x1a\n" else (
            "image/jpeg" if img[:2] == b"\xff\xd8" else None)
        if mime is None:
            continue
        out.append({
            "id": sid, "true_class": s.classes[int(s.labels[i])],
            "predicted_class": s.classes[int(pred[i, 0])],
            "top5": [s.classes[int(c)] for c in pred[i]],
            "true_in_top5": bool(s.labels[i] in pred[i]),
            "margin": float(s.scores[i, pred[i, 0]] - s.scores[i, s.labels[i]]),
            "_data_uri": f"data:{mime};base64," + base64.b64encode(img).decode("ascii"),
        })
        if len(out) >= N_EXAMPLES:
            break
    return out


def public_data(data: dict) -> dict:
    """The JSON copy of :func:`collect_report_data`'s dict (``OUT.json``).

    Private keys (``_data_uri``: inline image data) are dropped.
    """
    d = dict(data)
    d["examples"] = [{k: v for k, v in x.items() if not k.startswith("_")}
                     for x in data["examples"]]
    return d
