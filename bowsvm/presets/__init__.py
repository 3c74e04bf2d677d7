"""Feature-set presets: TOML files that fully determine a feature set.

A preset fixes the descriptors (kind and parameters), the image size limit,
the codebook (size, PCA, sampling; for Fisher vectors the GMM's EM settings),
the coding (LCC k and beta, SV s, or the Fisher vector's options), the spatial
pyramid and its pooling and normalisation, and the output layout.
Its content hash (:func:`preset_hash`) goes into every output manifest.

Schema (every key optional unless marked; defaults in ``_DEFAULTS``)::

    name = "..."            # defaults to the file stem
    description = "..."
    max_side = 500          # images are downsized so the longer side <= this

    [descriptors]
    kind = "hog"            # required: "hog" | "lbp" | "hog+lbp"
    patch_sizes = [16, 24, 32]
    step = 8
    n_bins = 8              # hog only: descriptor dim 16 * n_bins
    clip = 0.2              # hog only
    cells = 2               # lbp only: dim cells^2 * 59 (nri_uniform) or * 10 (uniform)
    method = "nri_uniform"  # lbp only

    [codebook]
    n_bases = 1024          # required: K-means bases, or Gaussians of the GMM (fisher)
    pca_dim = 0             # 0: no PCA
    samples_per_image = 100 # descriptors sampled per image for K-means / EM
    n_samples = 200000      # target size of the K-means / EM sample
    random_state = 0
    em_max_iter = 100       # fisher only: EM iterations at most (bowsvm.coding.fit_gmm)
    em_tol = 1e-4           # fisher only: EM stops when the mean log-likelihood moves less
    var_floor = 1e-4        # fisher only: variance floor, relative to the mean variance

    [coding]
    method = "lcc"          # required: "lcc" | "sv" | "fisher"
    k = 20                  # lcc only
    beta = 1e-4             # lcc only
    s = 0.1                 # sv only
    weights_gradient = false  # fisher only: append G_w (K entries) to each block
    threshold = 1e-4        # fisher only: posteriors below it are dropped (0 keeps all)

    [pooling]
    grids = [[1, 1], [3, 3]]   # (rows, cols) per pyramid level
    normalize = "l2"           # per block: "l2" | "none" (lcc, sv);
                               # "improved" | "none" (fisher; default "improved":
                               # signed square root, then L2)
    # method is implied: "max" for lcc, "sv" for sv, "fisher" for fisher
    # (the Fisher vector's own per-block statistics; any other value is refused)

    [output]
    layout = "sparse"       # "dense" | "sparse" (default "sparse"; fisher: "dense" only,
                            # the default)
    dim = 81920             # optional: checked against the computed dimension

The resolved dict (what :func:`load_preset` returns) has every default filled
in, ``pooling.method``, and the derived sizes ``descriptors.dim``,
``coding.dim`` (dimension per pyramid block: p for LCC, p (d + 1) for SV,
2 K d (+ K with ``weights_gradient``) for Fisher vectors, K = ``n_bases``),
``pooling.n_blocks`` and ``output.dim``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path

from bowsvm._validation import check_bool, check_choice, check_grids, check_int, check_real

__all__ = ["descriptor_params", "feature_set_preset", "list_presets", "load_preset",
           "preset_hash"]

PRESET_DIR = Path(__file__).resolve().parent

_KINDS = {"hog": "hog", "lbp": "lbp", "hog+lbp": "hog+lbp"}
_LBP_BINS = {"nri_uniform": 59, "uniform": 10}
_CODINGS = {"lcc": "max", "sv": "sv", "fisher": "fisher"}
_NORMALIZE = {"l2": "l2", "none": "none", "improved": "improved"}
_LAYOUTS = {"dense": "dense", "sparse": "sparse"}
# per coding method: the normalisations and layouts that fit it (the first is the default)
_METHOD_NORMALIZE = {"lcc": ("l2", "none"), "sv": ("l2", "none"), "fisher": ("improved", "none")}
_METHOD_LAYOUTS = {"lcc": ("sparse", "dense"), "sv": ("sparse", "dense"), "fisher": ("dense",)}

_HOG_KEYS = ("n_bins", "clip")
_LBP_KEYS = ("cells", "method")
# keys that only one coding method uses: dropped for the others so that they
# cannot change the hash (and presets written before they existed keep theirs)
_CODING_KEYS = {"lcc": ("k", "beta"), "sv": ("s",), "fisher": ("weights_gradient", "threshold")}
_GMM_KEYS = ("em_max_iter", "em_tol", "var_floor")

_DEFAULTS = {
    "name": None,
    "description": "",
    "max_side": 500,
    "descriptors": {
        "kind": None,
        "patch_sizes": [16, 24, 32],
        "step": 8,
        "n_bins": 8,
        "clip": 0.2,
        "cells": 2,
        "method": "nri_uniform",
    },
    "codebook": {
        "n_bases": None,
        "pca_dim": 0,
        "samples_per_image": 100,
        "n_samples": 200000,
        "random_state": 0,
        "em_max_iter": 100,
        "em_tol": 1e-4,
        "var_floor": 1e-4,
    },
    "coding": {"method": None, "k": 20, "beta": 1e-4, "s": 0.1, "weights_gradient": False,
               "threshold": 1e-4},
    # normalize and layout: None is the coding method's default (_METHOD_NORMALIZE/_LAYOUTS)
    "pooling": {"grids": [[1, 1], [3, 3]], "normalize": None, "method": None},
    "output": {"layout": None, "dim": None},
}
_SECTIONS = ("descriptors", "codebook", "coding", "pooling", "output")
# derived keys: accepted in input (e.g. a resolved dict fed back), recomputed
_DERIVED = {"descriptors": ("dim",), "coding": ("dim",), "pooling": ("n_blocks",)}


def list_presets() -> list[str]:
    """Names of the presets shipped in ``bowsvm/presets/``, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(preset) -> dict:
    """Load and resolve a preset: a shipped name, a path to a TOML file, or a dict.

    Returns
    -------
    dict
        A new fully resolved preset (see the module docstring).

    Raises
    ------
    FileNotFoundError
        If the name is neither a shipped preset nor an existing file.
    ValueError
        If a key is unknown, a value is out of range, or a stated
        ``output.dim`` differs from the computed dimension.
    TypeError
        If ``preset`` is not a str, path or dict.
    """
    if isinstance(preset, dict):
        raw = copy.deepcopy(preset)
        default_name = raw.get("name") or "custom"
    elif isinstance(preset, (str, Path)):
        path = Path(preset)
        if not path.suffix == ".toml" and not path.exists():
            path = PRESET_DIR / f"{preset}.toml"
        if not path.is_file():
            raise FileNotFoundError(
                f"no preset {str(preset)!r}: not a file and not one of the shipped "
                f"presets ({', '.join(list_presets())})."
            )
        with open(path, "rb") as f:
            try:
                raw = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"preset file {str(path)!r} is not valid TOML: {exc}") from None
        default_name = path.stem
    else:
        raise TypeError(
            f"preset must be a name, a path to a TOML file or a dict, got "
            f"{type(preset).__name__}."
        )
    return _resolve(raw, default_name)


