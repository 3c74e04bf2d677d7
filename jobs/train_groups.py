"""Spark job: train the class groups of one feature set as parallel Spark tasks.

    spark-submit --master 'local[2]' jobs/train_groups.py --feature-set NAME \\
        --features features --models models --groups 2 --n-jobs 1

Options: those of ``bowsvm train``; ``--n-jobs`` is per task, default 1 (see
:mod:`bowsvm.stages.train`).
"""

from bowsvm.spark import run_stage_job
from bowsvm.stages import train

if __name__ == "__main__":
    run_stage_job(train)
