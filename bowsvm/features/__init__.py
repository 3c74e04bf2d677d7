"""Dense multi-scale HOG and LBP descriptors (the paper's feature extraction, part 1).

Public API::

    DenseDescriptors(descriptors, centers, sizes, shape)
    dense_hog(image, patch_sizes=(16, 24, 32), step=8, n_bins=8, clip=0.2)
    dense_lbp(image, patch_sizes=(16, 24, 32), step=8, cells=2, method="nri_uniform")
    dense_hog_lbp(image, patch_sizes=(16, 24, 32), step=8, n_bins=8, clip=0.2,
                  cells=2, method="nri_uniform")
    extract_descriptors(image, kind, **params)      # kind in DESCRIPTORS
    to_gray(image)                                  # image files: bowsvm.io.images.decode_image

Conventions (grid origin, centres, orientation, normalisation, low contrast)
are documented in :mod:`bowsvm.features.dense`.
"""

from .dense import (
    DESCRIPTORS,
    HOG_MIN_MEAN_GRADIENT,
    LBP_METHODS,
    DenseDescriptors,
    dense_hog,
    dense_hog_lbp,
    dense_lbp,
    descriptor_dim,
    extract_descriptors,
    lbp_codes,
    patch_grid,
)
from .image import to_gray

__all__ = [
    "DESCRIPTORS",
    "HOG_MIN_MEAN_GRADIENT",
    "LBP_METHODS",
    "DenseDescriptors",
    "dense_hog",
    "dense_hog_lbp",
    "dense_lbp",
    "descriptor_dim",
    "extract_descriptors",
    "lbp_codes",
    "patch_grid",
    "to_gray",
]