def _merge(raw: dict) -> dict:
    out = copy.deepcopy(_DEFAULTS)
    top = set(_DEFAULTS)
    unknown = set(raw) - top
    if unknown:
        raise ValueError(
            f"unknown preset key(s) {sorted(unknown)}; valid top-level keys: {sorted(top)}."
        )
    for key, val in raw.items():
        if key in _SECTIONS:
            if not isinstance(val, dict):
                raise ValueError(f"preset section [{key}] must be a table, got {val!r}.")
            valid = set(_DEFAULTS[key]) | set(_DERIVED.get(key, ()))
            bad = set(val) - valid
            if bad:
                raise ValueError(
                    f"unknown key(s) {sorted(bad)} in preset section [{key}]; valid: "
                    f"{sorted(_DEFAULTS[key])}."
                )
            out[key].update(val)
        else:
            out[key] = val
    return out


def _resolve(raw: dict, default_name: str) -> dict:
    p = _merge(raw)
    p["name"] = str(p["name"] or default_name)
    p["description"] = str(p["description"])
    p["max_side"] = check_int("max_side", p["max_side"], low=8)

    de = p["descriptors"]
    if de["kind"] is None:
        raise ValueError("preset needs descriptors.kind ('hog', 'lbp' or 'hog+lbp').")
    kind = check_choice("descriptors.kind", de["kind"], _KINDS)
    sizes = de["patch_sizes"]
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ValueError(f"descriptors.patch_sizes must be a non-empty list, got {sizes!r}.")
    de["patch_sizes"] = [check_int("descriptors.patch_sizes entry", s, low=4) for s in sizes]
    de["step"] = check_int("descriptors.step", de["step"], low=1)
    de["n_bins"] = check_int("descriptors.n_bins", de["n_bins"], low=1)
    de["clip"] = check_real("descriptors.clip", de["clip"], low=0.0, low_open=True)
    de["cells"] = check_int("descriptors.cells", de["cells"], low=1)
    lbp_bins = check_choice("descriptors.method", de["method"], _LBP_BINS)
    # parameters of the kind not used are dropped so they cannot change the hash
    if kind == "hog":
        for key in _LBP_KEYS:
            de.pop(key)
    if kind == "lbp":
        for key in _HOG_KEYS:
            de.pop(key)
    dim = 0
    if "hog" in kind:
        dim += 16 * de["n_bins"]
    if "lbp" in kind:
        dim += de["cells"] ** 2 * lbp_bins
    de["dim"] = dim

    cb = p["codebook"]
    if cb["n_bases"] is None:
        raise ValueError("preset needs codebook.n_bases.")
    cb["n_bases"] = check_int("codebook.n_bases", cb["n_bases"], low=1)
    cb["pca_dim"] = check_int("codebook.pca_dim", cb["pca_dim"], low=0, high=dim)
    cb["samples_per_image"] = check_int(
        "codebook.samples_per_image", cb["samples_per_image"], low=1)
    cb["n_samples"] = check_int("codebook.n_samples", cb["n_samples"], low=cb["n_bases"])
    cb["random_state"] = check_int("codebook.random_state", cb["random_state"], low=0)
    d = cb["pca_dim"] or dim

    co = p["coding"]
    if co["method"] is None:
        raise ValueError("preset needs coding.method ('lcc', 'sv' or 'fisher').")
    pool_method = check_choice("coding.method", co["method"], _CODINGS)
    method = co["method"]
    for other, keys in _CODING_KEYS.items():
        if other != method:
            for key in keys:
                co.pop(key)
    if method == "fisher":
        cb["em_max_iter"] = check_int("codebook.em_max_iter", cb["em_max_iter"], low=1)
        cb["em_tol"] = check_real("codebook.em_tol", cb["em_tol"], low=0.0)
        cb["var_floor"] = check_real("codebook.var_floor", cb["var_floor"], low=0.0,
                                     low_open=True)
    else:
        for key in _GMM_KEYS:
            cb.pop(key)
    if method == "lcc":
        co["k"] = check_int("coding.k", co["k"], low=1, high=cb["n_bases"])
        co["beta"] = check_real("coding.beta", co["beta"], low=0.0)
        co["dim"] = cb["n_bases"]
    elif method == "sv":
        co["s"] = check_real("coding.s", co["s"], low=0.0)
        co["dim"] = cb["n_bases"] * (d + 1)
    else:
        co["weights_gradient"] = check_bool("coding.weights_gradient", co["weights_gradient"])
        co["threshold"] = check_real("coding.threshold", co["threshold"], low=0.0, high=1.0)
        co["dim"] = 2 * cb["n_bases"] * d + (cb["n_bases"] if co["weights_gradient"] else 0)

    po = p["pooling"]
    po["grids"] = [list(g) for g in check_grids(po["grids"])]
    if po["method"] is not None and po["method"] != pool_method:
        raise ValueError(
            f"pooling.method={po['method']!r} does not fit coding.method="
            f"{co['method']!r}; it must be {pool_method!r} (or left out)."
        )
    po["method"] = pool_method
    po["normalize"] = _method_choice("pooling.normalize", po["normalize"], _NORMALIZE,
                                     _METHOD_NORMALIZE[method], method)
    po["n_blocks"] = sum(r * c for r, c in po["grids"])

    ou = p["output"]
    ou["layout"] = _method_choice("output.layout", ou["layout"], _LAYOUTS,
                                  _METHOD_LAYOUTS[method], method)
    total = po["n_blocks"] * co["dim"]
    if ou["dim"] is not None and ou["dim"] != total:
        raise ValueError(
            f"preset {p['name']!r} states output.dim={ou['dim']} but its settings give "
            f"{po['n_blocks']} blocks x {co['dim']} = {total}; fix the stated dim or "
            f"the settings."
        )
    ou["dim"] = total
    return p


