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

Drawing options (``--jitter``, ``--max-rotation``, ``--text-size``, ``--calm``,
``--blur``, ``--hard``) are manyclass.py's. One JSON line per (preset, reg) on stdout.
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
    for preset in a.presets.split(","):
        t0 = time.perf_counter()
        fe = FeatureSetExtractor(preset=preset, random_state=0, n_samples=50000).fit(Itr)
        A, V = fe.transform(Itr), fe.transform(Iva)
        t_feat = time.perf_counter() - t0
        for reg in (float(r) for r in a.reg.split(",")):
            clf = ASGDClassifier(reg=reg, max_epochs=a.epochs, random_state=0).fit(A, ytr)
            print(json.dumps({"preset": preset, "dim": int(A.shape[1]), "reg": reg,
                              "drawing": drawing, "classes": a.classes,
                              "train_top1": round(float((clf.predict(A) == ytr).mean()), 4),
                              "val_top1": round(float((clf.predict(V) == yva).mean()), 4),
                              "feature_seconds": round(t_feat, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
