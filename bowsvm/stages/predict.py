"""Stage ``predict``: classify image files end to end with the trained feature sets.

For every feature set the image goes through exactly the training path: the one
image path :func:`bowsvm.io.images.decode_image` (decode, EXIF orientation, 8-bit
with alpha over white, Lanczos downsizing to the preset's ``max_side``, grey), then
:func:`bowsvm.coding.feature_vectors` over a batch of images, as in the extraction
job (dense descriptors -> LCC/SV coding -> spatial pyramid pooling), then the
model's ``x @ coef.T + intercept``. With several feature sets the scores are fused
with the fusion folder's val-learned standardisation and weights
(:func:`bowsvm.evaluation.fusion.apply_fusion`); a single set uses its raw scores.

What is read, all of it written by the stages (docs/FORMATS.md):

* ``MODELS/NAME`` (``bowsvm train``): coef, intercept, classes, ``preset_hash``;
* ``FEATURES/NAME/manifest.json`` (``bowsvm extract``): ``preset_config`` (the
  resolved preset extraction used), ``preset_hash`` and ``codebook_hash``; the
  preset's hash must equal both manifests' ``preset_hash``;
* ``CODEBOOKS/NAME`` (``bowsvm codebook``, the folder extraction read): its hash
  must equal the feature manifest's ``codebook_hash``;
* ``FUSION/weights.json`` (``bowsvm fuse``): required with more than one set.

Each file is read like the prepare stage reads a tree: only regular files
(symlinks followed) of at most ``--max-file-bytes``, never blocking on a FIFO or
device (:func:`bowsvm.io.images.read_image_file`), and images of more than
``--max-pixels`` pixels are refused before decoding. An unreadable, non-regular,
over-size, undecodable or too small file gives a per-file error entry; the others
go on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bowsvm._validation import check_int
from bowsvm.evaluation.fusion import FusionModel, apply_fusion
from bowsvm.evaluation.metrics import top_k_indices
from bowsvm.io.models import LinearModel, load_model
from bowsvm.io import is_complete, read_manifest
from bowsvm.io.atomic import atomic_file, check_file_target
from bowsvm.io.images import (
    DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageTooLarge, UnusableFile,
    decode_image, read_image_file,
)

__all__ = ["FeatureSetScorer", "Predictor", "list_image_files", "write_results"]

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


# --------------------------------------------------------------- options

def add_arguments(p) -> None:
    """The stage's options."""
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


def check_arguments(args) -> None:
    """Validate the options and refuse an ``--out`` over or into an input, before any work.

    Raises
    ------
    ValueError
        If ``--top``, ``--max-pixels`` or ``--max-file-bytes`` is out of range,
        or ``--out`` does not end in .csv/.json or is (inside) an input.
    """
    check_int("--top", args.top, low=1)
    check_int("--max-pixels", args.max_pixels, low=64)
    check_int("--max-file-bytes", args.max_file_bytes, low=1)
    if args.out and not args.out.lower().endswith((".csv", ".json")):
        raise ValueError(f"--out {args.out!r} must end in .csv or .json.")
    if args.out:
        check_file_target(args.out, [*args.inputs, args.features, args.models, args.fusion,
                                     args.codebooks], "--out")


def run(args) -> int:
    """The stage: classify ``args.inputs``; exit status 1 if any file failed."""
    check_arguments(args)
    sets = None
    if args.feature_sets:
        sets = [s.strip() for s in args.feature_sets.split(",") if s.strip()]
    files = list_image_files(args.inputs)
    pred = Predictor.from_folders(sets, features=args.features, models=args.models,
                                  fusion=args.fusion, codebooks=args.codebooks)
    pred.max_pixels, pred.max_file_bytes = args.max_pixels, args.max_file_bytes
    results = []
    for r in pred.iter_predictions(files, k=args.top):  # printed batch by batch, as they are done
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


# --------------------------------------------------------------- inputs and outputs

