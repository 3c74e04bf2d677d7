"""Hostile feature shards, model files and images, through the real CLI (issue 12, items 3 and 7).

Train, score, fuse and report run in-process through ``bowsvm.cli.main``;
codebook and extraction run through spark-submit on a few Fashion-MNIST
images (module fixture). Every case asserts the exit status and the message
the user sees (naming the file, shard, row or epoch).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fmnist_image_rows

from bowsvm import cli
from bowsvm.io import atomic_output_dir, read_manifest, write_json_atomic
from bowsvm.io.images import FASHION_MNIST_CLASSES, encode_gray_png

N_PER_SPLIT = {"train": 60, "val": 20, "test": 20}
PRESET = "quick-sv-hog"  # dense, 320 dims, patches of 8 px, per-block L2


def run_bowsvm(*args, timeout=600):
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.run([sys.executable, "-m", "bowsvm.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def bowsvm(*args):
    return cli.main([str(a) for a in args])


def reseal(folder):
    """Record the shards as they are now in the manifest, as the extractor would have:
    the checks behind the manifest (hashes, sizes) then cannot be what catches a case."""
    from bowsvm.io.features import shard_entries

    m = read_manifest(folder)
    m["shards"] = shard_entries(folder)
    write_json_atomic(Path(folder) / "manifest.json", m)


def edit_manifest(folder, fn):
    m = read_manifest(folder)
    fn(m)
    write_json_atomic(Path(folder) / "manifest.json", m)


def make_l2_features(root, name="fs", C=3, d=24, n=(90, 30, 30), shards=3, seed=0,
                     hook=None):
    """FEATURES/NAME as `bowsvm extract` lays it out (manifest with shard entries and an
    L2 preset): Gaussian classes, every row L2-normalised (one pooling block)."""
    from bowsvm.io.features import shard_entries, write_shard

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(C, d)) * 3
    with atomic_output_dir(Path(root) / name) as tmp:
        counts = {}
        for split, ns in zip(("train", "val", "test"), n):
            (tmp / split).mkdir()
            y = rng.integers(0, C, ns)
            y[:C] = np.arange(C)
            X = (centers[y] + rng.normal(size=(ns, d))).astype(np.float32)
            X /= np.linalg.norm(X, axis=1, keepdims=True)
            if hook:
                X = hook(split, X)
            bounds = np.linspace(0, ns, shards + 1).astype(int)
            for k in range(shards):
                a, b = bounds[k], bounds[k + 1]
                write_shard(tmp / split / f"part-{k:05d}.parquet",
                            [f"{split}-{i}" for i in range(a, b)], y[a:b], X[a:b], "dense")
            counts[split] = int(ns)
        write_json_atomic(tmp / "manifest.json", {
            "stage": "extract", "feature_set": name, "preset": "test", "preset_hash": "abc",
            "preset_config": {"pooling": {"normalize": "l2", "grids": [[1, 1]]}},
            "codebook_hash": "def", "dim": d, "layout": "dense",
            "classes": [f"c{i}" for i in range(C)], "counts": counts,
            "shards": shard_entries(tmp)})
    return Path(root)


def train(feats, models, *extra, name="fs"):
    return bowsvm("train", "--feature-set", name, "--features", feats, "--models", models,
                  "--quiet", "--n-jobs", "1", *extra)


def score(feats, models, scores, split="val", name="fs"):
    return bowsvm("score", "--feature-set", name, "--split", split, "--features", feats,
                  "--models", models, "--scores", scores)


def data_page(path, column):
    """(offset, length) of the data pages of ``column`` in row group 0 (after any
    dictionary page, up to the end of the column chunk)."""
    md = pq.ParquetFile(path).metadata.row_group(0)
    names = [md.column(i).path_in_schema for i in range(md.num_columns)]
    col = md.column(next(i for i, p in enumerate(names) if p.startswith(column)))
    start = col.data_page_offset
    if col.has_dictionary_page and col.dictionary_page_offset:
        start = min(start, col.dictionary_page_offset)
    end = start + col.total_compressed_size
    return col.data_page_offset, end - col.data_page_offset


def overwrite_inside_page(path, column="x", n=300):
    """Overwrite ``n`` bytes in the middle of the column's first data page; footer intact."""
    off, size = data_page(path, column)
    assert size > n + 64, (size, n)
    b = bytearray(Path(path).read_bytes())
    start = off + (size - n) // 2
    b[start:start + n] = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(b))


