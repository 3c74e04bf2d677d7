"""Multi-executor rehearsal (issue 15, items 4-5): every Spark stage on a real cluster
with one executor SIGKILLed mid-stage gives the output of a ``local[2]`` run.

Each stage (prepare, codebook, extract, the class-group training job) runs twice through
real ``spark-submit``, as the CLI launches it (:func:`bowsvm.spark.spark_submit_command`):
once on ``local[2]`` (the reference) and once on ``local-cluster[2,1,1024]`` (a standalone
master and two workers, each worker's executor a JVM of its own). During the cluster run
:func:`run_killing_an_executor` SIGKILLs one executor JVM by its pid while a task of the
stage runs on it; the worker relaunches an executor, Spark retries the lost tasks, and the
stage must exit 0 with output identical to the reference. Both runs read the same inputs
(the reference outputs of the stages before).

Why "identical" means equal bits here: every stage's output depends only on its input
rows and seeds, never on which executor ran a task or which attempt won (prepare: a
seeded hold-out over Spark's own Parquet writer, partitions in input order; codebook:
the sample is drawn per (seed, id) and gathered in id order, K-means runs on the driver;
extract: range partitions by id, one file series per partition; training: each group's
task sees exactly the local sample sequence, single-threaded). Both runs are on this
machine with one thread per task, so the BLAS calls see the same shapes and thread
counts (docs/STYLE.md, item 14). Only timing fields of the manifests differ.

Timing: the first attempt of each stage's task 0 announces itself in a marker file and
pauses (:data:`bowsvm.spark.PAUSE_FIRST_ATTEMPT_ENV`), so the kill lands while a task
surely runs; the helper fails loudly if the stage ends before it could kill, and the test checks
the driver's log for the lost executor's failed task.
"""

import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bowsvm import cli
from bowsvm.spark import PAUSE_FIRST_ATTEMPT_ENV, spark_env, spark_submit_command
from bowsvm.stages import codebook, extract, prepare, train

pytestmark = pytest.mark.slow

CLUSTER = "local-cluster[2,1,1024]"
REFERENCE = "local[2]"
FEATURE_SET = "quick-lcc-hog"
#: Seconds the first attempt of a stage's task 0 pauses in the cluster runs (the kill window).
PAUSE = 2.0
#: Fields of the manifests that are timings or name the master (all else must be equal).
TIMING_KEYS = {"seconds", "spark_start_seconds", "kmeans_seconds", "em_seconds",
               "images_per_second", "master", "default_parallelism", "timings"}
TRAIN_ARGS = ["--epochs", "2", "--groups", "2", "--n-jobs", "1", "--seed", "3",
              "--eta0", "auto", "--memory-budget", "64KB"]


# ------------------------------------------------------------------ helpers

def write_idx_subset(folder, fashion_dir, n_train=300, n_test=100):
    """The first images of Fashion-MNIST's train and test files as a (plain) IDX folder."""
    from bowsvm.io.images import load_idx_dataset

    data = load_idx_dataset(fashion_dir)
    folder.mkdir(parents=True)
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        X, y = data[split]
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">BBBB3I", 0, 0, 8, 3, n, *X.shape[1:]) + X[:n].astype(np.uint8).tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">BBBBI", 0, 0, 8, 1, n) + y[:n].astype(np.uint8).tobytes())
    return folder


def run_job(stage, job_args, master, log, env=None, timeout=300):
    """Run ``jobs/<stage.JOB>`` under spark-submit; its stdout and stderr go to ``log``."""
    with open(log, "a") as out:
        proc = subprocess.run(spark_submit_command(stage.JOB, job_args, master),
                              env=spark_env(env), stdout=out, stderr=out, timeout=timeout)
    return proc.returncode, Path(log).read_text()


def executor_of(pid, launcher):
    """The executor JVM (a ``CoarseGrainedExecutorBackend``) that ``pid`` runs under, or
    None; only one that descends from ``launcher`` (the spark-submit this test started)."""
    import psutil

    try:
        chain = psutil.Process(pid).parents()
    except psutil.NoSuchProcess:
        return None
    if launcher not in [p.pid for p in chain]:
        return None
    for p in chain:
        try:
            if any("CoarseGrainedExecutorBackend" in a for a in p.cmdline()):
                return p
        except psutil.NoSuchProcess:
            return None
    return None


