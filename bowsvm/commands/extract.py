"""`bowsvm extract`: run jobs/extract_features.py through spark-submit."""

from pathlib import Path

from bowsvm.extract import add_extract_arguments, check_image_shards, feature_set_preset
from bowsvm.io.atomic import prepare_target
from bowsvm.spark import job_command

NAME = "extract"
ORDER = 30
HELP = "extract a feature set (descriptors -> coding -> pyramid pooling) to Parquet shards (Spark)"
DESCRIPTION = (
    "Run the preset's dense descriptors, LCC or super-vector coding with its codebook, and "
    "spatial pyramid pooling on every image of the image shards, inside Spark partitions, and "
    "write FEATURES/NAME/{train,val,test}/part-*.parquet with a manifest. Images that fail to "
    "decode are recorded in FEATURES/NAME/rejects, not fatal."
)


def _preflight(args) -> None:
    feature_set_preset(args.preset or args.feature_set)  # unknown preset: error before Spark
    prepare_target(Path(args.features) / args.feature_set, args.overwrite, "extract",
                   [args.images, Path(args.codebooks) / args.feature_set], "--features/NAME")
    check_image_shards(args.images)  # truncated/missing image shards: error before Spark


add_arguments, run = job_command("extract_features.py", add_extract_arguments, _preflight)
