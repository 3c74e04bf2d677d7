"""The HTML report: built from a small generated pipeline (real files), checked offline
and in headless Chromium (screenshot not blank, DOM holds the JSON's numbers)."""

import io
import json
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from PIL import Image

from bowsvm.cli import main
from bowsvm.evaluation.report import fmt_pct
from bowsvm.io.image_shards import image_shard_files
from bowsvm.io import atomic_output_dir, write_json_atomic
from bowsvm.io.features import shard_entries, write_shard
from bowsvm.stages.report import build_report
from test_evaluation_scoring import make_model, score_and_fuse

N_CLASSES = 12
CLASSES = [f"{w}_{i}" for i, w in enumerate(
    ["tabby", "goldfish", "warplane", "daisy", "volcano", "tractor", "lemon", "violin",
     "teapot", "zebra", "anemone", "pizza"])]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _pipeline(root, n_sets=2, with_sgd=True, with_images=True):
    """Features (dense + sparse), models with logs, scores, fusion, image shards."""
    rng = np.random.default_rng(42)
    dims = [24, 40, 32][:n_sets]
    layouts = ["dense", "sparse", "dense"][:n_sets]
    names = [f"set{k}-{lay}" for k, lay in enumerate(layouts)]
    splits = {"train": 60, "val": 150, "test": 120}
    labels = {s: rng.integers(0, N_CLASSES, size=n) for s, n in splits.items()}
    ids = {s: [f"{s}-{i:04d}" for i in range(n)] for s, n in splits.items()}
    for k, (name, dim, lay) in enumerate(zip(names, dims, layouts)):
        means = rng.normal(size=(N_CLASSES, dim)).astype(np.float32)
        # class-dependent difficulty: later classes are noisier
        noise = np.linspace(0.5, 4.5, N_CLASSES)
        with atomic_output_dir(root / "features" / name) as tmp:
            for s, n in splits.items():
                X = means[labels[s]] + rng.normal(size=(n, dim)).astype(np.float32) * noise[labels[s], None]
                if lay == "sparse":
                    X = sp.csr_matrix(np.where(np.abs(X) > 0.8, X, 0).astype(np.float32))
                (tmp / s).mkdir()
                for j, a in enumerate(range(0, n, 50)):
                    write_shard(tmp / s / f"part-{j:05d}.parquet", ids[s][a:a + 50],
                                labels[s][a:a + 50], X[a:a + 50], layout=lay)
            write_json_atomic(tmp / "manifest.json", {
                "stage": "extract", "feature_set": name, "preset": f"quick-{lay}",
                "preset_hash": f"h{k}", "dim": dim, "layout": lay, "classes": CLASSES,
                "counts": splits, "seconds": 12.5 + k,
                "shards": shard_entries(tmp)})
        epochs = 5
        asgd = [{"epoch": e, "t": 60 * e, "objective": 1.0 / (e + 1) + 0.2 + 0.1 * k,
                 "top1": 0.5 + 0.05 * e - 0.1 * k,
                 "top5": 0.8 + 0.03 * e, "seconds": 0.1, "method": "asgd"} for e in range(1, epochs + 1)]
        make_model(root / "models", name, means, np.zeros(N_CLASSES), classes=CLASSES,
                   preset_hash=f"h{k}", log=asgd,
                   extra={"epochs": epochs, "seconds": 3.25 + k})
        if with_sgd:
            sgd = [{"epoch": e, "t": 60 * e, "objective": 1.5 / (e + 1) + 0.3, "top1": 0.3 + 0.05 * e,
                    "top5": 0.6 + 0.04 * e, "seconds": 0.1} for e in range(1, epochs + 1)]
            make_model(root / "models", f"{name}-sgd", means, np.zeros(N_CLASSES), classes=CLASSES,
                       preset_hash=f"h{k}", log=sgd)
    score_and_fuse(root, names)
    if with_images:
        (root / "images").mkdir()
        rows = {"id": [], "label": [], "class_name": [], "split": [], "image": []}
        for s in ("val", "test"):
            for i, y in zip(ids[s], labels[s]):
                arr = (rng.random((28, 28)) * 255).astype(np.uint8)
                arr[4:24, 4 + y:8 + y] = 255
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="PNG")
                rows["id"].append(i)
                rows["label"].append(int(y))
                rows["class_name"].append(CLASSES[y])
                rows["split"].append(s)
                rows["image"].append(buf.getvalue())
        # `bowsvm prepare` writes images/shards/part-*.parquet (Spark file names)
        (root / "images" / "shards").mkdir()
        pq.write_table(pa.table({**rows, "label": pa.array(rows["label"], pa.int32()),
                                 "image": pa.array(rows["image"], pa.binary())}),
                       root / "images" / "shards" / "part-00000-3f2a.snappy.parquet")
    return names


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    names = _pipeline(root)
    out = root / "out" / "report.html"
    rc = main(["report", str(out), "--models", str(root / "models"), "--scores",
               str(root / "scores"), "--fusion", str(root / "fusion"), "--features",
               str(root / "features"), "--images", str(root / "images")])
    assert rc == 0
    return root, names, out, json.loads(out.with_suffix(".json").read_text())


