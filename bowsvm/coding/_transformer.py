"""The per-image coding pipeline as a scikit-learn transformer (imports scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from bowsvm._validation import check_int
from bowsvm.coding._codebook import Codebook, learn_codebook, learn_gmm_codebook
from bowsvm.coding.pipeline import (
    check_codebook,
    feature_vectors,
    prepare_image,
    sample_descriptors,
    stack_features,
)
from bowsvm.presets import load_preset

__all__ = ["FeatureSetExtractor"]


class FeatureSetExtractor(TransformerMixin, BaseEstimator):
    """Scikit-learn transformer: images -> pooled LCC/SV features or Fisher vectors of a preset.

    Parameters
    ----------
    preset : str or dict, default "fmnist-lcc-hog"
        A shipped preset name, a TOML path, or a preset dict.
    codebook : Codebook, str or path, optional
        A fitted codebook (or a folder/.npz to load one from). If None,
        :meth:`fit` learns one from descriptors sampled from the images.
    n_samples : int, optional
        Size of the K-means (or EM) sample; default: the preset's
        ``codebook.n_samples``.
    random_state : int, default 0
        Seeds the descriptor sampling and K-means (or the GMM's initialisation).
    batch_descriptors : int, default 20000
        Descriptors per coding batch in :meth:`transform`.

    Attributes
    ----------
    preset_ : dict
        The resolved preset.
    codebook_ : Codebook
    n_features_out_ : int

    Notes
    -----
    Images are 2-D grey arrays (uint8 is scaled to [0, 1]), (h, w, 3) colour
    arrays, or a 3-D (n, h, w) stack; each is downsized to the preset's
    ``max_side``. transform returns a CSR matrix for sparse presets and a
    float32 ndarray for dense ones.
    """

    def __init__(self, preset="fmnist-lcc-hog", codebook=None, n_samples=None,
                 random_state=0, batch_descriptors=20000):
        self.preset = preset
        self.codebook = codebook
        self.n_samples = n_samples
        self.random_state = random_state
        self.batch_descriptors = batch_descriptors

    def _images(self, X):
        max_side = self.preset_["max_side"]
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype != object:
            raise ValueError(
                f"X must be a sequence of images (or an (n, h, w) stack), got a 2-D "
                f"array of shape {X.shape}; wrap a single image as [image]."
            )
        for img in X:
            yield prepare_image(img, max_side)

    def fit(self, X, y=None):
        """Learn the codebook from descriptors sampled from the images X."""
        self.preset_ = load_preset(self.preset)
        if self.codebook is not None:
            cb = self.codebook
            self.codebook_ = cb if isinstance(cb, Codebook) else Codebook.load(cb)
            check_codebook(self.preset_, self.codebook_)
        else:
            cbp = self.preset_["codebook"]
            n_samples = cbp["n_samples"] if self.n_samples is None else check_int(
                "n_samples", self.n_samples, low=cbp["n_bases"])
            seed = check_int("random_state", self.random_state, low=0)
            rng = np.random.default_rng(seed)
            images = list(X) if not isinstance(X, np.ndarray) else X
            n_img = len(images)
            if n_img == 0:
                raise ValueError("X holds no images; fit needs at least one.")
            per_image = cbp["samples_per_image"]
            order = rng.permutation(n_img)
            sample, total = [], 0
            max_side = self.preset_["max_side"]
            for i in order:
                D = sample_descriptors(prepare_image(images[i], max_side), self.preset_,
                                       per_image, rng)
                sample.append(D)
                total += D.shape[0]
                if total >= n_samples:
                    break
            sample = np.concatenate(sample, axis=0)[:n_samples]
            if self.preset_["coding"]["method"] == "fisher":
                self.codebook_ = learn_gmm_codebook(
                    sample, cbp["n_bases"], pca_dim=cbp["pca_dim"] or None,
                    random_state=seed, max_iter=cbp["em_max_iter"], tol=cbp["em_tol"],
                    var_floor=cbp["var_floor"],
                )
            else:
                self.codebook_ = learn_codebook(
                    sample, cbp["n_bases"], pca_dim=cbp["pca_dim"] or None,
                    random_state=seed,
                )
        self.n_features_out_ = self.preset_["output"]["dim"]
        return self

    def transform(self, X):
        """Pooled features of the images X: (n, dim) CSR or float32 ndarray."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "codebook_")
        res = feature_vectors(self._images(X), self.preset_, self.codebook_,
                            batch_descriptors=self.batch_descriptors)
        return stack_features(res, self.n_features_out_, self.preset_["output"]["layout"])

    def get_feature_names_out(self, input_features=None):
        return np.array([f"f{i}" for i in range(self.n_features_out_)], dtype=object)
