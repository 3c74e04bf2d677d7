"""The per-image coding pipeline: descriptors -> codes -> pyramid pooling = a feature vector.

A preset (:mod:`bowsvm.presets`) and a codebook fix every step. Words used here
with one meaning each: *descriptors* are the dense local descriptors of
:mod:`bowsvm.features`; to *encode* is to code descriptors against the
codebook (LCC or SV, :mod:`bowsvm.coding._encode`); *pooling* turns the codes
of one image into its *feature vector*. A Fisher vector preset
(``coding.method = "fisher"``) has no separate codes: its codebook is a GMM and
the feature vector is :func:`bowsvm.coding.fisher_vector` of the projected
descriptors over the preset's pyramid (per-block statistics, improved
normalisation), float32, dense.

:func:`feature_vectors` (many images, coding batched across them) is what the
extract stage (:mod:`bowsvm.stages.extract`) and ``predict`` call;
:func:`sample_descriptors` is what the codebook stage calls per image;
:func:`too_small` is the one rule for an image no patch fits.
``bowsvm.coding._transformer.FeatureSetExtractor`` wraps the same path as a
scikit-learn transformer (in its own module so that Spark tasks and the CLI do
not import scikit-learn: 0.8 s per process).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bowsvm._validation import check_int
from bowsvm.coding._codebook import Codebook
from bowsvm.coding._encode import SVCodes, lcc_encode, sv_encode
from bowsvm.coding._pooling import pool_csr_arrays, pool_sv_arrays, spm_pool
from bowsvm.coding.fisher import fisher_vector, fisher_vectors
from bowsvm.features import extract_descriptors
from bowsvm.presets import descriptor_params, load_preset

__all__ = [
    "check_codebook",
    "code_and_pool",
    "feature_vector",
    "feature_vectors",
    "prepare_image",
    "sample_descriptors",
    "stack_features",
    "too_small",
]


def _resolve(preset) -> dict:
    # a dict that is already resolved is used as is (cheap path for per-image calls)
    # (load_preset output carries the derived keys pooling.n_blocks and descriptors.dim)
    if (isinstance(preset, dict) and "n_blocks" in preset.get("pooling", {})
            and "dim" in preset.get("descriptors", {})):
        return preset
    return load_preset(preset)


def prepare_image(image, max_side=None):
    """2-D float32 grey image from a pixel array, by the one image path of image files.

    A uint8 array (grey, grey + alpha, RGB or RGBA) goes through steps 3-5 of
    :func:`bowsvm.io.images.decode_image`: 8-bit with alpha composited over
    white, :func:`bowsvm.io.images.downsize` (Lanczos) so the longer side is
    at most ``max_side``, luminance. So an array gives the same grey image as
    its PNG file through the pipeline. Other dtypes (float in [0, 1], uint16,
    bool) are converted by :func:`bowsvm.features.to_gray` (alpha ignored)
    and downsized with the same Lanczos filter in float32, clipped to [0, 1].

    Raises
    ------
    ValueError
        If the array is not an image, is empty, or holds NaN/Inf.
    """
    from PIL import Image

    from bowsvm.features import to_gray
    from bowsvm.io.images import array_image, downsize, grey_pixels

    arr = np.asarray(image)
    if arr.dtype == np.uint8 and (arr.ndim == 2 or (arr.ndim == 3 and 1 <= arr.shape[2] <= 4)):
        img = array_image(arr)
        return grey_pixels(img if max_side is None else downsize(img, max_side))
    arr = to_gray(arr)
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape}).")
    if max_side is not None and max(arr.shape) > max_side:
        arr = np.asarray(downsize(Image.fromarray(arr), max_side), dtype=np.float32)
        arr = np.clip(arr, 0.0, 1.0)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _descriptors(gray, preset):
    return extract_descriptors(gray, preset["descriptors"]["kind"], **descriptor_params(preset))


def too_small(gray: np.ndarray, preset) -> str | None:
    """Why an image is too small for the preset (no patch fits), or None.

    A dense patch grid has ``(side - patch) // step + 1`` positions per axis,
    none when a side is shorter than the patch; an image below the preset's
    smallest patch would pool no descriptor at all and become the all-zero
    vector, so the extract stage rejects it (and ``predict`` reports it per
    file) instead.

    Parameters
    ----------
    gray : (h, w) array
        The decoded grey image (after downsizing to the preset's ``max_side``).
    preset : str or dict

    Returns
    -------
    str or None
        The reason, naming the image's size and the smallest patch.
    """
    preset = _resolve(preset)
    p = min(preset["descriptors"]["patch_sizes"])
    h, w = gray.shape[:2]
    if h >= p and w >= p:
        return None
    return (f"image too small: {w}x{h} px after decoding, below the preset's smallest patch "
            f"of {p}x{p} px (no descriptor fits; it would become an all-zero feature vector)")


def check_codebook(preset, codebook: Codebook) -> None:
    """Raise ValueError if ``codebook`` does not fit ``preset`` (sizes, PCA).

    Raises
    ------
    ValueError
        If the number of bases, the coding dimension or the descriptor
        dimension differ from what the preset says, or the codebook's kind
        does not fit the coding (a Fisher vector preset needs a GMM codebook,
        LCC and SV K-means bases).
    TypeError
        If ``codebook`` is not a Codebook.
    """
    if not isinstance(codebook, Codebook):
        raise TypeError(
            f"codebook must be a bowsvm.coding.Codebook, got {type(codebook).__name__}; "
            f"load one with Codebook.load(folder)."
        )
    preset = _resolve(preset)
    cb = preset["codebook"]
    want = {
        "n_bases": cb["n_bases"],
        "input_dim": preset["descriptors"]["dim"],
        "dim": cb["pca_dim"] or preset["descriptors"]["dim"],
    }
    got = {"n_bases": codebook.n_bases, "input_dim": codebook.input_dim, "dim": codebook.dim}
    want["kind"] = "gmm" if preset["coding"]["method"] == "fisher" else "kmeans"
    got["kind"] = codebook.kind
    diffs = [f"{k}: preset {want[k]}, codebook {got[k]}" for k in want if want[k] != got[k]]
    if diffs:
        raise ValueError(
            f"codebook {codebook.hash} does not fit preset {preset['name']!r} ("
            + "; ".join(diffs) + "); learn a codebook with this preset."
        )


def sample_descriptors(gray, preset, n, rng):
    """Up to ``n`` descriptors of one image, drawn without replacement (for K-means).

    Parameters
    ----------
    gray : (h, w) array
        Grey image, already downsized to the preset's ``max_side``.
    preset : str or dict
    n : int
    rng : numpy.random.Generator or int
        Source of the draw (an int seeds a new Generator).

    Returns
    -------
    (m, D) float32, m = min(n, number of descriptors in the image)
        Raw descriptors (before the codebook's PCA).
    """
    preset = _resolve(preset)
    n = check_int("n", n, low=0)
    rng = np.random.default_rng(rng)
    X = np.asarray(_descriptors(gray, preset).descriptors, dtype=np.float32)
    if X.shape[0] > n:
        X = X[np.sort(rng.choice(X.shape[0], size=n, replace=False))]
    return np.ascontiguousarray(X)


def code_and_pool(Z, centers, shape, preset, codebook: Codebook, *, checked=False):
    """Feature vector of one image's raw descriptors: code them, then pool the codes.

    Parameters
    ----------
    Z : (n, D) raw descriptors; centers : (n, 2) (x, y); shape : (h, w)
    preset : str or dict
    codebook : Codebook
    checked : bool
        Skip :func:`check_codebook` (the caller already did it).

    Returns
    -------
    (dim,) float32 if the preset's layout is "dense", else
    (indices int32, values float32) of the non-zero entries.
    """
    preset = _resolve(preset)
    if not checked:
        check_codebook(preset, codebook)
    X = codebook.project(Z)
    if preset["coding"]["method"] == "fisher":
        return fisher_vector(X, centers, shape, codebook.gmm, preset["pooling"]["grids"],
                             **_fisher_options(preset))
    codes = _code(X, preset, codebook)
    return _pool(codes, centers, shape, preset)


def _fisher_options(preset) -> dict:
    """Keyword arguments of fisher_vector(s) from a resolved fisher preset."""
    co, po = preset["coding"], preset["pooling"]
    return {"improved": po["normalize"] == "improved",
            "weights_gradient": co["weights_gradient"], "threshold": co["threshold"],
            "output": preset["output"]["layout"]}


def _code(X, preset, codebook):
    co = preset["coding"]
    if co["method"] == "lcc":
        return lcc_encode(X, codebook.bases, k=co["k"], beta=co["beta"])
    return sv_encode(X, codebook.bases, s=co["s"])


def _pool(codes, centers, shape, preset):
    po = preset["pooling"]
    return spm_pool(
        codes, centers, shape, po["grids"], pooling=po["method"],
        normalize=po["normalize"], output=preset["output"]["layout"],
    )


def feature_vector(gray, preset, codebook: Codebook):
    """Feature vector of one grey image: descriptors -> codes -> pyramid pooling.

    Parameters
    ----------
    gray : (h, w) float32 array
        Grey image, already downsized to the preset's ``max_side`` (as
        ``bowsvm.io.images.decode_image`` returns it).
    preset : str or dict
    codebook : Codebook
        Must fit the preset (:func:`check_codebook`).

    Returns
    -------
    (dim,) float32 if the preset's layout is "dense", else
    (indices int32 ascending, values float32) of the non-zero entries.
    An image too small for any patch gives the all-zero vector (the stages
    reject it first: :func:`too_small`).
    """
    preset = _resolve(preset)
    check_codebook(preset, codebook)
    dd = _descriptors(gray, preset)
    return code_and_pool(dd.descriptors, dd.centers, dd.shape, preset, codebook,
                              checked=True)


def feature_vectors(images, preset, codebook: Codebook, *, batch_descriptors=20000):
    """Feature vectors of many grey images; coding runs on batches pooled across images.

    Same result as calling :func:`feature_vector` on each (bit for bit without
    PCA; to float32 rounding with PCA, whose projection GEMM is batched too),
    but the nearest-basis GEMM sees up to ``batch_descriptors`` descriptors at
    once.

    A Fisher vector preset's images are not batched at all: each image's
    descriptors are projected by their own GEMM, and its vector is
    :func:`bowsvm.coding.fisher_vectors` on them (its own GEMMs), so that an
    image's vector is bit for bit :func:`feature_vector`'s whatever its
    neighbours. That matters more than for LCC/SV: the signed square root is
    not Lipschitz at 0 and the posterior threshold is a step, so the float32
    rounding of a batched projection (1e-7 relative) moved near-zero entries
    of ``quick-fv-hog`` vectors by up to 2.5e-4.

    Returns
    -------
    list of per-image results (as :func:`feature_vector`).
    """
    preset = _resolve(preset)
    check_codebook(preset, codebook)
    batch_descriptors = check_int("batch_descriptors", batch_descriptors, low=1)
    po = preset["pooling"]
    layout = preset["output"]["layout"]
    fisher = preset["coding"]["method"] == "fisher"
    results = []
    pending = []  # descriptor sets waiting to be coded
    rows = 0

    def flush():
        nonlocal pending, rows
        if not pending:
            return
        # one projection GEMM for the whole batch (many tiny per-image GEMMs are
        # slow with a threaded BLAS); features then agree with feature_vector to
        # float32 rounding, not bit for bit, when the codebook has a PCA
        if fisher:
            # each image projected by its own GEMM: see the docstring
            triples = [(codebook.project(dd.descriptors), dd.centers, dd.shape)
                       for dd in pending]
            results.extend(fisher_vectors(triples, codebook.gmm, po["grids"],
                                          **_fisher_options(preset)))
        else:
            Z = np.concatenate([dd.descriptors for dd in pending], axis=0)
            codes = _code(codebook.project(Z), preset, codebook)
            start = 0
            for dd in pending:
                m = dd.descriptors.shape[0]
                # unvalidated fast path: the codes come straight from lcc/sv_encode
                if isinstance(codes, SVCodes):
                    x = pool_sv_arrays(codes.assign[start:start + m],
                                       codes.blocks[start:start + m], codes.n_bases,
                                       dd.centers, dd.shape, po["grids"], po["normalize"],
                                       layout)
                else:
                    x = pool_csr_arrays(codes.indptr[start:start + m + 1], codes.indices,
                                        codes.data, codes.shape[1], dd.centers, dd.shape,
                                        po["grids"], po["normalize"], layout)
                results.append(x)
                start += m
        pending = []
        rows = 0

    for img in images:
        dd = _descriptors(img, preset)
        pending.append(dd)
        rows += dd.descriptors.shape[0]
        if rows >= batch_descriptors:
            flush()
    flush()
    return results


def stack_features(results, dim, layout):
    """Stack per-image feature vectors into (n, dim): CSR for "sparse", ndarray for "dense"."""
    if layout == "dense":
        if not results:
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack(results).astype(np.float32, copy=False)
    indptr = np.zeros(len(results) + 1, dtype=np.int64)
    for i, (ind, _) in enumerate(results):
        indptr[i + 1] = indptr[i] + ind.shape[0]
    indices = (np.concatenate([r[0] for r in results]) if results
               else np.zeros(0, np.int32))
    values = (np.concatenate([r[1] for r in results]).astype(np.float32) if results
              else np.zeros(0, np.float32))
    return sp.csr_matrix((values, indices, indptr), shape=(len(results), dim))
