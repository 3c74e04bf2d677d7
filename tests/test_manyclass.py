"""The generated many-class benchmark (benchmarks/manyclass.py) is what it claims."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
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


def test_drawing_options_are_recorded_and_change_the_images(tmp_path):
    kw = dict(n_classes=2, n_train=1, n_val=0, n_test=0, size=48)
    calm = manyclass.make_tree(tmp_path / "calm", **kw)
    hard = manyclass.make_tree(tmp_path / "hard", **kw, **manyclass.RENDER_HARD)
    assert calm["options"]["render"] == manyclass.RENDER_DEFAULTS
    assert hard["options"]["render"] == manyclass.RENDER_HARD
    a = np.asarray(Image.open(next((tmp_path / "calm").rglob("*.jpg"))), np.float32)
    b = np.asarray(Image.open(next((tmp_path / "hard").rglob("*.jpg"))), np.float32)
    assert np.abs(a - b).mean() > 5
    with pytest.raises(ValueError, match=r"unknown render option\(s\) \['tilt'\]"):
        manyclass.make_tree(tmp_path / "bad", **kw, tilt=3)


def test_cli_refuses_bad_drawing_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        manyclass.main(["--out", str(tmp_path / "x"), "--text-size", "0.5"])
    assert "--text-size '0.5': give LOW,HIGH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        manyclass.main(["--out", str(tmp_path / "x"), "--calm", "2"])
    assert "--jitter and --calm in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
