"""Spark job: dense descriptors -> coding -> spatial pyramid pooling, to Parquet feature shards.

    spark-submit --master 'local[*]' jobs/extract_features.py --feature-set NAME \
        --images IMAGES --codebooks CODEBOOKS --features FEATURES

The stage is bowsvm/stages/extract.py; output: docs/FORMATS.md.
"""
import os

from bowsvm.spark import run_stage_job
from bowsvm.stages import extract

if __name__ == "__main__":
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")  # as bowsvm.spark.spark_env sets it
    run_stage_job(extract)
