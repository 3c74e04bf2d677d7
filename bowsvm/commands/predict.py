"""``bowsvm predict``: classify image files end to end with the trained feature sets."""

from __future__ import annotations

from bowsvm.io.images import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS

NAME = "predict"
ORDER = 90
HELP = "classify image files or folders (top-5 classes with scores)"
DESCRIPTION = (
    "Decode each image, extract every feature set exactly as in training (preset max_side, "
    "dense descriptors, coding, pyramid pooling), score with each model, fuse with the "
    "fusion folder's weights, and print (or write as .csv/.json with --out) the top-k "
    "classes. Unreadable, non-regular, over-size or undecodable files and decompression "
    "bombs are reported per file (the others are still classified); exit status 1 if any "
    "failed."
)


def add_arguments(p):
    p.add_argument("inputs", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--feature-sets", default=None,
                   help="comma-separated sets (default: those of --fusion, or the only model)")
    p.add_argument("--features", default="features", help="root of the feature-set folders (manifests)")
    p.add_argument("--models", default="models", help="root of the model folders")
    p.add_argument("--fusion", default="fusion", help="fusion folder written by `bowsvm fuse`")
    p.add_argument("--codebooks", default="codebooks", help="root of the codebook folders")
    p.add_argument("--top", type=int, default=5, help="classes to report per image")
    p.add_argument("--out", default=None, help="write results to FILE.csv or FILE.json")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images with more pixels than this (decompression bombs)")
    p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES,
                   help="refuse files larger than this many bytes without reading them")


def write_results(results, out) -> None:
    """Write predictions as CSV (one row per file and rank) or JSON."""
    import csv
    import json
    from pathlib import Path

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"--out {str(out)!r} must end in .csv or .json.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if suffix == ".json":
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    else:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "rank", "class", "index", "score", "error"])
            for r in results:
                if r["error"]:
                    w.writerow([r["file"], "", "", "", "", r["error"]])
                for t in r["top"]:
                    w.writerow([r["file"], t["rank"], t["class"], t["index"], f"{t['score']:.6g}", ""])
    tmp.replace(out)


def run(args) -> int:
    import sys

    from bowsvm._validation import check_int
    from bowsvm.evaluation.predict import Predictor, list_image_files

    k = check_int("--top", args.top, low=1)
    max_pixels = check_int("--max-pixels", args.max_pixels, low=64)
    max_file_bytes = check_int("--max-file-bytes", args.max_file_bytes, low=1)
    if args.out and not args.out.lower().endswith((".csv", ".json")):
        raise ValueError(f"--out {args.out!r} must end in .csv or .json.")
    if args.out:  # never over or into an input, before any work
        from bowsvm.io.atomic import check_file_target

        check_file_target(args.out, [*args.inputs, args.features, args.models, args.fusion,
                                     args.codebooks], "--out")
    sets = None
    if args.feature_sets:
        sets = [s.strip() for s in args.feature_sets.split(",") if s.strip()]
    files = list_image_files(args.inputs)
    pred = Predictor.from_folders(sets, features=args.features, models=args.models,
                                  fusion=args.fusion, codebooks=args.codebooks)
    pred.max_pixels, pred.max_file_bytes = max_pixels, max_file_bytes
    results = []
    for r in pred.iter_predictions(files, k=k):  # printed batch by batch, as they are done
        results.append(r)
        if r["error"]:
            print(f"{r['file']}: ERROR {r['error']}", file=sys.stderr)
        else:
            tops = ", ".join(f"{t['class']} ({t['score']:.3f})" for t in r["top"])
            print(f"{r['file']}: {tops}", flush=True)
    if args.out:
        write_results(results, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    n_bad = sum(1 for r in results if r["error"])
    if n_bad:
        print(f"{n_bad} of {len(results)} file(s) could not be classified", file=sys.stderr)
    return 1 if n_bad else 0
