"""`bowsvm extract`: run jobs/extract_features.py through spark-submit."""

from pathlib import Path

from bowsvm.extract import add_extract_arguments, feature_set_preset
from bowsvm.io.atomic import prepare_target
from bowsvm.spark import add_spark_arguments, forward_args, spark_submit

NAME = "extract"
ORDER = 30
HELP = "extract a feature set (descriptors -> coding -> pyramid pooling) to Parquet shards (Spark)"
DESCRIPTION = (
    "Run the preset's dense descriptors, LCC or super-vector coding with its codebook, and "
    "spatial pyramid pooling on every image of the image shards, inside Spark partitions, and "
    "write FEATURES/NAME/{train,val,test}/part-*.parquet with a manifest. Images that fail to "
    "decode are recorded in FEATURES/NAME/rejects, not fatal."
)


def add_arguments(parser) -> None:
    add_extract_arguments(parser)
    add_spark_arguments(parser)


def run(args) -> int:
    feature_set_preset(args.preset or args.feature_set)  # unknown preset: error before Spark
    prepare_target(Path(args.features) / args.feature_set, args.overwrite)
    return spark_submit("extract_features.py", forward_args(add_extract_arguments, args),
                        master=args.master, conf=args.conf, driver_memory=args.driver_memory)
