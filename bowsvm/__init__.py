"""bowsvm: large-scale classical image classification.

A rebuild of Lin et al., "Large-scale image classification: fast feature
extraction and SVM training", CVPR 2011: dense multi-scale HOG and LBP
descriptors, local coordinate coding (LCC) or super-vector coding with spatial
pyramid pooling, one-vs-all linear SVMs trained by averaged SGD, and score
fusion, run as Spark batch jobs.
"""

__version__ = "0.1.0"
