"""Stage "report": every stage's outputs -> one self-contained HTML file plus its JSON.

``bowsvm report OUT.html`` checks both output paths (``OUT.html`` and ``OUT.json``
beside it) before reading anything, gathers the numbers
(:func:`bowsvm.evaluation.report.collect_report_data`), draws the figures
(:func:`~bowsvm.evaluation.report.report_figures`), renders the page
(:func:`~bowsvm.evaluation.report.render_html`) and writes both files, each through
:func:`bowsvm.io.atomic.atomic_file` (docs/FORMATS.md, "Report").
"""

from __future__ import annotations

from pathlib import Path

from bowsvm.io.atomic import atomic_file, check_file_target
from bowsvm.io.manifest import write_json_atomic

__all__ = ["build_report", "output_paths"]

NAME = "report"
ORDER = 80
HELP = "write a self-contained HTML evaluation report (and OUT.json of its numbers)"
DESCRIPTION = (
    "Gather feature, model, score and fusion folders into ONE offline HTML file (inline "
    "CSS, plots as base64 PNG, no external URLs): feature-set table, top-1/top-5 per set "
    "and fused, ASGD vs SGD convergence (Fig. 3), per-class hit-rate histogram (Fig. 4) "
    "and sorted rates (Fig. 5), confused pairs, misclassified examples (with --images). "
    "Every number also goes to OUT.json beside the HTML."
)


def add_arguments(p):
    p.add_argument("out", metavar="OUT.html", help="output HTML path (JSON written beside it)")
    p.add_argument("--models", default="models", help="root of the model folders")
    p.add_argument("--scores", default="scores", help="root of the score folders")
    p.add_argument("--fusion", default="fusion", help="fusion folder written by `bowsvm fuse`")
    p.add_argument("--features", default="features", help="root of the feature-set folders")
    p.add_argument("--baseline-models", default=None,
                   help="root of plain-SGD models (train --no-average) for the ASGD vs SGD plot")
    p.add_argument("--images", default=None,
                   help="folder written by `bowsvm prepare` (image shards) for misclassified examples")


def output_paths(out_html, inputs=()) -> tuple[Path, Path]:
    """The HTML path and its JSON twin, checked before anything is read.

    Parameters
    ----------
    out_html : str or Path
        The HTML path; the JSON goes beside it with suffix ``.json``.
    inputs : iterable of str or Path or None
        The folders the report reads (neither output may overlap them).

    Returns
    -------
    (Path, Path)

    Raises
    ------
    ValueError
        If ``out_html`` ends in ``.json``, or it or its JSON twin is, contains or
        lies inside one of the inputs.
    FileExistsError
        If either exists and is not a regular file.
    """
    out_html = Path(out_html)
    if out_html.suffix.lower() == ".json":
        raise ValueError(f"report output {str(out_html)!r} ends in .json; pass an .html path "
                         f"(the JSON is written beside it).")
    out_json = out_html.with_suffix(".json")
    inputs = [i for i in inputs if i is not None]
    for p in (out_html, out_json):
        check_file_target(p, inputs, "report output")
    return out_html, out_json


def _inputs(args) -> list:
    return [args.models, args.scores, args.fusion, args.features, args.images,
            args.baseline_models]


def check_arguments(args) -> None:
    """Refuse the output paths before anything is read (:func:`output_paths`).

    Raises
    ------
    ValueError, FileExistsError
        See :func:`output_paths`.
    """
    output_paths(args.out, _inputs(args))


def build_report(out_html, models=None, scores=None, fusion=None, features=None,
                 images=None, baseline_models=None) -> tuple[Path, Path]:
    """Write ``out_html`` and its JSON twin (same stem, ``.json``).

    Parameters
    ----------
    out_html : str or Path
        Output HTML path; the JSON goes to ``out_html`` with suffix ``.json``.
    models, scores, fusion, features, images, baseline_models : str or Path or None
        See :func:`bowsvm.evaluation.report.collect_report_data`.

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
    out_html, out_json = output_paths(  # refuse before reading anything
        out_html, [models, scores, fusion, features, images, baseline_models])
    # scipy, pyarrow and matplotlib: loaded when a report is made, not at CLI start-up
    from bowsvm.evaluation.report import (
        collect_report_data, public_data, render_html, report_figures,
    )

    data, _ = collect_report_data(models, scores, fusion, features, images, baseline_models)
    page = render_html(data, report_figures(data))
    out_html.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_html, "wb") as f:
        f.write(page.encode("utf-8"))
    write_json_atomic(out_json, public_data(data))
    return out_html, out_json


def run(args) -> int:
    """``bowsvm report``: write the report and say where."""
    check_arguments(args)
    h, j = build_report(args.out, models=args.models, scores=args.scores, fusion=args.fusion,
                        features=args.features, images=args.images,
                        baseline_models=args.baseline_models)
    print(f"wrote {h} and {j}")
    return 0