# --------------------------------------------------------------- real extraction

@pytest.fixture(scope="module")
def extracted(tmp_path_factory, fashion_dir):
    """prepare-format image shards (one corrupt image, one 1x1 image), then the real
    `bowsvm codebook` and `bowsvm extract` jobs for quick-sv-hog."""
    root = tmp_path_factory.mktemp("hostile")
    rows = fmnist_image_rows(fashion_dir, N_PER_SPLIT)
    rows.append(dict(rows[0], id="train-tiny", orig_width=1, orig_height=1, width=1, height=1,
                     image=encode_gray_png(np.full((1, 1), 200, np.uint8))))
    with atomic_output_dir(root / "images") as tmp:
        (tmp / "shards").mkdir()
        t = pa.Table.from_pylist(rows)
        pq.write_table(t.slice(0, 50), tmp / "shards" / "part-00000.parquet")
        pq.write_table(t.slice(50), tmp / "shards" / "part-00001.parquet")
        write_json_atomic(tmp / "manifest.json", {
            "stage": "prepare", "classes": list(FASHION_MNIST_CLASSES), "n_images": len(rows)})
    proc = run_bowsvm("codebook", "--feature-set", PRESET, "--images", root / "images",
                      "--codebooks", root / "codebooks", "--kmeans", "local", "--master", "local[2]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_bowsvm("extract", "--feature-set", PRESET, "--images", root / "images",
                      "--codebooks", root / "codebooks", "--features", root / "features",
                      "--master", "local[2]", "--shard-mb", "0.01", "--partitions", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture
def feats(extracted, tmp_path):
    """A private copy of the extracted feature set (tests damage it)."""
    shutil.copytree(extracted / "features", tmp_path / "features")
    return tmp_path / "features"


@pytest.mark.slow  # runs the Spark codebook and extraction jobs (module fixture)
def test_manifest_records_every_shard(extracted):
    from bowsvm.io.features import file_sha256

    folder = extracted / "features" / PRESET
    m = read_manifest(folder, stage="extract")
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/part-*.parquet")
                     if p.parent.name != "rejects")
    assert sorted(e["path"] for e in m["shards"]) == on_disk and len(on_disk) >= 3
    for e in m["shards"]:
        f = folder / e["path"]
        assert e["split"] == e["path"].split("/")[0]
        assert e["rows"] == pq.ParquetFile(f).metadata.num_rows
        assert e["bytes"] == f.stat().st_size and e["sha256"] == file_sha256(f)
    assert {s: sum(e["rows"] for e in m["shards"] if e["split"] == s)
            for s in N_PER_SPLIT} == m["counts"] == N_PER_SPLIT
    # the pages of every shard and of the rejects table carry a CRC: one flipped
    # byte near the end of a column chunk (page values, not its header) is refused
    files = [(f, "x") for f in folder.glob("*/part-*.parquet") if f.parent.name != "rejects"]
    for f, col in files + [(folder / "rejects" / "part-00000.parquet", "error")]:
        b = bytearray(f.read_bytes())
        off, size = data_page(f, col)
        b[off + size - 4] ^= 0x01
        g = f.with_suffix(".flipped")
        g.write_bytes(bytes(b))
        with pytest.raises(OSError, match="CRC checksum verification failed"):
            pq.read_table(g, page_checksum_verification=True)
        g.unlink()