def _method_choice(name, value, table, fitting, method):
    """A string option that depends on the coding method; None gives its default."""
    if value is None:
        return fitting[0]
    value = check_choice(name, value, table)
    if value not in fitting:
        raise ValueError(
            f"{name}={value!r} does not fit coding.method={method!r}; it must be "
            + " or ".join(repr(v) for v in fitting) + " (or left out)."
        )
    return value


def preset_hash(preset) -> str:
    """Content hash of a resolved preset (name and description excluded).

    Two presets that produce the same features have the same hash whatever
    they are called; changing any setting changes it. The hash is the first 16
    hex digits of the SHA-256 of the canonical JSON (sorted keys, no spaces),
    the same function as :func:`bowsvm.io.manifest.content_hash` (a test says
    so); it is spelt out here because presets import only ``_validation``.
    """
    p = load_preset(preset) if not isinstance(preset, dict) else _resolve(preset, "custom")
    body = {k: v for k, v in p.items() if k not in ("name", "description")}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def feature_set_preset(preset) -> tuple[dict, str]:
    """The resolved preset of a feature set and its hash: ``(load_preset(p), preset_hash(p))``.

    ``preset`` is what the stages' ``--preset`` (default: the ``--feature-set``
    name) gives: a shipped preset name, a TOML path or a dict.

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        As :func:`load_preset`.
    """
    resolved = load_preset(preset)
    return resolved, preset_hash(resolved)


def add_feature_set_arguments(parser, output: str) -> None:
    """The options that name a feature set, shared by the codebook and extract stages.

    ``--feature-set`` and ``--preset`` (resolved by :func:`feature_set_preset`),
    ``--images`` and ``--codebooks``; ``output`` ("codebooks" or "features") is the
    root the calling stage writes NAME under.
    """
    parser.add_argument("--feature-set", required=True,
                        help=f"feature-set name; {output} are written to {output.upper()}/NAME")
    parser.add_argument("--preset", default=None,
                        help="preset name or TOML path (default: the feature-set name)")
    parser.add_argument("--images", required=True,
                        help="image shards folder (bowsvm prepare), or its URI (docs/SCALING.md)")
    parser.add_argument("--codebooks", required=True,
                        help="root folder of codebooks (CODEBOOKS/NAME is the feature set's)")


def descriptor_params(preset: dict) -> dict:
    """Keyword arguments for ``bowsvm.features.extract_descriptors`` (without kind)."""
    de = preset["descriptors"]
    return {k: (tuple(v) if k == "patch_sizes" else v) for k, v in de.items()
            if k not in ("kind", "dim")}
