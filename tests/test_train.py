"""`bowsvm train`: streaming from feature shards, checkpoints, resume, bad input."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from naive import asgd_sequential, dcd_sequential

from bowsvm import cli
from bowsvm.io import atomic_output_dir, read_manifest, write_json_atomic
from bowsvm.io.features import (
    open_feature_set,
    rows_per_chunk,
    scan_split,
    shards_per_chunk,
    shard_entries,
    write_shard,
)
from bowsvm.stages.train import KILL_ENV, parse_bytes

ROOT = Path(__file__).resolve().parent.parent


def make_feature_set(root, name="fs", n=(300, 90), d=24, C=6, layout="dense", seed=0,
                     shards=3, dim=None, labels_hook=None, x_hook=None):
    """Write features/NAME with train/val shards of separable Gaussian data."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(C, d)) * 2
    with atomic_output_dir(Path(root) / name) as tmp:
        counts = {}
        for split, ns in zip(("train", "val"), n):
            (tmp / split).mkdir()
            y = rng.integers(0, C, ns)
            y[:min(C, ns)] = np.arange(C)[:ns]
            X = (centers[y] + rng.normal(size=(ns, d))).astype(np.float32)
            if layout == "sparse":
                X *= rng.random((ns, d)) < 0.3
                X[:, 0] = 1.0
                X = sp.csr_matrix(X)
            if labels_hook:
                y = labels_hook(split, y)
            if x_hook:
                X = x_hook(split, X)
            bounds = np.linspace(0, ns, shards + 1).astype(int)
            for k in range(shards):
                a, b = bounds[k], bounds[k + 1]
                write_shard(tmp / split / f"part-{k:05d}.parquet",
                            [f"{split}-{i}" for i in range(a, b)], y[a:b], X[a:b], layout)
            counts[split] = int(ns)
        write_json_atomic(tmp / "manifest.json", {
            "stage": "extract", "feature_set": name, "preset": "test", "preset_hash": "abc",
            "codebook_hash": "def", "dim": dim or d, "layout": layout,
            "classes": [f"c{i}" for i in range(C)], "counts": counts,
            "shards": shard_entries(tmp),
        })
    return Path(root)


def reseal(folder):
    """Record rewritten shards in the manifest (as if the extractor had written them),
    so the checks behind the manifest's shard entries are the ones under test."""
    m = read_manifest(folder)
    m["shards"] = shard_entries(folder)
    write_json_atomic(Path(folder) / "manifest.json", m)


#: The references below are written for plain one-vs-all weights averaged from the
#: start; ``extra`` may override (argparse keeps an option's last value).
PLAIN = ("--pos-weight", "1", "--average-start", "0", "--average-decay", "0", "--bias-lr", "0.1")


def train(features, models, *extra):
    args = ["train", "--feature-set", "fs", "--features", str(features), "--models", str(models),
            "--quiet", "--n-jobs", "1", *PLAIN, *extra]
    return cli.main(args)


def load(models, name="fs"):
    m = Path(models) / name
    return (np.load(m / "coef.npy"), np.load(m / "intercept.npy"),
            read_manifest(m, stage="train"),
            [json.loads(r) for r in (m / "log.jsonl").read_text().splitlines()])


