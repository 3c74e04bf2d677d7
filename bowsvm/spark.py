"""Spark wiring: the session builder for jobs/ and the spark-submit launcher for the CLI.

The ``bowsvm`` subcommand of a Spark stage calls :func:`spark_submit`, which runs
the stage's script in ``jobs/`` under plain ``spark-submit`` with
``--master local[*]`` by default; ``--master`` and ``--conf`` pass through, so
the same job runs on a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
JOBS_DIR = REPO_ROOT / "jobs"


def spark_env(extra: dict | None = None) -> dict:
    """Environment for spark-submit and its executors (loopback, this Python)."""
    env = dict(os.environ)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    env.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "bowsvm-numba"))
    env.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    # Executors of local-cluster inherit the environment; make the package importable.
    pp = env.get("PYTHONPATH", "")
    if str(REPO_ROOT) not in pp.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([pp] if pp else []))
    if extra:
        env.update(extra)
    return env


def spark_submit_path() -> str:
    """Path of the spark-submit script that ships with pyspark."""
    import pyspark

    p = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    if not p.exists():  # pragma: no cover - a system Spark install instead
        return "spark-submit"
    return str(p)


def add_spark_arguments(parser) -> None:
    """Add the pass-through options shared by every Spark stage's subcommand."""
    g = parser.add_argument_group("Spark")
    g.add_argument("--master", default="local[*]",
                   help="Spark master URL (local[N], local-cluster[N,C,M], spark://..., yarn, k8s://...)")
    g.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spark configuration, repeatable (e.g. spark.executor.memory=4g)")
    g.add_argument("--driver-memory", default="2g", help="spark-submit --driver-memory")


def spark_submit(job: str, job_args: list[str], master: str = "local[*]",
                 conf: list[str] | None = None, driver_memory: str = "2g",
                 env: dict | None = None, check: bool = True) -> int:
    """Run ``jobs/<job>`` under spark-submit and return its exit code.

    Raises
    ------
    ValueError
        If a ``--conf`` entry is not KEY=VALUE.
    """
    script = JOBS_DIR / job
    cmd = [spark_submit_path(), "--master", master, "--driver-memory", driver_memory]
    for c in conf or []:
        if "=" not in c:
            raise ValueError(f"--conf {c!r} is not KEY=VALUE; write it like spark.executor.memory=4g.")
        cmd += ["--conf", c]
    if not master.startswith("local"):
        # Ship the package to remote executors as a zip (built once per call).
        cmd += ["--py-files", str(_package_zip())]
    cmd += [str(script), *job_args]
    proc = subprocess.run(cmd, env=spark_env(env))
    return proc.returncode


def _package_zip() -> Path:
    import shutil
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="bowsvm-pyfiles-")) / "bowsvm"
    return Path(shutil.make_archive(str(out), "zip", root_dir=REPO_ROOT, base_dir="bowsvm"))


def build_session(app_name: str, conf: dict | None = None):
    """The SparkSession of a job in jobs/, with bowsvm's defaults.

    ``conf`` entries are defaults: values given with spark-submit ``--conf`` win.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    spark = builder.getOrCreate()
    sc_conf = spark.sparkContext.getConf()
    for k, v in (conf or {}).items():
        if not sc_conf.contains(k):
            try:
                spark.conf.set(k, str(v))
            except Exception:  # static confs cannot be set at run time; ignore
                pass
    spark.sparkContext.setLogLevel(os.environ.get("BOWSVM_SPARK_LOG_LEVEL", "WARN"))
    return spark
