"""Val-only study on a small many-class tree: how hard the tree is, which preset codes it best.

Generates ``--classes`` classes of the many-class benchmark (``benchmarks/manyclass.py``,
same drawing options, JPEG as the real tree) into a temporary folder, learns each
preset's codebook in-process on the train images (``FeatureSetExtractor``, 50,000
descriptors), codes train and val, trains ``ASGDClassifier`` (each ``--reg``,
``--epochs`` epochs, the estimator's eta0 0.1) and prints val top-1. The test split is never made.

    python benchmarks/study_manyclass.py --classes 100 \\
        --presets benchmarks/presets/manyclass-sv-hoglbp.toml,benchmarks/presets/manyclass-fv-hoglbp.toml
    python benchmarks/study_manyclass.py --classes 100 --hard \\
        --presets benchmarks/presets/manyclass-sv-hoglbp.toml

``--variants`` studies changes to each preset: ``;``-separated variants, each ``base``
or ``,``-separated ``section.key=JSON`` changes (the output dim follows)::

    python benchmarks/study_manyclass.py --classes 100 \
        --presets benchmarks/presets/manyclass-fv-hoglbp.toml \
        --variants 'base;codebook.n_bases=128;codebook.n_bases=256,pooling.grids=[[1,1],[3,1]]'

Drawing options (``--jitter``, ``--max-rotation``, ``--text-size``, ``--calm``,
``--blur``, ``--hard``) are manyclass.py's. One JSON line per (preset, variant, reg) on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manyclass  # noqa: E402
from study_fmnist_variants import variant  # noqa: E402


def parse_variants(text: str) -> dict:
    """``"base;a.b=1,c.d=[2]"`` -> ``{"base": {}, "a.b=1,c.d=[2]": {"a.b": 1, "c.d": [2]}}``."""
    out = {}
    for item in text.split(";"):
        changes = {}
        if item != "base":
            for kv in _split_top(item):
                key, value = kv.split("=", 1)
                changes[key] = json.loads(value)
        out[item] = changes
    return out


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def load_split(root: Path, split: str):
    from PIL import Image

    images, labels = [], []
    for ci, folder in enumerate(sorted((root / split).iterdir())):
        for f in sorted(folder.glob("*.jpg")):
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(ci)
    return images, np.asarray(labels)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--train", type=int, default=21)
    p.add_argument("--val", type=int, default=3)
    p.add_argument("--presets", required=True, help="comma-separated preset names or TOML paths")
    p.add_argument("--variants", default="base", help="changes to each preset (see above)")
    p.add_argument("--reg", default="1e-4,1e-5")
    p.add_argument("--epochs", type=int, default=10)
    manyclass.add_drawing_arguments(p)
    a = p.parse_args(argv)
    drawing = manyclass.drawing_options(p, a)

    from bowsvm.asgd import ASGDClassifier
    from bowsvm.coding import FeatureSetExtractor

    with tempfile.TemporaryDirectory(prefix="bowsvm-mc-study-") as tmp:
        manyclass.make_tree(Path(tmp) / "tree", a.classes, a.train, a.val, 0, **drawing)
        Itr, ytr = load_split(Path(tmp) / "tree", "train")
        Iva, yva = load_split(Path(tmp) / "tree", "val")
    from bowsvm.presets import load_preset

    variants = parse_variants(a.variants)
    for preset, vname in ((pr, v) for pr in a.presets.split(",") for v in variants):
        t0 = time.perf_counter()
        p_dict = variant(load_preset(preset), variants[vname])
        fe = FeatureSetExtractor(preset=p_dict, random_state=0, n_samples=50000).fit(Itr)
        A, V = fe.transform(Itr), fe.transform(Iva)
        t_feat = time.perf_counter() - t0
        for reg in (float(r) for r in a.reg.split(",")):
            clf = ASGDClassifier(reg=reg, max_epochs=a.epochs, random_state=0).fit(A, ytr)
            print(json.dumps({"preset": preset, "variant": vname, "dim": int(A.shape[1]),
                              "reg": reg, "drawing": drawing, "classes": a.classes,
                              "train_top1": round(float((clf.predict(A) == ytr).mean()), 4),
                              "val_top1": round(float((clf.predict(V) == yva).mean()), 4),
                              "feature_seconds": round(t_feat, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
