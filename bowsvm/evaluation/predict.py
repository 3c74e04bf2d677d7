"""End-to-end prediction for new image files with trained feature sets and fusion.

For every feature set the image goes through exactly the training path:
``bowsvm.features.decode_image(bytes, preset["max_side"])`` (grey float32,
downsized), then ``bowsvm.coding.feature_vectors`` over a batch of images, as in
the extraction job (dense descriptors -> LCC/SV coding -> spatial pyramid
pooling), then the
model's ``x @ coef.T + intercept``. With several feature sets the scores are
fused with the fusion folder's val-learned standardisation and weights
(:func:`bowsvm.evaluation.fusion.apply_fusion`); a single set uses its raw
scores.

Where each piece comes from:

* model: ``models/NAME`` (coef, intercept, classes, preset_hash);
* preset: ``features/NAME/manifest.json`` key ``preset`` (a shipped preset name,
  a TOML path, or a preset dict; ``preset_config`` is preferred when present),
  checked against the model's ``preset_hash``;
* codebook: a path in the feature manifest (``codebook``, ``codebook_path`` or
  ``codebook_dir``) if any, else the first of ``CODEBOOKS/NAME``,
  ``CODEBOOKS/<preset name>`` and ``CODEBOOKS`` that loads and whose hash equals
  the feature manifest's ``codebook_hash``;
* fusion: ``fusion/weights.json`` (when more than one set, required).

Each file is read like the prepare stage reads a tree: only regular files
(symlinks followed) of at most ``max_file_bytes``, never blocking on a FIFO or
device (:func:`bowsvm.io.images.read_image_file`), and images of more than
``max_pixels`` pixels are refused before decoding. An unreadable, non-regular,
over-size, undecodable or too large file gives a per-file error entry; the
others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bowsvm.evaluation.fusion import FusionModel, apply_fusion
from bowsvm.evaluation.metrics import top_k_indices
from bowsvm.evaluation.scoring import LinearModel, decision_scores, load_model
from bowsvm.io import is_complete, read_manifest
from bowsvm.io.images import (
    DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, ImageTooLarge, UnusableFile, read_image_file,
)

__all__ = ["FeatureSetRuntime", "Predictor", "IMAGE_SUFFIXES", "list_image_files"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                  ".ppm", ".pgm", ".pbm")


def list_image_files(paths) -> list[Path]:
    """Expand files and folders (recursively, by image suffix) into a sorted file list.

    Explicit files are kept whatever their suffix (an unreadable one is
    reported at prediction time). In folders every entry with an image suffix
    that is not a folder is listed, FIFOs, devices and broken symlinks
    included, so that each gets its own error line rather than vanishing.

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
                              if not f.is_dir() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.exists() or p.is_symlink():
            out.append(p)
        else:
            raise FileNotFoundError(f"input {str(p)!r} does not exist; pass image files or folders.")
    if not out:
        raise FileNotFoundError(
            f"no image files found in {[str(p) for p in paths]} (suffixes {', '.join(IMAGE_SUFFIXES)})."
        )
    return out


@dataclass
class FeatureSetRuntime:
    """What one feature set needs at prediction time."""

    name: str
    preset: dict
    codebook: object
    model: LinearModel


@dataclass
class Predictor:
    """Trained feature sets (+ fusion) ready to classify raw images.

    Attributes
    ----------
    sets : list of FeatureSetRuntime
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
        fusion_ok = fusion_path is not None and is_complete(fusion_path)
        fmodel = None
        if fusion_ok:
            read_manifest(fusion_path, stage="fuse")
            import json

            fmodel = FusionModel.from_json(json.loads((fusion_path / "weights.json").read_text()))
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
        sets = [_load_set(n, features, models, codebooks) for n in feature_sets]
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
            If the bytes cannot be decoded as an image or it has more than
            ``max_pixels`` pixels.
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
        from bowsvm.coding import too_small
        from bowsvm.features import decode_image

        grey = {}
        for s in self.sets:
            ms = s.preset.get("max_side")
            if ms not in grey:
                grey[ms] = decode_image(data, ms, self.max_pixels)
            reason = too_small(grey[ms], s.preset)
            if reason is not None:
                raise ValueError(f"{reason} of feature set {s.name!r}")
        return grey

    def _scores(self, greys: list[dict]) -> np.ndarray:
        """Fused (or single-set) scores (n, C) of decoded images (see :meth:`_decode`).

        Raises
        ------
        ValueError
            If a feature set's preset does not produce its model's dimension.
        """
        from bowsvm.coding import feature_vectors, stack_features

        per_set = []
        for s in self.sets:
            ms, out = s.preset.get("max_side"), s.preset["output"]
            X = stack_features(feature_vectors([g[ms] for g in greys], s.preset, s.codebook),
                               int(out["dim"]), out["layout"])
            if X.shape[1] != s.model.dim:
                raise ValueError(f"feature set {s.name!r} produced {X.shape[1]} features but "
                                 f"its model expects {s.model.dim}; the preset does not match "
                                 f"the model.")
            per_set.append(decision_scores(X, s.model.coef, s.model.intercept))
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


def _resolve_preset(fm: dict, name: str):
    from bowsvm.presets import load_preset

    err = "no preset recorded"
    for key in ("preset_config", "preset"):
        p = fm.get(key)
        if isinstance(p, (dict, str)) and p:
            try:
                return load_preset(p)
            except (ValueError, FileNotFoundError, TypeError, KeyError) as exc:
                err = exc
    raise ValueError(
        f"feature set {name!r}: cannot resolve its preset from the feature manifest "
        f"(preset={fm.get('preset')!r}): {err}."
    )


def _load_set(name, features, models, codebooks) -> FeatureSetRuntime:
    from bowsvm.coding import Codebook, check_codebook
    from bowsvm.presets import preset_hash

    model = load_model(Path(models) / name)
    fm = read_manifest(Path(features) / name, stage="extract")
    preset = _resolve_preset(fm, name)
    want_hash = model.manifest.get("preset_hash") or fm.get("preset_hash")
    got_hash = preset_hash(preset)
    if want_hash is not None and got_hash != want_hash:
        raise ValueError(
            f"feature set {name!r}: preset {preset.get('name')!r} now has hash {got_hash} but the "
            f"model was trained on features of preset hash {want_hash}; the preset changed "
            f"since extraction. Re-extract and retrain, or restore the preset."
        )
    want_cb = fm.get("codebook_hash")
    candidates = [Path(fm[k]) for k in ("codebook", "codebook_path", "codebook_dir")
                  if isinstance(fm.get(k), str)]
    if codebooks is not None:
        root = Path(codebooks)
        candidates += [root / name, root / str(preset.get("name")), root]
    tried = []
    for c in candidates:
        try:
            cb = Codebook.load(c)
        except (FileNotFoundError, ValueError) as exc:
            tried.append(f"{c}: {exc}")
            continue
        if want_cb is not None and cb.hash != want_cb:
            tried.append(f"{c}: hash {cb.hash} != {want_cb}")
            continue
        check_codebook(preset, cb)
        return FeatureSetRuntime(name, preset, cb, model)
    raise FileNotFoundError(
        f"feature set {name!r}: no codebook with hash {want_cb} found; tried "
        + "; ".join(tried) + ". Pass --codebooks with the folder written by `bowsvm codebook`."
    )
