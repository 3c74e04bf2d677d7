"""``bowsvm score``: decision scores of a trained model on a split of a feature set."""

from __future__ import annotations

NAME = "score"
ORDER = 60
HELP = "decision scores (X @ coef.T + b) of a feature set's model on val or test"
DESCRIPTION = (
    "Stream the feature shards of one split through the feature set's trained model and "
    "write scores/NAME/SPLIT/{scores.parquet,manifest.json} (id, label, scores float32[C]). "
    "Refuses a model whose dim, class list or preset hash differs from the features'."
)


def add_arguments(p):
    p.add_argument("--feature-set", required=True, help="feature-set name (folder under --features and --models)")
    p.add_argument("--split", required=True, help="split to score, e.g. val or test")
    p.add_argument("--features", default="features", help="root of the feature-set folders")
    p.add_argument("--models", default="models", help="root of the model folders")
    p.add_argument("--scores", default="scores", help="root of the score folders to write")
    p.add_argument("--batch-rows", type=int, default=4096, help="rows per streamed batch")
    p.add_argument("--overwrite", action="store_true", help="replace existing scores")


def run(args) -> int:
    from bowsvm.evaluation.scoring import score_feature_set
    from bowsvm.io import read_manifest

    out = score_feature_set(args.features, args.models, args.scores, args.feature_set,
                            args.split, batch_rows=args.batch_rows, overwrite=args.overwrite)
    m = read_manifest(out, stage="score")
    print(f"wrote {m['n']} x {len(m['classes'])} scores to {out} ({m['seconds']:.2f} s)")
    return 0
