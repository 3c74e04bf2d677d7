"""The evaluation report: ONE self-contained HTML file plus a JSON of every number in it.

``build_report(out_html, ...)`` gathers what the pipeline left on disk (feature,
model, score and fusion folders, optionally image shards), computes the
metrics, draws the plots with matplotlib's Agg backend, and writes

* ``OUT.html``: inline CSS, plots and example images as ``data:`` URIs (base64
  PNG/JPEG). No external URL of any kind, so it opens offline and makes no request.
* ``OUT.json``: every number shown in the page (raw fractions; the page shows
  percentages with two decimals, see :func:`fmt_pct`).

Conventions (documented choices)
--------------------------------
* Feature sets are the folders of ``--features`` (stage "extract"), ``--models``
  (stage "train") and ``--scores``; a model folder named ``NAME-sgd`` is the plain
  SGD baseline of ``NAME`` and is not a feature set of its own.
* Convergence (paper Fig. 3): rows of ``models/NAME/log.jsonl``. A row may carry
  ``"method": "asgd"`` or ``"sgd"`` (``bowsvm train`` writes it; ``--no-average``
  gives "sgd"); rows without it count as "asgd" in ``NAME`` and as "sgd" in
  ``NAME-sgd`` or in ``BASELINE/NAME`` (``--baseline-models BASELINE``, e.g. a
  root written by ``bowsvm train --no-average --models BASELINE``). Each curve plots, per epoch, whichever of
  ``objective``, ``top1``, ``top5`` (and ``val_top1``, ``val_top5``) the rows have.
* Per-class analysis (Figs. 4-5, confusions, examples) uses the fused test scores
  when a fusion folder with test scores exists, else the test scores of the set
  with the best val top-1 (test of any set, else val). ``per_class.source`` says which.
* Extraction/training times are read from manifests, trying ``seconds``,
  ``*_seconds`` and ``timings`` (its ``total``, else the sum of its numbers);
  missing fields show as "-" and are ``null`` in the JSON.
* Sparsity = mean fraction of non-zero entries: the feature manifest's
  ``density`` when recorded (``bowsvm extract`` does), else measured over up to
  512 rows of the first shard found (train, else val, else test).
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path

import numpy as np

from bowsvm.evaluation.fusion import read_fused
from bowsvm.evaluation.metrics import (
    confusion_pairs,
    per_class_hit_rates,
    top_k_accuracy,
    top_k_indices,
)
from bowsvm.io.scores import read_scores
from bowsvm.io import is_complete, read_manifest, write_json_atomic
from bowsvm.io.atomic import check_file_target

__all__ = ["build_report", "collect_report_data", "fmt_pct", "image_shard_files", "render_html",
           "report_figures"]

SPLITS = ("val", "test")
N_EXAMPLES = 8
N_NAMED = 10


def fmt_pct(x) -> str:
    """How the page shows an accuracy in [0, 1]: ``'52.90%'``; ``'-'`` if missing."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{100.0 * float(x):.2f}%"


def _fmt_num(x, nd=0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{nd}f}"


def _fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return "-"


def _fmt_seconds(s) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


# ---------------------------------------------------------------- collection


def _seconds(m: dict | None, prefixes=()):
    """Best-effort duration (seconds) from a manifest; None if absent."""
    if not m:
        return None
    for k in [f"{p}_seconds" for p in prefixes] + ["seconds", "elapsed_seconds", "wall_seconds"]:
        v = m.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    t = m.get("timings")
    if isinstance(t, dict):
        for k in ["total", "total_seconds", *prefixes, *[f"{p}_seconds" for p in prefixes]]:
            v = t.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
        nums = [v for v in t.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums:
            return float(sum(nums))
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        return float(t)
    return None


def _dir_size(folder: Path) -> int:
    return int(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))


def _sparsity(folder: Path, m: dict):
    """Mean fraction of non-zeros over a sample of rows, or None."""
    from bowsvm.io.features import iter_shard_batches, shard_files

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
        fusion_m = read_manifest(fusion, stage="fuse")
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
                       size_bytes=_dir_size(fdir), extract_seconds=_seconds(fm, ("extract",)),
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
            row["train_seconds"] = _seconds(mm, ("train", "training"))
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
        metrics = json.loads((fpath / "metrics.json").read_text())
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


