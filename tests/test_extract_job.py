"""Spark codebook and extraction jobs: same features as the in-process API, retries, refusal."""

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fmnist_image_rows, kill_while_writing
import scipy.sparse as sp

from bowsvm.coding import Codebook
from bowsvm.stages.extract import (
    FAIL_FIRST_ATTEMPT_ENV, commit_task_output, extract_local, row_order_key, write_task_output,
)
from bowsvm.io import atomic_output_dir, is_complete, read_manifest, write_json_atomic
from bowsvm.io.features import shard_files, table_to_features
from bowsvm.io.images import FASHION_MNIST_CLASSES

pytestmark = pytest.mark.slow
N_PER_SPLIT = {"train": 60, "val": 20, "test": 40}


def run_bowsvm(*args, env=None, timeout=600):
    full = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "bowsvm.cli", *args], env=full,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def images(tmp_path_factory, fashion_dir):
    """Image shards written directly in the prepare format, with one corrupt image."""
    return write_image_shards(tmp_path_factory.mktemp("img") / "images", fashion_dir)


def write_image_shards(root, fashion_dir, n_per_split=None):
    """The ``images`` fixture's folder (also used by test_fisher_stages.py, test_object_store.py)."""
    rows = fmnist_image_rows(fashion_dir, n_per_split or N_PER_SPLIT)
    with atomic_output_dir(root) as tmp:
        (tmp / "shards").mkdir()
        t = pa.Table.from_pylist(rows)
        pq.write_table(t.slice(0, 70), tmp / "shards" / "part-00000.parquet")
        pq.write_table(t.slice(70), tmp / "shards" / "part-00001.parquet")
        write_json_atomic(tmp / "manifest.json", {
            "stage": "prepare", "classes": list(FASHION_MNIST_CLASSES), "n_images": len(rows)})
    return root


