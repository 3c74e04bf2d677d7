"""The console script: every subcommand exists for real, has help, and forwards its options."""

import subprocess
import sys

import pytest

from bowsvm.cli import build_parser
from bowsvm.spark import stage_parser, stage_tokens
from bowsvm.stages import codebook, extract, prepare

COMMANDS = ["prepare", "codebook", "extract", "compress", "train", "score", "fuse", "report", "predict"]


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


@pytest.mark.parametrize("stage,argv", [
    (prepare, ["--fashion-mnist", "/d", "--output", "/o", "--val-per-class", "5",
               "--limit-per-class", "3", "--format", "png", "--overwrite"]),
    (codebook, ["--feature-set", "a", "--images", "/i", "--codebooks", "/c",
                "--kmeans", "mllib", "--seed", "4"]),
    (extract, ["--feature-set", "a", "--preset", "b", "--images", "/i",
               "--codebooks", "/c", "--features", "/f", "--partitions", "7"]),
])
@pytest.mark.parametrize("spark", [
    [], ["--master", "local-cluster[2,1,1024]", "--conf", "a=b", "--conf=c=d",
         "--driver-memory", "3g"]])
def test_job_gets_the_users_own_tokens(stage, argv, spark):
    """The CLI hands the job the stage's tokens; the job parses them to the same options."""
    tokens = spark[:2] + argv + spark[2:]
    cli_args = build_parser().parse_args([stage.NAME, *tokens])
    forwarded = stage_tokens(tokens)
    assert forwarded == argv
    job_args = stage_parser(stage, stage.JOB).parse_args(forwarded)
    spark_dests = {"master", "conf", "driver_memory", "_run", "command"}
    assert vars(job_args) == {k: v for k, v in vars(cli_args).items() if k not in spark_dests}
    if spark:
        assert cli_args.master == "local-cluster[2,1,1024]" and cli_args.conf == ["a=b", "c=d"]


def test_abbreviated_options_are_refused(capsys):
    """No abbreviations: the CLI and the job script read exactly the same tokens."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["codebook", "--feature-set", "a", "--images", "/i",
                                   "--codebooks", "/c", "--mast", "local[1]"])
    assert "unrecognized arguments: --mast" in capsys.readouterr().err


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
