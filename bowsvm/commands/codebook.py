"""`bowsvm codebook`: run jobs/learn_codebook.py through spark-submit."""

from pathlib import Path

from bowsvm.extract import add_codebook_arguments, check_image_shards, feature_set_preset
from bowsvm.io.atomic import prepare_target
from bowsvm.spark import job_command

NAME = "codebook"
ORDER = 20
HELP = "sample descriptors from the train images and learn a feature set's codebook (Spark)"
DESCRIPTION = (
    "Sample dense descriptors (seeded per image) from the train split of the image shards, "
    "optionally reduce them with PCA, and learn the preset's codebook with K-means "
    "(MiniBatchKMeans locally, Spark MLlib KMeans for large samples). Writes CODEBOOKS/NAME."
)


def _preflight(args) -> None:
    feature_set_preset(args.preset or args.feature_set)  # unknown preset: error before Spark
    prepare_target(Path(args.codebooks) / args.feature_set, args.overwrite, "codebook",
                   [args.images], "--codebooks/NAME")
    check_image_shards(args.images)  # truncated/missing image shards: error before Spark


add_arguments, run = job_command("learn_codebook.py", add_codebook_arguments, _preflight)
