"""`bowsvm codebook`: run jobs/learn_codebook.py through spark-submit."""

from pathlib import Path

from bowsvm.extract import add_codebook_arguments, feature_set_preset
from bowsvm.io.atomic import prepare_target
from bowsvm.spark import add_spark_arguments, forward_args, spark_submit

NAME = "codebook"
ORDER = 20
HELP = "sample descriptors from the train images and learn a feature set's codebook (Spark)"
DESCRIPTION = (
    "Sample dense descriptors (seeded per image) from the train split of the image shards, "
    "optionally reduce them with PCA, and learn the preset's codebook with K-means "
    "(MiniBatchKMeans locally, Spark MLlib KMeans for large samples). Writes CODEBOOKS/NAME."
)


def add_arguments(parser) -> None:
    add_codebook_arguments(parser)
    add_spark_arguments(parser)


def run(args) -> int:
    feature_set_preset(args.preset or args.feature_set)  # unknown preset: error before Spark
    prepare_target(Path(args.codebooks) / args.feature_set, args.overwrite)
    return spark_submit("learn_codebook.py", forward_args(add_codebook_arguments, args),
                        master=args.master, conf=args.conf, driver_memory=args.driver_memory)
