"""Feature shards on pyarrow.fs file systems: a real S3 server (moto) and the local file system.

The S3-compatible server is moto's, started as its own process on a free loopback
port, so Spark's Python workers (other processes) reach it as they would a real
store. Every test runs on S3 and on the local file system (a ``file://`` URI:
the same manifest commit through pyarrow's LocalFileSystem); the extraction,
training and scoring tests compare against the same stages run on a plain local
folder (temporary folder, then rename).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from test_extract_job import assert_same_features, read_features, run_bowsvm, write_image_shards

from bowsvm.io import parquet
from bowsvm.io.atomic import atomic_output_dir, check_target, prepare_target
from bowsvm.io.features import (
    ShardWriter, attempt_file, iter_chunks, open_feature_set, scan_split, shard_entries,
)
from bowsvm.io.manifest import write_manifest
from bowsvm.io.store import MANIFEST, SUCCESS, Location, resolve

BUCKET = "bowsvm-test"
DIM = 6
CLASSES = ["a", "b", "c"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """``HOST:PORT`` of a moto S3 server process on loopback, with one bucket."""
    exe = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(exe):
        pytest.fail("moto_server is missing: install the test extra (pip install -e '.[test]', "
                    "which brings moto[server]); ./run test does")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail(f"moto_server did not start on 127.0.0.1:{port}")
                time.sleep(0.1)
        pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                          allow_bucket_creation=True).create_dir(BUCKET)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(params=["s3", "file"])
def root(request, tmp_path):
    """A fresh URI root: a prefix on the S3 server, or a local folder as a file:// URI."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        return (f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}?endpoint_override={endpoint}"
                f"&scheme=http")
    return (tmp_path / "store").as_uri()


def objects(loc: Location) -> list[str]:
    """Every file under ``loc`` (what a listing shows; readers never look)."""
    sel = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
    base = loc.path.rstrip("/") + "/"
    return sorted(i.path[len(base):] for i in loc.fs.get_file_info(sel) if i.type == pafs.FileType.File)


def rows_table(ids, labels, X):
    return pa.table({"id": [str(i) for i in ids], "label": pa.array(labels, pa.int32()),
                     "x": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), DIM)})


def write_feature_set(root, name, attempts, overwrite=False, fail=False):
    """A feature set written as the extract stage does: per partition, the attempts'
    ShardWriter series under the final prefix; only each partition's LAST attempt is
    committed. ``attempts``: {partition: [table, ...]} in attempt order."""
    out = resolve(root) / name
    with atomic_output_dir(out, overwrite, "extract", option="--features/NAME") as tmp:
        for p, tables in attempts.items():
            for a, t in enumerate(tables):
                w = ShardWriter(lambda k, p=p, a=a: attempt_file(tmp / "train", p, a, k, run=tmp.run),
                                DIM, "dense", rows_per_file=4)
                w.write(t)
                files = w.close()
            for f, _ in files:  # the winner: the last attempt
                tmp.commit(f)
        if fail:
            raise RuntimeError("killed")
        entries = shard_entries(tmp.root, tmp.files)
        write_manifest(tmp, {"stage": "extract", "dim": DIM, "layout": "dense", "classes": CLASSES,
                             "shards": entries, "counts": {"train": sum(e["rows"] for e in entries)}})
    return out


def read_train(root, name):
    """(ids, labels, X) of the train split, read by the readers training uses."""
    fs = open_feature_set(root, name)
    info = scan_split(fs, "train")
    labels, Xs = [], []
    for _, lab, X in iter_chunks(info, fs.dim, 3):
        labels.append(lab), Xs.append(X)
    return info, np.concatenate(labels), np.concatenate(Xs)


def data(seed, n):
    rng = np.random.default_rng(seed)
    return (np.array([f"s{seed}-{i:03d}" for i in range(n)]), rng.integers(0, 3, n),
            rng.uniform(-1, 1, (n, DIM)).astype(np.float32))