def _sequence(features, budget, seed, epochs, with_index=False):
    """The sample order the trainer promises (DESIGN: per-epoch rng [seed, e]).

    Shards in the order ``rng.permutation``, read ``shards_per_chunk`` at a time
    side by side (each chunk: ``rows // k`` rows of each, in window order), each
    chunk's rows shuffled by the same rng. ``with_index``: also each sample's
    row in the train split (shards in scan order, rows in stored order), per epoch.
    """
    fs = open_feature_set(features, "fs")
    info = scan_split(fs, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny budgets: see test_row_groups_count_in_budget
        rows = rows_per_chunk(fs, info, parse_bytes(budget))
    k = shards_per_chunk(info, parse_bytes(budget))
    from bowsvm.io.features import iter_shard_batches

    starts = np.cumsum([0, *info.rows])
    Xs, ys, orders = [], [], []
    for e in range(1, epochs + 1):
        rng = np.random.default_rng([seed, e])
        files = list(rng.permutation(len(info.files)))
        order = []
        for w in range(0, len(files), k):
            window = files[w:w + k]
            per = max(1, rows // len(window))
            batches = {fi: list(iter_shard_batches(info.files[fi], fs.dim, per)) for fi in window}
            firsts = {fi: np.cumsum([0] + [len(b[1]) for b in batches[fi]]) for fi in window}
            for step in range(max(len(b) for b in batches.values())):
                here = [fi for fi in window if step < len(batches[fi])]
                X = [batches[fi][step][2] for fi in here]
                X = sp.vstack(X).toarray() if sp.issparse(X[0]) else np.concatenate(X)
                lab = np.concatenate([batches[fi][step][1] for fi in here])
                idx = np.concatenate([starts[fi] + firsts[fi][step] +
                                      np.arange(len(batches[fi][step][1])) for fi in here])
                p = rng.permutation(lab.shape[0])
                Xs.append(X[p])
                ys.append(lab[p])
                order.append(idx[p])
        orders.append(np.concatenate(order))
    out = np.concatenate(Xs).astype(np.float64), np.concatenate(ys), rows
    return (*out, orders) if with_index else out


@pytest.mark.filterwarnings("ignore:the shards' Parquet row groups")
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_streamed_training_equals_sequential_algorithm(tmp_path, layout):
    feats = make_feature_set(tmp_path / "features", layout=layout)
    budget = "20KB"  # a few dozen rows per chunk: many chunks per shard
    assert train(feats, tmp_path / "models", "--epochs", "2", "--eta0", "0.5", "--reg", "0.01",
                 "--power", "1", "--average-start", "100", "--bias-lr", "0.3",
                 "--memory-budget", budget, "--seed", "7", "--block-size", "16") == 0
    coef, b, man, log = load(tmp_path / "models")
    X, y, rows = _sequence(feats, budget, 7, 2)
    assert rows < 100
    wbar, bbar, *_ = asgd_sequential(X, y, np.arange(6), reg=0.01, eta0=0.5, power=1.0,
                                     average_start=100, bias_lr=0.3, epochs=1)
    assert coef.dtype == np.float32 and coef.shape == (6, 24)
    np.testing.assert_allclose(coef, wbar, rtol=0, atol=1e-4 * np.abs(wbar).max())
    np.testing.assert_allclose(b, bbar, rtol=0, atol=1e-4 * np.abs(bbar).max())
    assert man["t"] == 600 and man["classes"] == [f"c{i}" for i in range(6)]
    assert man["dim"] == 24 and man["preset_hash"] == "abc" and man["epochs"] == 2
    assert isinstance(man["seconds"], float) and man["seconds"] >= man["timings"]["train_seconds"]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(r["top1"] > 0.7 and r["top5"] >= r["top1"] and r["objective"] > 0 for r in log), log
    assert not (tmp_path / "models" / ".fs.checkpoint").exists()


@pytest.mark.filterwarnings("ignore:the shards' Parquet row groups")
@pytest.mark.parametrize("layout,budget,mix", [("dense", "20KB", 1), ("sparse", "20KB", 1),
                                               ("sparse", "60KB", 2), ("dense", "200KB", 3)])
def test_streamed_dcd_equals_sequential_algorithm(tmp_path, layout, budget, mix):
    """Also with shards read side by side (``mix`` of the 3 at once)."""
    feats = make_feature_set(tmp_path / "features", layout=layout, shards=3)
    fs = open_feature_set(feats, "fs")
    assert shards_per_chunk(scan_split(fs, "train"), parse_bytes(budget)) == mix
    assert cli.main(["train", "--feature-set", "fs", "--features", str(feats), "--models",
                     str(tmp_path / "models"), "--quiet", "--epochs", "2", "--solver", "dcd",
                     "--reg", "0.01", "--pos-weight", "2", "--no-average", "--memory-budget", budget,
                     "--seed", "7", "--block-size", "16"]) == 0
    coef, b, man, log = load(tmp_path / "models")
    X, y, rows, orders = _sequence(feats, budget, 7, 2, with_index=True)
    assert rows < 300 and man["shards_per_chunk"] == mix
    Xs = np.empty_like(X[:300])
    ys = np.empty_like(y[:300])
    Xs[orders[0]], ys[orders[0]] = X[:300], y[:300]  # the train split in stored order
    _, _, w, bw, alpha = dcd_sequential(Xs, ys, np.arange(6), reg=0.01, pos_weight=2.0,
                                        orders=orders)
    np.testing.assert_allclose(coef, w, rtol=0, atol=1e-4 * np.abs(w).max())
    np.testing.assert_allclose(b, bw, rtol=0, atol=1e-4 * np.abs(w).max())
    assert man["method"] == "dcd-last" and [r["method"] for r in log] == ["dcd-last"] * 2
    assert man["t"] == 600 and log[-1]["top1"] > 0.5  # chance: 1/6


def test_class_after_class_rows_are_warned_about(tmp_path):
    sorted_feats = make_feature_set(tmp_path / "sorted", labels_hook=lambda split, y: np.sort(y))
    mixed_feats = make_feature_set(tmp_path / "mixed")
    for feats, grouped in ((sorted_feats, True), (mixed_feats, False)):
        info = scan_split(open_feature_set(feats, "fs"), "train")
        assert info.grouped_by_class() == grouped and (info.runs <= 18) == grouped
    with pytest.warns(UserWarning, match=r"feature set 'fs' come class after class \(\d+ runs "
                                         r"of one label in 300 rows\).*Re-extract"):
        assert train(sorted_feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1") == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train(mixed_feats, tmp_path / "m2", "--epochs", "1", "--eta0", "0.1") == 0


def test_dcd_records_no_step_and_refuses_step_options(tmp_path, capsys):
    feats = make_feature_set(tmp_path / "features")
    base = ["train", "--feature-set", "fs", "--features", str(feats), "--quiet", "--n-jobs", "1",
            "--solver", "dcd"]
    assert cli.main([*base, "--models", str(tmp_path / "m"), "--epochs", "2"]) == 0
    _, _, man, log = load(tmp_path / "m")
    h = man["hyper_parameters"]
    assert man["method"] == "dcd" and h["solver"] == "dcd" and log[-1]["top1"] > 0.8
    assert (h["eta0"], h["power"], h["bias_lr"], h["average_decay"]) == (0.0, 0.0, 0.0, 0.0)
    assert h["average_start"] == 300 and h["pos_weight"] == pytest.approx(5 / 6 ** (2 / 3))
    for opt in (["--eta0", "0.1"], ["--bias-lr", "0.1"], ["--power", "1"],
                ["--average-decay", "0"]):
        assert cli.main([*base, "--models", str(tmp_path / "x"), *opt]) == 2
        err = capsys.readouterr().err
        assert f"{opt[0]} sets the step of --solver asgd" in err and "--solver asgd" in err


def test_dcd_memory_check_names_the_sizes():
    from bowsvm.asgd.core import Hyper
    from bowsvm.stages.train import check_dual_memory

    h = Hyper(solver="dcd")
    check_dual_memory([h], 1000, 21000, 40960)  # the many-class benchmark: 0.6 GiB
    check_dual_memory([Hyper()], 10 ** 6, 10 ** 7, 10)  # ASGD keeps no per-row state
    with pytest.raises(ValueError, match=r"--solver dcd needs 37252\.9 GiB here \(1 setting"
                                         r"\(s\) x 1000000 classes x 10000000 train rows.*"
                                         r"jobs/train_groups.py --groups G.*--solver asgd"):
        check_dual_memory([h], 10 ** 6, 10 ** 7, 1)


def test_groups_match_single_group(tmp_path):
    feats = make_feature_set(tmp_path / "features", C=7)
    assert train(feats, tmp_path / "m1", "--epochs", "2", "--eta0", "0.1") == 0
    assert train(feats, tmp_path / "m3", "--epochs", "2", "--eta0", "0.1", "--groups", "3") == 0
    a, ab, _, la = load(tmp_path / "m1")
    c, cb, man, lc = load(tmp_path / "m3")
    np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
    np.testing.assert_allclose(cb, ab, rtol=1e-5, atol=1e-6)
    assert man["groups"] == 3
    assert abs(la[-1]["top1"] - lc[-1]["top1"]) < 1e-9


def test_auto_eta0_and_plain_sgd(tmp_path):
    feats = make_feature_set(tmp_path / "features")
    assert train(feats, tmp_path / "m", "--epochs", "2") == 0
    _, _, man, log = load(tmp_path / "m")
    assert man["eta0"] > 0 and man["method"] == "asgd" and log[-1]["top1"] > 0.8
    assert train(feats, tmp_path / "s", "--epochs", "2", "--no-average", "--eta0", "0.05") == 0
    _, _, man, log = load(tmp_path / "s")
    assert man["method"] == "sgd" and log[0]["method"] == "sgd"


#: The options that pick each solver in the tests that run both.
SOLVER = {"asgd": ("--eta0", "0.2"), "dcd": ("--solver", "dcd")}


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["asgd", "dcd"])
def test_resume_after_sigkill_gives_same_model(tmp_path, solver):
    feats = make_feature_set(tmp_path / "features", layout="sparse")
    base = [sys.executable, "-m", "bowsvm.cli", "train", "--feature-set", "fs", "--features",
            str(feats), "--epochs", "3", *SOLVER[solver], "--memory-budget", "30KB",
            "--n-jobs", "1", "--seed", "3", "--quiet"]
    env = dict(os.environ)
    r = subprocess.run(base + ["--models", str(tmp_path / "full")], env=env, cwd=ROOT)
    assert r.returncode == 0
    env[KILL_ENV] = "1"
    r = subprocess.run(base + ["--models", str(tmp_path / "res")], env=env, cwd=ROOT)
    assert r.returncode == -9  # SIGKILL after the checkpoint of epoch 1
    assert (tmp_path / "res" / ".fs.checkpoint" / "checkpoint.json").is_file()
    assert not (tmp_path / "res" / "fs").exists()
    env.pop(KILL_ENV)
    r = subprocess.run(base + ["--models", str(tmp_path / "res"), "--resume"], env=env, cwd=ROOT)
    assert r.returncode == 0
    a, ab, _, la = load(tmp_path / "full")
    c, cb, _, lc = load(tmp_path / "res")
    assert a.tobytes() == c.tobytes() and ab.tobytes() == cb.tobytes()
    assert [r["top1"] for r in la] == [r["top1"] for r in lc]


@pytest.mark.filterwarnings("ignore:the shards' Parquet row groups")
def test_two_runs_identical_bits(tmp_path):
    feats = make_feature_set(tmp_path / "features", shards=4)
    for m in ("a", "b"):
        assert train(feats, tmp_path / m, "--epochs", "2", "--seed", "5",
                     "--memory-budget", "15KB") == 0
    assert load(tmp_path / "a")[0].tobytes() == load(tmp_path / "b")[0].tobytes()
    assert train(feats, tmp_path / "c", "--epochs", "2", "--seed", "6",
                 "--memory-budget", "15KB") == 0
    assert load(tmp_path / "a")[0].tobytes() != load(tmp_path / "c")[0].tobytes()


def test_resume_refuses_other_settings(tmp_path, capsys):
    feats = make_feature_set(tmp_path / "features")
    ck = tmp_path / "m" / ".fs.checkpoint"
    from bowsvm.asgd.core import Hyper
    from bowsvm.stages.train import train_feature_set

    fs = open_feature_set(feats, "fs")
    train_feature_set(fs, hyper=Hyper(eta0=0.1, power=1.0), epochs=2, checkpoint_dir=ck, n_jobs=1)
    assert train(feats, tmp_path / "m", "--epochs", "2", "--eta0", "0.2", "--resume") == 2
    assert "different settings" in capsys.readouterr().err


def _expect_error(tmp_path, capsys, match, **kw):
    feats = make_feature_set(tmp_path / "features", **kw)
    assert train(feats, tmp_path / "models", "--epochs", "1", "--eta0", "0.1") == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert not (tmp_path / "models" / "fs").exists()


def test_nan_feature_names_shard_and_row(tmp_path, capsys):
    def hook(split, X):
        if split == "train":
            X[250, 3] = np.nan  # shard 2 holds rows 200..299 -> row 50
        return X
    _expect_error(tmp_path, capsys, "part-00002.parquet' row 50 holds NaN", x_hook=hook)


def test_label_outside_class_list(tmp_path, capsys):
    def hook(split, y):
        y = y.copy()
        if split == "val":
            y[5] = 9
        return y
    _expect_error(tmp_path, capsys, "row 5 has label 9, outside the class list", labels_hook=hook)


def test_class_without_examples(tmp_path, capsys):
    def hook(split, y):
        return np.where(y == 4, 0, y) if split == "train" else y
    _expect_error(tmp_path, capsys, "no example of class(es) ['c4']", labels_hook=hook)


def test_dimension_mismatch(tmp_path, capsys):
    _expect_error(tmp_path, capsys, "has feature dimension 24, but the manifest says dim=30", dim=30)


def test_empty_split(tmp_path, capsys):
    _expect_error(tmp_path, capsys, "split 'train' of feature set 'fs' is empty", n=(0, 20))


def test_existing_model_and_bad_options(tmp_path, capsys):
    feats = make_feature_set(tmp_path / "features")
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1") == 0
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1") == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1", "--overwrite") == 0
    assert train(feats, tmp_path / "x", "--eta0", "fast") == 2
    assert "--eta0 'fast' is not a number" in capsys.readouterr().err
    assert train(feats, tmp_path / "x", "--memory-budget", "lots") == 2
    assert "memory budget 'lots' is not a size" in capsys.readouterr().err
    assert train(feats, tmp_path / "x", "--groups", "99") == 2
    assert "groups=99 is too large" in capsys.readouterr().err
    assert train(feats, tmp_path / "x", "--reg", "10", "--eta0", "1") == 2
    assert "--reg * --eta0 = 10 must be below 1" in capsys.readouterr().err


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 << 30
    assert parse_bytes("512m") == 512 << 20
    assert parse_bytes(1000) == 1000
    with pytest.raises(ValueError, match="is not a size"):
        parse_bytes("-1GB")


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["asgd", "dcd"])
def test_spark_groups_equal_local(tmp_path, solver):
    from bowsvm.spark import spark_submit

    feats = make_feature_set(tmp_path / "features", C=5, layout="sparse")
    common = ["--feature-set", "fs", "--features", str(feats), "--epochs", "2",
              *{"asgd": ("--eta0", "auto"), "dcd": ("--solver", "dcd")}[solver], "--groups", "2",
              "--seed", "4", "--n-jobs", "1",
              "--memory-budget", "40KB"]
    assert cli.main(["train", *common, "--models", str(tmp_path / "local"), "--quiet"]) == 0
    rc = spark_submit("train_groups.py", [*common, "--models", str(tmp_path / "spark")],
                      master="local[2]")
    assert rc == 0
    a, ab, am, al = load(tmp_path / "local")
    c, cb, cm, cl = load(tmp_path / "spark")
    assert a.tobytes() == c.tobytes() and ab.tobytes() == cb.tobytes()
    assert cm["groups"] == 2 and cm["eta0"] == am["eta0"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in al]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in cl] == strip
    assert len(cl) == 2 and "top5" in cl[0]
    assert not (tmp_path / "spark" / ".fs.groups").exists()


