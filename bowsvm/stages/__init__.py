"""The pipeline's stages, one module each: the one file to open for a stage.

=========  ==========================================================  ===========
stage      what it does                                                 runs
=========  ==========================================================  ===========
prepare    image tree or Fashion-MNIST IDX -> Parquet image shards      Spark
codebook   descriptor sample of the train images -> codebook            Spark
extract    image shards + codebook -> feature shards                    Spark
compress   feature shards -> product-quantized feature shards (pq)      local
train      feature shards -> one-vs-all linear SVMs (ASGD)              local; class
                                                                        groups on Spark
score      features + model -> decision scores of one split             local
fuse       score sets -> fusion weights (learned on val) + fused scores local
report     every stage's outputs -> one HTML file + its JSON            local
predict    image files -> top-k classes, end to end                     local
=========  ==========================================================  ===========

A stage module owns its options, its partition functions and its manifest. It defines

``NAME``, ``ORDER``, ``HELP``, ``DESCRIPTION``
    the subcommand ``bowsvm NAME`` (listed by ``ORDER``).
``add_arguments(parser)``
    the stage's own options; the one definition the CLI and the job script share.
``check_arguments(args)``
    validates the options and refuses outputs it may not write, before any heavy
    work (no Spark session, no data pass); raises ValueError, FileNotFoundError or
    FileExistsError naming the option. Of a Spark stage it runs once in each process
    that receives the options: the CLI (so a mistake costs no JVM start) and the job
    script.
``run(args) -> int``
    a local stage: the whole stage, starting with ``check_arguments(args)``.
``run_spark(spark, args) -> int``
    a Spark stage: the driver's work, given the session. ``JOB`` names its script
    in ``jobs/``, which :func:`bowsvm.spark.run_stage_job` runs under spark-submit.

The CLI (:mod:`bowsvm.cli`) and the job scripts only wire these into argparse and
spark-submit; formats live in :mod:`bowsvm.io`, the math in ``features``,
``coding``, ``asgd`` and ``evaluation`` (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib

STAGES = ("prepare", "codebook", "extract", "compress", "train", "score", "fuse", "report", "predict")


def load(name: str):
    """The module of stage ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`STAGES`.
    """
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}.")
    return importlib.import_module(f"bowsvm.stages.{name}")