def test_commit_lists_exactly_the_winning_attempts(root):
    ids0, lab0, X0 = data(0, 9)
    ids1, lab1, X1 = data(1, 5)
    killed = rows_table(*data(7, 6))  # an attempt of partition 0 that lost (killed)
    out = write_feature_set(root, "fs", {0: [killed, rows_table(ids0, lab0, X0)],
                                         1: [rows_table(ids1, lab1, X1)]})
    m = json.loads((out / MANIFEST).read_bytes())
    listed = [e["path"] for e in m["files"]]
    assert m["commit"]["protocol"] == "manifest" and len(m["commit"]["run"]) == 12
    # exactly the winners: partition 0 attempt 1 (3 files of <= 4 rows), partition 1 attempt 0
    assert [p.split(".")[0] for p in listed] == ["train/part-00000-000", "train/part-00000-001",
                                                  "train/part-00000-002", "train/part-00001-000",
                                                  "train/part-00001-001"]
    assert all(".a1." in p for p in listed[:3]) and all(".a0." in p for p in listed[3:])
    assert [e["path"] for e in m["shards"]] == listed
    # the losing attempt's files were deleted at the commit; the marker came last
    assert objects(out) == sorted(listed + [MANIFEST, SUCCESS])
    info, labels, X = read_train(root, "fs")
    assert info.n == 14 and list(info.rows) == [4, 4, 1, 4, 1]
    np.testing.assert_array_equal(labels, np.concatenate([lab0, lab1]))
    np.testing.assert_array_equal(X, np.concatenate([X0, X1]))
    assert X.dtype == np.float32


def test_readers_ignore_what_the_manifest_does_not_list(root):
    ids0, lab0, X0 = data(0, 5)
    out = write_feature_set(root, "fs", {0: [rows_table(ids0, lab0, X0)]})
    run = json.loads((out / MANIFEST).read_bytes())["commit"]["run"]
    # a killed attempt's leftover (its delete never ran) and a foreign object, both under
    # train/ where a listing reader would pick them up
    extra_ids, extra_lab, extra_X = data(9, 3)
    parquet.write_table(rows_table(extra_ids, extra_lab, extra_X),
                        attempt_file(out / "train", 0, 3, 0, run=run))
    parquet.write_table(rows_table(extra_ids, extra_lab, extra_X), out / "train" / "part-99999.parquet")
    assert len(objects(out / "train")) == 2 + 2  # the two shards of 5 rows, and the two others
    info, labels, X = read_train(root, "fs")
    assert info.n == 5
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(labels, lab0)


def test_an_output_without_success_is_refused(root):
    out = write_feature_set(root, "fs", {0: [rows_table(*data(0, 5))]})
    (out / SUCCESS).fs.delete_file((out / SUCCESS).path)  # killed between manifest and marker
    with pytest.raises(FileNotFoundError, match=rf"{out}.* is not a complete bowsvm output "
                                                rf"\(no _SUCCESS there\).*--overwrite"):
        open_feature_set(root, "fs")
    with pytest.raises(FileNotFoundError, match=r"no _SUCCESS or manifest.json"):
        open_feature_set(root, "missing")
    # and the writer will not take the incomplete prefix over
    with pytest.raises(FileExistsError, match=rf"{out}.* not a complete bowsvm output"):
        prepare_target(out, True, "extract", option="--features/NAME")


def test_a_failed_run_leaves_the_previous_output(root):
    ids0, lab0, X0 = data(0, 5)
    out = write_feature_set(root, "fs", {0: [rows_table(ids0, lab0, X0)]})
    before = objects(out)
    with pytest.raises(RuntimeError, match="killed"):
        write_feature_set(root, "fs", {0: [rows_table(*data(1, 8))]}, overwrite=True, fail=True)
    assert objects(out) == before  # the failed run's files are gone, the old ones untouched
    np.testing.assert_array_equal(read_train(root, "fs")[2], X0)