def list_image_files(paths) -> list[Path]:
    """Expand files and folders (recursively, by image suffix) into a sorted file list.

    Explicit files are kept whatever their suffix (an unreadable one is
    reported at prediction time). In folders every entry whose suffix is in
    :data:`bowsvm.io.images.IMAGE_EXTENSIONS` and that is not a folder is
    listed, FIFOs, devices and broken symlinks included, so that each gets its
    own error line rather than vanishing.

    Raises
    ------
    FileNotFoundError
        If a path does not exist, or nothing is found.
    """
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if not f.is_dir() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.exists() or p.is_symlink():
            out.append(p)
        else:
            raise FileNotFoundError(f"input {str(p)!r} does not exist; pass image files or folders.")
    if not out:
        raise FileNotFoundError(
            f"no image files found in {[str(p) for p in paths]} (suffixes "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    return out


def write_results(results, out) -> None:
    """Write predictions atomically as CSV (one row per file and rank) or JSON.

    Raises
    ------
    ValueError
        If ``out`` does not end in .csv or .json.
    """
    import csv
    import io
    import json

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"--out {str(out)!r} must end in .csv or .json.")
    if suffix == ".json":
        text = json.dumps(results, indent=2) + "\n"
    else:
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(["file", "rank", "class", "index", "score", "error"])
        for r in results:
            if r["error"]:
                w.writerow([r["file"], "", "", "", "", r["error"]])
            for t in r["top"]:
                w.writerow([r["file"], t["rank"], t["class"], t["index"], f"{t['score']:.6g}", ""])
        text = buf.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out, "wb") as f:
        f.write(text.encode("utf-8"))


# --------------------------------------------------------------- the trained sets

@dataclass
class FeatureSetScorer:
    """One trained feature set: grey images -> its model's decision scores.

    Attributes
    ----------
    name : str
    preset : dict
        The resolved preset extraction used (the feature manifest's ``preset_config``).
    codebook : bowsvm.coding.Codebook
    model : LinearModel
    """

    name: str
    preset: dict
    codebook: object
    model: LinearModel

    @property
    def max_side(self) -> int:
        return self.preset["max_side"]

    def scores(self, greys: list) -> np.ndarray:
        """Decision scores (n, C) float32 of grey images decoded at :attr:`max_side`.

        Raises
        ------
        ValueError
            If the preset does not produce the model's dimension.
        """
        from bowsvm.coding import feature_vectors, stack_features

        out = self.preset["output"]
        X = stack_features(feature_vectors(greys, self.preset, self.codebook),
                           int(out["dim"]), out["layout"])
        if X.shape[1] != self.model.dim:
            raise ValueError(f"feature set {self.name!r} produced {X.shape[1]} features but "
                             f"its model expects {self.model.dim}; the preset does not match "
                             f"the model.")
        from bowsvm.asgd.core import decision_scores  # numba and BLAS threads: not at CLI start-up

        return decision_scores(X, self.model.coef, self.model.intercept)


