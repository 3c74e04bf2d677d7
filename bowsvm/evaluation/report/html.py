"""The report page: :func:`render_html` turns the collected numbers and figure URIs into
ONE self-contained HTML document (inline CSS, images as ``data:`` URIs, no external URL,
no script), plus the formatting and table helpers it uses.
"""

from __future__ import annotations

import html

import numpy as np

from bowsvm.evaluation.report.collect import SPLITS

__all__ = ["fmt_pct", "render_html"]


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
                     "over a sample of rows. Times: the wall time of each stage (seconds "
                     "in its manifest).</p>")
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
