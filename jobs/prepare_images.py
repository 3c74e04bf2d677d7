"""Spark job: ingest an image tree or Fashion-MNIST IDX files into Parquet image shards.

    spark-submit --master 'local[*]' jobs/prepare_images.py --fashion-mnist DIR --output OUT

(or `bowsvm prepare`, which does exactly that). The stage: bowsvm/stages/prepare.py;
output layout: docs/FORMATS.md, "Image shards".
"""

from bowsvm.spark import run_stage_job
from bowsvm.stages import prepare

if __name__ == "__main__":
    run_stage_job(prepare)