def test_overwrite_deletes_only_what_the_old_manifest_lists(root, capsys):
    out = write_feature_set(root, "fs", {0: [rows_table(*data(0, 9))]})
    old = json.loads((out / MANIFEST).read_bytes())
    with pytest.raises(FileExistsError, match=rf"output '{out}' already exists; pass --overwrite"):
        prepare_target(out, False, "extract", option="--features/NAME")
    with pytest.raises(FileExistsError, match=r"holds the output of `bowsvm extract`, not of "
                                              r"`bowsvm score`"):
        check_target(out, True, "score", option="--scores")
    # a leftover of a run that never committed: left alone (and reported), not refused
    stale = attempt_file(out / "train", 5, 0, 0, run="0123456789ab")
    parquet.write_table(rows_table(*data(5, 2)), stale)
    ids1, lab1, X1 = data(1, 3)
    write_feature_set(root, "fs", {0: [rows_table(ids1, lab1, X1)]}, overwrite=True)
    assert "left 1 object(s)" in capsys.readouterr().err
    new = json.loads((out / MANIFEST).read_bytes())
    assert new["commit"]["run"] != old["commit"]["run"]
    assert objects(out) == sorted([e["path"] for e in new["files"]] + [MANIFEST, SUCCESS,
                                                                       stale.relative_to(out).as_posix()])
    np.testing.assert_array_equal(read_train(root, "fs")[2], X1)
    # an object bowsvm did not write makes the prefix foreign: never overwritten
    (out / "notes.txt").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=rf"'{out}' holds 1 object\(s\) bowsvm did not write "
                                              rf"\(first: '{out}/notes.txt'\)"):
        write_feature_set(root, "fs", {0: [rows_table(*data(2, 3))]}, overwrite=True)
    assert (out / "notes.txt").read_bytes() == b"mine"
    np.testing.assert_array_equal(read_train(root, "fs")[2], X1)


def test_a_changed_listed_shard_is_refused(root):
    out = write_feature_set(root, "fs", {0: [rows_table(*data(0, 5))]})
    shard = out / json.loads((out / MANIFEST).read_bytes())["files"][0]["path"]
    parquet.write_table(rows_table(*data(3, 5)), shard)  # same rows, other values
    with pytest.raises(ValueError, match=rf"shard '{shard}' (has \d+ bytes|does not match the SHA-256)"):
        scan_split(open_feature_set(root, "fs"), "train")


def test_internal_and_input_errors_are_named(root):
    out = resolve(root) / "fs"
    with pytest.raises(RuntimeError, match=rf"stage handed no manifest for {out}"):
        with atomic_output_dir(out, stage="extract"):
            pass
    with pytest.raises(FileNotFoundError, match=rf"committed file '{out}/train/x.parquet' is missing"):
        with atomic_output_dir(out, stage="extract") as tmp:
            tmp.commit(out / "train" / "x.parquet")
            write_manifest(tmp, {"stage": "extract"})
    with pytest.raises(ValueError, match=rf"'{out}/sub' overlaps the input '{out}'; a stage never "
                                         r"writes over or into its own inputs"):
        check_target(out / "sub", False, "extract", inputs=[out], option="--features/NAME")
    assert objects(out) == []  # nothing was left behind
    write_feature_set(root, "fs", {0: [rows_table(*data(0, 5))]})
    (out / MANIFEST).write_bytes(b"{not json")
    with pytest.raises(ValueError, match=rf"'{out}/manifest.json' is not valid JSON"):
        open_feature_set(root, "fs")
    (out / MANIFEST).write_bytes(json.dumps({"stage": "compress", "dim": DIM, "layout": "pq",
                                             "classes": CLASSES, "pq": {
                                                 "file": "pq.npz", "sha256": "0", "dims_per_code": 2,
                                                 "n_codes": 3, "n_centroids": 4}}).encode())
    with pytest.raises(ValueError, match=rf"'{out}' is product-quantized.*local folders only"):
        open_feature_set(root, "fs").pq_codebook()


def test_a_location_keeps_its_uri(root):
    from bowsvm.io.store import absolute

    loc = resolve(root) / "fs" / "train"
    assert resolve(loc.uri) == Location(loc.uri, "") and resolve(loc.uri).path == loc.path
    assert absolute(loc) == loc.uri and absolute(root) == root
    assert "?" not in str(loc) and str(loc).endswith("/fs/train")
    with pytest.raises(TypeError, match="is not a local path"):
        os.fspath(loc)


