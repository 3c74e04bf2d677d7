"""`bowsvm train` training practice: positive re-weighting, early stopping on val, and
hyper-parameter lists trained in one data pass and chosen on val (issue 13, item 3)."""

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from naive import asgd_sequential
from test_train import ROOT, _sequence, load, make_feature_set, reseal, train

from bowsvm import cli
from bowsvm.stages.train import KILL_ENV


def _noisy(split, X):
    """Overlapping classes: val top-1 moves from epoch to epoch instead of sitting at 1."""
    rng = np.random.default_rng(11 if split == "train" else 12)
    return (X + rng.normal(scale=3.0, size=X.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    return make_feature_set(tmp_path_factory.mktemp("noisy") / "features", n=(400, 200),
                            x_hook=_noisy)


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_pos_weight_cli_equals_sequential_algorithm(tmp_path):
    feats = make_feature_set(tmp_path / "features")
    budget = "20KB"
    assert train(feats, tmp_path / "m", "--epochs", "1", "--eta0", "0.5", "--reg", "0.01",
                 "--power", "1", "--bias-lr", "0.3", "--pos-weight", "auto",
                 "--memory-budget", budget, "--seed", "7", "--block-size", "16") == 0
    coef, b, man, _ = load(tmp_path / "m")
    q = 5 / 6 ** (2 / 3)
    assert man["hyper_parameters"]["pos_weight"] == pytest.approx(q)
    X, y, _ = _sequence(feats, budget, 7, 1)
    wbar, bbar, *_ = asgd_sequential(X, y, np.arange(6), reg=0.01, eta0=0.5, power=1.0,
                                     average_start=0, bias_lr=0.3, pos_weight=q)
    plain = asgd_sequential(X, y, np.arange(6), reg=0.01, eta0=0.5, power=1.0,
                            average_start=0, bias_lr=0.3)[0]
    assert np.abs(plain - wbar).max() > 1e-2 * np.abs(wbar).max()
    np.testing.assert_allclose(coef, wbar, rtol=0, atol=1e-4 * np.abs(wbar).max())
    np.testing.assert_allclose(b, bbar, rtol=0, atol=1e-4 * np.abs(bbar).max())


def test_early_stop_writes_the_best_epochs_exact_weights(noisy, tmp_path):
    opts = ["--eta0", "2", "--reg", "1e-3", "--seed", "1", "--memory-budget", "30KB"]
    assert train(noisy, tmp_path / "es", "--epochs", "12", "--early-stop", "2", *opts) == 0
    coef, b, man, log = load(tmp_path / "es")
    best = man["model_epoch"]
    top = [r["top1"] for r in log]
    assert best == 1 + int(np.argmax(top))  # the first epoch with the best val top-1
    assert len(log) == min(12, best + 2)  # stopped 2 epochs without a gain
    assert man["epochs"] == len(log) and man["selection"]["early_stop"] == 2
    assert man["selection"]["settings"][0]["finished"] in ("early-stop", None)
    assert len(log) < 12, "the test data should make early stopping stop"
    assert best < len(log)
    # the written model is epoch `best` exactly: train just that many epochs
    assert train(noisy, tmp_path / "alone", "--epochs", str(best), *opts) == 0
    c2, b2, man2, log2 = load(tmp_path / "alone")
    assert coef.tobytes() == c2.tobytes() and b.tobytes() == b2.tobytes()
    assert _strip(log[:best]) == _strip(log2)
    assert man2["model_epoch"] == best and man2["selection"]["early_stop"] == 0


def test_lists_choose_on_val_and_equal_training_alone(noisy, tmp_path, capsys):
    opts = ["--epochs", "3", "--seed", "2", "--memory-budget", "30KB"]
    assert cli.main(["train", "--feature-set", "fs", "--features", str(noisy), "--models",
                     str(tmp_path / "grid"), "--n-jobs", "1", "--reg", "0.3,1e-3,1e-5",
                     "--eta0", "auto,0.05", "--pos-weight", "1,2", *opts]) == 0
    err = capsys.readouterr().err
    coef, b, man, log = load(tmp_path / "grid")
    sel = man["selection"]
    tried = sel["settings"]
    assert len(tried) >= 8  # 3 x 2 x 2 settings, fewer if calibration picked 0.05
    assert sum('"setting": ' in line for line in err.splitlines()) == 3 * len(tried)
    k = sel["chosen"]
    assert "[train] chose setting" in err
    scores = [t["top1"] for t in tried]
    assert scores[k] == max(scores) and k == scores.index(max(scores))
    assert len(set(scores)) > 1  # the choice is not trivial
    h = man["hyper_parameters"]
    assert (h["reg"], h["eta0"], h["pos_weight"]) == (tried[k]["reg"], tried[k]["eta0"],
                                                       tried[k]["pos_weight"])
    assert h["average_start"] == 400  # the default: after the first epoch of 400 rows
    assert train(noisy, tmp_path / "alone", "--reg", repr(h["reg"]), "--eta0", repr(h["eta0"]),
                 "--pos-weight", repr(h["pos_weight"]), "--average-start", "400",
                 "--average-decay", repr(h["average_decay"]), "--bias-lr", repr(h["bias_lr"]),
                 *opts) == 0
    c2, b2, man2, log2 = load(tmp_path / "alone")
    assert coef.tobytes() == c2.tobytes() and b.tobytes() == b2.tobytes()
    assert _strip(log) == _strip(log2) and "setting" not in log[0]


def test_dcd_lists_and_early_stop_equal_training_alone(noisy, tmp_path, capsys):
    opts = ["--seed", "2", "--memory-budget", "30KB", "--n-jobs", "1"]
    base = ["train", "--feature-set", "fs", "--features", str(noisy), "--solver", "dcd"]
    assert cli.main([*base, "--models", str(tmp_path / "grid"), "--reg", "1,1e-3",
                     "--pos-weight", "1,auto", "--epochs", "8", "--early-stop", "2",
                     *opts]) == 0
    err = capsys.readouterr().err
    coef, b, man, log = load(tmp_path / "grid")
    sel = man["selection"]
    tried = sel["settings"]
    assert len(tried) == 4 and all(t["solver"] == "dcd" for t in tried)
    assert "eta0" not in err.split("[train] chose", 1)[1].splitlines()[0]
    scores = [t["top1"] for t in tried]
    k = sel["chosen"]
    assert scores[k] == max(scores) and len(set(scores)) > 1
    h = man["hyper_parameters"]
    assert (h["solver"], h["reg"], h["pos_weight"]) == ("dcd", tried[k]["reg"],
                                                        tried[k]["pos_weight"])
    assert man["method"] == "dcd" and all(r["method"] == "dcd" for r in log)
    best = man["model_epoch"]
    assert best == tried[k]["model_epoch"] and best <= len(log)
    assert cli.main([*base, "--models", str(tmp_path / "alone"), "--reg", repr(h["reg"]),
                     "--pos-weight", repr(h["pos_weight"]), "--epochs", str(best),
                     "--average-start", "400", "--quiet", *opts]) == 0
    c2, b2, man2, log2 = load(tmp_path / "alone")
    assert coef.tobytes() == c2.tobytes() and b.tobytes() == b2.tobytes()
    assert _strip(log[:best]) == _strip(log2)


def test_auto_eta0_per_setting_equals_alone(noisy, tmp_path):
    opts = ["--epochs", "2", "--seed", "3", "--memory-budget", "30KB"]
    assert train(noisy, tmp_path / "grid", "--reg", "1e-2,1e-4", "--eta0", "auto", *opts) == 0
    coef, _, man, _ = load(tmp_path / "grid")
    reg = man["hyper_parameters"]["reg"]
    assert train(noisy, tmp_path / "alone", "--reg", repr(reg), "--eta0", "auto", *opts) == 0
    c2, _, man2, _ = load(tmp_path / "alone")
    assert man2["eta0"] == man["eta0"] and coef.tobytes() == c2.tobytes()


def test_diverging_setting_is_dropped_and_reported(noisy, tmp_path):
    assert train(noisy, tmp_path / "m", "--epochs", "2", "--reg", "1e-4",
                 "--eta0", "0.05,5000", "--bias-lr", "1") == 0
    _, _, man, _ = load(tmp_path / "m")
    tried = man["selection"]["settings"]
    assert man["selection"]["chosen"] == 0
    assert tried[1]["finished"] == "diverged" and "training diverged" in tried[1]["error"]
    assert train(noisy, tmp_path / "all", "--epochs", "2", "--reg", "1e-4",
                 "--eta0", "4000,5000", "--bias-lr", "1") == 2


@pytest.mark.slow
def test_lists_and_early_stop_resume_after_sigkill(noisy, tmp_path):
    base = [sys.executable, "-m", "bowsvm.cli", "train", "--feature-set", "fs", "--features",
            str(noisy), "--epochs", "6", "--reg", "1e-3,1e-5", "--eta0", "2",
            "--early-stop", "1", "--memory-budget", "30KB", "--n-jobs", "1", "--seed", "1",
            "--quiet"]
    env = dict(os.environ)
    assert subprocess.run(base + ["--models", str(tmp_path / "full")], env=env,
                          cwd=ROOT).returncode == 0
    env[KILL_ENV] = "2"
    assert subprocess.run(base + ["--models", str(tmp_path / "res")], env=env,
                          cwd=ROOT).returncode == -9
    env.pop(KILL_ENV)
    assert subprocess.run(base + ["--models", str(tmp_path / "res"), "--resume"], env=env,
                          cwd=ROOT).returncode == 0
    a, ab, am, al = load(tmp_path / "full")
    c, cb, cm, cl = load(tmp_path / "res")
    assert a.tobytes() == c.tobytes() and ab.tobytes() == cb.tobytes()
    assert _strip(al) == _strip(cl)
    for m in (am, cm):
        for t in m["selection"]["settings"]:
            t.pop("error")
    assert am["selection"] == cm["selection"] and am["model_epoch"] == cm["model_epoch"]


@pytest.mark.filterwarnings("ignore:the shards' Parquet row groups")
def test_spark_lists_and_early_stop_equal_local(noisy, tmp_path):
    from bowsvm.spark import spark_submit

    common = ["--feature-set", "fs", "--features", str(noisy), "--epochs", "5",
              "--reg", "1e-3,1e-5", "--eta0", "2,auto", "--early-stop", "1", "--groups", "2",
              "--seed", "4", "--n-jobs", "1", "--memory-budget", "40KB"]
    assert cli.main(["train", *common, "--models", str(tmp_path / "local"), "--quiet"]) == 0
    assert spark_submit("train_groups.py", [*common, "--models", str(tmp_path / "spark")],
                        master="local[2]") == 0
    a, ab, am, al = load(tmp_path / "local")
    c, cb, cm, cl = load(tmp_path / "spark")
    assert a.tobytes() == c.tobytes() and ab.tobytes() == cb.tobytes()
    assert _strip(al) == _strip(cl)
    assert am["selection"] == cm["selection"] and am["model_epoch"] == cm["model_epoch"]
    assert any(t["finished"] == "early-stop" for t in am["selection"]["settings"])
    assert not (tmp_path / "spark" / ".fs.groups").exists()


def test_option_errors(noisy, tmp_path, capsys):
    m = tmp_path / "m"
    cases = [
        (["--reg", "1e-4,small"], "--reg '1e-4,small': 'small' is not a number"),
        (["--pos-weight", "0"], "--pos-weight '0': 0 must be positive"),
        (["--pos-weight", "heavy"], "--pos-weight 'heavy' is not a number or 'auto'"),
        (["--eta0", "0.1,-1"], "--eta0 '0.1,-1': -1 must be positive"),
        (["--early-stop", "-1"], "early-stop"),
        (["--reg", "1e-4,1e-5", "--no-validate"], "choose on the val split; drop --no-validate"),
        (["--early-stop", "2", "--no-validate"], "--early-stop choose on the val split"),
        (["--reg", "2", "--eta0", "0.1,0.6"],
         "--reg 2 with --eta0 0.6 and --pos-weight 1: --reg * --eta0 = 1.2 must be below 1"),
        (["--power", "-1"], "--power=-1.0 is out of range; expected --power >= 0.0"),
        (["--block-size", "0"], "--block-size"),
        (["--average-decay", "-2"],
         "--average-decay=-2.0 is out of range; expected --average-decay >= 0.0"),
    ]
    for extra, match in cases:
        assert train(noisy, m, *extra) == 2, extra
        err = capsys.readouterr().err
        assert match.replace("\\", "") in err, (extra, err)
    assert not m.exists()


def test_lists_need_a_val_split(tmp_path, capsys):
    feats = make_feature_set(tmp_path / "features")
    shutil.rmtree(feats / "fs" / "val")
    reseal(feats / "fs")
    assert train(feats, tmp_path / "m", "--reg", "1e-3,1e-4") == 2
    assert "has none" in capsys.readouterr().err
    assert train(feats, tmp_path / "m", "--epochs", "1") == 0  # one setting trains without val


@pytest.mark.filterwarnings("ignore:the shards' Parquet row groups")
def test_defaults_reweight_average_after_one_epoch_and_quarter_the_calibrated_step(tmp_path):
    """`bowsvm train` with no training option (the defaults chosen for 5 epochs, issue 16):
    pos-weight auto, averaging from the second epoch with recent iterates weighted
    (average-decay 3), bias step 0.02, a quarter of the calibrated eta0; the model equals
    the sequential algorithm with those values."""
    import argparse

    from bowsvm.asgd.trainer import ETA0_AUTO_FRACTION, calibrate_eta0
    from bowsvm._validation import parse_bytes
    from bowsvm.io.features import iter_chunks, open_feature_set, rows_per_chunk, scan_split
    from bowsvm.stages.train import CALIBRATION_ROWS, average_start

    feats = make_feature_set(tmp_path / "features")
    budget = "20KB"
    args = ["train", "--feature-set", "fs", "--features", str(feats), "--models",
            str(tmp_path / "m"), "--quiet", "--n-jobs", "1", "--epochs", "2",
            "--memory-budget", budget, "--seed", "7", "--block-size", "16"]
    assert cli.main(args) == 0
    coef, b, man, _ = load(tmp_path / "m")
    hp = man["hyper_parameters"]
    fs = open_feature_set(feats, "fs")
    train_info = scan_split(fs, "train")
    q = 5 / 6 ** (2 / 3)
    assert hp["pos_weight"] == pytest.approx(q)
    assert hp["average_start"] == train_info.n == 300
    assert hp["average_decay"] == 3.0 and hp["bias_lr"] == 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny budget's row-group warning
        rows = rows_per_chunk(fs, train_info, parse_bytes(budget))
    _, lab, Xc = next(iter_chunks(train_info, fs.dim, min(rows, CALIBRATION_ROWS),
                                  np.random.default_rng([7, 0])))
    best = calibrate_eta0(Xc, lab, 6, hp["reg"], hp["power"], hp["bias_lr"], 16, pos_weight=q)
    assert hp["eta0"] == man["eta0"] == ETA0_AUTO_FRACTION * best
    X, y, _ = _sequence(feats, budget, 7, 2)
    wbar, bbar, *_ = asgd_sequential(X, y, np.arange(6), reg=hp["reg"], eta0=hp["eta0"],
                                     power=hp["power"], average_start=300, bias_lr=hp["bias_lr"],
                                     pos_weight=q, average_decay=3.0)
    np.testing.assert_allclose(coef, wbar, rtol=0, atol=1e-4 * np.abs(wbar).max())
    np.testing.assert_allclose(b, bbar, rtol=0, atol=1e-4 * np.abs(bbar).max())
    # auto is one epoch only when there is a second; a number is taken as given
    one = argparse.Namespace(average_start="auto", epochs=1)
    assert average_start(one, 240) == 0
    assert average_start(argparse.Namespace(average_start="17", epochs=5), 240) == 17
    for bad in ("-1", "1.5", "epoch"):
        with pytest.raises(ValueError, match="--average-start"):
            average_start(argparse.Namespace(average_start=bad, epochs=5), 240)
