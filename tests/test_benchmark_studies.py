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
    # the last setting (reg 1e-5, pos-weight auto = 4/5^(2/3)) trained on its own
    assert settings[3].startswith("--reg 1e-05 ") and "--pos-weight 1.36798" in settings[3]
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


@pytest.mark.parametrize("solver, start", [("asgd", "0"), ("asgd", "epoch"), ("dcd", "0")])
def test_density_bench_times_both_epochs_of_every_path(tmp_path, solver, start):
    import bench_density
    out = tmp_path / "density.json"
    assert bench_density.main(["--n", "300", "--d", "400", "--classes", "7", "--densities",
                               "0.01,0.2", "--reps", "1", "--solver", solver,
                               "--average-start", start, "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["average_start"] == (300 if start == "epoch" else 0)
    rows = summary["rows"]
    assert [r["floor"] for r in rows] == ["csr_product", "gemm"]
    for r in rows:
        for path in ("sparse", "dense", "default"):
            assert r[f"{path}_seconds"] > 0 and r[f"{path}_epoch1_seconds"] > 0
        floor = r[f"{r['floor']}_seconds"]
        assert r["default_over_floor"] == r["default_seconds"] / floor
        assert r["default_epoch1_over_floor"] == r["default_epoch1_seconds"] / floor
        # one repetition: each epoch over the mean of the floors timed around it
        ((f0, f1, f2),) = r["paired_floor_seconds"]
        assert min(f0, f1, f2) > 0
        assert r["default_paired_epoch1_over_floor"] == r["default_epoch1_seconds"] / ((f0 + f1) / 2)
        assert r["default_paired_over_floor"] == r["default_seconds"] / ((f1 + f2) / 2)
        assert r["block_gemms_paired_over_gemm"] > 0 and r["margin_gemms_paired_over_gemm"] > 0
        if solver == "asgd":  # the default epoch's phases, over the same floors
            phases = r["default_phases_over_floor"]
            assert phases["walk"] > 0 and 0 <= phases["violating"] <= 1
            if r["floor"] == "gemm":  # dense blocks: margins GEMM and updates
                assert phases["margins"] > 0 and phases["violating"] > 0


def test_density_bench_times_a_feature_sets_rows(tmp_path):
    """--features times the rows of a feature set's train split (its classes, its
    density), only the paths asked for."""
    import bench_density
    make_feature_set(tmp_path, "fs", n=(300, 90), d=24, C=6, layout="sparse")
    out = tmp_path / "density.json"
    assert bench_density.main(["--features", str(tmp_path), "--feature-set", "fs", "--rows", "200",
                               "--paths", "dense,default", "--reps", "1", "--average-start",
                               "epoch", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    (r,) = summary["rows"]
    assert (r["features"], r["n"], r["d"], r["C"], summary["average_start"]) == ("fs", 200, 24, 6, 200)
    assert 0.3 < r["density"] < 0.5 and r["floor"] == "gemm"
    assert "sparse_seconds" not in r and r["dense_seconds"] > 0 and r["default_seconds"] > 0
    with pytest.raises(SystemExit):
        bench_density.main(["--features", str(tmp_path), "--paths", "default"])  # no --feature-set
    with pytest.raises(SystemExit):
        bench_density.main(["--paths", "walk"])


def test_block_update_bench_compares_both_forms(tmp_path):
    import bench_block_update
    out = tmp_path / "upd.json"
    assert bench_block_update.main(["--n", "64", "--d", "300", "--classes", "9",
                                    "--block-size", "16", "--densities", "0.05",
                                    "--violations", "0.1,0.5", "--reps", "2",
                                    "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["violations"] for r in rows] == [0.1, 0.5]
    assert rows[0]["pairs_updated"] < rows[1]["pairs_updated"] and rows[0]["densify_blocks"] == 4
    assert all(r["update_csr_rows_seconds"] > 0 and r["densify_scatter_clear_seconds"] > 0
               for r in rows)
