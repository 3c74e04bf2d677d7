"""The codebook stage out of core (issue 15): staged sample, moments PCA, memory paths.

The stage runs through the real CLI (`bowsvm codebook`, spark-submit) on
test_extract_job.py's image shards. Its codebooks are compared with codebooks
learned here, in process, on the same sample drawn independently (seeded per
image id, as the stage draws it).
"""

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_extract_job import run_bowsvm, write_image_shards

from bowsvm.coding import Codebook, fit_pca, learn_codebook, pca_from_moments
from bowsvm.io import read_manifest
from bowsvm.spark import FAIL_FIRST_ATTEMPT_ENV

SV = "quick-sv-hog"  # K-means, PCA 128 -> 7, 8 bases
FV = "quick-fv-hog"  # GMM, PCA 128 -> 16, 8 Gaussians
# 26 images x 20 descriptors = 520 rows, trimmed (seeded) to 510: the trim is exercised
TRIM = ["--samples-per-image", "20", "--n-samples", "510"]


# --------------------------------------------------------------- moments -> PCA

def _moments(X, chunk):
    X64 = X.astype(np.float64)
    s, sxx = np.zeros(X.shape[1]), np.zeros((X.shape[1],) * 2)
    for r0 in range(0, len(X), chunk):  # added part by part, as the tasks' are
        s += X64[r0:r0 + chunk].sum(axis=0)
        sxx += X64[r0:r0 + chunk].T @ X64[r0:r0 + chunk]
    return len(X), s, sxx


@pytest.mark.parametrize("offset", [0.0, 0.3, 5.0])
def test_pca_from_moments_equals_fit_pca(offset):
    rng = np.random.default_rng(7)
    scales = np.geomspace(1.0, 0.01, 24)  # well-separated eigenvalues
    X = (offset + rng.normal(size=(4000, 24)) * scales).astype(np.float32)
    X = X @ np.linalg.qr(rng.normal(size=(24, 24)))[0].astype(np.float32)  # rotated axes
    mean, comps = fit_pca(X, 10)
    got_mean, got_comps = pca_from_moments(*_moments(X, 333), 10)
    assert got_mean.dtype == np.float32 and got_comps.dtype == np.float32
    assert got_comps.shape == (10, 24)
    np.testing.assert_allclose(got_mean, mean, rtol=0, atol=1e-6)
    # the same sign rule: no flips to undo
    np.testing.assert_allclose(got_comps, comps, rtol=0, atol=1e-5)


def test_pca_from_moments_errors():
    X = np.random.default_rng(0).normal(size=(50, 6))
    n, s, sxx = _moments(X, 50)
    with pytest.raises(ValueError, match=r"sum_xxt must have shape \(D, D\) = \(6, 6\)"):
        pca_from_moments(n, s, sxx[:5], 3)
    with pytest.raises(ValueError, match="n=1 is too small"):
        pca_from_moments(1, s, sxx, 3)
    with pytest.raises(ValueError, match="pca_dim=7 is too large"):
        pca_from_moments(n, s, sxx, 7)
    with pytest.raises(ValueError, match="sum_x contains NaN or Inf"):
        pca_from_moments(n, np.full(6, np.nan), sxx, 3)


# --------------------------------------------------------------- the stage, through the CLI

@pytest.fixture(scope="module")
def images(tmp_path_factory, fashion_dir):
    return write_image_shards(tmp_path_factory.mktemp("img") / "images", fashion_dir)