@pytest.mark.slow  # runs the Spark codebook and extraction jobs (module fixture)
def test_tiny_image_is_a_reject_with_reason(extracted):
    folder = extracted / "features" / PRESET
    m = read_manifest(folder, stage="extract")
    rej = {r["id"]: r for r in pq.read_table(folder / "rejects").to_pylist()}
    assert sorted(rej) == ["train-corrupt", "train-tiny"]
    assert rej["train-tiny"]["error"].startswith("image too small: 1x1 px after decoding, below "
                                                 "the preset's smallest patch of 8x8 px")
    assert m["n_rejected"] == 2
    assert sum(m["counts"].values()) + m["n_rejected"] == sum(N_PER_SPLIT.values()) + 2


@pytest.mark.slow  # runs the Spark codebook and extraction jobs (module fixture)
def test_corrupt_data_page_after_extraction(feats, tmp_path, capsys):
    """300 bytes overwritten inside a data page: the manifest's SHA-256 catches it."""
    shard = sorted((feats / PRESET / "train").glob("*.parquet"))[0]
    overwrite_inside_page(shard)
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1", name=PRESET) == 2
    err = capsys.readouterr().err
    assert f"shard {str(shard)!r} does not match the SHA-256 recorded in" in err
    assert not (tmp_path / "m" / PRESET).exists()


@pytest.mark.slow  # runs the Spark codebook and extraction jobs (module fixture)
@pytest.mark.parametrize("command", ["train", "score"])
def test_corrupt_data_page_page_checksum(feats, tmp_path, capsys, command):
    """Same damage, but recorded in the manifest (hash matches): the page CRC catches it."""
    split = "train" if command == "train" else "val"
    shard = sorted((feats / PRESET / split).glob("*.parquet"))[0]
    if command == "score":
        assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1", name=PRESET) == 0
    overwrite_inside_page(shard)
    reseal(feats / PRESET)
    if command == "train":
        rc = train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1", name=PRESET)
    else:
        rc = score(feats, tmp_path / "m", tmp_path / "s", name=PRESET)
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert (f"feature shard {str(shard)!r} is corrupt or truncated (OSError: could not verify "
            f"page integrity, CRC checksum verification failed") in err[0]


