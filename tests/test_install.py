"""A non-editable install runs a Spark stage: job scripts and log4j2 config ship with it.

The package is installed with ``pip install --no-deps`` into a fresh virtual
environment whose only bowsvm is the installed copy (the dependencies come from
the test environment's site-packages through a ``.pth`` file, so nothing is
downloaded). ``bowsvm prepare`` then runs from a folder outside the checkout,
without PYTHONPATH, through spark-submit.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["bowsvm", "jobs", "setup.cfg", "pyproject.toml", "README.md"]


def _copy_sources(dst: Path) -> None:
    """The files a source distribution holds (no venv, caches or build output)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SHIPPED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        else:
            shutil.copy2(src, dst / name)


@pytest.mark.slow
def test_pip_install_then_a_spark_stage(tmp_path):
    from PIL import Image

    src, venv, work = tmp_path / "src", tmp_path / "venv", tmp_path / "work"
    src.mkdir()
    work.mkdir()
    _copy_sources(src)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the test environment's packages (pyspark, numpy, ...) without its editable bowsvm:
    # a .pth line adds a folder to sys.path but does not run that folder's own .pth files
    (site / "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_PYTHON",
                                                           "PYSPARK_DRIVER_PYTHON")}
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--no-build-isolation", str(src)], env=env, cwd=work,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(src)  # nothing may still point into the sources

    where = subprocess.run(
        [str(py), "-c", "import bowsvm, bowsvm.spark as s; print(bowsvm.__file__); "
         "print(s.jobs_dir()); print(s.LOG4J2_CONFIG.is_file())"],
        env=env, cwd=work, capture_output=True, text=True, check=True).stdout.split("\n")
    assert where[0].startswith(str(site)), where
    assert where[1] == str(venv / "share" / "bowsvm" / "jobs"), where
    assert where[2] == "True"

    tree = work / "tree"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tree / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
                tree / cls / f"{i}.png")
    proc = subprocess.run([str(venv / "bin" / "bowsvm"), "prepare", "--input", str(tree),
                           "--output", str(work / "images"), "--val-per-class", "1",
                           "--master", "local[1]"],
                          env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = __import__("json").loads((work / "images" / "manifest.json").read_text())
    assert m["stage"] == "prepare" and m["n_images"] == 6
    assert (work / "images" / "_SUCCESS").exists()