def _codebook(images, root, fs, *extra, env=None, master="local[2]"):
    proc = run_bowsvm("codebook", "--feature-set", fs, "--images", str(images),
                      "--codebooks", str(root), "--master", master, *extra, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_no_staging_left(root)
    return Codebook.load(root / fs), read_manifest(root / fs, stage="codebook"), proc.stderr


def assert_no_staging_left(root):
    """No descriptor sample (Parquet file) and no temporary folder under ``root``."""
    assert not list(root.rglob("*.parquet")), list(root.rglob("*.parquet"))
    assert not list(root.rglob(".*.tmp-*")) and not list(root.rglob("_sample"))


def _sample(images, fs, per_image, n_samples):
    """The stage's sample, drawn here: train images by id, seeded per id, then the trim."""
    from bowsvm._seed import seeded_key
    from bowsvm.coding import sample_descriptors
    from bowsvm.io.images import decode_image
    from bowsvm.presets import load_preset

    preset = load_preset(fs)
    seed = preset["codebook"]["random_state"]
    train = sorted((r for r in pq.read_table(images / "shards").to_pylist()
                    if r["split"] == "train"), key=lambda r: r["id"])
    n_img = -(-n_samples // per_image)
    chosen = set(sorted((r["id"] for r in train), key=lambda i: (seeded_key(seed, i), i))[:n_img])
    parts = []
    for r in train:
        if r["id"] in chosen and r["id"] != "train-corrupt":
            g = decode_image(r["image"], max_side=preset["max_side"])
            parts.append(sample_descriptors(g, preset, per_image, seeded_key(seed, r["id"])))
    S = np.concatenate(parts).astype(np.float32)
    if len(S) > n_samples:
        S = S[np.sort(np.random.default_rng(seed).choice(len(S), n_samples, replace=False))]
    return S, preset


def _inertia(cb, S):
    Z = cb.project(S).astype(np.float64)
    d2 = ((Z[:, None, :] - cb.bases.astype(np.float64)[None]) ** 2).sum(axis=2)
    return float(d2.min(axis=1).sum())


def _aligned(comps, ref):
    """``comps`` with each row's sign flipped to agree with ``ref``'s row."""
    return comps * np.sign(np.sum(comps * ref, axis=1))[:, None]


@pytest.mark.slow
def test_out_of_core_kmeans_is_close_to_in_memory(images, tmp_path):
    S, preset = _sample(images, SV, 20, 510)
    assert len(S) == 510  # 520 drawn: the trim dropped 10 rows
    mem, m_mem, err = _codebook(images, tmp_path / "mem", SV, *TRIM)
    assert m_mem["path"] == "in-memory" and "path: in-memory" in err
    assert m_mem["n_samples"] == 510 and m_mem["sample_bytes"] == 510 * 128 * 4
    # the in-memory path is today's math on today's sample: the same bits
    want = learn_codebook(S, 8, pca_dim=7, random_state=preset["codebook"]["random_state"])
    assert mem.hash == want.hash

    held, m_held, err = _codebook(images, tmp_path / "held", SV, *TRIM, "--memory-budget", "100KB")
    assert m_held["path"] == "out-of-core-held" and "path: out-of-core-held" in err
    assert "= 261120 bytes" in err  # the sample's size in the progress line
    streamed, m_str, err = _codebook(images, tmp_path / "str", SV, *TRIM, "--memory-budget", "10KB")
    assert m_str["path"] == "out-of-core-streamed" and m_str["memory_budget"] == 10240

    # PCA from the tasks' moments (less the trimmed rows') = fit_pca of the sample
    np.testing.assert_allclose(held.pca_mean, mem.pca_mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_aligned(held.pca_components, mem.pca_components),
                               mem.pca_components, rtol=0, atol=1e-4)
    # K-means on the held and on the streamed PCA'd sample sees the same batches: same bits
    assert streamed.hash == held.hash
    # the same K-means on a PCA equal to ~1e-6: a different local optimum is possible
    # (a k-means++ draw can flip on a rounding), but not a much worse one
    i_mem, i_ooc = _inertia(mem, S), _inertia(held, S)
    assert abs(i_ooc - i_mem) <= 0.03 * i_mem, (i_ooc, i_mem)
    assert held.meta["n_samples"] == 510 and held.meta["method"] == "kmeans-lloyd"


@pytest.mark.slow
def test_out_of_core_gmm_held_and_streamed(images, tmp_path):
    mem, m_mem, _ = _codebook(images, tmp_path / "mem", FV)
    held, m_held, _ = _codebook(images, tmp_path / "held", FV, "--memory-budget", "100KB")
    assert (m_mem["path"], m_held["path"]) == ("in-memory", "out-of-core-held")
    np.testing.assert_allclose(_aligned(held.pca_components, mem.pca_components),
                               mem.pca_components, rtol=0, atol=1e-4)
    assert held.kind == "gmm" and held.meta["n_samples"] == mem.meta["n_samples"] == 1200
    assert abs(held.gmm.log_likelihood - mem.gmm.log_likelihood) <= 0.01 * abs(
        mem.gmm.log_likelihood)

    # the PCA'd sample (1200 x 16 float32 = 76,800 bytes) exceeds the budget: EM streams
    # the staging files, initialised by bowsvm's K-means on the same batches
    streamed, m_str, err = _codebook(images, tmp_path / "str", FV, "--memory-budget", "10KB")
    assert m_str["path"] == "out-of-core-streamed" and "streamed): mean log-likelihood" in err
    assert streamed.kind == "gmm" and streamed.meta["n_samples"] == 1200
    assert streamed.meta["init"] == "kmeans-lloyd"
    np.testing.assert_allclose(streamed.pca_components, held.pca_components, rtol=0, atol=0)
    # a different initialisation (bowsvm's K-means, not scikit-learn's): another local
    # optimum of the same likelihood, not a much worse one
    assert abs(streamed.gmm.log_likelihood - held.gmm.log_likelihood) <= 0.01 * abs(
        held.gmm.log_likelihood)


@pytest.mark.parametrize("batch", [7, 64, 1000])
def test_streamed_em_equals_in_memory_em(batch):
    from bowsvm.coding.gmm import fit_gmm, fit_gmm_streamed

    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(c, s, size=(150, 5)) for c, s in
                        ((0, 1), (4, 0.5), (-3, 2), (8, 1))]).astype(np.float32)
    X = X[rng.permutation(len(X))]
    M = X[[0, 1, 2, 3, 4]].astype(np.float64) + 0.1
    want = fit_gmm(X, 5, means_init=M, max_iter=40, tol=1e-7)
    got = fit_gmm_streamed(lambda: (X[i:i + batch] for i in range(0, len(X), batch)), M,
                           max_iter=40, tol=1e-7)
    assert got.n_iter == want.n_iter and got.converged == want.converged
    for a in ("weights", "means", "variances"):
        np.testing.assert_allclose(getattr(got, a), getattr(want, a), rtol=1e-5, atol=1e-5)
    assert got.log_likelihood == pytest.approx(want.log_likelihood, rel=1e-9)


