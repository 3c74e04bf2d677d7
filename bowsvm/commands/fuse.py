"""``bowsvm fuse``: learn score-fusion weights on val, apply them to test."""

from __future__ import annotations

NAME = "fuse"
ORDER = 70
HELP = "fuse the scores of several feature sets (weights learned on val only)"
DESCRIPTION = (
    "Z-score each feature set's scores with its val mean/std, learn non-negative weights "
    "summing to 1 by coordinate search maximising val top-1 (log-loss tie-break), apply "
    "them to test, and write OUT/{weights.json,metrics.json,val.parquet,test.parquet}."
)


def add_arguments(p):
    p.add_argument("--scores", default="scores", help="root of the score folders (NAME/SPLIT)")
    p.add_argument("--feature-sets", required=True, help="comma-separated feature-set names")
    p.add_argument("--out", default="fusion", help="output folder")
    p.add_argument("--grid", type=int, default=20, help="weight grid steps per coordinate")
    p.add_argument("--max-rounds", type=int, default=10, help="coordinate-search rounds at most")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run(args) -> int:
    from bowsvm.evaluation.fusion import fuse_feature_sets

    names = [s.strip() for s in args.feature_sets.split(",") if s.strip()]
    m = fuse_feature_sets(args.scores, names, args.out, grid=args.grid,
                          max_rounds=args.max_rounds, overwrite=args.overwrite)
    print("weights: " + ", ".join(f"{s}={w:.3f}" for s, w in m["weights"].items()))
    for split in ("val", "test"):
        if split not in m:
            continue
        r = m[split]
        for s, v in r["sets"].items():
            print(f"{split:5s} {s:24s} top-1 {100 * v['top1']:6.2f}%  top-5 {100 * v['top5']:6.2f}%")
        f = r["fused"]
        print(f"{split:5s} {'FUSED':24s} top-1 {100 * f['top1']:6.2f}%  top-5 {100 * f['top5']:6.2f}%")
    print(f"wrote {args.out}")
    return 0
