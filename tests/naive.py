"""Slow, obviously correct twins of every kernel (plain loops or direct solves).

Each area keeps its own section; tests compare the kernels against these on
seeded random inputs and edge cases.
"""

import numpy as np  # noqa: F401

# ---- features (HOG / LBP) -------------------------------------------------
# ---- end features ----

# ---- coding (kNN / LCC / SV / pooling) ------------------------------------
# ---- end coding ----

# ---- asgd (sequential SGD / ASGD) -----------------------------------------
# ---- end asgd ----
