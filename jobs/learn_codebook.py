"""Spark job: sample descriptors from the train images and learn a feature set's codebook.

    spark-submit --master 'local[*]' jobs/learn_codebook.py --feature-set NAME \
        --images IMAGES --codebooks CODEBOOKS

The stage is bowsvm/stages/codebook.py; output: docs/FORMATS.md.
"""
from bowsvm.spark import run_stage_job
from bowsvm.stages import codebook

if __name__ == "__main__":
    run_stage_job(codebook)
