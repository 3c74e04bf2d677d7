"""Quick val-only study of Fashion-MNIST preset variants (how the demo's sets were chosen).

For each variant of a preset: learn its codebook on the first 5,000 training images,
extract features in-process (``FeatureSetExtractor``) for the first ``--train``
training images and all val images of a prepared image folder, train ASGD
(reg 1e-5, eta0 0.1, 5 epochs) with two seeds, print val top-1. The test split is
never read.

    python benchmarks/study_fmnist_variants.py --images demo-out/images \\
        --preset fmnist-sv-hoglbp-pca63 --variants base,step1,pca95,pca95+step1

Variants (changes to the preset): base; step1 (descriptors every pixel); pca95 / pca127
(PCA size); spm123 (pyramid 1+2x2+3x3); scales6-16 (patch sizes 6/8/12/16);
pca95+step1; pca95+step1+scales.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "base": {},
    "step1": {"descriptors.step": 1},
    "pca95": {"codebook.pca_dim": 95},
    "pca127": {"codebook.pca_dim": 127},
    "spm123": {"pooling.grids": [[1, 1], [2, 2], [3, 3]]},
    "scales6-16": {"descriptors.patch_sizes": [6, 8, 12, 16]},
    "pca95+step1": {"codebook.pca_dim": 95, "descriptors.step": 1},
    "pca95+step1+scales": {"codebook.pca_dim": 95, "descriptors.step": 1,
                           "descriptors.patch_sizes": [6, 8, 12, 16]},
}


def variant(base: dict, changes: dict) -> dict:
    p = copy.deepcopy(base)
    for key, value in changes.items():
        section, name = key.split(".")
        p[section][name] = value
    nb = sum(r * c for r, c in p["pooling"]["grids"])
    cb = p["codebook"]
    coding = {"sv": cb["n_bases"] * (cb["pca_dim"] + 1),
              "fisher": 2 * cb["n_bases"] * cb["pca_dim"]}.get(p["coding"]["method"],
                                                             cb["n_bases"])
    p["output"]["dim"] = coding * nb
    return p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="image folder written by bowsvm prepare")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--variants", default="base,step1")
    ap.add_argument("--train", type=int, default=10000, help="training images used")
    a = ap.parse_args(argv)

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from bowsvm.asgd import ASGDClassifier
    from bowsvm.coding import FeatureSetExtractor
    from bowsvm.io.images import decode_image
    from bowsvm.presets import load_preset

    t = pq.read_table(Path(a.images) / "shards", columns=["split", "label", "image"])
    t = t.filter(pc.is_in(t.column("split"), value_set=pa.array(["train", "val"])))
    split = np.asarray(t.column("split").to_pylist())
    label = np.asarray(t.column("label").to_pylist())
    tr = np.flatnonzero(split == "train")[:a.train]
    va = np.flatnonzero(split == "val")
    blobs = t.column("image")
    base = load_preset(a.preset)
    grey = {int(i): decode_image(blobs[int(i)].as_py(), base["max_side"])
            for i in np.concatenate([tr, va])}
    for name in a.variants.split(","):
        p = variant(base, VARIANTS[name])
        t0 = time.time()
        fe = FeatureSetExtractor(preset=p, random_state=0).fit([grey[i] for i in tr[:5000]])
        A = fe.transform([grey[i] for i in tr])
        V = fe.transform([grey[i] for i in va])
        sec = time.time() - t0
        accs = [float((ASGDClassifier(reg=1e-5, eta0=0.1, max_epochs=5, random_state=s)
                       .fit(A, label[tr]).predict(V) == label[va]).mean()) for s in range(2)]
        print(f"{a.preset} {name}: dim {A.shape[1]} val top-1 {np.round(accs, 4).tolist()} "
              f"mean {np.mean(accs):.4f} (features {sec:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
