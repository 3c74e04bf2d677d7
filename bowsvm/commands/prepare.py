"""`bowsvm prepare`: run jobs/prepare_images.py through spark-submit."""

from bowsvm.io.atomic import prepare_target
from bowsvm.prepare import add_job_arguments, check_job_arguments
from bowsvm.spark import add_spark_arguments, forward_args, spark_submit

NAME = "prepare"
ORDER = 10
HELP = "ingest an image tree or Fashion-MNIST IDX files into Parquet image shards (Spark)"
DESCRIPTION = (
    "Decode, orient, convert and downsize every image of an ImageNet-style folder tree "
    "(CLASS/.../file, optionally under train/ val/ test/) or of the Fashion-MNIST IDX files, "
    "and write Parquet image shards plus a rejects table and a manifest. Bad files never stop "
    "the job: each ends up in the rejects table with its reason."
)


def add_arguments(parser) -> None:
    add_job_arguments(parser)
    add_spark_arguments(parser)


def run(args) -> int:
    check_job_arguments(args)
    prepare_target(args.output, args.overwrite)  # refuse before starting Spark
    return spark_submit("prepare_images.py", forward_args(add_job_arguments, args),
                        master=args.master, conf=args.conf, driver_memory=args.driver_memory)
