"""Spark wiring: the session builder for jobs/ and the spark-submit launcher for the CLI.

The ``bowsvm`` subcommand of a Spark stage calls :func:`submit_stage`, which runs
the stage's script in ``jobs/`` under plain ``spark-submit`` with
``--master local[*]`` by default; ``--master`` and ``--conf`` pass through, so
the same job runs on a cluster. The script itself is :func:`run_stage_job` of
its stage (:mod:`bowsvm.stages`).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG4J2_CONFIG = Path(__file__).resolve().parent / "log4j2.properties"

#: Test-only fault injection: when set, the first attempt of every even-numbered
#: task raises, so tests can check that retried output is identical to a clean run's.
FAIL_FIRST_ATTEMPT_ENV = "BOWSVM_TEST_FAIL_FIRST_ATTEMPT"

#: Exit code of a Spark JVM killed by an uncaught OutOfMemoryError
#: (SparkExitCode.OOM): spark-submit returns it when the driver's heap runs out.
JVM_OOM_EXIT = 52


#: Test-only pause, ``SECONDS:FOLDER``: the first attempt of task 0 of every stage that
#: calls :func:`maybe_inject_failure` writes ``FOLDER/task-<stage>-0.<pid>`` (the Python
#: worker's pid) and then sleeps SECONDS, so a test can kill the executor that runs it
#: while the task surely runs (tests/test_cluster_rehearsal.py).
PAUSE_FIRST_ATTEMPT_ENV = "BOWSVM_TEST_PAUSE_FIRST_ATTEMPT"


def maybe_inject_failure() -> None:
    """The test hooks of a task (no-ops unless their variables are set).

    With :data:`FAIL_FIRST_ATTEMPT_ENV`, raise on the first attempt of even-numbered
    tasks; with :data:`PAUSE_FIRST_ATTEMPT_ENV`, announce the first attempt of task 0
    in a marker file and pause.
    """
    fail, pause = os.environ.get(FAIL_FIRST_ATTEMPT_ENV), os.environ.get(PAUSE_FIRST_ATTEMPT_ENV)
    if not (fail or pause):
        return
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None or ctx.attemptNumber() != 0:
        return
    if pause and ctx.partitionId() == 0:
        import time

        seconds, folder = pause.split(":", 1)
        marker = Path(folder) / f"task-{ctx.stageId()}-{ctx.partitionId()}.{os.getpid()}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        time.sleep(float(seconds))
    if fail and ctx.partitionId() % 2 == 0:
        raise RuntimeError(f"injected failure ({FAIL_FIRST_ATTEMPT_ENV}) in task "
                           f"{ctx.partitionId()} attempt 0")


def driver_memory_bytes(text: str | None) -> int:
    """A ``spark.driver.memory`` setting (``"2g"``, ``"512m"``; no unit: MiB; None: the
    default 1g) in bytes."""
    text = (text or "1g").strip().lower()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    unit = units.get(text[-1:].rstrip("b") or text[-2:-1], 1 << 20)  # no unit: MiB
    digits = text.rstrip("bkmgt")
    return int(float(digits) * unit) if digits else 1 << 30


def driver_memory(spark) -> str | None:
    """The running session's ``spark.driver.memory`` setting (None if unset)."""
    return spark.sparkContext.getConf().get("spark.driver.memory", None)


@contextmanager
def java_heap_errors(setting: str | None, what: str, need_bytes: int | None = None):
    """Re-raise a Java OutOfMemoryError of a Spark action as one ValueError naming --driver-memory.

    ``setting`` is the session's ``spark.driver.memory`` (:func:`driver_memory`); ``what``
    says what the action held; ``need_bytes`` (if known) is an
    estimate of the heap it needs. The advice is the larger of twice the
    current ``spark.driver.memory`` and that estimate. Other exceptions pass
    through. (A JVM that dies of it instead exits with :data:`JVM_OOM_EXIT`,
    which :func:`spark_submit` explains the same way.)

    Raises
    ------
    ValueError
        ``"the Spark driver's Java heap ... ran out ...: raise --driver-memory to ..."``.
    """
    try:
        yield
    except Exception as exc:  # py4j / pyspark errors: matched on their text
        text = str(exc)
        if "OutOfMemoryError" not in text and "Java heap space" not in text:
            raise
        have = driver_memory_bytes(setting)
        want = max(2 * have, int(need_bytes or 0))
        raise ValueError(
            f"the Spark driver's Java heap (spark.driver.memory = {have / 2**30:.3g} GiB) ran "
            f"out while {what}: raise --driver-memory to at least "
            f"{-(-want // 2**30)}g (or spark.executor.memory on a cluster)."
        ) from None


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


