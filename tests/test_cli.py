"""The console script: every subcommand exists for real, has help, and forwards its options."""

import argparse
import subprocess
import sys

import pytest

from bowsvm.cli import build_parser
from bowsvm.stages import codebook, extract, prepare
from bowsvm.spark import forward_args
from bowsvm.stages import prepare

COMMANDS = ["prepare", "codebook", "extract", "train", "score", "fuse", "report", "predict"]


def test_top_level_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "bowsvm.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for c in COMMANDS:
        assert f"    {c} " in out


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bowsvm {command}")
    assert "(default: " in out  # defaults are shown


@pytest.mark.parametrize("adder,argv", [
    (prepare.add_arguments, ["--fashion-mnist", "/d", "--output", "/o", "--val-per-class", "5",
                         "--limit-per-class", "3", "--format", "png", "--overwrite"]),
    (codebook.add_arguments, ["--feature-set", "a", "--images", "/i", "--codebooks", "/c",
                              "--kmeans", "mllib", "--seed", "4"]),
    (extract.add_arguments, ["--feature-set", "a", "--preset", "b", "--images", "/i",
                             "--codebooks", "/c", "--features", "/f", "--partitions", "7"]),
])
def test_forward_args_round_trip(adder, argv):
    p = argparse.ArgumentParser()
    adder(p)
    args = p.parse_args(argv)
    assert p.parse_args(forward_args(adder, args)) == args


def test_unknown_preset_fails_before_spark(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bowsvm.cli", "codebook", "--feature-set", "nope",
                           "--images", str(tmp_path), "--codebooks", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr


def test_python_dash_m_bowsvm_is_the_console_script():
    proc = subprocess.run([sys.executable, "-m", "bowsvm", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: bowsvm")
    for c in COMMANDS:
        assert f"    {c} " in proc.stdout
