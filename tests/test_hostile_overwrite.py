"""--overwrite and output paths under hostile use, through the real CLI (issue 12, items 2 and 7).

A stage replaces only a complete output of the same stage, never a folder that holds,
equals or lies inside one of its inputs, never the working directory, and a failed run
leaves the old output byte-identical. Temporaries of killed runs are cleaned when the
next run of the same output starts, and only those whose writer is gone.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import kill_while_writing
from PIL import Image
from test_fuse import write_set
from test_train import make_feature_set

from bowsvm import cli
from bowsvm.io import atomic_output_dir, read_manifest, write_json_atomic
from bowsvm.io.atomic import STALE_NO_WRITER_SECONDS, WRITER, clean_stale, prepare_target

ROOT = Path(__file__).resolve().parent.parent


def snapshot(folder):
    """Every path under ``folder`` with its bytes (folders and links marked)."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_bytes()
    return out


def bowsvm(*args, cwd=None, timeout=300):
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "bowsvm.cli", *map(str, args)], env=env,
                          cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)


def tiny_tree(root, n=3):
    """CLASS/file.png: two classes of ``n`` small PNGs."""
    rng = np.random.default_rng(1)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def score_sets(root, names=("A",), n=60, C=4):
    rng = np.random.default_rng(2)
    classes = [f"c{i}" for i in range(C)]
    for split in ("val", "test"):
        y = rng.integers(0, C, n)
        S = rng.normal(size=(n, C)).astype(np.float32)
        S[np.arange(n), y] += 2.0
        for name in names:
            write_set(root, name, split, [f"{split}{i}" for i in range(n)], y, S, classes=classes)
    return root


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # reaped: the pid no longer exists
    return p.pid


def fake_tmp(parent, name, tag, pid=None, host=None):
    d = Path(parent) / f".{name}.tmp-{tag}"
    d.mkdir(parents=True)
    (d / "half-written.parquet").write_bytes(b"x" * 100)
    if pid is not None:
        (d / WRITER).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                            "started": 0}))
    return d


# ------------------------------------------------------------ prepare: input == output

def test_prepare_refuses_its_input_tree_as_output(tmp_path):
    tree = tiny_tree(tmp_path / "T")
    before = snapshot(tree)
    proc = bowsvm("prepare", "--input", tree, "--output", tree, "--overwrite", "--master", "local[1]")
    assert proc.returncode == 2
    assert f"--output {str(tree)!r} is the input {str(tree)!r}" in proc.stderr, proc.stderr
    assert "never writes over or into its own inputs" in proc.stderr
    assert "[prepare]" not in proc.stdout + proc.stderr  # refused before Spark started
    # an output inside the tree (the next scan would read it as images), and through a link
    (tmp_path / "link").symlink_to(tree)
    for out, rel in ((tree / "cat" / "out", "lies inside"), (tmp_path / "link", "is")):
        proc = bowsvm("prepare", "--input", tree, "--output", out, "--overwrite")
        assert proc.returncode == 2 and f"{rel} the input" in proc.stderr, proc.stderr
    proc = bowsvm("prepare", "--input", tmp_path / "link", "--output", tmp_path, "--overwrite")
    assert proc.returncode == 2 and "contains the input" in proc.stderr, proc.stderr
    assert snapshot(tree) == before