def test_report_json_numbers(report):
    root, names, out, data = report
    fm = json.loads((root / "fusion" / "metrics.json").read_text())
    assert data["fusion"]["metrics"]["test"]["fused"] == fm["test"]["fused"]
    rows = {r["name"]: r for r in data["feature_sets"]}
    assert sorted(rows) == sorted(names)  # the -sgd baselines are not feature sets
    r0 = rows[names[0]]
    assert r0["dim"] == 24 and r0["epochs"] == 5 and r0["layout"] == "dense"
    assert r0["extract_seconds"] == 12.5 and r0["train_seconds"] == 3.25
    assert r0["size_bytes"] > 0
    r1 = rows[names[1]]
    assert 0 < r1["sparsity"] < 1
    for n in names:
        assert set(data["accuracy"][n]) == {"val", "test"}
        assert set(data["convergence"][n]) == {"asgd", "sgd"}
        assert data["convergence"][n]["sgd"]["epoch"] == [1, 2, 3, 4, 5]
    pc = data["per_class"]
    assert pc["source"] == "fused test scores"
    assert pc["top1"] == fm["test"]["fused"]["top1"]
    assert sum(pc["histogram"]["counts"]) == pc["classes_with_samples"]
    assert pc["sorted_top5"] == sorted(pc["sorted_top5"], reverse=True)
    assert pc["easiest"][0]["top5"] >= pc["hardest"][0]["top5"]
    # the noisiest classes are the last ones; the hardest list should mostly name them
    assert np.mean([r["index"] for r in pc["hardest"][:3]]) > np.mean([r["index"] for r in pc["easiest"][:3]])
    assert data["confusions"] and data["confusions"][0]["count"] >= data["confusions"][-1]["count"]
    assert 0 < len(data["examples"]) <= 8
    assert all(x["true_class"] != x["predicted_class"] for x in data["examples"])
    assert all("_data_uri" not in x for x in data["examples"])


def test_report_html_self_contained(report):
    _, names, out, data = report
    page = out.read_text()
    assert not re.search(r"https?://|//cdn|url\(|<script|<link", page, flags=re.I)
    srcs = re.findall(r"src='([^']*)'", page)
    assert len(srcs) >= 4 + len(data["examples"])
    assert all(s.startswith("data:image/") for s in srcs)
    assert fmt_pct(data["fusion"]["metrics"]["test"]["fused"]["top1"]) in page
    for n in names:
        assert fmt_pct(data["accuracy"][n]["val"]["top5"]) in page
    assert data["per_class"]["hardest"][0]["class"] in page


