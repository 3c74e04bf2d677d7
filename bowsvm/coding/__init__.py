"""Coding and pooling: codebooks, LCC and super-vector codes, spatial pyramid pooling.

Layers (see docs/STYLE.md): numba kernels in ``_kernels``; validated functions in
``_encode`` (knn_bases, lcc_encode, sv_encode), ``_pooling`` (spm_pool),
``_codebook`` (Codebook, learn_codebook, learn_gmm_codebook), ``gmm`` (GMM, fit_gmm),
``fisher`` (fisher_posteriors, fisher_vector, fisher_vectors), ``pipeline`` (the
per-image coding pipeline of a preset: descriptors -> codes -> pooling (or the
Fisher vector of a ``coding.method = "fisher"`` preset), i.e.
feature_vector, feature_vectors, sample_descriptors, too_small) and ``_transformer``
(the scikit-learn transformer, imported on first use so that Spark tasks do not load
scikit-learn).

``svc_encode`` is the old name of ``sv_encode`` (super-vector coding), kept as an alias.

Conventions
-----------
Nearest bases
    Squared Euclidean distance: the GEMM identity (float32 unless an input is
    float64; ``dtype="float64"`` forces float64) pre-selects candidates within
    a rigorous rounding bound, whose distances are then recomputed in float64;
    neighbours and distances do not depend on the BLAS, block or thread count.
    Ties keep the lower basis index.
LCC
    k nearest bases (paper: 20), ``C += beta * trace(C) * I`` with beta = 1e-4
    (Wang et al.'s LLC code), weights summing to 1; CSR (n, p) output.
SV
    Nearest basis k and block ``[s, z - b_k]``, s = 0.1 by default (tuned on
    Fashion-MNIST, docs/BENCHMARKS.md); a descriptor's full code has p (d + 1)
    entries, basis-major.
Pooling
    Block-major vector: pyramid levels in the order given, cells row-major
    within a level (``(rows, cols)``; ``(3, 1)`` is three horizontal bands),
    each block D = p (LCC) or p (d + 1) (SV) entries, L2-normalised per block
    by default. LCC uses max pooling of the dense codes; SV the weighted
    average ``(1/N) sum_k (1/sqrt(w_k)) sum_{i in k} [s, z_i - b_k]``. No
    descriptors gives the all-zero vector.
Fisher vectors
    Diagonal GMM (``gmm.fit_gmm``, EM, seeded); per block G_mu and G_sigma
    (2 K D entries, optionally G_w: K more), signed square root then L2 per
    block, block-major like the other poolings (``fisher``).
Codebooks
    ``codebook.npz`` (bases, optional pca_mean / pca_components, float32; a
    GMM codebook adds gmm_weights / gmm_variances, its means being the bases)
    plus ``codebook.json`` (sizes, kind, content hash, how it was learned);
    loaded with ``allow_pickle=False`` and checked against the recorded hash.
"""

from bowsvm.coding._codebook import (
    Codebook,
    codebook_from_centers,
    fit_pca,
    gmm_codebook,
    kmeans_codebook,
    learn_codebook,
    learn_gmm_codebook,
    pca_from_moments,
)
from bowsvm.coding._encode import (
    DEFAULT_BETA,
    DEFAULT_S,
    SVCodes,
    knn_bases,
    lcc_encode,
    sv_encode,
    svc_encode,
)
from bowsvm.coding._pooling import block_ids, pyramid_blocks, spm_pool
from bowsvm.coding.pipeline import (
    check_codebook,
    code_and_pool,
    feature_vector,
    feature_vectors,
    prepare_image,
    sample_descriptors,
    stack_features,
    too_small,
)
from bowsvm.coding.fisher import (
    fisher_posteriors,
    fisher_vector,
    fisher_vector_dim,
    fisher_vectors,
)
from bowsvm.coding.gmm import GMM, fit_gmm


def __getattr__(name):
    if name == "FeatureSetExtractor":
        from bowsvm.coding._transformer import FeatureSetExtractor

        return FeatureSetExtractor
    raise AttributeError(f"module 'bowsvm.coding' has no attribute {name!r}")

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_S",
    "Codebook",
    "FeatureSetExtractor",
    "GMM",
    "SVCodes",
    "block_ids",
    "check_codebook",
    "code_and_pool",
    "codebook_from_centers",
    "feature_vector",
    "feature_vectors",
    "fisher_posteriors",
    "fisher_vector",
    "fisher_vector_dim",
    "fisher_vectors",
    "fit_gmm",
    "fit_pca",
    "gmm_codebook",
    "kmeans_codebook",
    "knn_bases",
    "lcc_encode",
    "learn_codebook",
    "learn_gmm_codebook",
    "pca_from_moments",
    "prepare_image",
    "pyramid_blocks",
    "sample_descriptors",
    "spm_pool",
    "stack_features",
    "sv_encode",
    "svc_encode",
    "too_small",
]
