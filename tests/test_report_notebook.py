"""The walkthrough notebook runs top to bottom (nbclient), so it cannot rot."""

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "walkthrough.ipynb"


@pytest.mark.slow
def test_walkthrough_notebook_runs(tmp_path, monkeypatch, fashion_dir):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    work = tmp_path / "work"
    monkeypatch.setenv("BOWSVM_WALKTHROUGH_DIR", str(work))
    monkeypatch.setenv("BOWSVM_FASHION_DIR", str(fashion_dir))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 4  # accuracy, convergence (Fig. 3), histogram (Fig. 4), sorted (Fig. 5)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    data = json.loads((work / "report.json").read_text())
    fused = data["fusion"]["metrics"]["test"]["fused"]
    assert f"fused test top-1 {100 * fused['top1']:.2f}%" in text
    assert set(data["convergence"]["quick-sv-hog"]) == {"asgd", "sgd"}
    assert fused["top1"] > 0.5  # 10 classes: chance is 0.1
    assert (work / "report.html").is_file() and (work / "predictions.csv").is_file()