@pytest.mark.slow
def test_prepare_job_itself_refuses_input_as_output(tmp_path):
    """The job script checks too when it is spark-submitted directly (no CLI preflight)."""
    from bowsvm.spark import jobs_dir, spark_env, spark_submit_path

    tree = tiny_tree(tmp_path / "T")
    before = snapshot(tree)
    proc = subprocess.run([spark_submit_path(), "--master", "local[1]",
                           str(jobs_dir() / "prepare_images.py"), "--input", str(tree),
                           "--output", str(tree), "--overwrite"],
                          env=spark_env(None), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "is the input" in proc.stdout + proc.stderr
    assert snapshot(tree) == before


# ------------------------------------------------------------ fuse: the working directory

def test_fuse_out_dot_refuses_and_cwd_is_intact(tmp_path, monkeypatch, capsys):
    work = tmp_path / "outer" / "work"
    score_sets(work / "scores")
    (work / "notes.txt").write_text("mine")
    before = snapshot(work)
    monkeypatch.chdir(work)
    rc = cli.main(["fuse", "--scores", "scores", "--feature-sets", "A", "--out", ".", "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and "--out '.' contains the input 'scores/A'" in err, err
    # scores elsewhere: the working directory itself, or a folder holding it, is refused
    score_sets(tmp_path / "elsewhere")
    for out, what in ((".", "is the working directory"),
                      (str(tmp_path / "outer"), "is a folder containing the working directory"),
                      ("..", "is a folder containing the working directory")):
        rc = cli.main(["fuse", "--scores", str(tmp_path / "elsewhere"), "--feature-sets", "A",
                       "--out", out, "--overwrite"])
        err = capsys.readouterr().err
        assert rc == 2 and what in err, err
    assert snapshot(work) == before


def test_home_and_root_are_refused(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    score_sets(tmp_path / "scores")
    rc = cli.main(["fuse", "--scores", str(tmp_path / "scores"), "--feature-sets", "A",
                   "--out", str(home), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and "is the home folder" in err, err
    assert list(home.iterdir()) == []
    rc = cli.main(["fuse", "--scores", str(tmp_path / "scores"), "--feature-sets", "A",
                   "--out", "/", "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and "--out '/' contains the input" in err, err
    with pytest.raises(FileExistsError, match="is the root folder"):
        prepare_target("/", True, "fuse")


# ------------------------------------------------------------ what --overwrite may replace

def test_overwrite_refuses_what_bowsvm_did_not_write(tmp_path, capsys):
    scores = score_sets(tmp_path / "scores", names=("A", "Z"))
    fuse = ["fuse", "--scores", str(scores), "--feature-sets", "A", "--overwrite", "--out"]

    mine = tmp_path / "mine"  # the user's own folder
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "thesis.tex").write_text("years of work")
    half = tmp_path / "half"  # a manifest but no _SUCCESS: not a finished bowsvm output
    half.mkdir()
    (half / "manifest.json").write_text('{"stage": "fuse"}')
    nostage = tmp_path / "nostage"  # complete but its manifest names no stage
    nostage.mkdir()
    (nostage / "manifest.json").write_text("{}")
    (nostage / "_SUCCESS").write_text("")
    afile = tmp_path / "afile"
    afile.write_text("data")
    link = tmp_path / "link"
    assert cli.main([*fuse, str(tmp_path / "real")]) == 0
    link.symlink_to(tmp_path / "real")
    cases = {
        mine: "is not a complete bowsvm output",
        half: "is not a complete bowsvm output",
        nostage: "is not a complete bowsvm output",
        scores / "Z" / "val": "holds the output of `bowsvm score`, not of `bowsvm fuse`",
        afile: "exists and is not a folder",
        link: "is a symbolic link",
    }
    before = snapshot(tmp_path)
    for out, why in cases.items():
        assert cli.main([*fuse, str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--out {str(out)!r}" in err and why in err, err
        assert "choose another output path" in err
    assert snapshot(tmp_path) == before
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_empty_folder_is_used_and_stage_output_is_replaced(tmp_path, capsys):
    scores = score_sets(tmp_path / "scores", names=("A", "B"))
    out = tmp_path / "fusion"
    out.mkdir()  # empty: used even without --overwrite
    assert cli.main(["fuse", "--scores", str(scores), "--feature-sets", "A", "--out", str(out)]) == 0
    assert read_manifest(out, stage="fuse")["feature_sets"] == ["A"]
    argv = ["fuse", "--scores", str(scores), "--feature-sets", "A,B", "--out", str(out)]
    assert cli.main(argv) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite"]) == 0  # a fuse output: replaced
    assert read_manifest(out, stage="fuse")["feature_sets"] == ["A", "B"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fusion", "scores"]  # no leftovers

    feats = make_feature_set(tmp_path / "features", n=(60, 30), d=8, C=3, shards=1)
    train = ["train", "--feature-set", "fs", "--features", str(feats), "--models",
             str(tmp_path / "models"), "--quiet", "--n-jobs", "1", "--eta0", "0.1"]
    assert cli.main([*train, "--epochs", "1"]) == 0
    assert cli.main([*train, "--epochs", "2", "--overwrite"]) == 0
    assert read_manifest(tmp_path / "models" / "fs", stage="train")["epochs"] == 2
    # a model folder is not a fuse output, and features are an input of train
    assert cli.main(["fuse", "--scores", str(scores), "--feature-sets", "A", "--overwrite",
                     "--out", str(tmp_path / "models" / "fs")]) == 2
    assert "holds the output of `bowsvm train`" in capsys.readouterr().err
    assert cli.main([*train, "--models", str(tmp_path / "features" / "fs" / "m"), "--overwrite"]) == 2
    assert "lies inside the input" in capsys.readouterr().err


def test_failed_overwrite_leaves_old_output_byte_identical(tmp_path):
    feats = make_feature_set(tmp_path / "features", n=(60, 90), d=8, C=3, shards=3)
    models = tmp_path / "models"
    assert cli.main(["train", "--feature-set", "fs", "--features", str(feats), "--models",
                     str(models), "--quiet", "--n-jobs", "1", "--eta0", "0.1", "--epochs", "1"]) == 0
    score = ["score", "--feature-set", "fs", "--split", "val", "--features", feats, "--models",
             models, "--scores", tmp_path / "scores", "--batch-rows", "10"]
    proc = bowsvm(*score)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "scores" / "fs" / "val"
    before = snapshot(out)
    # the last val shard is truncated: the new run fails part-way through writing
    last = sorted((feats / "fs" / "val").glob("*.parquet"))[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    proc = bowsvm(*score, "--overwrite")
    assert proc.returncode != 0
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["val"]  # no temporaries left


# ------------------------------------------------------------ file outputs: report, predict --out

def test_report_and_predict_never_write_over_or_into_an_input(tmp_path, capsys):
    scores = score_sets(tmp_path / "scores")
    fusion = tmp_path / "fusion"
    assert cli.main(["fuse", "--scores", str(scores), "--feature-sets", "A", "--out", str(fusion)]) == 0
    before = snapshot(tmp_path)
    report = ["report", "--scores", str(scores), "--fusion", str(fusion),
              "--models", str(tmp_path / "models"), "--features", str(tmp_path / "features")]
    rc = cli.main([*report[:1], str(fusion / "r.html"), *report[1:]])
    err = capsys.readouterr().err
    assert rc == 2 and f"report output {str(fusion / 'r.html')!r} lies inside the input" in err, err
    (tmp_path / "r.json").mkdir()  # the JSON twin's path is a folder
    rc = cli.main([*report[:1], str(tmp_path / "r.html"), *report[1:]])
    err = capsys.readouterr().err
    assert rc == 2 and "'" + str(tmp_path / "r.json") + "' exists and is not a regular file" in err, err
    images = tmp_path / "imgs"
    tiny_tree(images, n=1)
    before = snapshot(tmp_path)
    rc = cli.main(["predict", str(images), "--out", str(images / "res.csv"), "--models",
                   str(tmp_path / "models"), "--fusion", str(fusion)])
    err = capsys.readouterr().err
    assert rc == 2 and f"--out {str(images / 'res.csv')!r} lies inside the input" in err, err
    rc = cli.main(["predict", str(images / "cat" / "0.png"), "--out", str(fusion / "p.json"),
                   "--fusion", str(fusion)])
    err = capsys.readouterr().err
    assert rc == 2 and "lies inside the input" in err, err
    assert snapshot(tmp_path) == before


def test_check_functions_raise_with_the_path(tmp_path):
    from bowsvm.io.atomic import check_file_target, check_inputs, check_target

    (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match=r"--x '.*/in/sub' lies inside the input '.*/in'"):
        check_inputs(tmp_path / "in" / "sub", [None, tmp_path / "in"], "--x")
    with pytest.raises(ValueError, match=r"output '.*' contains the input"):
        check_target(tmp_path, True, "s", [tmp_path / "in"])
    with pytest.raises(FileExistsError, match=r"output '.*/in' exists and is not a regular file"):
        check_file_target(tmp_path / "in")
    assert check_file_target(tmp_path / "f.csv", [tmp_path / "in"]) == tmp_path / "f.csv"
    (tmp_path / "in" / "x").write_text("x")
    # not bowsvm's: refused outright, with or without --overwrite (no "pass --overwrite" hint)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"'.*/in' exists and is not a complete bowsvm"):
            check_target(tmp_path / "in", overwrite, "s")
    with atomic_output_dir(tmp_path / "o", stage="s") as tmp:
        write_json_atomic(tmp / "manifest.json", {"stage": "s"})
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        check_target(tmp_path / "o", False, "s")
    with pytest.raises(FileExistsError, match="holds the output of `bowsvm s`, not of `bowsvm t`"):
        check_target(tmp_path / "o", False, "t")
    assert check_target(tmp_path / "o", True, "s") == tmp_path / "o"


# ------------------------------------------------------------ stale temporaries (item 7)

def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path, capsys):
    feats = make_feature_set(tmp_path / "features", n=(60, 30), d=8, C=3, shards=1)
    models = tmp_path / "models"
    dead = fake_tmp(models, "fs", "dead00000000", pid=dead_pid())
    live = fake_tmp(models, "fs", "live00000000", pid=os.getpid())
    other = fake_tmp(models, "fs", "otherhost000", pid=1, host="not-" + socket.gethostname())
    legacy_old = fake_tmp(models, "fs", "legacyold000")  # no writer file, 2 h old
    t = legacy_old.stat().st_mtime - STALE_NO_WRITER_SECONDS - 3600
    os.utime(legacy_old, (t, t))
    legacy_new = fake_tmp(models, "fs", "legacynew000")  # no writer file, just made
    neighbour = fake_tmp(models, "fs2", "dead00000000", pid=dead_pid())  # another target
    swapped = models / ".fs.old-000000000000"  # an old output renamed aside by a killed swap
    swapped.mkdir()
    (swapped / "coef.npy").write_bytes(b"old")
    train = ["train", "--feature-set", "fs", "--features", str(feats), "--models", str(models),
             "--quiet", "--n-jobs", "1", "--eta0", "0.1", "--epochs", "1"]
    assert cli.main(train) == 0
    err = capsys.readouterr().err
    assert f"removed stale temporary folder {dead} (its writer, pid" in err, err
    assert f"removed stale temporary folder {legacy_old} (no writer recorded" in err
    assert f"left {live} (its writer, pid {os.getpid()}, is still running)" in err
    assert f"left {other} (written by pid 1 on host" in err
    assert f"left {legacy_new} (no writer recorded" in err
    assert f"left {swapped}: it is the previous 'fs' of a run killed while swapping" in err
    assert not dead.exists() and not legacy_old.exists()
    for kept in (live, other, legacy_new, neighbour, swapped):
        assert kept.exists(), kept
    assert (live / "half-written.parquet").read_bytes() == b"x" * 100
    # once the output is in place, the renamed-aside old output goes on the next write
    assert cli.main([*train, "--overwrite"]) == 0
    assert f"removed stale folder {swapped}" in capsys.readouterr().err
    assert not swapped.exists() and live.exists()
    # train's checkpoint and group staging folders are its own (resume needs them)
    for own in (".fs.checkpoint", ".fs.groups"):
        (models / own).mkdir()
    assert clean_stale(models / "fs") == []
    assert (models / ".fs.checkpoint").is_dir() and (models / ".fs.groups").is_dir()


def test_writer_file_never_reaches_the_output(tmp_path):
    with atomic_output_dir(tmp_path / "o", stage="s") as tmp:
        w = json.loads((tmp / WRITER).read_text())
        assert w["pid"] == os.getpid() and w["host"] == socket.gethostname()
        write_json_atomic(tmp / "manifest.json", {"stage": "s"})
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["_SUCCESS", "manifest.json"]
    with pytest.raises(ValueError, match="stage 't' wrote a manifest of stage 's'"):
        with atomic_output_dir(tmp_path / "p", stage="t") as tmp:
            write_json_atomic(tmp / "manifest.json", {"stage": "s"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    assert clean_stale(tmp_path / "o") == []


def test_target_that_changed_during_the_run_is_not_replaced(tmp_path):
    out = tmp_path / "o"
    with atomic_output_dir(out, stage="s") as tmp:
        write_json_atomic(tmp / "manifest.json", {"stage": "s", "v": 1})
    with pytest.raises(FileExistsError, match="is not a complete bowsvm output"):
        with atomic_output_dir(out, overwrite=True, stage="s") as tmp:
            write_json_atomic(tmp / "manifest.json", {"stage": "s", "v": 2})
            (out / "_SUCCESS").unlink()  # someone else replaced it meanwhile
            (out / "theirs.txt").write_text("theirs")
    assert (out / "theirs.txt").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


@pytest.mark.slow
def test_killed_prepare_temporary_is_cleaned_by_the_next_run(tmp_path, fashion_dir):
    out = tmp_path / "images"
    kill_while_writing(["prepare", "--fashion-mnist", str(fashion_dir), "--output", str(out),
                        "--master", "local[1]"], tmp_path, "images", settle=1)
    left = list(tmp_path.glob(".images.tmp-*"))
    assert len(left) == 1 and (left[0] / WRITER).is_file()
    tree = tiny_tree(tmp_path / "tree")
    proc = bowsvm("prepare", "--input", tree, "--output", out, "--val-per-class", "1",
                  "--min-per-class", "1", "--master", "local[1]")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr  # spark-submit merges the driver's stderr into stdout
    assert f"removed stale temporary folder {left[0]} (its writer, pid" in log, log[-3000:]
    assert not left[0].exists()
    assert read_manifest(out, stage="prepare")["n_images"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "tree"]