def load_feature_set(name, features, models, codebooks) -> FeatureSetScorer:
    """Load model, preset and codebook of feature set ``name`` and check they belong together.

    Raises
    ------
    FileNotFoundError
        If the model, the feature manifest or ``CODEBOOKS/NAME`` is missing.
    ValueError
        If the feature manifest lacks ``preset_config``, the preset's hash
        differs from the feature manifest's or the model's ``preset_hash``, or
        the codebook's hash from the feature manifest's ``codebook_hash``.
    """
    from bowsvm.coding import Codebook, check_codebook
    from bowsvm.presets import load_preset, preset_hash

    model = load_model(Path(models) / name)
    fpath = Path(features) / name
    fm = read_manifest(fpath, stage="extract")
    if not isinstance(fm.get("preset_config"), dict):
        raise ValueError(
            f"feature set {name!r}: {str(fpath / 'manifest.json')!r} lacks preset_config (the "
            f"resolved preset `bowsvm extract` records); re-extract the feature set.")
    try:
        preset = load_preset(fm["preset_config"])
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        raise ValueError(f"feature set {name!r}: the preset_config of "
                         f"{str(fpath / 'manifest.json')!r} is not a valid preset: {exc}") from None
    got = preset_hash(preset)
    for what, want in (("feature manifest", fm.get("preset_hash")),
                       ("model", model.manifest.get("preset_hash"))):
        if want is None:
            raise ValueError(f"feature set {name!r}: the {what} records no preset_hash; "
                             f"re-run `bowsvm {'extract' if what[0] == 'f' else 'train'}`.")
        if want != got:
            raise ValueError(
                f"feature set {name!r}: the {what} records preset hash {want}, but the preset "
                f"extraction used ({preset.get('name')!r}, in {str(fpath / 'manifest.json')!r}) "
                f"has hash {got}; the model was not trained on these features. Re-extract and "
                f"retrain, or pass the matching --features/--models.")
    want_cb = fm.get("codebook_hash")
    cb_dir = Path(codebooks) / name
    try:
        cb = Codebook.load(cb_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise FileNotFoundError(
            f"feature set {name!r}: no codebook with hash {want_cb} at {str(cb_dir)!r} ({exc}); "
            f"pass --codebooks with the folder written by `bowsvm codebook`.") from None
    if cb.hash != want_cb:
        raise ValueError(
            f"feature set {name!r}: the codebook at {str(cb_dir)!r} has hash {cb.hash}, but the "
            f"features were extracted with codebook {want_cb}; pass --codebooks with the "
            f"codebooks the features were extracted with.")
    check_codebook(preset, cb)
    return FeatureSetScorer(name, preset, cb, model)


@dataclass
class Predictor:
    """Trained feature sets (+ fusion) ready to classify raw images.

    Attributes
    ----------
    sets : list of FeatureSetScorer
    fusion : FusionModel or None
        None only with a single feature set (its raw scores are used).
    classes : list of str
    max_pixels : int
        Images with more pixels are refused before decoding (``--max-pixels``).
    max_file_bytes : int
        Larger files are refused without being read (``--max-file-bytes``).
    """

    sets: list
    fusion: FusionModel | None
    classes: list = field(default_factory=list)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    # ------------------------------------------------------------ loading
    @classmethod
    def from_folders(cls, feature_sets=None, features="features", models="models",
                     fusion="fusion", codebooks="codebooks") -> "Predictor":
        """Load presets, codebooks, models and fusion weights.

        Parameters
        ----------
        feature_sets : list of str, optional
            Default: the fusion folder's sets, else the only model in ``models``.
        features, models, fusion, codebooks : str or Path

        Raises
        ------
        FileNotFoundError
            If a model, feature manifest, codebook or (for several sets) the
            fusion folder is missing.
        ValueError
            If the preset or codebook do not match the model's feature set, the
            class lists differ, or the fusion covers other sets.
        """
        fusion_path = Path(fusion) if fusion is not None else None
        fmodel = None
        if fusion_path is not None and is_complete(fusion_path):
            from bowsvm.io.fusion import read_fusion_weights

            read_manifest(fusion_path, stage="fuse")
            fmodel = FusionModel.from_json(read_fusion_weights(fusion_path))
        if feature_sets is None:
            if fmodel is not None:
                feature_sets = list(fmodel.feature_sets)
            else:
                found = sorted(d.name for d in Path(models).iterdir()
                               if d.is_dir() and is_complete(d)) if Path(models).is_dir() else []
                if len(found) != 1:
                    raise ValueError(
                        f"no fusion folder at {str(fusion)!r} and {len(found)} models under "
                        f"{str(models)!r}; pass --feature-sets (and run `bowsvm fuse` to "
                        f"combine several)."
                    )
                feature_sets = found
        feature_sets = list(feature_sets)
        if not feature_sets:
            raise ValueError("feature_sets is empty; pass at least one feature-set name.")
        if len(feature_sets) > 1:
            if fmodel is None:
                raise FileNotFoundError(
                    f"{len(feature_sets)} feature sets need fusion weights, but {str(fusion)!r} "
                    f"is not a complete fusion folder; run `bowsvm fuse` first."
                )
            if sorted(fmodel.feature_sets) != sorted(feature_sets):
                raise ValueError(
                    f"the fusion folder {str(fusion)!r} was learned for feature sets "
                    f"{fmodel.feature_sets}, not {feature_sets}; pass the same sets or refuse."
                )
            feature_sets = list(fmodel.feature_sets)
        elif fmodel is not None and fmodel.feature_sets != feature_sets:
            fmodel = None  # a single set on its own: raw scores
        sets = [load_feature_set(n, features, models, codebooks) for n in feature_sets]
        classes = sets[0].model.classes
        for s in sets[1:]:
            if s.model.classes != classes:
                raise ValueError(
                    f"models {sets[0].name!r} and {s.name!r} have different class lists; "
                    f"fused prediction needs models trained on the same classes."
                )
        return cls(sets, fmodel, list(classes))

    # ------------------------------------------------------------ predicting
    def scores_for_bytes(self, data: bytes) -> np.ndarray:
        """Fused (or single-set) scores of one encoded image, shape (C,) float32.

        Raises
        ------
        ValueError, TypeError
            If the bytes cannot be decoded as an image, it has more than
            ``max_pixels`` pixels, or it is too small for a feature set.
        """
        return self._scores([self._decode(data)])[0]

    def _decode(self, data: bytes) -> dict:
        """One image's grey array per ``max_side`` the feature sets need.

        Raises
        ------
        ValueError
            If the image is too small for a feature set's smallest patch (it
            would score as the all-zero vector; extraction rejects such images).
        """
        grey = {}
        for s in self.sets:
            if s.max_side not in grey:
                grey[s.max_side] = decode_image(data, s.max_side, self.max_pixels)
            from bowsvm.coding import too_small

            reason = too_small(grey[s.max_side], s.preset)
            if reason is not None:
                raise ValueError(f"{reason} of feature set {s.name!r}")
        return grey

    def _scores(self, greys: list[dict]) -> np.ndarray:
        """Fused (or single-set) scores (n, C) of decoded images (see :meth:`_decode`)."""
        per_set = [s.scores([g[s.max_side] for g in greys]) for s in self.sets]
        return per_set[0] if self.fusion is None else apply_fusion(self.fusion, per_set)

    def predict_files(self, files, k: int = 5, batch: int = 256) -> list[dict]:
        """Top-``k`` classes of each file; errors are reported per file.

        Returns
        -------
        list of dict
            ``{"file", "top": [{"rank", "class", "index", "score"}], "error": None}``
            or ``{"file", "top": [], "error": "message"}``, in the order of ``files``.
        """
        return list(self.iter_predictions(files, k, batch))

    def iter_predictions(self, files, k: int = 5, batch: int = 256):
        """Like :meth:`predict_files`, yielding each file's result as its batch is done.

        Files are decoded one by one and coded ``batch`` at a time with
        :func:`bowsvm.coding.feature_vectors`, the function the extraction job
        runs (descriptors of many images share one nearest-basis GEMM).
        """
        files = [Path(f) for f in files]
        for a in range(0, len(files), batch):
            yield from self._predict_batch(files[a:a + batch], k)

    def _predict_batch(self, files, k):
        errors: dict[int, str] = {}
        greys: dict[int, dict] = {}  # file index -> {max_side: grey image}
        for i, f in enumerate(files):
            try:
                greys[i] = self._decode(read_image_file(f, self.max_file_bytes))
            except (UnusableFile, ImageTooLarge) as exc:  # the message says it all
                errors[i] = str(exc)
            except Exception as exc:  # any decoder failure is this file's, not the batch's
                errors[i] = f"{type(exc).__name__}: {exc}"
        good = sorted(greys)
        S = None
        if good:
            try:
                S = self._scores([greys[i] for i in good])
            except ValueError as exc:  # a set that does not fit its model: every file
                errors.update({i: f"{type(exc).__name__}: {exc}" for i in good})
                good = []
        row = {i: r for r, i in enumerate(good)}
        for i, f in enumerate(files):
            if i in errors:
                yield {"file": str(f), "top": [], "error": errors[i]}
                continue
            Si = S[row[i]]
            idx = top_k_indices(Si[None, :], k)[0]
            yield {"file": str(f), "error": None, "top": [
                {"rank": r + 1, "class": self.classes[c], "index": int(c), "score": float(Si[c])}
                for r, c in enumerate(idx)]}