def _chromium(args, tmp_path, timeout=90):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome'}",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_report_in_headless_chromium(report, tmp_path):
    if CHROMIUM is None:
        pytest.fail("Debian package chromium is missing; ./run test installs it")
    _, names, out, data = report
    png = tmp_path / "shot.png"
    _chromium([f"--screenshot={png}", "--window-size=1200,2400", out.resolve().as_uri()], tmp_path)
    assert png.is_file(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert img.shape == (2400, 1200)
    assert img.std() > 10  # not blank
    assert (img < 128).mean() > 0.01  # real dark content (text, plots)
    dom = _chromium(["--dump-dom", out.resolve().as_uri()], tmp_path).stdout
    assert "bowsvm evaluation report" in dom
    for sp_ in ("val", "test"):
        fused = data["fusion"]["metrics"][sp_]["fused"]
        assert fmt_pct(fused["top1"]) in dom and fmt_pct(fused["top5"]) in dom
    for n in names:
        assert fmt_pct(data["accuracy"][n]["test"]["top1"]) in dom
    assert data["per_class"]["easiest"][0]["class"] in dom
    assert dom.count("data:image/png;base64,") >= 4


def test_report_tolerates_missing_parts(tmp_path):
    names = _pipeline(tmp_path, n_sets=1, with_sgd=False, with_images=False)
    out = tmp_path / "r.html"
    # no fusion, no features, no images: per-class analysis falls back to a set's test scores
    build_report(out, models=tmp_path / "models", scores=tmp_path / "scores",
                 fusion=tmp_path / "nofusion", features=None)
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["fusion"] is None and data["examples"] == []
    assert data["per_class"]["source"] == f"test scores of {names[0]}"
    assert data["feature_sets"][0]["dim"] == 24 and data["feature_sets"][0]["sparsity"] is None
    assert "Only one method was logged" in out.read_text()
    # a plain-SGD baseline in its own models root (train --no-average --models BASELINE)
    sgd = [{"epoch": e, "objective": 2.0 / e, "top1": 0.1 * e} for e in (1, 2, 3)]
    make_model(tmp_path / "baseline", names[0], np.zeros((N_CLASSES, 24)), np.zeros(N_CLASSES),
               classes=CLASSES, preset_hash="h0", log=sgd)
    build_report(out, models=tmp_path / "models", scores=tmp_path / "scores",
                 baseline_models=tmp_path / "baseline")
    data = json.loads(out.with_suffix(".json").read_text())
    conv = data["convergence"][names[0]]
    assert set(conv) == {"asgd", "sgd"} and conv["sgd"]["top1"] == pytest.approx([0.1, 0.2, 0.3])
    assert "Only one method was logged" not in out.read_text()
    with pytest.raises(FileNotFoundError, match="nothing to report"):
        build_report(tmp_path / "e.html", models=tmp_path / "x", scores=tmp_path / "y")
    with pytest.raises(ValueError, match=r"ends in \.json"):
        build_report(tmp_path / "e.json", scores=tmp_path / "scores")


def test_image_shard_files_both_layouts(tmp_path):
    (tmp_path / "shards").mkdir()
    for p in (tmp_path / "part-00001.parquet", tmp_path / "shards" / "part-00000-x.parquet",
              tmp_path / "shards" / ".part-00000-x.parquet.crc", tmp_path / "manifest.json"):
        p.write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in image_shard_files(tmp_path)] == [
        "part-00001.parquet", "shards/part-00000-x.parquet"]


def test_report_reads_only_seconds():
    # every stage's manifest records its wall time as `seconds`; no other spelling is read
    from bowsvm.evaluation.report.collect import _seconds

    assert _seconds({"stage": "extract", "seconds": 12.5}) == 12.5
    assert _seconds({"stage": "train", "seconds": 3}) == 3.0
    for m in ({"wall_seconds": 4.0}, {"train_seconds": 4.0}, {"timings": {"total": 4.0}},
              {"seconds": True}, {"seconds": "4"}, {"seconds": float("nan")}, {}, None):
        assert _seconds(m) is None