def test_calibrate_eta0_finds_best_power_of_two():
    from bowsvm.asgd.trainer import calibrate_eta0

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 10)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    X[np.arange(300), y] += 3
    grid = [2.0 ** k for k in range(-8, 4)]
    best_grid = calibrate_eta0(X, y, 3, 1e-3, 1.0, 0.1, candidates=grid)
    assert calibrate_eta0(X, y, 3, 1e-3, 1.0, 0.1) == best_grid  # unimodal here
    assert calibrate_eta0(X, y, 3, 0.9, 1.0, 0.1) < 1 / 0.9


def test_spark_style_variable_lists(tmp_path, capsys):
    """Spark writes x as list<float>, not fixed_size_list: accepted; wrong lengths refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    feats = make_feature_set(tmp_path / "features", shards=2)
    for f in sorted((feats / "fs").glob("*/part-*.parquet")):
        t = pq.read_table(f)
        x = t.column("x").combine_chunks()
        var = pa.ListArray.from_arrays(pa.array(np.arange(len(x) + 1, dtype=np.int32) * 24),
                                       x.flatten())
        pq.write_table(t.set_column(2, "x", var), f)
    reseal(feats / "fs")
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1") == 0
    assert load(tmp_path / "m")[3][0]["top1"] > 0.7
    f = feats / "fs" / "train" / "part-00001.parquet"
    t = pq.read_table(f)
    rows = t.column("x").to_pylist()
    rows[7] = rows[7][:20]
    pq.write_table(t.set_column(2, "x", pa.array(rows, pa.list_(pa.float32()))), f)
    reseal(feats / "fs")
    assert train(feats, tmp_path / "m2", "--epochs", "1", "--eta0", "0.1") == 2
    assert "part-00001.parquet' holds feature rows whose length is not dim=24" in capsys.readouterr().err


def test_shard_with_other_preset_hash(tmp_path, capsys):
    import pyarrow.parquet as pq

    feats = make_feature_set(tmp_path / "features")
    f = feats / "fs" / "train" / "part-00001.parquet"
    t = pq.read_table(f)
    pq.write_table(t.replace_schema_metadata({"preset_hash": "zzz"}), f)
    reseal(feats / "fs")
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.1") == 2
    err = capsys.readouterr().err
    assert "part-00001.parquet' was built with preset hash 'zzz', but the manifest says 'abc'" in err


def test_row_groups_count_in_budget(tmp_path):
    feats = make_feature_set(tmp_path / "features", n=(2000, 50), d=64, shards=1)
    fs = open_feature_set(feats, "fs")
    info = scan_split(fs, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = rows_per_chunk(fs, info, parse_bytes("10MB"))
    # 10 MB minus two decoded row groups (~0.5 MB each), 5 copies of 320-byte rows
    assert 5000 < big < 10 * 2**20 // (5 * 320)
    with pytest.warns(UserWarning, match="row groups .* leave little"):
        small = rows_per_chunk(fs, info, parse_bytes("1MB"))
    assert small == (2**20 // 4) // (5 * (64 * 4 + 64) + 8 * 6)