def run_killing_an_executor(stage, job_args, tmp, env=None, timeout=300):
    """Run a stage on :data:`CLUSTER`; SIGKILL one executor while a task of it runs.

    The first attempt of task 0 of each stage writes a marker named after its Python
    worker's pid and pauses :data:`PAUSE` seconds; on the first marker, the executor JVM
    above that worker (and below our spark-submit) is killed. Returns ``(exit code, log,
    {"pid", "cwd"} of the killed executor)``. Fails if the stage ended before a kill.
    """
    import psutil

    marks, log = tmp / "marks", tmp / "cluster.log"
    env = {PAUSE_FIRST_ATTEMPT_ENV: f"{PAUSE}:{marks}", **(env or {})}
    with open(log, "a") as out:
        proc = subprocess.Popen(spark_submit_command(stage.JOB, job_args, CLUSTER),
                                env=spark_env(env), stdout=out, stderr=out,
                                start_new_session=True)
    killed, deadline = None, time.monotonic() + timeout
    try:
        while proc.poll() is None and killed is None:
            if time.monotonic() > deadline:
                pytest.fail(f"{stage.JOB} on {CLUSTER} ran over {timeout} s; log: {log}")
            for m in sorted(marks.glob("task-*")) if marks.is_dir() else []:
                jvm = executor_of(int(m.suffix[1:]), proc.pid)
                if jvm is not None:
                    killed = {"pid": jvm.pid, "cwd": Path(jvm.cwd())}  # its work folder
                    jvm.send_signal(signal.SIGKILL)
                    jvm.wait(30)
                    break
            time.sleep(0.05)
        proc.wait(max(1.0, deadline - time.monotonic()))
    except BaseException:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the spark-submit we started
            proc.wait()
        raise
    text = log.read_text()
    if killed is None:
        pytest.fail(f"{stage.JOB} finished (exit {proc.returncode}) before an executor could be "
                    f"killed mid-stage: no task marker under an executor in {marks}; raise "
                    f"PAUSE or the input size. Log tail:\n{text[-3000:]}")
    return proc.returncode, text, killed


def assert_lost_mid_stage(text):
    """The driver saw an executor die of SIGKILL (exit 137) with a task of the stage on it."""
    assert "exited with code 137" in text, text[-4000:]
    assert "ExecutorLostFailure" in text, text[-4000:]  # a running task went with it


def manifest(folder):
    m = json.loads((Path(folder) / "manifest.json").read_text())
    return {k: v for k, v in m.items() if k not in TIMING_KEYS}


def parquet_rows(files):
    return [pq.read_table(f).to_pylist() for f in files]


# ------------------------------------------------------------------ the runs

@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, fashion_dir):
    """Reference outputs of every stage (local[2]) and each stage's killed cluster run.

    ``runs[stage] = (reference folder, cluster folder, exit code, log, killed executor)``.
    Every stage reads the reference output of the stage before, so the reference run of
    the next stage goes on (in a thread) while the cluster run of this one is killed.
    """
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("rehearsal")
    idx = write_idx_subset(root / "idx", fashion_dir)
    ref, clu = root / "ref", root / "cluster"
    img = ref / "images"
    stages = [  # (stage, its arguments given the output root, its output, extra env)
        (prepare, lambda d: ["--fashion-mnist", str(idx), "--output", str(d / "images"),
                             "--val-per-class", "5"], lambda d: d / "images", None),
        (codebook, lambda d: ["--feature-set", FEATURE_SET, "--images", str(img),
                              "--codebooks", str(d / "codebooks")],
         lambda d: d / "codebooks" / FEATURE_SET, None),
        (extract, lambda d: ["--feature-set", FEATURE_SET, "--images", str(img),
                             "--codebooks", str(ref / "codebooks"), "--features", str(d / "features")],
         lambda d: d / "features" / FEATURE_SET, None),
        # Training: the executors' scratch folders here, to show they stage no shard there.
        (train, lambda d: ["--feature-set", FEATURE_SET, "--features", str(ref / "features"),
                           "--models", str(d / "models"), *TRAIN_ARGS],
         lambda d: d / "models" / FEATURE_SET, {"SPARK_LOCAL_DIRS": str(root / "executor-local")}),
    ]

    def reference(k):
        stage, args_for, _, _ = stages[k]
        return run_job(stage, args_for(ref), REFERENCE, root / f"{stage.NAME}-ref.log")

    runs = {}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(reference, 0)
        for k, (stage, args_for, out_for, env) in enumerate(stages):
            rc, text = pending.result()
            assert rc == 0, f"{stage.JOB} on {REFERENCE}:\n{text[-3000:]}"
            if k + 1 < len(stages):
                pending = pool.submit(reference, k + 1)
            work = root / f"{stage.NAME}-run"
            work.mkdir()
            rc, text, killed = run_killing_an_executor(stage, args_for(clu), work, env=env)
            runs[stage.NAME] = (out_for(ref), out_for(clu), rc, text, killed)
    return root, runs


