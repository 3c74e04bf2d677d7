"""The generated many-class benchmark (benchmarks/manyclass.py) is what it claims."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import manyclass  # noqa: E402


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.jpg")):
        h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_tree_is_deterministic_with_held_out_fonts(tmp_path):
    a = manyclass.make_tree(tmp_path / "a", n_classes=6, n_train=2, n_val=1, n_test=2, size=48)
    b = manyclass.make_tree(tmp_path / "b", n_classes=6, n_train=2, n_val=1, n_test=2, size=48)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") and a == b
    assert not set(a["fonts"]["test"]) & set(a["fonts"]["train"])
    assert len(set(a["classes"].values())) == 6
    info = json.loads((tmp_path / "a" / "classes.json").read_text())
    assert info["classes"] == a["classes"]
    for split, n in (("train", 2), ("val", 1), ("test", 2)):
        folders = sorted((tmp_path / "a" / split).iterdir())
        assert len(folders) == 6 and all(len(list(f.glob("*.jpg"))) == n for f in folders)
    img = np.asarray(Image.open(next((tmp_path / "a" / "test").rglob("*.jpg"))))
    assert img.shape == (48, 48, 3) and img.std() > 5  # a picture, not a blank


def test_look_alike_letters_are_merged():
    font = next(f for f in manyclass.find_fonts() if f.name == "DejaVuSans.ttf")
    letters = manyclass.distinct_letters(font)
    assert "A" in letters and "Б" in letters and "Ω" in letters
    assert "А" not in letters  # Cyrillic A is Latin A
    assert "Γ" in letters and "Г" not in letters  # Cyrillic Ge is Greek Gamma
