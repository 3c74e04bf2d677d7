"""Hostile files and trees through the real CLI and the real job scripts (issue 12, items 4-7).

FIFOs, device symlinks, broken symlinks, sockets, over-size files and
decompression bombs in an image tree become rows of the rejects table (the
accounting shards + rejects = inputs still holds) and never hang or kill the
job; `bowsvm predict` reports each bad file on its own line and classifies
the others; an ambiguous split tree is refused with the folders named; job
scripts check their arguments before Spark starts and say so on stderr.
"""

import io
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from PIL import Image

from bowsvm.io import read_manifest
from bowsvm.io.images import (
    ImageTooLarge, UnusableFile, decode_image, detect_layout, normalize_image, read_image_file,
    scan_tree,
)
from bowsvm.stages.prepare import check_arguments as check_job_arguments
from bowsvm.spark import caller_stderr, spark_env, spark_submit_path
import test_predict
from test_predict import _args

ROOT = Path(__file__).resolve().parent.parent
pipeline = test_predict.pipeline  # the trained Fashion-MNIST fixture of test_predict.py


def _jpeg(size=(40, 30)):
    b = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(b, format="JPEG")
    return b.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height 1-bit pixels, with a tiny body.

    Opening it reads only the header; decoding would need width*height bytes.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def _socket(path: Path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the socket file stays


def run_bowsvm(*args, timeout=300):
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.run([sys.executable, "-m", "bowsvm.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- readers, unit level

def test_read_image_file_accepts_only_regular_files_within_the_cap(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(_jpeg())
    assert read_image_file(good, 10_000) == good.read_bytes()
    (tmp_path / "link.jpg").symlink_to(good)  # a symlink to a regular file is fine
    assert read_image_file(tmp_path / "link.jpg", 10_000) == good.read_bytes()
    os.mkfifo(tmp_path / "x.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "dir.jpg").mkdir()
    _socket(tmp_path / "sock.jpg")
    cases = {
        "x.jpg": "not a regular file: a FIFO",
        "zero.jpg": "not a regular file: a symlink to '/dev/zero', which is a character device",
        "dangling.jpg": "broken symlink: its target .* does not exist",
        "dir.jpg": "not a regular file: a folder",
        "sock.jpg": "not a regular file: a socket",
        "missing.jpg": "unreadable file: it vanished",
    }
    for name, reason in cases.items():
        t0 = time.monotonic()
        with pytest.raises(UnusableFile, match=reason):
            read_image_file(tmp_path / name, 10_000)
        assert time.monotonic() - t0 < 5  # nothing blocks
    n = len(good.read_bytes())
    with pytest.raises(UnusableFile, match=f"file too large: {n} bytes exceeds --max-file-bytes {n - 1}"):
        read_image_file(good, n - 1)
    assert len(read_image_file(good, n)) == n  # exactly the cap is accepted


def test_bomb_reasons_name_max_pixels_and_the_size():
    # 3000x1000 is over twice the limit: PIL's own error would fire first and quote its limit
    for w, h in [(1500, 1000), (3000, 1000), (40000, 40000)]:
        res = normalize_image(bomb_png(w, h), max_pixels=1_000_000)
        assert res.data is None
        assert res.reason.startswith(f"decompression bomb: {w}x{h} = {w * h} pixels exceeds "
                                     f"--max-pixels 1000000"), res.reason
        assert (res.orig_width, res.orig_height) == (w, h)
        with pytest.raises(ImageTooLarge, match=f"{w}x{h} = {w * h} pixels exceeds --max-pixels 1000000"):
            decode_image(bomb_png(w, h), 64, max_pixels=1_000_000)
    # the default limit (100 M pixels) refuses 200 M pixels without PIL's DecompressionBombError
    with pytest.raises(ValueError, match="exceeds --max-pixels 100000000"):
        decode_image(bomb_png(20000, 10000))
    # a 10x10 GIF whose first frame claims 3000x1000: PIL grows the image to the frame
    b = io.BytesIO()
    Image.new("P", (10, 10)).save(b, format="GIF")
    gif = bytearray(b.getvalue())
    at = gif.index(b"\x2c", 13)  # the image descriptor
    gif[at + 5:at + 9] = struct.pack("<HH", 3000, 1000)
    res = normalize_image(bytes(gif), max_pixels=1_000_000)
    assert res.reason.startswith("decompression bomb: 3000x1000 = 3000000 pixels exceeds "
                                 "--max-pixels 1000000"), res.reason
    assert normalize_image(_jpeg(), max_pixels=1200).data is not None  # 40x30 = 1200: allowed
    with pytest.raises(ValueError, match="max_pixels=0 is too small"):
        decode_image(_jpeg(), max_pixels=0)
    assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)  # PIL's default restored


def _tree(root: Path, rels):
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def test_layout_is_detected_explicitly_and_a_mix_is_refused(tmp_path):
    _tree(tmp_path / "t", ["train/cat/a.jpg", "val/cat/b.jpg", "extra/cat/c.jpg", "notes.txt"])
    msg = (r"is ambiguous: the top-level folder\(s\) train/, val/ are split names but extra/ "
           r"are not.*Move extra/ into a split folder.*--layout split.*--layout flat")
    with pytest.raises(ValueError, match=msg):
        scan_tree(tmp_path / "t")
    files, has_split = scan_tree(tmp_path / "t", layout="split")
    assert has_split and [(f.rel, f.split, f.class_name) for f in files] == [
        ("extra/cat/c.jpg", None, "cat"), ("notes.txt", "train", None),
        ("train/cat/a.jpg", "train", "cat"), ("val/cat/b.jpg", "val", "cat")]
    files, has_split = scan_tree(tmp_path / "t", layout="flat")
    assert not has_split and sorted({f.class_name for f in files} - {None}) == ["extra", "train", "val"]
    with pytest.raises(ValueError, match="--layout='nested' is not a valid option"):
        detect_layout(tmp_path / "t", "nested")
    _tree(tmp_path / "s", ["train/cat/a.jpg", "test/cat/b.jpg"])
    assert detect_layout(tmp_path / "s") is True
    _tree(tmp_path / "f", ["cat/a.jpg", "dog/b.jpg"])
    assert detect_layout(tmp_path / "f") is False


def test_check_job_arguments_checks_inputs_before_spark(tmp_path):
    base = dict(max_side=500, max_pixels=10**8, max_file_bytes=2**28, val_per_class=0,
                min_per_class=1, limit_per_class=None, quality=90, shard_mb=128.0,
                layout="auto", input=str(tmp_path), fashion_mnist=None,
                output=f"{tmp_path}-out", overwrite=False)
    check_job_arguments(SimpleNamespace(**base))
    with pytest.raises(ValueError, match="--max-file-bytes=0 is too small"):
        check_job_arguments(SimpleNamespace(**{**base, "max_file_bytes": 0}))
    with pytest.raises(FileNotFoundError, match=r"is not a folder \(it does not exist\)"):
        check_job_arguments(SimpleNamespace(**{**base, "input": str(tmp_path / "nope")}))
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"is not a folder \(it is a file\)"):
        check_job_arguments(SimpleNamespace(**{**base, "input": str(tmp_path / "file.jpg")}))
    with pytest.raises(FileNotFoundError, match="--fashion-mnist .* is not a folder"):
        check_job_arguments(SimpleNamespace(**{**base, "input": None,
                                               "fashion_mnist": str(tmp_path / "nope")}))
    with pytest.raises(FileNotFoundError, match="has no train-images-idx3-ubyte"):
        check_job_arguments(SimpleNamespace(**{**base, "input": None, "fashion_mnist": str(tmp_path)}))


def test_caller_stderr_outside_spark_submit_is_sys_stderr(monkeypatch):
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert caller_stderr() is sys.stderr and caller_stderr(final=True) is sys.stderr


# ---------------------------------------------------------------- prepare, through Spark

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prepare_rejects_hostile_files_without_hanging(tmp_path):
    tree = tmp_path / "tree"
    expect = {}

    def put(rel, outcome, data=None, make=None):
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if make is not None:
            make(p)
        else:
            p.write_bytes(data)
        expect[rel] = outcome

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            for i in range(2):
                put(f"{split}/{cls}/ok{i}.jpg", "ok", _jpeg())
    put("train/cat/x.jpg", "not a regular file: a FIFO", make=os.mkfifo)
    put("train/dog/zero.jpg", "not a regular file: a symlink to '/dev/zero', which is a "
        "character device", make=lambda p: p.symlink_to("/dev/zero"))
    put("train/dog/dangling.jpg", "broken symlink", make=lambda p: p.symlink_to(tree / "gone.jpg"))
    put("val/cat/sock.jpg", "not a regular file: a socket", make=_socket)
    put("train/cat/huge.jpg", "file too large: 30000 bytes exceeds --max-file-bytes 20000",
        os.urandom(30000))
    put("train/dog/bomb.png", "decompression bomb: 3000x1000 = 3000000 pixels exceeds "
        "--max-pixels 1000000", bomb_png(3000, 1000))
    put("extra/cat/stray.jpg", "not inside a split folder", _jpeg())
    put("README.jpg", "not inside a class folder", _jpeg())
    out = tmp_path / "images"
    args = ["prepare", "--input", str(tree), "--output", str(out), "--max-pixels", "1000000",
            "--max-file-bytes", "20000", "--master", "local[2]"]

    # train/, val/ and extra/ at the top: refused before Spark, naming the folders
    t0 = time.monotonic()
    proc = run_bowsvm(*args)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "train/, val/ are split names but extra/ are not" in proc.stderr
    assert "--layout split" in proc.stderr and not out.exists()
    assert time.monotonic() - t0 < 60

    proc = run_bowsvm(*args, "--layout", "split")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = read_manifest(out, stage="prepare")
    shards = pq.read_table(out / "shards").to_pandas()
    rejects = pq.read_table(out / "rejects").to_pandas()
    assert m["n_input_files"] == len(expect) == len(shards) + len(rejects)
    assert m["source"]["layout"] == "split" and m["classes"] == ["cat", "dog"]
    got = {r: "ok" for r in shards["id"]}
    for path, reason in zip(rejects["path"], rejects["reason"]):
        got[str(Path(path).relative_to(tree))] = reason
    assert set(got) == set(expect)
    for rel, outcome in expect.items():
        assert got[rel].startswith(outcome), (rel, got[rel])
    assert m["reject_reasons"]["not a regular file"] == 3


# ---------------------------------------------------------------- predict

@pytest.mark.timeout(300)
def test_predict_reports_each_bad_file_and_classifies_the_rest(pipeline, tmp_path, capsys):
    from bowsvm.cli import main

    root, data = pipeline
    d = tmp_path / "in"
    d.mkdir()
    ids = data["test"][0][:2]
    for i in ids:
        (d / f"{i}.png").write_bytes((root / "inputs" / f"{i}.png").read_bytes())
    (d / "bomb.png").write_bytes(bomb_png(20000, 10000))  # 200 M pixels: PIL's own error before
    (d / "small-bomb.png").write_bytes(bomb_png(3000, 1000))
    os.mkfifo(d / "x.png")
    (d / "zero.png").symlink_to("/dev/zero")
    (d / "big.png").write_bytes(os.urandom(5000))
    from PIL import Image

    Image.new("L", (1, 1), 128).save(d / "tiny.png")
    t0 = time.monotonic()
    rc = main(["predict", str(d), *_args(root), "--max-file-bytes", "4000"])
    assert time.monotonic() - t0 < 240
    assert rc == 1
    cap = capsys.readouterr()
    err = {line.split(": ERROR ")[0]: line.split(": ERROR ")[1]
           for line in cap.err.splitlines() if ": ERROR " in line}
    # 3 M pixels is under the default limit: a bomb header with a corrupt body
    assert "not a decodable image" in err.pop(str(d / "small-bomb.png"))
    assert err.pop(str(d / "tiny.png")).startswith(
        "ValueError: image too small: 1x1 px after decoding, below the preset's smallest patch")
    assert err == {
        str(d / "bomb.png"): "decompression bomb: 20000x10000 = 200000000 pixels exceeds "
                             "--max-pixels 100000000; raise --max-pixels if the image is genuine",
        str(d / "x.png"): "not a regular file: a FIFO (named pipe)",
        str(d / "zero.png"): "not a regular file: a symlink to '/dev/zero', which is a "
                             "character device",
        str(d / "big.png"): "file too large: 5000 bytes exceeds --max-file-bytes 4000; raise "
                            "--max-file-bytes if the file is genuine",
    }
    assert "6 of 8 file(s) could not be classified" in cap.err
    classified = [line for line in cap.out.splitlines() if line.strip()]
    assert sorted(line.split(": ")[0] for line in classified) == sorted(str(d / f"{i}.png") for i in ids)
    assert all("(" in line for line in classified)  # "class (score)" entries


def test_predict_limits_are_validated(tmp_path, capsys):
    from bowsvm.cli import main

    for opt, msg in [("--max-file-bytes", "--max-file-bytes=0 is too small"),
                     ("--max-pixels", "--max-pixels=0 is too small")]:
        assert main(["predict", str(tmp_path), opt, "0"]) == 2
        assert msg in capsys.readouterr().err


# ---------------------------------------------------------------- job scripts

@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("job,argv,message", [
    ("prepare_images.py", ["--input", "/nonexistent/tree", "--output", "{tmp}/out"],
     "prepare_images.py: error: --input '/nonexistent/tree' is not a folder (it does not exist)"),
    ("prepare_images.py", ["--fashion-mnist", "{tmp}", "--output", "{tmp}/out"],
     "prepare_images.py: error: '{tmp}' has no train-images-idx3-ubyte"),
    ("train_groups.py", ["--feature-set", "fs", "--features", "{tmp}/nofeatures", "--models",
                         "{tmp}/out"],
     "train_groups.py: error: extract folder '{tmp}/nofeatures/fs' does not exist"),
])
def test_job_script_checks_arguments_before_spark_on_stderr(tmp_path, job, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    message = message.replace("{tmp}", str(tmp_path))
    cmd = [spark_submit_path(), "--master", "local[2]", str(ROOT / "jobs" / job), *argv]
    proc = subprocess.run(cmd, env=spark_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "error:" not in proc.stdout, proc.stdout[-2000:]
    # Spark never started: no SparkContext, no log4j lines, no Spark UI
    for marker in ("SparkContext", "log4j", "SparkUI", "Running Spark version"):
        assert marker not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()
