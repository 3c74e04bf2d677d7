"""bowsvm: large-scale classical image classification.

A rebuild of Lin et al., "Large-scale image classification: fast feature
extraction and SVM training", CVPR 2011: dense multi-scale HOG and LBP
descriptors, local coordinate coding (LCC) or super-vector coding with spatial
pyramid pooling, one-vs-all linear SVMs trained by averaged SGD, and score
fusion, run as Spark batch jobs.
"""

import os as _os

__version__ = "0.1.0"

#: OpenBLAS's worker threads busy-wait 2**28 cycles (about 0.1 s) after each call, on the
#: cores the trainer's numba kernels run on next: the row-by-row updates after each
#: block's GEMM ran at half speed. 2**16 cycles (about 20 microseconds) still keeps
#: back-to-back BLAS calls from waking sleeping threads. OpenBLAS reads the variable once,
#: when it loads, so this takes effect in processes that import bowsvm before numpy (the
#: CLI, jobs/, and every process started from them); a value already set wins
#: (docs/BENCHMARKS.md, "Where a dense-block epoch goes").
OPENBLAS_THREAD_TIMEOUT = "16"
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)
