import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_dir():
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Debian package dataset-fashion-mnist is missing; ./run test installs it")
    return FASHION_DIR


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
