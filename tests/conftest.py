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


def kill_while_writing(args, parent, name, settle=0.0):
    """Run `bowsvm ARGS`, SIGKILL its whole process group once it has started writing
    ``parent/NAME`` (its hidden temporary folder exists), and wait for it."""
    import signal
    import subprocess
    import time

    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "bowsvm.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(Path(parent).glob(f".{name}.tmp-*")):
        time.sleep(0.1)
    assert list(Path(parent).glob(f".{name}.tmp-*")), "the job never started writing"
    time.sleep(settle)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def fmnist_image_rows(fashion_dir, n_per_split):
    """Rows of prepare-format image shards: the first Fashion-MNIST images of each split
    (val taken from train images 1000..), plus one corrupt PNG named ``train-corrupt``."""
    from bowsvm.io.images import FASHION_MNIST_CLASSES, encode_gray_png, load_idx_dataset

    data = load_idx_dataset(fashion_dir)
    rows = []
    for split, n in n_per_split.items():
        X, y = data["test" if split == "test" else "train"]
        off = 0 if split != "val" else 1000
        for i in range(off, off + n):
            rows.append({"id": f"{split}-{i:05d}", "label": int(y[i]),
                         "class_name": FASHION_MNIST_CLASSES[int(y[i])], "split": split,
                         "orig_width": 28, "orig_height": 28, "width": 28, "height": 28,
                         "image": encode_gray_png(X[i]), "source": "idx"})
    rows.append(dict(rows[0], id="train-corrupt", image=b"\x89PNG\r\n\x1a\nbroken"))
    return rows
