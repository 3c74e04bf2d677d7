"""`bowsvm prepare`: run jobs/prepare_images.py through spark-submit."""

from bowsvm.io.atomic import prepare_target
from bowsvm.prepare import add_job_arguments, check_job_arguments
from bowsvm.spark import job_command

NAME = "prepare"
ORDER = 10
HELP = "ingest an image tree or Fashion-MNIST IDX files into Parquet image shards (Spark)"
DESCRIPTION = (
    "Decode, orient, convert and downsize every image of an ImageNet-style folder tree "
    "(CLASS/.../file, optionally under train/ val/ test/) or of the Fashion-MNIST IDX files, "
    "and write Parquet image shards plus a rejects table and a manifest. Bad files never stop "
    "the job: each ends up in the rejects table with its reason."
)


def _preflight(args) -> None:
    check_job_arguments(args)
    prepare_target(args.output, args.overwrite, "prepare",  # refuse before starting Spark
                   [args.input, args.fashion_mnist], "--output")


add_arguments, run = job_command("prepare_images.py", add_job_arguments, _preflight)