def cluster_run(rehearsal, name):
    """The cluster run of stage ``name``, checked: exit 0 after a mid-stage executor loss."""
    ref, clu, rc, text, _ = rehearsal[1][name]
    assert rc == 0, text[-4000:]
    assert_lost_mid_stage(text)
    return ref, clu


def test_prepare_survives_a_lost_executor(rehearsal):
    ref, clu = cluster_run(rehearsal, "prepare")
    assert manifest(clu) == manifest(ref)
    assert manifest(ref)["n_images"] == 400
    # Spark's writer names files part-NNNNN-<job uuid>; their rows, in order, must agree.
    ref_files, clu_files = (sorted((d / "shards").glob("part-*.parquet")) for d in (ref, clu))
    assert [f.name[:10] for f in clu_files] == [f.name[:10] for f in ref_files]
    assert parquet_rows(clu_files) == parquet_rows(ref_files)
    assert parquet_rows(sorted((clu / "rejects").glob("part-*.parquet"))) == \
        parquet_rows(sorted((ref / "rejects").glob("part-*.parquet")))


def test_codebook_survives_a_lost_executor(rehearsal):
    ref, clu = cluster_run(rehearsal, "codebook")
    assert manifest(clu) == manifest(ref)
    a, b = np.load(ref / "codebook.npz"), np.load(clu / "codebook.npz")
    assert sorted(a.files) == sorted(b.files) and "bases" in a.files
    for k in a.files:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k  # exact
    assert not (clu / codebook.SAMPLE_DIR).exists()


def test_extract_survives_a_lost_executor(rehearsal):
    ref, clu = cluster_run(rehearsal, "extract")
    assert manifest(clu) == manifest(ref)  # its "shards" hold every file's SHA-256
    names = lambda d: sorted(str(f.relative_to(d)) for f in d.rglob("*.parquet"))  # noqa: E731
    assert names(clu) == names(ref) and not (clu / "_attempts").exists()
    for rel in names(ref):
        assert (clu / rel).read_bytes() == (ref / rel).read_bytes(), rel  # bit for bit


def test_class_groups_survive_a_lost_executor(rehearsal):
    ref, clu = cluster_run(rehearsal, "train")
    for f in ("coef.npy", "intercept.npy"):
        assert np.load(clu / f).tobytes() == np.load(ref / f).tobytes(), f
    strip = lambda d: [{k: v for k, v in json.loads(r).items() if k != "seconds"}  # noqa: E731
                       for r in (d / "log.jsonl").read_text().splitlines()]
    assert strip(clu) == strip(ref) and len(strip(ref)) == 2
    assert manifest(clu) == manifest(ref) and manifest(clu)["groups"] == 2
    assert not (clu.parent / f".{FEATURE_SET}.groups").exists()


def test_class_groups_stream_from_the_shared_store(rehearsal, tmp_path):
    """Item 5: the groups' tasks read the shards where they lie (the shared store), copy
    none to the executors' disks, and give the model of a one-machine `bowsvm train`."""
    root = rehearsal[0]
    _, clu = cluster_run(rehearsal, "train")
    # The application's folder of executor work folders (SPARK_HOME/work/APP/EXECUTOR:
    # local-cluster does not move it), and the executors' scratch folders.
    work, local = rehearsal[1]["train"][4]["cwd"].parent, root / "executor-local"
    assert work.name.startswith("app-") and list(work.glob("*/stderr")), work
    for d in (work, local):  # no shard (no Parquet file at all) was staged on their disks
        assert not [f for f in d.rglob("*") if f.suffix == ".parquet"], d
    features = root / "ref" / "features"
    assert cli.main(["train", "--feature-set", FEATURE_SET, "--features", str(features),
                     "--models", str(tmp_path), "--quiet", *TRAIN_ARGS]) == 0
    one = tmp_path / FEATURE_SET
    for f in ("coef.npy", "intercept.npy"):  # the same single-threaded sample sequence: exact
        assert np.load(clu / f).tobytes() == np.load(one / f).tobytes(), f