def test_a_bad_uri_is_named():
    with pytest.raises(ValueError, match=r"cannot open 'nosuchscheme://x/y' as a file system.*"
                                         r"s3://bucket/prefix"):
        open_feature_set("nosuchscheme://x/y", "fs")


# ----------------------------------------------------------- the stages, through Spark

N_PER_SPLIT = {"train": 36, "val": 12, "test": 12}
SET = "quick-lcc-hog"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, fashion_dir):
    """Images, a codebook, and the reference: extract, train, score on a plain local folder."""
    base = tmp_path_factory.mktemp("objstore")
    images = write_image_shards(base / "images", fashion_dir, N_PER_SPLIT)
    cb = base / "codebooks"
    ok(run_bowsvm("codebook", "--feature-set", SET, "--images", str(images), "--codebooks",
                  str(cb), "--kmeans", "local", "--master", "local[2]"))
    ref = base / "ref"
    stages(images, cb, str(ref / "features"), ref)
    return images, cb, ref


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def stages(images, codebooks, features, local):
    """extract to FEATURES (a folder or a URI) under spark-submit, then train and score from
    it (the `bowsvm` command in this process: no Spark there)."""
    from bowsvm.cli import main

    ok(run_bowsvm("extract", "--feature-set", SET, "--images", str(images), "--codebooks",
                  str(codebooks), "--features", features, "--master", "local[2]",
                  "--partitions", "3"))
    assert main(["train", "--feature-set", SET, "--features", features, "--models",
                 str(local / "models"), "--epochs", "3", "--quiet", "--n-jobs", "1"]) == 0
    assert main(["score", "--feature-set", SET, "--split", "test", "--features", features,
                 "--models", str(local / "models"), "--scores", str(local / "scores")]) == 0


@pytest.mark.slow
def test_extract_train_score_on_a_uri_equal_a_local_folder(root, pipeline, tmp_path, capsys):
    from bowsvm.io.models import load_model
    from bowsvm.io.scores import read_scores

    images, codebooks, ref = pipeline
    if root.startswith("s3://"):  # the whole way on the store: image shards there too
        images = copy_images_to(images, root.replace("?", "-images/images?", 1))
    stages(images, codebooks, root, tmp_path)
    # the shards, read through the feature readers, hold the local folder's rows
    m_ref, want = read_features(ref / "features" / SET)
    fs = open_feature_set(root, SET)
    assert isinstance(fs.folder, Location) and fs.manifest["counts"] == m_ref["counts"]
    assert fs.manifest["n_rejected"] == m_ref["n_rejected"] == 1
    got = {}
    for split in m_ref["counts"]:
        info = scan_split(fs, split)
        labels, Xs = zip(*[(lab, X) for _, lab, X in iter_chunks(info, fs.dim, 1000)])
        ids = np.concatenate([parquet.read_table(f, columns=["id"]).column("id").to_numpy(
            zero_copy_only=False) for f in info.files])
        X = np.concatenate([x.toarray() if hasattr(x, "toarray") else x for x in Xs])
        order = np.argsort(ids)
        got[split] = (ids[order], np.concatenate(labels)[order], X[order])
    assert_same_features(got, {s: (i, lab, X.toarray() if hasattr(X, "toarray") else X)
                               for s, (i, lab, X) in want.items()})
    listed = {e["path"] for e in fs.manifest["files"]}
    assert {e["path"] for e in fs.manifest["shards"]} | {
        p for p in listed if p.startswith("rejects/")} == listed
    assert objects(fs.folder) == sorted(listed | {MANIFEST, SUCCESS})
    # the same model and the same scores as from the local folder
    a, b = load_model(ref / "models" / SET), load_model(tmp_path / "models" / SET)
    np.testing.assert_array_equal(a.coef, b.coef)
    np.testing.assert_array_equal(a.intercept, b.intercept)
    sa, sb = read_scores(ref / "scores" / SET / "test"), read_scores(tmp_path / "scores" / SET / "test")
    assert list(sa.ids) == list(sb.ids)
    np.testing.assert_array_equal(sa.scores, sb.scores)
    # a second extract to the same URI is refused (before Spark starts) without --overwrite
    from bowsvm.cli import main

    assert main(["extract", "--feature-set", SET, "--images", str(images), "--codebooks",
                 str(codebooks), "--features", root]) == 2
    assert f"output '{fs.folder}' already exists; pass --overwrite" in capsys.readouterr().err