def image_shard_files(images) -> list:
    """Parquet image shards of a ``bowsvm prepare`` folder.

    ``bowsvm prepare`` writes them to ``images/shards/part-*.parquet``;
    ``images/part-*.parquet`` (docs/FORMATS.md) is accepted too.
    """
    root = Path(images)
    return sorted(root.glob("part-*.parquet")) + sorted((root / "shards").glob("part-*.parquet"))


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


# ---------------------------------------------------------------- figures


def _fig_to_uri(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def report_figures(data: dict) -> dict:
    """The report's plots as ``data:image/png;base64`` URIs.

    Keys "accuracy", "convergence", "histogram" (Fig. 4) and "sorted" (Fig. 5);
    a plot whose data is missing is left out. ``data`` is the first value
    returned by :func:`collect_report_data`.
    """
    from matplotlib.figure import Figure

    figs = {}
    # accuracy bars
    names = list(data["accuracy"])
    split = "test" if any("test" in v for v in data["accuracy"].values()) else "val"
    bars = [(n, data["accuracy"][n].get(split)) for n in names]
    bars = [(n, v) for n, v in bars if v]
    fz = (data.get("fusion") or {}).get("metrics", {}).get(split, {}).get("fused")
    if fz:
        bars.append(("fused", fz))
    if bars:
        fig = Figure(figsize=(max(5, 1.2 * len(bars) + 2), 3.6))
        ax = fig.add_subplot()
        x = np.arange(len(bars))
        t1 = [100 * v["top1"] for _, v in bars]
        t5 = [100 * v["top5"] for _, v in bars]
        ax.bar(x - 0.2, t1, 0.4, label="top-1", color="#3b6ea8")
        ax.bar(x + 0.2, t5, 0.4, label="top-5", color="#e0903a")
        ax.set_xticks(x, [n for n, _ in bars], rotation=20, ha="right")
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(loc="upper left")
        ax.grid(axis="y", alpha=0.3)
        figs["accuracy"] = _fig_to_uri(fig)
    # convergence (Fig. 3)
    conv = data["convergence"]
    if conv:
        keys = [k for k in ("objective", "top1", "top5", "val_top1", "val_top5")
                if any(k in c for cs in conv.values() for c in cs.values())]
        if keys:
            fig = Figure(figsize=(4.2 * len(keys), 3.4))
            for j, k in enumerate(keys):
                ax = fig.add_subplot(1, len(keys), j + 1)
                for si, (name, cs) in enumerate(conv.items()):
                    for meth, c in sorted(cs.items()):
                        if k not in c:
                            continue
                        ys = np.array([np.nan if v is None else v for v in c[k]], dtype=float)
                        if k != "objective":
                            ys = 100 * ys
                        ax.plot(c["epoch"], ys, marker="o", ms=3,
                                ls="-" if meth == "asgd" else "--", color=f"C{si % 10}",
                                label=f"{name} {meth.upper()}")
                ax.set_xlabel("epoch")
                ax.set_ylabel(k if k == "objective" else f"{k} (%)")
                ax.grid(alpha=0.3)
                ax.set_title({"objective": "objective", "top1": "top-1", "top5": "top-5",
                              "val_top1": "val top-1", "val_top5": "val top-5"}[k])
            fig.axes[0].legend(fontsize=7)
            figs["convergence"] = _fig_to_uri(fig)
    pc = data.get("per_class")
    if pc:
        fig = Figure(figsize=(5.5, 3.4))
        ax = fig.add_subplot()
        e = np.array(pc["histogram"]["bin_edges"]) * 100
        ax.bar(e[:-1], pc["histogram"]["counts"], width=np.diff(e), align="edge",
               color="#3b6ea8", edgecolor="white")
        ax.set_xlabel("per-class top-5 hit rate (%)")
        ax.set_ylabel("number of classes")
        ax.set_title("Histogram of per-class top-5 hit rates")
        figs["histogram"] = _fig_to_uri(fig)
        r = 100 * np.array(pc["sorted_top5"])
        n = len(r)
        fig = Figure(figsize=(9, 3.8 if n <= 40 else 3.4))
        ax = fig.add_subplot()
        x = np.arange(n)
        if n <= 40:
            cols = ["#1a7f37" if j < 3 else "#b42318" if j >= n - 3 else "#3b6ea8" for j in x]
            ax.bar(x, r, color=cols, label="top-5")
            ax.plot(x, 100 * np.array(pc["sorted_top1"]), "o", color="black", ms=4, label="top-1")
            ax.set_xticks(x, pc["sorted_classes"], rotation=60, ha="right", fontsize=8)
            ax.legend(loc="lower left", fontsize=8)
        else:
            ax.plot(x, r, color="#3b6ea8")
            ax.fill_between(x, r, alpha=0.2, color="#3b6ea8", label="top-5")
            ax.plot(x, 100 * np.array(pc["sorted_top1"]), ".", color="black", ms=2, alpha=0.5,
                    label="top-1")
            ax.legend(loc="lower right", fontsize=8)
            ax.set_xlabel("classes sorted by top-5 hit rate")
            easy = ", ".join(pc["sorted_classes"][:3])
            hard = ", ".join(pc["sorted_classes"][::-1][:3])
            ax.text(0.02, 0.05, f"easiest: {easy}\nhardest: {hard}", transform=ax.transAxes,
                    fontsize=8, va="bottom", bbox={"facecolor": "white", "alpha": 0.8})
        ax.set_ylabel("hit rate (%)")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
        ax.set_title("Per-class hit rates, easiest to hardest (sorted by top-5, then top-1)")
        figs["sorted"] = _fig_to_uri(fig)
    return figs


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1100px;color:#222;background:#fff;line-height:1.4}
h1{font-size:1.7em;margin-bottom:0}h2{border-bottom:2px solid #3b6ea8;padding-bottom:4px;
margin-top:32px}.sub{color:#666}table{border-collapse:collapse;margin:10px 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 9px;text-align:right}th{background:#eef3f9}
td.l,th.l{text-align:left}tr.fused td{font-weight:bold;background:#fff6e5}
.kpi{display:inline-block;border:1px solid #ccc;border-radius:6px;padding:10px 18px;
margin:6px 10px 6px 0;background:#f7f9fc}.kpi b{font-size:1.6em;display:block}
img.plot{max-width:100%;border:1px solid #eee}.ex{display:inline-block;width:170px;
margin:6px;vertical-align:top;font-size:0.8em;text-align:center}
.ex img{width:150px;height:150px;object-fit:contain;image-rendering:pixelated;
border:1px solid #ccc;background:#f4f4f4}.note{color:#666;font-size:0.88em}
.two{display:flex;gap:24px;flex-wrap:wrap}
"""


def _table(header, rows, left=(0,), row_classes=None) -> str:
    h = "".join(f'<th class="{"l" if i in left else ""}">{html.escape(str(c))}</th>'
                for i, c in enumerate(header))
    body = []
    for j, r in enumerate(rows):
        cls = f' class="{row_classes[j]}"' if row_classes and row_classes[j] else ""
        body.append(f"<tr{cls}>" + "".join(
            f'<td class="{"l" if i in left else ""}">{html.escape(str(c))}</td>'
            for i, c in enumerate(r)) + "</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def render_html(data: dict, figures: dict) -> str:
    """Render the report page from :func:`collect_report_data`'s dict and figure URIs."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>bowsvm evaluation report</title><style>{_CSS}</style></head><body>",
             "<h1>bowsvm evaluation report</h1>",
             f"<p class='sub'>Dense HOG/LBP &rarr; LCC / super-vector coding &rarr; ASGD "
             f"one-vs-all SVMs &rarr; score fusion (after Lin et al., CVPR 2011). "
             f"Generated {e(data['generated'])}.</p>"]
    fus = data.get("fusion")
    kpis = []
    if fus:
        for split in SPLITS:
            f = fus["metrics"].get(split, {}).get("fused")
            if f:
                kpis.append((f"fused {split} top-1", fmt_pct(f["top1"])))
                kpis.append((f"fused {split} top-5", fmt_pct(f["top5"])))
    if kpis:
        parts.append("<div>" + "".join(f"<div class='kpi'><b>{e(v)}</b>{e(k)}</div>"
                                       for k, v in kpis) + "</div>")

    parts.append("<h2>Feature sets</h2>")
    if data["feature_sets"]:
        rows = [[r["name"], r["preset"] or "-", _fmt_num(r["dim"]), r["layout"] or "-",
                 fmt_pct(r["sparsity"]) if r["sparsity"] is not None else "-",
                 _fmt_bytes(r["size_bytes"]), _fmt_seconds(r["extract_seconds"]),
                 _fmt_seconds(r["train_seconds"]),
                 _fmt_num(r["epochs"], 0 if float(r["epochs"] or 0).is_integer() else 2)
                 if r["epochs"] is not None else "-"]
                for r in data["feature_sets"]]
        parts.append(_table(["feature set", "preset", "dims", "layout", "non-zeros",
                             "size on disk", "extraction time", "training time", "epochs"],
                            rows, left=(0, 1, 3)))
        parts.append("<p class='note'>non-zeros: mean fraction of non-zero feature entries "
                     "over a sample of rows. Times as recorded in the stage manifests.</p>")
    else:
        parts.append("<p>No feature sets found.</p>")

    parts.append("<h2>Accuracy</h2>")
    acc = data["accuracy"]
    if acc or fus:
        rows, rcls = [], []
        for name in acc:
            a = acc[name]
            rows.append([name] + [fmt_pct(a.get(sp, {}).get(k)) for sp in SPLITS
                                  for k in ("top1", "top5")]
                        + [f"{fus['weights'][name]:.3f}" if fus and name in fus["weights"] else "-"])
            rcls.append("")
        if fus:
            rows.append(["fused (" + ", ".join(fus["feature_sets"]) + ")"]
                        + [fmt_pct(fus["metrics"].get(sp, {}).get("fused", {}).get(k))
                           for sp in SPLITS for k in ("top1", "top5")] + ["1.000"])
            rcls.append("fused")
        parts.append(_table(["feature set", "val top-1", "val top-5", "test top-1",
                             "test top-5", "fusion weight"], rows, row_classes=rcls))
        parts.append("<p class='note'>Fusion: each set's scores z-scored with its val "
                     "mean/std; non-negative weights summing to 1 chosen on val only "
                     "(coordinate search on val top-1, log-loss tie-break), then applied "
                     "to test.</p>")
        if "accuracy" in figures:
            parts.append(f"<img class='plot' alt='accuracy per feature set' src='{figures['accuracy']}'>")
    else:
        parts.append("<p>No scores found.</p>")

    parts.append("<h2>ASGD vs SGD convergence (paper Fig. 3)</h2>")
    if "convergence" in figures:
        parts.append("<p class='note'>Per epoch, as logged by <code>bowsvm train</code> "
                     "(log.jsonl; it evaluates on the val split after each epoch). Solid: "
                     "ASGD, dashed: plain SGD.</p>")
        parts.append(f"<img class='plot' alt='convergence per epoch' src='{figures['convergence']}'>")
        rows = []
        for name, cs in data["convergence"].items():
            for meth, c in sorted(cs.items()):
                last = {k: c[k][-1] for k in c if k != "epoch" and c[k]}
                rows.append([name, meth.upper(), _fmt_num(c["epoch"][-1], 0) if c["epoch"] else "-",
                             f"{last['objective']:.4f}" if last.get("objective") is not None else "-",
                             fmt_pct(last.get("top1")), fmt_pct(last.get("top5"))])
        parts.append(_table(["feature set", "method", "last epoch", "objective", "top-1",
                             "top-5"], rows, left=(0, 1)))
        if not any(len(cs) > 1 for cs in data["convergence"].values()):
            parts.append("<p class='note'>Only one method was logged; train a plain-SGD "
                         "baseline (bowsvm train --no-average --models BASELINE, then "
                         "report --baseline-models BASELINE) to compare.</p>")
    else:
        parts.append("<p>No training logs (models/NAME/log.jsonl) found.</p>")

    pc = data.get("per_class")
    parts.append("<h2>Per-class hit rates (paper Figs. 4 and 5)</h2>")
    if pc:
        parts.append(f"<p>From the {e(pc['source'])} ({_fmt_num(pc['n'])} images, "
                     f"{pc['classes_with_samples']} classes): top-1 {fmt_pct(pc['top1'])}, "
                     f"top-5 {fmt_pct(pc['top5'])}, mean per-class top-5 "
                     f"{fmt_pct(pc['mean_class_top5'])}.</p>")
        parts.append("<div class='two'>")
        if "histogram" in figures:
            parts.append(f"<img class='plot' alt='histogram of per-class top-5 hit rates' "
                         f"src='{figures['histogram']}'>")
        parts.append("</div>")
        if "sorted" in figures:
            parts.append(f"<img class='plot' alt='sorted per-class hit rates' src='{figures['sorted']}'>")
        parts.append("<div class='two'><div><h3>Easiest classes</h3>")
        parts.append(_table(["class", "top-5", "top-1", "images"],
                            [[r["class"], fmt_pct(r["top5"]), fmt_pct(r["top1"]), r["n"]]
                             for r in pc["easiest"]]))
        parts.append("</div><div><h3>Hardest classes</h3>")
        parts.append(_table(["class", "top-5", "top-1", "images"],
                            [[r["class"], fmt_pct(r["top5"]), fmt_pct(r["top1"]), r["n"]]
                             for r in pc["hardest"]]))
        parts.append("</div></div>")
        parts.append("<h2>Most confused class pairs</h2>")
        if data["confusions"]:
            parts.append(_table(["true class", "predicted as", "images", "share of true class"],
                                [[c["true_class"], c["predicted_class"], c["count"],
                                  fmt_pct(c["rate"])] for c in data["confusions"]],
                                left=(0, 1)))
        else:
            parts.append("<p>No top-1 mistakes.</p>")
    else:
        parts.append("<p>No scores to analyse.</p>")

    if data["examples"]:
        parts.append("<h2>Misclassified examples</h2><p class='note'>The most confident "
                     "top-1 mistakes (largest score margin of the predicted over the true "
                     "class).</p><div>")
        for x in data["examples"]:
            parts.append(f"<div class='ex'><img alt='{e(x['id'])}' src='{x['_data_uri']}'><br>"
                         f"<b>{e(x['predicted_class'])}</b><br>true: {e(x['true_class'])}"
                         f"{' (in top-5)' if x['true_in_top5'] else ''}<br>"
                         f"<span class='note'>{e(x['id'])}</span></div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _public(data: dict) -> dict:
    """The JSON copy: drop private keys (inline image data)."""
    d = dict(data)
    d["examples"] = [{k: v for k, v in x.items() if not k.startswith("_")} for x in data["examples"]]
    return d


def build_report(out_html, models=None, scores=None, fusion=None, features=None,
                 images=None, baseline_models=None) -> tuple[Path, Path]:
    """Write ``out_html`` and its JSON twin (same stem, ``.json``).

    Parameters
    ----------
    out_html : str or Path
        Output HTML path; the JSON goes to ``out_html`` with suffix ``.json``.
    models, scores, fusion, features, images, baseline_models : str or Path or None
        See :func:`collect_report_data`.

    Returns
    -------
    (Path, Path)
        The HTML and JSON paths.

    Raises
    ------
    FileNotFoundError
        If there is nothing to report.
    FileExistsError
        If ``out_html`` or its JSON twin exists and is not a regular file.
    ValueError
        If ``out_html`` ends in ``.json``, or it or its JSON twin is, contains or
        lies inside one of the input folders.
    """
    out_html = Path(out_html)
    if out_html.suffix.lower() == ".json":
        raise ValueError(f"report output {str(out_html)!r} ends in .json; pass an .html path "
                         f"(the JSON is written beside it).")
    out_json = out_html.with_suffix(".json")
    inputs = [models, scores, fusion, features, images, baseline_models]
    for p in (out_html, out_json):  # refuse before reading anything
        check_file_target(p, inputs, "report output")
    data, _ = collect_report_data(models, scores, fusion, features, images, baseline_models)
    figures = report_figures(data)
    page = render_html(data, figures)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_html.with_name(f".{out_html.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out_html)
    write_json_atomic(out_json, _public(data))
    return out_html, out_json