@pytest.fixture(scope="module")
def codebooks(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("cb")
    for name, engine in (("quick-lcc-hog", "local"), ("quick-lcc-hoglbp", "mllib")):
        proc = run_bowsvm("codebook", "--feature-set", name, "--images", str(images),
                          "--codebooks", str(root), "--kmeans", engine, "--master", "local[2]")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        if engine == "local":  # bowsvm's K-means shows one line per pass
            assert "[kmeans] pass 1 on " in proc.stderr, proc.stderr[-3000:]
    return root


def read_features(folder):
    m = read_manifest(folder, stage="extract")
    out = {}
    for split in m["counts"]:
        ids, labels, Xs = [], [], []
        for f in shard_files(folder, split):
            i, lab, X = table_to_features(pq.read_table(f), m["dim"])
            ids.append(i), labels.append(lab), Xs.append(X)
        X = sp.vstack(Xs).tocsr() if m["layout"] == "sparse" else np.concatenate(Xs)
        ids = np.concatenate(ids)
        order = np.argsort(ids)
        out[split] = (ids[order], np.concatenate(labels)[order], X[order])
    return m, out


def assert_same_features(got, expected):
    assert sorted(got) == sorted(expected)
    for split in expected:
        gi, gl, gX = got[split]
        order = np.argsort(expected[split][0])  # extract_local keeps the stage's row order
        ei, el, eX = (a[order] for a in expected[split])
        assert list(gi) == list(ei)
        assert np.array_equal(gl, el)
        g = gX.toarray() if sp.issparse(gX) else gX
        e = eX.toarray() if sp.issparse(eX) else eX
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_codebook_jobs(codebooks, images):
    for name, engine in (("quick-lcc-hog", "local"), ("quick-lcc-hoglbp", "mllib")):
        m = read_manifest(codebooks / name, stage="codebook")
        cb = Codebook.load(codebooks / name)
        assert m["kmeans"] == engine and m["codebook_hash"] == cb.hash
        assert cb.n_bases == m["n_bases"] and np.isfinite(cb.bases).all()
        assert m["images_classes"] == list(FASHION_MNIST_CLASSES)


@pytest.mark.parametrize("name,master", [
    ("quick-lcc-hog", "local[2]"),
    ("quick-lcc-hoglbp", "local-cluster[2,1,1024]"),
])
def test_spark_extraction_equals_in_process(name, master, images, codebooks, tmp_path):
    proc = run_bowsvm("extract", "--feature-set", name, "--images", str(images),
                      "--codebooks", str(codebooks), "--features", str(tmp_path),
                      "--master", master)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[extract] stage" in proc.stdout + proc.stderr
    m, got = read_features(tmp_path / name)
    cb = Codebook.load(codebooks / name)
    expected = extract_local(images, name, cb)
    assert_same_features(got, expected)
    for split in ("train", "test"):  # rows in SHA-256 order of the id: classes mixed
        ids = [i for f in sorted((tmp_path / name / split).glob("*.parquet"))
               for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]
        keys = [row_order_key(i) for i in ids]
        assert keys == sorted(keys) and list(expected[split][0]) == ids
    assert m["counts"] == {"train": 60, "val": 20, "test": 40}
    assert m["n_rejected"] == 1
    rej = pq.read_table(tmp_path / name / "rejects").to_pylist()
    assert rej[0]["id"] == "train-corrupt" and "undecodable" in rej[0]["error"]
    assert m["layout"] == ("dense" if name == "quick-lcc-hog" else "sparse")
    assert m["codebook_hash"] == cb.hash and m["classes"] == list(FASHION_MNIST_CLASSES)

    # A second run refuses to overwrite.
    proc = run_bowsvm("extract", "--feature-set", name, "--images", str(images),
                      "--codebooks", str(codebooks), "--features", str(tmp_path))
    assert proc.returncode == 2 and "already exists; pass --overwrite" in proc.stderr


def test_failed_first_attempts_give_identical_output(images, codebooks, tmp_path):
    name = "quick-lcc-hog"
    outs = {}
    for tag, env in (("clean", {}), ("faulty", {FAIL_FIRST_ATTEMPT_ENV: "1"})):
        proc = run_bowsvm("extract", "--feature-set", name, "--images", str(images),
                          "--codebooks", str(codebooks), "--features", str(tmp_path / tag),
                          "--master", "local[2,4]", "--partitions", "4", env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outs[tag] = tmp_path / tag / name
    assert "failed attempts" in proc.stdout + proc.stderr  # the injection did fire
    for split in ("train", "val", "test"):
        a = [f.read_bytes() for f in shard_files(outs["clean"], split)]
        b = [f.read_bytes() for f in shard_files(outs["faulty"], split)]
        assert a == b  # bit for bit


def test_extract_refuses_mismatched_codebook(images, codebooks, tmp_path):
    proc = run_bowsvm("extract", "--feature-set", "quick-lcc-hog", "--preset", "quick-sv-hog",
                      "--images", str(images), "--codebooks", str(codebooks),
                      "--features", str(tmp_path))
    assert proc.returncode != 0
    assert "does not match what this stage expects (preset_hash" in proc.stdout + proc.stderr
    assert not (tmp_path / "quick-lcc-hog").exists()


def test_killed_extraction_leaves_nothing_complete(images, codebooks, tmp_path):
    kill_while_writing(["extract", "--feature-set", "quick-lcc-hog", "--images", str(images),
                        "--codebooks", str(codebooks), "--features", str(tmp_path),
                        "--master", "local[2]"], tmp_path, "quick-lcc-hog")
    assert not (tmp_path / "quick-lcc-hog").exists()
    assert not any(is_complete(p) for p in tmp_path.iterdir())


def test_task_output_commit_keeps_only_successful_attempts(tmp_path):
    def batch(ids, splits, errors):
        n = len(ids)
        return pa.RecordBatch.from_pydict({
            "id": ids, "label": list(range(n)), "split": splits, "error": errors,
            "x": pa.array([[float(i), 1.0] for i in range(n)], pa.list_(pa.float32()))})

    batches = [batch(["a", "b", "c"], ["train", "test", "train"], [None, None, "bad"]),
               batch(["d", "e", "f"], ["train", "train", "train"], [None, None, None])]
    attempts = tmp_path / "_attempts"
    # attempt 0 "fails": its files stay behind but its results are never collected
    list(write_task_output(iter(batches), attempts, partition=3, attempt=0, dim=2, rows_per_file=2))
    (res,) = list(write_task_output(iter(batches), attempts, partition=3, attempt=1, dim=2,
                                    rows_per_file=2))
    rows = res.to_pylist()
    rejects = commit_task_output(rows, attempts, tmp_path / "out")
    assert [r["id"] for r in rejects] == ["c"] and rejects[0]["error"] == "bad"
    assert not attempts.exists()  # failed attempt's files are gone
    train = shard_files(tmp_path / "out", "train")
    assert [f.name for f in train] == ["part-00003-000.parquet", "part-00003-001.parquet"]
    t = pa.concat_tables([pq.read_table(f) for f in train])
    assert t.column("id").to_pylist() == ["a", "d", "e", "f"]
    assert t.column_names == ["id", "label", "x"]
    assert t.schema.field("x").type == pa.list_(pa.float32(), 2)  # fixed size, per FORMATS
    assert pq.read_table(shard_files(tmp_path / "out", "test")[0]).column("id").to_pylist() == ["b"]
