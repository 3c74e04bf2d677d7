"""Image ingest: decoding rules, planning, IDX parsing, and the Spark job end to end."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import kill_while_writing
from PIL import Image

from bowsvm.io import check_complete, is_complete, read_manifest
from bowsvm.io.images import (
    FASHION_MNIST_CLASSES, load_idx_dataset, normalize_image, read_idx, scan_tree,
)
from bowsvm.stages.prepare import apply_limit, check_counts, plan_classes, plan_holdout, Record

RNG = np.random.default_rng(0)


def _img(mode, size=(40, 30), **save):
    arr = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr, "RGB")
    if mode == "I;16":
        im = Image.fromarray((RNG.integers(0, 65536, (size[1], size[0]))).astype(np.uint16))
    elif mode != "RGB":
        im = im.convert(mode)
    return im


def _bytes(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _exif_rotated_jpeg():
    im = _img("RGB", size=(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    return _bytes(im, "JPEG", exif=exif.tobytes())


# ---------------------------------------------------------------- decoding rules

@pytest.mark.parametrize("mode,fmt", [
    ("RGB", "JPEG"), ("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"),
    ("1", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("RGB", "GIF"), ("RGB", "BMP"),
    ("RGB", "TIFF"), ("RGB", "WEBP"),
])
def test_normalize_converts_every_mode_to_8bit(mode, fmt):
    raw = _bytes(_img(mode), fmt)
    res = normalize_image(raw, fmt="png")
    assert res.reason is None, res.reason
    out = Image.open(io.BytesIO(res.data))
    assert out.mode in ("L", "RGB")
    assert (res.width, res.height) == (40, 30) == out.size
    assert (res.orig_width, res.orig_height) == (40, 30)


def test_normalize_alpha_composited_over_white():
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    res = normalize_image(_bytes(im, "PNG"), fmt="png")
    out = np.asarray(Image.open(io.BytesIO(res.data)))
    assert out.min() == 255


def test_normalize_16bit_scaled_not_clipped():
    arr = np.full((4, 4), 65535, np.uint16)
    arr[0, 0] = 0
    res = normalize_image(_bytes(Image.fromarray(arr), "PNG"), fmt="png")
    out = np.asarray(Image.open(io.BytesIO(res.data)))
    assert out[0, 0] == 0 and out[1, 1] == 255


def test_normalize_applies_exif_rotation():
    res = normalize_image(_exif_rotated_jpeg(), fmt="png")
    assert (res.orig_width, res.orig_height) == (40, 20)
    assert (res.width, res.height) == (20, 40)


def test_normalize_downsizes_longer_side_only():
    res = normalize_image(_bytes(_img("RGB", size=(900, 600)), "PNG"), max_side=300, fmt="png")
    assert (res.width, res.height) == (300, 200)
    res = normalize_image(_bytes(_img("RGB", size=(90, 60)), "PNG"), max_side=300, fmt="png")
    assert (res.width, res.height) == (90, 60)


@pytest.mark.parametrize("raw,reason", [
    (b"", "empty file"),
    (b"hello, this is not an image\n", "not an image"),
    (b"\xff\xd8\xff\xe0" + bytes(RNG.integers(0, 256, 300, dtype=np.uint8)), "corrupt"),
])
def test_normalize_rejects_bad_bytes(raw, reason):
    res = normalize_image(raw)
    assert res.data is None and reason in res.reason


def test_normalize_rejects_truncated_jpeg():
    raw = _bytes(_img("RGB", size=(200, 200)), "JPEG")
    res = normalize_image(raw[: len(raw) // 2])
    assert res.data is None and "truncated or corrupt" in res.reason


def test_normalize_rejects_decompression_bomb_before_decoding():
    raw = _bytes(Image.new("1", (1200, 1000)), "PNG")
    limit = Image.MAX_IMAGE_PIXELS
    res = normalize_image(raw, max_pixels=1_000_000)
    assert res.data is None and "decompression bomb" in res.reason
    assert (res.orig_width, res.orig_height) == (1200, 1000)
    assert Image.MAX_IMAGE_PIXELS == limit  # PIL's process-wide limit is left as it was


# ---------------------------------------------------------------- planning

def test_scan_tree_with_and_without_split_level(tmp_path):
    for rel in ["train/cat/a.jpg", "train/cat/deep/b.jpg", "val/dog/c.jpg", "test/dog/d.jpg"]:
        (tmp_path / "s" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "s" / rel).write_bytes(b"x")
    files, has_split = scan_tree(tmp_path / "s")
    assert has_split
    assert [(f.rel, f.class_name, f.split) for f in files] == [
        ("test/dog/d.jpg", "dog", "test"), ("train/cat/a.jpg", "cat", "train"),
        ("train/cat/deep/b.jpg", "cat", "train"), ("val/dog/c.jpg", "dog", "val")]
    for rel in ["cat/a.jpg", "cat/x/y/b.png", "loose.txt", ".hidden/z.jpg"]:
        (tmp_path / "n" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "n" / rel).write_bytes(b"x")
    files, has_split = scan_tree(tmp_path / "n")
    assert not has_split
    assert [(f.rel, f.class_name) for f in files] == [
        ("cat/a.jpg", "cat"), ("cat/x/y/b.png", "cat"), ("loose.txt", None)]


def test_scan_tree_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        scan_tree(tmp_path / "nope")


def test_limit_holdout_and_classes_are_seeded_and_complete():
    recs = [Record(id=f"c{c}/{i}", source="", class_name=f"c{c}", split="train")
            for c in range(3) for i in range(10)]
    kept, rej = apply_limit(recs, 4, seed=1)
    assert len(kept) == 12 and len(rej) == 18
    assert {r.id for r in kept} | {r.id for r, _ in rej} == {r.id for r in recs}
    assert apply_limit(recs, 4, seed=1)[0] == kept
    assert apply_limit(recs, 4, seed=2)[0] != kept
    ids = {"a": [f"a{i}" for i in range(5)], "b": ["b0", "b1"]}
    held = plan_holdout(ids, 3, seed=0)
    assert len([i for i in held if i.startswith("a")]) == 3
    assert len([i for i in held if i.startswith("b")]) == 1  # one stays in train
    classes, dropped = plan_classes({"a": 5, "b": 1}, {"a", "b", "c"}, 2)
    assert classes == ["a"] and dropped == {"b": 1, "c": 0}
    classes, _ = plan_classes({"z": 5, "a": 5}, ["z", "a"], 1)
    assert classes == ["z", "a"]  # given order is label order


def test_check_counts_refuses_lost_files():
    check_counts(10, 7, 3)
    with pytest.raises(RuntimeError, match="refusing to write an output that loses files"):
        check_counts(10, 7, 2)


# ---------------------------------------------------------------- IDX

def test_fashion_mnist_idx_facts(fashion_dir):
    data = load_idx_dataset(fashion_dir)
    xtr, ytr = data["train"]
    xte, yte = data["test"]
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert xtr.dtype == np.uint8
    assert np.bincount(ytr).tolist() == [6000] * 10
    assert np.bincount(yte).tolist() == [1000] * 10
    assert len(FASHION_MNIST_CLASSES) == 10


def test_idx_plain_and_gzip_and_errors(tmp_path):
    import gzip
    import struct

    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 3, 4) + arr.tobytes()
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx(tmp_path / "a"), arr)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "t").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(tmp_path / "t")
    (tmp_path / "m").write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST IDX"):
        load_idx_dataset(tmp_path)


# ---------------------------------------------------------------- Spark job

def make_bad_tree(root: Path) -> dict:
    """A tree with good and bad files of every kind; returns expected outcome per file."""
    expect = {}

    def put(rel, data, outcome):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expect[rel] = outcome

    for i in range(6):
        put(f"cat/ok{i}.jpg", _bytes(_img("RGB"), "JPEG"), "ok")
        put(f"dog/nested/deeper/ok{i}.png", _bytes(_img("RGB"), "PNG"), "ok")
    put("cat/palette.png", _bytes(_img("P"), "PNG"), "ok")
    put("cat/alpha.png", _bytes(_img("RGBA"), "PNG"), "ok")
    put("cat/cmyk.jpg", _bytes(_img("CMYK"), "JPEG"), "ok")
    put("dog/sixteen.png", _bytes(_img("I;16"), "PNG"), "ok")
    put("dog/rotated.jpg", _exif_rotated_jpeg(), "ok")
    put("dog/big.png", _bytes(_img("RGB", size=(900, 600)), "PNG"), "ok")
    put("dog/anim.gif", _bytes(_img("RGB"), "GIF", save_all=True,
                               append_images=[_img("RGB")]), "ok")
    put("cat/empty.jpg", b"", "empty file")
    trunc = _bytes(_img("RGB", size=(300, 300)), "JPEG")
    put("cat/truncated.jpg", trunc[: len(trunc) // 2], "truncated or corrupt")
    png = bytearray(_bytes(_img("RGB", size=(64, 64)), "PNG"))
    png[len(png) // 2: len(png) // 2 + 64] = bytes(64)  # damage the pixel data
    put("dog/corrupt.png", bytes(png), "corrupt")
    put("dog/notes.txt", b"not an image", "not an image")
    put("dog/bomb.png", _bytes(Image.new("1", (1500, 1000)), "PNG"), "decompression bomb")
    put("README.md", b"# stray file at the root", "not inside a class folder")
    put("bird/only.jpg", _bytes(_img("RGB"), "JPEG"), "class dropped")
    return expect


def run_bowsvm(*args, timeout=300):
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.run([sys.executable, "-m", "bowsvm.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_prepare_job_accounts_for_every_file(tmp_path):
    tree = tmp_path / "tree"
    expect = make_bad_tree(tree)
    out = tmp_path / "images"
    args = ["prepare", "--input", str(tree), "--output", str(out), "--max-side", "300",
            "--max-pixels", "1000000", "--min-per-class", "2", "--val-per-class", "2",
            "--format", "png", "--master", "local[2]"]
    proc = run_bowsvm(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one-line progress reports, on stderr (bowsvm.spark.caller_stderr undoes spark-submit's
    # merging of the Python driver's stderr into its stdout)
    assert "[prepare] stage" in proc.stderr and "[prepare] stage" not in proc.stdout
    m = read_manifest(out, stage="prepare")
    assert m["classes"] == ["cat", "dog"]
    assert m["dropped_classes"] == {"bird": 1}
    shards = pq.read_table(out / "shards").to_pandas()
    rejects = pq.read_table(out / "rejects").to_pandas()
    assert m["n_input_files"] == len(expect) == len(shards) + len(rejects)
    assert m["n_images"] == len(shards) and m["n_rejected"] == len(rejects)
    assert m["n_bad_files"] == 6 and m["n_skipped_by_limit"] == 0
    got = {r: "ok" for r in shards["id"]}
    for path, reason in zip(rejects["path"], rejects["reason"]):
        got[str(Path(path).relative_to(tree))] = reason
    for rel, outcome in expect.items():
        assert outcome in got[rel], (rel, got[rel])
    # Labels, splits and counts
    assert set(shards["split"]) == {"train", "val"}
    assert (shards.groupby("split").size().to_dict()) == {
        s: sum(c.values()) for s, c in m["counts"].items()}
    assert (shards["split"] == "val").sum() == 4
    assert all(shards["label"] == shards["class_name"].map({"cat": 0, "dog": 1}))
    row = shards.set_index("id").loc["dog/big.png"]
    assert (row.orig_width, row.orig_height, row.width, row.height) == (900, 600, 300, 200)
    row = shards.set_index("id").loc["dog/rotated.jpg"]
    assert (row.width, row.height) == (20, 40)
    for data, w, h in zip(shards["image"], shards["width"], shards["height"]):
        im = Image.open(io.BytesIO(data))
        assert im.size == (w, h) and im.mode in ("L", "RGB")

    # A second run refuses to overwrite, and --overwrite replaces atomically.
    proc = run_bowsvm(*args)
    assert proc.returncode == 2 and "already exists; pass --overwrite" in proc.stderr, proc.stderr
    proc = run_bowsvm(*args, "--overwrite", "--val-per-class", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_manifest(out, "prepare")["counts"].get("val") is None


def test_prepare_rejects_bad_options(tmp_path):
    proc = run_bowsvm("prepare", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                      "--max-side", "2")
    assert proc.returncode == 2 and "--max-side=2 is too small" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_killed_prepare_leaves_nothing_complete(tmp_path, fashion_dir):
    out = tmp_path / "fm"
    kill_while_writing(["prepare", "--fashion-mnist", str(fashion_dir), "--output", str(out),
                        "--master", "local[2]"], tmp_path, "fm", settle=2)
    assert not out.exists()
    assert not any(is_complete(p) for p in tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_complete(out)
