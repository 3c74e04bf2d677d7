"""The study scripts under benchmarks/ report what the CLI trained."""

import json
import sys
from pathlib import Path

import pytest

from test_train import make_feature_set

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import study_convergence  # noqa: E402


def _study(tmp_path, name, *extra):
    out = tmp_path / f"{name}.json"
    assert study_convergence.main(["--features", str(tmp_path / "features"), "--feature-set", "fs",
                                   "--epochs", "3", "--default-epochs", "2", "--out", str(out),
                                   *extra]) == 0
    return json.loads(out.read_text())


def test_one_pass_grid_reads_each_setting_as_trained_alone(tmp_path):
    make_feature_set(tmp_path / "features", n=(400, 120), C=5, seed=3)
    grid = _study(tmp_path, "grid", "--grid", "reg=1e-3,1e-5 pos-weight=1,auto", "--one-pass")
    runs = grid["runs"]
    assert runs[0]["setting"] == "defaults" and len(runs[0]["top1"]) == 2
    settings = [r["setting"] for r in runs[1:]]
    assert len(settings) == 4 and len(set(settings)) == 4
    assert all(len(r["top1"]) == 3 and None not in r["top1"] for r in runs[1:])
    # the last setting (reg 1e-5, pos-weight auto = 4/sqrt(5)) trained on its own
    assert settings[3].startswith("--reg 1e-05 ") and "--pos-weight 1.78885" in settings[3]
    alone = _study(tmp_path, "alone", "--grid", "reg=1e-5 pos-weight=auto")["runs"][1]
    assert alone["top1"] == runs[4]["top1"] and alone["top5"] == runs[4]["top5"]
    best = max(runs[1:], key=lambda r: max(r["top1"]))
    assert grid["best_top1"] == max(best["top1"]) and grid["best_setting"] == best["setting"]


def test_one_pass_refuses_options_that_are_not_lists(tmp_path, capsys):
    with pytest.raises(SystemExit):  # before any training: there is no feature set
        _study(tmp_path, "bad", "--grid", "power=1", "--one-pass")
    assert "--one-pass: ['power'] cannot be given as lists" in capsys.readouterr().err


def test_dcd_study_block_form_equals_sequential_and_learns(tmp_path, capsys):
    """benchmarks/study_dcd.py (issue 16's solver study): its block-exact DCD equals the
    sequential DCD (its own check), and on a generated feature set it learns."""
    import study_dcd

    study_dcd.check()
    make_feature_set(tmp_path / "features", n=(400, 120), C=5, seed=3)
    assert study_dcd.main(["--features", str(tmp_path / "features"), "--feature-set", "fs",
                           "--epochs", "3", "--block-size", "16", "--n-jobs", "1",
                           "--average-from", "2"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    epochs = [x for x in lines if "epoch" in x]
    assert [x["epoch"] for x in epochs] == [1, 2, 3]
    loaded = next(x for x in lines if "loaded" in x)
    assert loaded["loaded"][0] == 400 and loaded["classes"] == 5
    assert epochs[-1]["top1"] > 0.5 and epochs[-1]["support_pairs"] > 0
    assert "top1_averaged" not in epochs[0]  # averaging from the second epoch
    assert all(x["top1_averaged"] > 0.5 for x in epochs[1:])


def test_shard_order_study_trains_both_orders_alike_on_mixed_rows(tmp_path, capsys):
    """benchmarks/study_shard_order.py: the global order and the reader's order (shards
    side by side) train the same DCD; on rows already mixed both learn."""
    import study_shard_order

    make_feature_set(tmp_path / "features", n=(400, 120), C=5, seed=3, shards=4)
    for order in ("global", "4"):
        assert study_shard_order.main(["--features", str(tmp_path / "features"), "--feature-set",
                                       "fs", "--order", order, "--rows", "64"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["order"], x["epoch"]) for x in lines] == [("global", 1), ("global", 2),
                                                         ("4", 1), ("4", 2)]
    assert all(x["top1"] > 0.5 for x in lines)
