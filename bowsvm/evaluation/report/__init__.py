"""The evaluation report: ONE self-contained HTML file plus a JSON of every number in it.

Three parts, each a module:

* :mod:`~bowsvm.evaluation.report.collect`: :func:`collect_report_data` reads what the
  pipeline left on disk (feature, model, score and fusion folders, optionally image
  shards) and computes every number: the content of ``OUT.json``.
* :mod:`~bowsvm.evaluation.report.figures`: :func:`report_figures` draws the plots
  (matplotlib, Agg backend) as base64 PNG ``data:`` URIs.
* :mod:`~bowsvm.evaluation.report.html`: :func:`render_html` renders the page: inline
  CSS, plots and example images as ``data:`` URIs, no external URL of any kind, so it
  opens offline and makes no request. Accuracies are shown as percentages with two
  decimals (:func:`fmt_pct`); the JSON holds the raw fractions.

The stage that checks the output paths and writes both files is
:mod:`bowsvm.stages.report` (``bowsvm report``).
"""

from bowsvm.evaluation.report.collect import collect_report_data, public_data
from bowsvm.evaluation.report.figures import report_figures
from bowsvm.evaluation.report.html import fmt_pct, render_html

__all__ = ["collect_report_data", "fmt_pct", "public_data", "render_html", "report_figures"]