@pytest.mark.slow  # runs the Spark codebook and extraction jobs (module fixture)
def test_truncated_shard(feats, tmp_path, capsys):
    shard = sorted((feats / PRESET / "val").glob("*.parquet"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1", name=PRESET) == 2
    assert f"shard {str(shard)!r} has " in capsys.readouterr().err  # size differs from manifest

    # truncated before the manifest was written (its entry matches): the footer read fails
    def fix(m):
        e = next(e for e in m["shards"] if e["path"] == f"val/{shard.name}")
        from bowsvm.io.features import file_sha256
        e.update(bytes=shard.stat().st_size, sha256=file_sha256(shard))
    edit_manifest(feats / PRESET, fix)
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1", name=PRESET) == 2
    err = capsys.readouterr().err
    assert f"feature shard {str(shard)!r} is corrupt or truncated (ArrowInvalid: " in err
    assert "Traceback" not in err


@pytest.mark.slow  # runs the Spark codebook and extraction jobs (module fixture)
def test_divergence_stops_training(feats, tmp_path, capsys):
    absurd = ("--eta0", "1e5", "--reg", "1e-6")  # reg * eta0 < 1, so accepted as options
    rc = train(feats, tmp_path / "m", "--epochs", "3", *absurd, name=PRESET)
    assert rc == 2
    err = capsys.readouterr().err
    assert "training diverged: after epoch 1 the val objective is" in err
    assert "retry with a smaller --eta0" in err
    assert not (tmp_path / "m" / PRESET).exists()
    rc = train(feats, tmp_path / "m", "--epochs", "3", *absurd, "--no-validate", name=PRESET)
    assert rc == 2
    assert "after epoch 1 the train-sample (60 rows) objective is" in capsys.readouterr().err
    # a sane step on the same data trains
    assert train(feats, tmp_path / "m", "--epochs", "2", "--eta0", "0.5", name=PRESET) == 0


# --------------------------------------------------------------- hand-made feature sets

def test_missing_extra_duplicated_shard(tmp_path, capsys):
    feats = make_l2_features(tmp_path / "f")
    fs = feats / "fs"
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.5") == 0

    dup = fs / "val" / "part-00001 (copy).parquet"
    shutil.copy(fs / "val" / "part-00001.parquet", dup)
    assert score(feats, tmp_path / "m", tmp_path / "s") == 2
    assert (f"file {str(dup)!r} is not a shard listed in {str(fs / 'manifest.json')!r} "
            f"(a duplicate of 'val/part-00001.parquet')") in capsys.readouterr().err
    dup.unlink()

    extra = fs / "train" / "part-00009.parquet"
    pq.write_table(pq.read_table(fs / "train" / "part-00000.parquet").slice(0, 5), extra)
    assert train(feats, tmp_path / "m2", "--epochs", "1", "--eta0", "0.5") == 2
    err = capsys.readouterr().err
    assert f"file {str(extra)!r} is not a shard listed in" in err and "(a duplicate of" not in err
    extra.unlink()

    gone = fs / "train" / "part-00002.parquet"
    saved = gone.read_bytes()
    gone.unlink()
    assert train(feats, tmp_path / "m2", "--epochs", "1", "--eta0", "0.5") == 2
    assert f"shard {str(gone)!r} is listed in" in capsys.readouterr().err
    gone.write_bytes(saved)

    edit_manifest(fs, lambda m: m["shards"].append(dict(m["shards"][0])))
    assert train(feats, tmp_path / "m2", "--epochs", "1", "--eta0", "0.5") == 2
    assert "lists shard 'test/part-00000.parquet' twice" in capsys.readouterr().err

    edit_manifest(fs, lambda m: m["shards"].pop())
    e0 = read_manifest(fs)["shards"]
    edit_manifest(fs, lambda m: m["shards"][[e["path"] for e in e0].index(
        "train/part-00001.parquet")].update(rows=999))
    assert train(feats, tmp_path / "m2", "--epochs", "1", "--eta0", "0.5") == 2
    assert "part-00001.parquet' holds 30 rows but" in capsys.readouterr().err


def test_manifest_without_shard_entries_is_refused(tmp_path, capsys):
    feats = make_l2_features(tmp_path / "f")
    edit_manifest(feats / "fs", lambda m: m.pop("shards"))
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.5") == 2
    err = capsys.readouterr().err
    assert "has no per-shard entries ('shards')" in err and "re-extract the feature set" in err


def test_value_outside_l2_range_names_shard_and_row(tmp_path, capsys):
    def hook(split, X):
        if split == "train":
            X[30 + 4, 7] = 1.5  # shard part-00001 holds train rows 30..59: its row 4
        if split == "val":
            X[4, 7] = 1.5  # val shard part-00000, row 4
        return X

    feats = make_l2_features(tmp_path / "f", hook=hook)
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.5") == 2
    shard = feats / "fs" / "train" / "part-00001.parquet"
    assert (f"shard {str(shard)!r} row 4 holds the value 1.5, outside [-1.00001, 1.00001]"
            in capsys.readouterr().err)
    # the scorer checks too (model from a clean copy of the same shape)
    clean = make_l2_features(tmp_path / "clean")
    assert train(clean, tmp_path / "m", "--epochs", "1", "--eta0", "0.5") == 0
    assert score(feats, tmp_path / "m", tmp_path / "s") == 2
    shard = feats / "fs" / "val" / "part-00000.parquet"
    assert f"shard {str(shard)!r} row 4 holds the value 1.5" in capsys.readouterr().err
    # rounding above 1 (float32 division by the norm) is allowed
    ok = make_l2_features(tmp_path / "ok", hook=lambda s, X: np.where(X == X.max(), 1.000004, X)
                          .astype(np.float32))
    assert train(ok, tmp_path / "m3", "--epochs", "1", "--eta0", "0.5") == 0


def test_one_class_feature_set_is_refused(tmp_path, capsys):
    feats = make_l2_features(tmp_path / "f", C=1)
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.5") == 2
    err = capsys.readouterr().err
    assert "feature set 'fs' has 1 class (['c0']); a one-vs-all classifier needs at least 2" in err
    assert not (tmp_path / "m" / "fs").exists()


def test_object_array_and_corrupt_model_files(tmp_path, capsys):
    feats = make_l2_features(tmp_path / "f")
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.5") == 0
    coef = tmp_path / "m" / "fs" / "coef.npy"
    good = coef.read_bytes()
    np.save(coef, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert score(feats, tmp_path / "m", tmp_path / "s") == 2
    assert (f"model file {str(coef)!r} holds an object array (pickled Python objects)"
            in capsys.readouterr().err)
    coef.write_bytes(good[:len(good) // 2])
    assert score(feats, tmp_path / "m", tmp_path / "s") == 2
    assert f"model file {str(coef)!r} is corrupt or truncated" in capsys.readouterr().err


def test_object_array_codebook(tmp_path):
    from bowsvm.coding import Codebook

    cb = Codebook(np.eye(4, dtype=np.float32))
    cb.save(tmp_path / "cb")
    npz = next((tmp_path / "cb").glob("*.npz"))
    np.savez(npz, bases=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match=f"codebook file '{npz}' holds an object array"):
        Codebook.load(tmp_path / "cb")
    npz.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match=f"codebook file '{npz}' is corrupt or truncated"):
        Codebook.load(tmp_path / "cb")


def test_corrupt_checkpoint_on_resume(tmp_path, capsys):
    from bowsvm.stages.train import KILL_ENV

    feats = make_l2_features(tmp_path / "f")
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", **{KILL_ENV: "1"})
    args = ["train", "--feature-set", "fs", "--features", feats, "--models", tmp_path / "m",
            "--quiet", "--n-jobs", "1", "--epochs", "3", "--eta0", "0.5"]
    p = subprocess.run([sys.executable, "-m", "bowsvm.cli", *map(str, args)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -9
    state = next((tmp_path / "m" / ".fs.checkpoint").glob("state-*.npz"))
    np.savez(state, g0_v=np.array([None], dtype=object))
    assert bowsvm(*args, "--resume") == 2
    assert (f"training checkpoint {str(state)!r} holds an object array"
            in capsys.readouterr().err)
    meta = tmp_path / "m" / ".fs.checkpoint" / "checkpoint.json"
    meta.write_text(meta.read_text()[:40])  # truncated JSON
    assert bowsvm(*args, "--resume") == 2
    err = capsys.readouterr().err
    assert f"training checkpoint {str(meta)!r} is corrupt (JSONDecodeError" in err
    assert "rerun without --resume" in err


def test_corrupt_scores_and_fusion_files_are_named(tmp_path, capsys):
    feats = make_l2_features(tmp_path / "f")
    models, scores = tmp_path / "m", tmp_path / "s"
    assert train(feats, models, "--epochs", "2", "--eta0", "0.5") == 0
    for split in ("val", "test"):
        assert score(feats, models, scores, split) == 0
    assert bowsvm("fuse", "--scores", scores, "--feature-sets", "fs", "--out", tmp_path / "fu") == 0
    assert bowsvm("report", tmp_path / "r.html", "--models", models, "--scores", scores,
                  "--fusion", tmp_path / "fu", "--features", feats) == 0
    capsys.readouterr()

    fused = tmp_path / "fu" / "test.parquet"
    overwrite_inside_page(fused, "scores", n=40)
    assert bowsvm("report", tmp_path / "r2.html", "--models", models, "--scores", scores,
                  "--fusion", tmp_path / "fu", "--features", feats) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bowsvm report: error: scores file {str(fused)!r} is corrupt or truncated "
                   f"(OSError: could not verify page integrity, CRC checksum verification "
                   f"failed for page_ordinal 0); delete it and re-run the stage that wrote it."]

    val = scores / "fs" / "val" / "scores.parquet"
    val.write_bytes(val.read_bytes()[:-50])
    assert bowsvm("fuse", "--scores", scores, "--feature-sets", "fs", "--out", tmp_path / "fu2") == 2
    err = capsys.readouterr().err
    assert f"scores file {str(val)!r} is corrupt or truncated (ArrowInvalid: " in err
    assert bowsvm("report", tmp_path / "r3.html", "--models", models, "--scores", scores,
                  "--features", feats) == 2
    assert f"scores file {str(val)!r} is corrupt or truncated" in capsys.readouterr().err


def test_every_written_parquet_has_page_checksums(tmp_path):
    """Feature shards, scores and fused scores carry a CRC per page: one flipped byte
    inside a data page is refused by the readers."""
    from bowsvm.io import parquet

    feats = make_l2_features(tmp_path / "f")
    models, scores = tmp_path / "m", tmp_path / "s"
    assert train(feats, models, "--epochs", "1", "--eta0", "0.5") == 0
    for split in ("val", "test"):
        assert score(feats, models, scores, split) == 0
    assert bowsvm("fuse", "--scores", scores, "--feature-sets", "fs", "--out", tmp_path / "fu") == 0
    files = [(feats / "fs" / "train" / "part-00000.parquet", "x"),
             (scores / "fs" / "val" / "scores.parquet", "scores"),
             (tmp_path / "fu" / "val.parquet", "scores")]
    for f, col in files:
        b = bytearray(f.read_bytes())
        off, size = data_page(f, col)
        b[off + size - 8] ^= 0x01  # inside the page's values, far from its header
        f.write_bytes(bytes(b))
        with pytest.raises(ValueError, match=f"'{f}' is corrupt or truncated .*CRC checksum"):
            parquet.read_table(f)


# --------------------------------------------------------------- image shards read by extract

@pytest.mark.slow  # runs the Spark codebook and extraction jobs (module fixture)
def test_truncated_image_shard_refused_before_spark(extracted, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(extracted / "images", images)
    shard = images / "shards" / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-64])
    rc = bowsvm("extract", "--feature-set", PRESET, "--images", images, "--codebooks",
                extracted / "codebooks", "--features", tmp_path / "features")
    assert rc == 2
    err = capsys.readouterr().err
    assert f"image shard {str(shard)!r} is corrupt or truncated (ArrowInvalid: " in err
    # the codebook stage reads the image shards through Spark too
    assert bowsvm("codebook", "--feature-set", PRESET, "--images", images,
                  "--codebooks", tmp_path / "codebooks") == 2
    assert (f"image shard {str(shard)!r} is corrupt or truncated (ArrowInvalid: "
            in capsys.readouterr().err)
    assert not (tmp_path / "codebooks" / PRESET).exists()
    shard.unlink()
    assert bowsvm("extract", "--feature-set", PRESET, "--images", images, "--codebooks",
                  extracted / "codebooks", "--features", tmp_path / "features") == 2
    assert "hold 50 rows but" in capsys.readouterr().err
    assert not (tmp_path / "features" / PRESET).exists()


@pytest.mark.slow  # runs the Spark codebook and extraction jobs (module fixture)
def test_corrupt_page_in_image_shard_named_by_spark_job(extracted, tmp_path):
    """A flipped byte in an image-shard page (CRC on, as Spark's writer does by default):
    the Spark read verifies it and the job names the file."""
    images = tmp_path / "images"
    shutil.copytree(extracted / "images", images)
    shard = images / "shards" / "part-00001.parquet"
    pq.write_table(pq.read_table(shard), shard, write_page_checksum=True, use_dictionary=False,
                   compression="none")
    off, size = data_page(shard, "image")
    b = bytearray(shard.read_bytes())
    b[off + size - 100] ^= 0x01
    shard.write_bytes(bytes(b))
    proc = run_bowsvm("extract", "--feature-set", PRESET, "--images", images, "--codebooks",
                      extracted / "codebooks", "--features", tmp_path / "features",
                      "--master", "local[2]")
    out = proc.stdout + proc.stderr  # spark-submit sends the driver's stderr to stdout today
    assert proc.returncode == 2, out[-2000:]
    assert (f"extract_features.py: error: image shard {str(shard)!r} is corrupt or truncated "
            f"(Spark: org.apache.parquet.io.ParquetDecodingException: could not verify page "
            f"integrity, CRC checksum verification failed)") in out
    assert "Traceback" not in out
    assert not (tmp_path / "features" / PRESET).exists()