def jobs_dir() -> Path:
    """The folder of the spark-submit scripts: ``jobs/`` of a checkout (or editable
    install), else where ``pip install`` put the package's data files
    (``<prefix>/share/bowsvm/jobs``, listed in the distribution's RECORD).

    Raises
    ------
    FileNotFoundError
        If neither holds the scripts (a broken install).
    """
    local = REPO_ROOT / "jobs"
    if (REPO_ROOT / "setup.cfg").is_file() and local.is_dir():
        return local
    from importlib import metadata

    try:
        for f in metadata.files("bowsvm") or ():
            if f.parts[-3:-1] == ("bowsvm", "jobs") and f.name.endswith(".py"):
                return Path(f.locate()).resolve().parent
    except metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError(
        f"the bowsvm job scripts are neither in {str(local)!r} nor installed with the package; "
        f"reinstall bowsvm (`pip install .` from a checkout).")


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
    cmd = spark_submit_command(job, job_args, master, conf, driver_memory)
    proc = subprocess.run(cmd, env=spark_env(env))
    if proc.returncode == JVM_OOM_EXIT:
        print(f"bowsvm: {job} exited with code {JVM_OOM_EXIT}: the Spark driver's JVM ran out "
              f"of heap (java.lang.OutOfMemoryError) with --driver-memory {driver_memory}; "
              f"raise --driver-memory (e.g. to twice that), or lower what the stage holds on "
              f"the driver (its --memory-budget, where it has one).", file=sys.stderr, flush=True)
    return proc.returncode


def spark_submit_command(job: str, job_args: list[str], master: str = "local[*]",
                         conf: list[str] | None = None, driver_memory: str = "2g") -> list[str]:
    """The ``spark-submit`` command line that runs ``jobs/<job>`` (run it with :func:`spark_env`).

    Raises
    ------
    ValueError
        If a ``--conf`` entry is not KEY=VALUE.
    """
    script = jobs_dir() / job
    cmd = [spark_submit_path(), "--master", master, "--driver-memory", driver_memory]
    conf = list(conf or [])
    for c in conf:
        if "=" not in c:
            raise ValueError(f"--conf {c!r} is not KEY=VALUE; write it like spark.executor.memory=4g.")
    if not any(c.startswith("spark.driver.extraJavaOptions=") for c in conf):
        conf.append(f"spark.driver.extraJavaOptions=-Dlog4j2.configurationFile={LOG4J2_CONFIG}")
    for c in conf:
        cmd += ["--conf", c]
    if not master.startswith("local"):
        # Ship the package to remote executors as a zip (built once per call).
        cmd += ["--py-files", str(_package_zip())]
    return cmd + [str(script), *job_args]


def _package_zip() -> Path:
    import shutil
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="bowsvm-pyfiles-")) / "bowsvm"
    return Path(shutil.make_archive(str(out), "zip", root_dir=REPO_ROOT, base_dir="bowsvm"))


def stage_tokens(tokens: list[str]) -> list[str]:
    """The tokens of a Spark stage's command line that are the stage's own options.

    The CLI hands the job script the user's own tokens minus the Spark options
    (``--master``, ``--conf``, ``--driver-memory``), so the job parses exactly
    what the user typed, with the same ``add_arguments``. Parsers do not take
    abbreviated options (``allow_abbrev=False``), so a token is either a Spark
    option by its full name or the stage's.
    """
    import argparse

    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_spark_arguments(p)
    return p.parse_known_args(tokens)[1]