# ----------------------------------------------------------- image shards at a URI

def copy_images_to(images, uri):
    """The local image shards re-committed at ``uri`` (the manifest commit, in-process)."""
    from bowsvm.io.manifest import read_manifest

    m = read_manifest(images, stage="prepare")
    with atomic_output_dir(uri, stage="prepare", option="--output") as tmp:
        for i, f in enumerate(sorted((images / "shards").glob("*.parquet"))):
            dst = tmp / "shards" / tmp.tagged(f"part-{i:05d}.parquet")
            parquet.write_table(parquet.read_table(f), dst)
            tmp.commit(dst)
        write_manifest(tmp, m)
    return uri


@pytest.mark.slow
def test_codebook_reads_image_shards_at_a_uri(pipeline, s3_endpoint, tmp_path):
    """The codebook learned from image shards at a URI is the one learned from the same
    shards in a local folder (extraction from such shards: the S3 case above)."""
    from bowsvm.coding import Codebook
    from bowsvm.io.manifest import read_manifest

    images, codebooks, ref = pipeline
    uri = copy_images_to(images, f"s3://{BUCKET}/img-{uuid.uuid4().hex[:8]}/images?"
                                 f"endpoint_override={s3_endpoint}&scheme=http")
    ok(run_bowsvm("codebook", "--feature-set", SET, "--images", uri, "--codebooks",
                  str(tmp_path / "cb"), "--kmeans", "local", "--master", "local[2]"))
    assert Codebook.load(tmp_path / "cb" / SET).hash == Codebook.load(codebooks / SET).hash
    assert read_manifest(tmp_path / "cb" / SET, stage="codebook")["images"] == uri


@pytest.mark.slow
def test_prepare_writes_image_shards_at_a_uri(s3_endpoint, tmp_path):
    from test_end_to_end_tree import make_tree

    from bowsvm.io.image_shards import check_image_shards
    from bowsvm.io.images import decode_image
    from bowsvm.io.manifest import read_manifest

    tree = tmp_path / "tree"
    make_tree(tree, per_class=(3, 2))
    uri = f"s3://{BUCKET}/prep-{uuid.uuid4().hex[:8]}/images?endpoint_override={s3_endpoint}&scheme=http"
    ok(run_bowsvm("prepare", "--input", str(tree), "--output", uri, "--val-per-class", "1",
                  "--max-side", "64", "--format", "png", "--shard-mb", "0.05", "--master", "local[2]"))
    m = read_manifest(uri, stage="prepare")
    out = resolve(uri)
    assert m["n_images"] == 30 and m["n_rejected"] == 0 and m["commit"]["protocol"] == "manifest"
    files = check_image_shards(uri)  # the manifest's shards, footers read, rows = n_images
    assert len(files) == m["n_shards"] >= 2
    assert objects(out) == sorted([e["path"] for e in m["files"]] + [MANIFEST, SUCCESS])
    rows = [r for f in files for r in parquet.read_table(f).to_pylist()]
    assert sorted(r["id"] for r in rows) == sorted(p.relative_to(tree).as_posix()
                                                   for p in tree.rglob("*.*"))
    for r in rows:  # the stored PNG holds exactly the pixels prepare's image path gives
        want = decode_image((tree / r["id"]).read_bytes(), max_side=64)
        np.testing.assert_array_equal(decode_image(r["image"], max_side=64), want)
        assert (r["width"], r["height"]) == (want.shape[1], want.shape[0])