def test_streamed_em_errors():
    from bowsvm.coding.gmm import fit_gmm_streamed

    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="n_components=30 exceeds"):
        fit_gmm_streamed(lambda: iter([X]), np.zeros((30, 3)))
    with pytest.raises(ValueError, match="does not have the means' 3 columns"):
        fit_gmm_streamed(lambda: iter([X[:, :2]]), np.zeros((2, 3)))
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError):
        fit_gmm_streamed(lambda: iter([bad]), X[:2])
    with pytest.raises(ValueError, match="zero variance"):
        fit_gmm_streamed(lambda: iter([np.ones((5, 3), np.float32)]), np.ones((2, 3)))


def test_memory_path_thresholds():
    from bowsvm.stages.codebook import StagedSample, memory_path

    s = StagedSample([], 1000, 100, None, 1000, (0, None, None))  # 400,000 bytes
    assert memory_path(s, "local", 10, 2_000_000) == ("in-memory", 2_000_000)  # 5x with PCA
    assert memory_path(s, "local", None, 400_000) == ("in-memory", 400_000)  # 1x without
    assert memory_path(s, "local", 10, 1_999_999) == ("out-of-core-held", 40_000)
    assert memory_path(s, "local", 10, 39_999)[0] == "out-of-core-streamed"
    assert memory_path(s, "mllib", 10, 1) == ("mllib", 0)
    assert memory_path(s, "gmm", 10, 40_000) == ("out-of-core-held", 40_000)
    assert memory_path(s, "gmm", 10, 39_999)[0] == "out-of-core-streamed"
    with pytest.raises(ValueError, match="raise --memory-budget to at least 2000000 bytes"):
        memory_path(s, "minibatch", 10, 1_999_999)


# --------------------------------------------------------------- Java heap exhaustion (item 2)

@pytest.mark.parametrize("memory,want", [("2g", 2 << 30), ("512m", 512 << 20), ("3gb", 3 << 30),
                                         ("1500", 1500 << 20), (None, 1 << 30)])
def test_driver_memory_bytes(memory, want):
    from bowsvm.spark import driver_memory_bytes

    assert driver_memory_bytes(memory) == want


def test_java_heap_errors_name_driver_memory():
    from bowsvm.spark import java_heap_errors

    with pytest.raises(ValueError, match=r"ran out while sampling descriptors: raise "
                                         r"--driver-memory to at least 4g"):
        with java_heap_errors("2g", "sampling descriptors"):
            raise RuntimeError("An error occurred while calling o42.collect.\n"
                               "java.lang.OutOfMemoryError: Java heap space")
    with pytest.raises(ValueError, match=r"--driver-memory to at least 7g"):  # the estimate wins
        with java_heap_errors("2g", "running MLlib", need_bytes=6.5 * 2**30):
            raise RuntimeError("java.lang.OutOfMemoryError: GC overhead limit exceeded")
    with pytest.raises(RuntimeError, match="something else"):  # other errors pass through
        with java_heap_errors("2g", "x"):
            raise RuntimeError("something else")


def test_spark_submit_explains_exit_52(tmp_path, capsys):
    """A real spark-submit whose driver exits 52 (what a JVM out of heap returns)."""
    from bowsvm import spark

    job = tmp_path / "exit52.py"
    job.write_text("import sys\nsys.exit(52)\n")
    assert spark.spark_submit(str(job), [], master="local[1]", driver_memory="2g") == 52
    err = capsys.readouterr().err
    assert "exited with code 52" in err and "raise --driver-memory" in err
    assert "--driver-memory 2g" in err


def test_iter_sample_refuses_a_changed_staging_file(tmp_path):
    from bowsvm.io.features import write_shard
    from bowsvm.stages.codebook import StagedSample, iter_sample, load_sample

    X = np.arange(30 * 4, dtype=np.float32).reshape(30, 4)
    write_shard(tmp_path / "part-00000-000.a0.parquet", ["a"] * 30, np.arange(30), X)
    files = [str(tmp_path / "part-00000-000.a0.parquet")]
    s = StagedSample(files, 30, 4, None, 30, (0, None, None))
    got = list(iter_sample(s, rows=8))
    assert [len(b) for b in got] == [8, 8, 8, 6] and all(b.dtype == np.float32 for b in got)
    np.testing.assert_array_equal(np.concatenate(got), X)
    keep = np.zeros(30, bool)
    keep[[0, 5, 29]] = True
    trimmed = StagedSample(files, 30, 4, keep, 3, (0, None, None))
    np.testing.assert_array_equal(load_sample(trimmed), X[[0, 5, 29]])
    for n in (29, 31):  # the tasks reported another number of rows
        with pytest.raises(ValueError, match="holds a different number of rows than its "
                                             f"tasks wrote \\({n}\\)"):
            load_sample(StagedSample(files, n, 4, None, n, (0, None, None)))
