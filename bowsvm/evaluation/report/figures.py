"""The report's figures, drawn with matplotlib's Agg backend as inline PNG ``data:`` URIs.

Accuracy per feature set, ASGD vs SGD convergence (paper Fig. 3), the histogram of
per-class top-5 hit rates (Fig. 4) and the sorted per-class rates (Fig. 5), all from
the dict of :func:`bowsvm.evaluation.report.collect.collect_report_data`. matplotlib is
imported inside the functions (start-up time of the CLI).
"""

from __future__ import annotations

import base64
import io

import numpy as np

__all__ = ["report_figures"]


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
                                ls="-" if meth in ("asgd", "dcd") else "--", color=f"C{si % 10}",
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