def submit_stage(stage, args) -> int:
    """The CLI side of a Spark stage: run ``jobs/<stage.JOB>`` under spark-submit.

    ``args`` is the CLI's namespace; its ``_tokens`` are the command line after
    the subcommand's name (set by :func:`bowsvm.cli.main`).
    """
    return spark_submit(stage.JOB, stage_tokens(args._tokens), master=args.master,
                        conf=args.conf, driver_memory=args.driver_memory)


def stage_parser(stage, prog: str):
    """The argparse parser of a stage's options (the job script's, and the CLI's base)."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=stage.DESCRIPTION, allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    stage.add_arguments(p)
    return p


def run_stage_job(stage) -> None:
    """Entry point of a script in jobs/: parse, check, build the session, run the stage.

    ``stage`` is a module of :mod:`bowsvm.stages` with ``JOB``, ``add_arguments``,
    ``check_arguments`` and ``run_spark(spark, args)``; its optional
    ``spark_conf(args) -> dict`` gives session defaults (``--conf`` wins).
    Exits like :func:`run_job`.
    """
    def main() -> int:
        args = stage_parser(stage, stage.JOB).parse_args(sys.argv[1:])
        stage.check_arguments(args)  # before the session: a mistake costs no executors
        conf = stage.spark_conf(args) if hasattr(stage, "spark_conf") else None
        spark = build_session(f"bowsvm-{stage.NAME}", conf)
        try:
            return int(stage.run_spark(spark, args) or 0)
        finally:
            spark.stop()

    run_job(main, stage.JOB)


def _appends(fdinfo: str) -> bool:
    """Whether the descriptor described by a /proc fdinfo file has O_APPEND set."""
    try:
        with open(fdinfo) as f:
            for line in f:
                if line.startswith("flags:"):
                    return bool(int(line.split()[1], 8) & os.O_APPEND)
    except (OSError, ValueError, IndexError):
        pass
    return False


def caller_stderr(final: bool = False):
    """A text stream to the stderr of whoever ran ``spark-submit``, else ``sys.stderr``.

    spark-submit runs a Python driver as a child of its JVM with the child's
    stderr merged into the JVM's *stdout* (Spark's PythonRunner), so a job's
    error message would land on stdout. When this process is such a child
    (``PYSPARK_GATEWAY_PORT`` is set, our fd 1 and fd 2 are one pipe) and the
    JVM's own stdout and stderr differ, the JVM's stderr is reopened through
    ``/proc/<ppid>/fd/2`` (append mode). Anything else (plain ``python``,
    no /proc, a permission error) gives ``sys.stderr``.

    Parameters
    ----------
    final : bool
        For the last message of a job (the JVM writes nothing after it): also
        use a caller's stderr redirected to a regular file without O_APPEND
        (``2>file``). Without ``final`` such a file is not shared, since the
        JVM's writes (at its own offset) would overwrite ours.
    """
    if "PYSPARK_GATEWAY_PORT" not in os.environ or not os.path.isdir("/proc/self/fd"):
        return sys.stderr
    try:
        same = lambda a, b: (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)  # noqa: E731
        if not same(os.fstat(1), os.fstat(2)):
            return sys.stderr  # not merged: our stderr already is a stderr
        ppid = os.getppid()
        parent_out = os.stat(f"/proc/{ppid}/fd/1")
        parent_err = os.stat(f"/proc/{ppid}/fd/2")
        if same(parent_out, parent_err):
            return sys.stderr  # the caller sees both in one place anyway
        if (not final and stat.S_ISREG(parent_err.st_mode)
                and not _appends(f"/proc/{ppid}/fdinfo/2")):
            return sys.stderr  # `2>file`: our writes and the JVM's would overwrite each other
        fd = os.open(f"/proc/{ppid}/fd/2", os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return sys.stderr
    return open(fd, "w", buffering=1, encoding="utf-8", errors="replace")


def run_job(main, prog: str) -> None:
    """Entry point of a script in jobs/: exit 2 with a one-line message on bad input.

    ``main()`` parses and checks its arguments before it builds the Spark
    session. Its stderr (argparse usage errors, progress lines) and the final
    error message go to the caller's stderr (:func:`caller_stderr`), not to
    spark-submit's stdout.
    """
    import contextlib

    stream, err = caller_stderr(), caller_stderr(final=True)
    try:
        with contextlib.redirect_stderr(stream):
            code = main()
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
        print(f"{prog}: error: {exc}", file=err, flush=True)
        code = 2
    except Exception:  # a bug or a Spark failure: the traceback, on stderr too
        import traceback

        traceback.print_exc(file=err)
        code = 1
    stream.flush()
    err.flush()
    sys.exit(code)


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
    # Our own _SUCCESS marker (bowsvm.io.atomic) is the one that counts.
    spark.sparkContext._jsc.hadoopConfiguration().set(
        "mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    spark.sparkContext.setLogLevel(os.environ.get("BOWSVM_SPARK_LOG_LEVEL", "WARN"))
    return spark


class SparkProgress:
    """One-line progress reports per Spark stage in the driver log.

    A daemon thread polls the status tracker and prints a line when a stage's
    completed-task count changes (at most every ``interval`` seconds per stage)
    and when it finishes. Use as a context manager around the actions of a job.
    """

    def __init__(self, spark, prefix: str = "bowsvm", interval: float = 5.0, stream=None):
        import threading

        self._sc = spark.sparkContext
        self._prefix = prefix
        self._interval = interval
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._seen: dict[int, tuple[int, float]] = {}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=2 * self._interval)
        self._poll()
        return False

    def _loop(self):
        while not self._stop.wait(min(1.0, self._interval)):
            try:
                self._poll()
            except Exception:  # the tracker may vanish while the context stops
                return

    def _poll(self):
        import time

        tracker = self._sc.statusTracker()
        now = time.monotonic()
        for sid in list(tracker.getActiveStageIds()) + list(self._seen):
            info = tracker.getStageInfo(sid)
            if info is None:
                continue
            done, total = info.numCompletedTasks, info.numTasks
            last = self._seen.get(sid)
            if last is not None and last[0] == -1:
                continue  # already reported finished
            finished = done >= total and total > 0
            if last is None or finished or (done != last[0] and now - last[1] >= self._interval):
                name = info.name.split(" at ")[0]
                state = "done" if finished else "running"
                print(f"[{self._prefix}] stage {sid} ({name}): {done}/{total} tasks {state}"
                      + (f", {info.numFailedTasks} failed attempts" if info.numFailedTasks else ""),
                      file=self._stream, flush=True)
                self._seen[sid] = (-1, now) if finished else (done, now)


def image_rows(spark, images, columns):
    """A DataFrame of the image shards' ``columns`` (a `bowsvm prepare` output, checked).

    A local folder is read by Spark's Parquet reader. At a URI (an object store,
    HDFS: :mod:`bowsvm.io.store`) Spark has no connector, so the shards the
    manifest lists are spread over tasks, one file each, which read them with
    pyarrow (page checksums verified, a corrupt shard named).
    """
    from bowsvm.io import parquet
    from bowsvm.io.image_shards import check_image_shards, image_shard_dir, shard_schema
    from bowsvm.io.store import Location, resolve

    shards = image_shard_dir(images)
    if not isinstance(shards, Location):
        return spark.read.parquet(str(shards)).select(*columns)
    uris = [f.uri for f in check_image_shards(images)]
    schema = shard_schema(columns)
    ddl = ", ".join(f"{f.name} {dict(string='string', int32='int', binary='binary')[str(f.type)]}"
                    for f in schema)

    def read(batches):
        import pyarrow as pa

        for rb in batches:
            for uri in rb.column("uri").to_pylist():
                for b in parquet.iter_batches(resolve(uri), "image shard", columns=list(columns),
                                              batch_size=256):
                    yield pa.RecordBatch.from_arrays(
                        [b.column(c).cast(schema.field(c).type) for c in columns], schema=schema)

    return (spark.createDataFrame([(u,) for u in uris], "uri string")
            .repartition(max(1, len(uris))).mapInArrow(read, ddl))
