"""``bowsvm report``: one self-contained HTML evaluation report plus its JSON."""

from __future__ import annotations

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


def run(args) -> int:
    from bowsvm.evaluation.report import build_report

    h, j = build_report(args.out, models=args.models, scores=args.scores, fusion=args.fusion,
                        features=args.features, images=args.images,
                        baseline_models=args.baseline_models)
    print(f"wrote {h} and {j}")
    return 0
