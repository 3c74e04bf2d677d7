"""Product-quantized features: the PQ math against its naive twins, the "pq" shard layout,
`bowsvm compress` end to end, and training on a pq set against its decoded twin."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as papq
import pytest
from naive import naive_pq_decode, naive_pq_encode

from bowsvm import cli
from bowsvm.coding.pq import fit_pq, make_codebook, pq_decode, pq_encode
from bowsvm.io import atomic_output_dir, read_manifest, write_json_atomic
from bowsvm.io.features import (
    ShardWriter, codes_to_table, iter_chunks, iter_shard_batches, iter_shard_codes,
    open_feature_set, rows_per_chunk, scan_split, shard_entries, shard_files, write_shard,
)
from bowsvm.io.pq import PQCodebook, read_pq_codebook


def _random_codebook(rng, dim, s, K):
    M = -(-dim // s)
    C = rng.normal(size=(M, K, s)).astype(np.float32)
    pad = M * s - dim
    if pad:
        C[-1, :, s - pad:] = 0
    return make_codebook(C, dim, s)


def _structured(rng, n=600, dim=40, k=6):
    """Rows near a few prototypes (plus small noise): what PQ compresses well."""
    protos = rng.normal(size=(k, dim))
    return (protos[rng.integers(0, k, n)] + 0.05 * rng.normal(size=(n, dim))).astype(np.float32)


# ----------------------------------------------------------------- kernels vs naive

@pytest.mark.parametrize("dim,s,K", [(32, 8, 16), (27, 8, 16), (5, 2, 3), (7, 7, 1), (9, 1, 4)])
def test_encode_matches_the_naive_nearest_centroid(rng, dim, s, K):
    pq = _random_codebook(rng, dim, s, K)
    X = rng.normal(size=(57, dim)).astype(np.float32)
    codes = pq_encode(X, pq, n_threads=1)
    assert codes.dtype == np.uint8 and codes.shape == (57, -(-dim // s))
    np.testing.assert_array_equal(codes, naive_pq_encode(X, pq.centroids, dim))


def test_encode_float64_input_and_edge_rows(rng):
    pq = _random_codebook(rng, 20, 4, 8)
    X = rng.normal(size=(30, 20))  # float64 stays float64 inside
    X[0] = 0.0  # a zero vector
    X[1] = np.tile(pq.centroids[:, 3, :].reshape(-1)[:20], 1)  # exactly on centroid 3
    codes = pq_encode(X, pq)
    np.testing.assert_array_equal(codes, naive_pq_encode(X, pq.centroids, 20))
    assert (codes[1] == 3).all()
    assert pq_encode(np.zeros((0, 20), np.float32), pq).shape == (0, 5)


def test_ties_keep_the_lower_index(rng):
    C = rng.normal(size=(3, 6, 4)).astype(np.float32)
    C[:, 4] = C[:, 1]  # duplicate centroids: equal distances, exactly
    C[:, 5] = C[:, 1]
    pq = make_codebook(C, 12, 4)
    X = C[:, 1, :].reshape(1, 12) + 1e-3
    X = np.repeat(X, 3, axis=0).astype(np.float32)
    codes = pq_encode(X, pq)
    assert (codes == 1).all()
    np.testing.assert_array_equal(codes, naive_pq_encode(X, C, 12))


def test_decode_matches_the_naive_twin_and_fills_out(rng):
    for dim, s in [(32, 8), (27, 8), (7, 7)]:
        pq = _random_codebook(rng, dim, s, 11)
        codes = rng.integers(0, 11, (45, pq.n_codes)).astype(np.uint8)
        X = pq_decode(codes, pq)
        assert X.dtype == np.float32 and X.shape == (45, dim)
        np.testing.assert_array_equal(X, naive_pq_decode(codes, pq.centroids, dim))
        out = np.empty((45, dim), np.float32)
        assert pq_decode(codes.astype(np.int64), pq, out=out) is out
        np.testing.assert_array_equal(out, X)
    assert pq_decode(np.zeros((0, pq.n_codes), np.uint8), pq).shape == (0, 7)


def test_decode_in_many_gather_blocks(rng, monkeypatch):
    import bowsvm.io.pq as iopq

    monkeypatch.setattr(iopq, "_DECODE_BLOCK_VALUES", 50)  # a few rows per block
    for dim in (24, 21):
        pq = _random_codebook(rng, dim, 8, 5)
        codes = rng.integers(0, 5, (33, 3)).astype(np.uint8)
        np.testing.assert_array_equal(pq_decode(codes, pq), naive_pq_decode(codes, pq.centroids, dim))


# ----------------------------------------------------------------- fitting

def test_fit_shapes_dtypes_and_padding(rng):
    X = _structured(rng, dim=27)
    pq = fit_pq(X, dims_per_code=8, n_centroids=16, seed=1)
    assert isinstance(pq, PQCodebook)
    assert pq.centroids.dtype == np.float32 and pq.centroids.shape == (4, 16, 8)
    assert (pq.dim, pq.dims_per_code, pq.n_codes, pq.n_centroids) == (27, 8, 4, 16)
    assert (pq.centroids[-1, :, 3:] == 0).all()  # 27 = 3 * 8 + 3: five padded entries
    assert not pq.centroids.flags.writeable


def test_round_trip_error_is_small_on_structured_data(rng):
    X = _structured(rng)
    pq = fit_pq(X, dims_per_code=8, n_centroids=32, seed=0)
    Y = pq_decode(pq_encode(X, pq), pq)
    rel = np.linalg.norm(Y - X) ** 2 / np.linalg.norm(X) ** 2
    assert rel < 0.01, rel
    # and much better than quantizing with random rows as centroids
    C = np.stack([X[rng.choice(len(X), 32, replace=False), m * 8:(m + 1) * 8] for m in range(5)])
    crude = make_codebook(C, 40, 8)
    Yc = pq_decode(pq_encode(X, crude), crude)
    assert np.linalg.norm(Y - X) < 0.9 * np.linalg.norm(Yc - X)


def test_fit_is_the_projects_kmeans_per_sub_space(rng):
    from bowsvm.coding.kmeans import kmeans

    X = _structured(rng, n=300, dim=16)
    pq = fit_pq(X, dims_per_code=8, n_centroids=8, seed=5, max_iter=7)
    seeds = np.random.default_rng(5).integers(0, 2**31 - 1, size=2)
    for m in range(2):
        ref = kmeans(X[:, 8 * m:8 * m + 8], 8, random_state=int(seeds[m]), max_iter=7)
        np.testing.assert_array_equal(pq.centroids[m], ref.centers)


def test_same_seed_same_bits_any_thread_count(rng):
    X = _structured(rng, n=400)
    a = fit_pq(X, 8, 16, seed=3, n_threads=1)
    b = fit_pq(X, 8, 16, seed=3, n_threads=2)
    assert a.centroids.tobytes() == b.centroids.tobytes()
    assert fit_pq(X, 8, 16, seed=4).centroids.tobytes() != a.centroids.tobytes()
    Z = rng.normal(size=(300, 40)).astype(np.float32)
    assert pq_encode(Z, a, n_threads=1).tobytes() == pq_encode(Z, a, n_threads=2).tobytes()


def test_progress_is_called_per_sub_space(rng):
    seen = []
    fit_pq(_structured(rng, n=50, dim=12), 4, 4, progress=lambda m, M, s: seen.append((m, M)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


# ----------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs,exc,match", [
    ({"dims_per_code": 0}, ValueError, "dims_per_code=0 is too small"),
    ({"dims_per_code": 41}, ValueError, "dims_per_code=41 exceeds the feature dimension 40"),
    ({"dims_per_code": 2.5}, TypeError, "dims_per_code must be an integer"),
    ({"n_centroids": 257}, ValueError, "n_centroids=257 is too large"),
    ({"n_centroids": 0}, ValueError, "n_centroids=0 is too small"),
    ({"n_centroids": 200}, ValueError, "X has 100 rows but n_centroids=200"),
    ({"seed": -1}, ValueError, "seed=-1 is too small"),
    ({"max_iter": 0}, ValueError, "max_iter=0 is too small"),
    ({"n_threads": 0}, ValueError, "n_threads=0 is too small"),
])
def test_fit_refuses_bad_options(rng, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fit_pq(_structured(rng, n=100), **kwargs)


def test_fit_refuses_bad_input(rng):
    X = _structured(rng, n=100)
    X[3, 4] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        fit_pq(X, 8, 4)
    with pytest.raises(ValueError, match="X must be 2-dimensional"):
        fit_pq(np.zeros(10), 2, 2)
    with pytest.raises(TypeError, match="X must be a numeric array"):
        fit_pq([["a"]], 1, 1)


def test_encode_and_decode_refuse_bad_input(rng):
    pq = _random_codebook(rng, 16, 8, 4)
    with pytest.raises(ValueError, match="X has 15 columns but the PQ codebook encodes dim=16"):
        pq_encode(np.zeros((2, 15)), pq)
    with pytest.raises(TypeError, match="pq must be a PQCodebook"):
        pq_encode(np.zeros((2, 16)), pq.centroids)
    with pytest.raises(ValueError, match=r"codes has shape \(2, 3\); expected \(n, 2\)"):
        pq_decode(np.zeros((2, 3), np.uint8), pq)
    with pytest.raises(ValueError, match=r"codes\[1, 0\] = 4 is outside \[0, 4\)"):
        pq_decode(np.array([[0, 0], [4, 0]], np.uint8), pq)
    with pytest.raises(TypeError, match="codes must be an integer array"):
        pq_decode(np.zeros((2, 2)), pq)
    with pytest.raises(TypeError, match="out must be a float32 ndarray"):
        pq_decode(np.zeros((2, 2), np.uint8), pq, out=np.zeros((2, 16)))
    with pytest.raises(ValueError, match=r"out has shape \(2, 15\)"):
        pq_decode(np.zeros((2, 2), np.uint8), pq, out=np.zeros((2, 15), np.float32))


def test_make_codebook_refuses_malformed_centroids(rng):
    with pytest.raises(ValueError, match=r"centroids has shape \(2, 4, 8\), but dim=17"):
        make_codebook(np.zeros((2, 4, 8), np.float32), 17, 8)
    with pytest.raises(ValueError, match="1 <= K <= 256"):
        make_codebook(np.zeros((2, 257, 8), np.float32), 16, 8)
    C = np.zeros((3, 4, 8), np.float32)
    C[-1, 0, 7] = 1.0
    with pytest.raises(ValueError, match="padded entries of the last sub-space must be 0"):
        make_codebook(C, 17, 8)
    with pytest.raises(TypeError, match="must be a floating-point array"):
        make_codebook(np.zeros((2, 4, 8), np.int32), 16, 8)
    with pytest.raises(ValueError, match="1 <= dims_per_code <= dim"):
        make_codebook(np.zeros((1, 4, 8), np.float32), 4, 8)


# =============================================================================
# The "pq" layout, `bowsvm compress`, and training / scoring on a pq set
# =============================================================================

def _make_dense(root, layout="dense", d=27, n=(300, 90)):
    from test_train import make_feature_set

    return make_feature_set(root, n=n, d=d, layout=layout)


def _compress(features, out, *extra):
    return cli.main(["compress", "--feature-set", "fs", "--features", str(features),
                     "--output-features", str(out), "--n-centroids", "32", "--n-jobs", "1",
                     *extra])


def _reseal(folder):
    m = read_manifest(folder)
    m["shards"] = shard_entries(folder)
    write_json_atomic(Path(folder) / "manifest.json", m)


def _decoded_twin(pq_root, out_root):
    """A dense feature set holding the pq set's decoded rows: same shards, rows, order."""
    fs = open_feature_set(pq_root, "fs")
    pq = fs.pq_codebook()
    with atomic_output_dir(Path(out_root) / "fs") as tmp:
        for split in ("train", "val"):
            (tmp / split).mkdir()
            for f in shard_files(fs.folder, split):
                t = papq.read_table(f)
                ids = t.column("id").to_pylist()
                codes = np.stack(t.column("codes").to_numpy(zero_copy_only=False))
                write_shard(tmp / split / f.name, ids, t.column("label").to_numpy(),
                            pq_decode(codes, pq), "dense")
        m = {k: v for k, v in fs.manifest.items() if k not in ("pq", "source", "shards")}
        m.update(stage="extract", layout="dense", shards=shard_entries(tmp))
        write_json_atomic(tmp / "manifest.json", m)
    return Path(out_root)


def test_compress_end_to_end_through_the_cli(tmp_path, capsys):
    feats = _make_dense(tmp_path / "features")
    assert _compress(feats, tmp_path / "pq", "--batch-rows", "40", "--seed", "3") == 0
    err = capsys.readouterr().err
    assert "[compress] PQ fit: 4/4 sub-spaces" in err
    assert "[compress] shard 1/6 train/part-00000.parquet: 100 rows" in err
    assert "[compress] shard 6/6 val/part-00002.parquet: 30 rows" in err
    folder = tmp_path / "pq" / "fs"
    m = read_manifest(folder, stage="compress")
    src = read_manifest(feats / "fs")
    assert m["layout"] == "pq" and m["dim"] == 27 and m["counts"] == {"train": 300, "val": 90}
    assert m["classes"] == src["classes"] and m["preset_hash"] == src["preset_hash"]
    assert [e["path"] for e in m["shards"]] == [e["path"] for e in src["shards"]]
    assert m["pq"]["n_codes"] == 4 and m["pq"]["n_centroids"] == 32
    assert m["pq"]["sample_rows"] == 300 and 0 < m["pq"]["sample_relative_error"] < 0.5
    pq = read_pq_codebook(folder / "pq.npz", sha256=m["pq"]["sha256"])
    f0 = folder / "train" / "part-00000.parquet"
    assert papq.read_schema(f0).field("codes").type == pa.list_(pa.uint8(), 4)
    assert papq.ParquetFile(f0).metadata.num_row_groups == 3  # --batch-rows 40 of 100 rows
    assert m["bytes_on_disk"] < m["source"]["bytes_on_disk"] / 2
    # every row is the code of its source row, in the same order, and reads back decoded
    fs = open_feature_set(tmp_path / "pq", "fs")
    for split in ("train", "val"):
        info = scan_split(fs, split)
        for f_src, f_pq in zip(shard_files(feats / "fs", split), info.files):
            ids, lab, X = next(iter_shard_batches(f_src, 27, 1000))
            ids2, lab2, Y = next(iter_shard_batches(f_pq, 27, 1000, pq=pq))
            assert list(ids2) == list(ids) and (lab2 == lab).all()
            assert Y.dtype == np.float32 and Y.flags.c_contiguous
            np.testing.assert_array_equal(Y, pq_decode(pq_encode(X, pq), pq))
    chunks = list(iter_chunks(scan_split(fs, "train"), 27, 64))
    assert [c[2].shape for c in chunks[:2]] == [(64, 27), (36, 27)]
    assert all(c[2].dtype == np.float32 for c in chunks)


def test_compress_is_deterministic_and_overwrites_only_its_own_output(tmp_path, capsys):
    feats = _make_dense(tmp_path / "features")
    assert _compress(feats, tmp_path / "a", "--quiet") == 0
    assert _compress(feats, tmp_path / "b", "--quiet") == 0
    a, b = (read_manifest(tmp_path / x / "fs") for x in "ab")
    assert a["pq"]["sha256"] == b["pq"]["sha256"]
    assert [e["sha256"] for e in a["shards"]] == [e["sha256"] for e in b["shards"]]
    assert _compress(feats, tmp_path / "a", "--quiet") == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _compress(feats, tmp_path / "a", "--quiet", "--seed", "1", "--overwrite") == 0
    assert read_manifest(tmp_path / "a" / "fs")["pq"]["sha256"] != b["pq"]["sha256"]
    # never over the output of another stage, nor over or into its own input
    assert _compress(feats, feats, "--overwrite") == 2
    assert "is the input" in capsys.readouterr().err
    assert _compress(tmp_path / "a", tmp_path / "c") == 2  # a pq set is not compressed again
    assert "already product-quantized" in capsys.readouterr().err
    other = _make_dense(tmp_path / "other")
    assert _compress(feats, other, "--overwrite") == 2
    assert "holds the output of `bowsvm extract`, not of `bowsvm compress`" in \
        capsys.readouterr().err


def test_compress_a_sparse_set_with_padding(tmp_path):
    feats = _make_dense(tmp_path / "features", layout="sparse", d=21)
    assert _compress(feats, tmp_path / "pq", "--quiet", "--dims-per-code", "4") == 0
    fs = open_feature_set(tmp_path / "pq", "fs")
    pq = fs.pq_codebook()
    assert pq.n_codes == 6 and (pq.centroids[-1, :, 1:] == 0).all()
    info = scan_split(fs, "val")
    _, _, Y = next(iter_chunks(info, 21, 1000))
    src = scan_split(open_feature_set(feats, "fs"), "val")
    _, _, X = next(iter_chunks(src, 21, 1000))
    np.testing.assert_array_equal(Y, pq_decode(pq_encode(X.toarray(), pq), pq))


def _train(features, models, *extra):
    return cli.main(["train", "--feature-set", "fs", "--features", str(features), "--models",
                     str(models), "--quiet", "--n-jobs", "1", "--epochs", "2", "--seed", "5",
                     "--memory-budget", "64MB", *extra])


def test_training_on_pq_equals_training_on_its_decoded_twin(tmp_path):
    feats = _make_dense(tmp_path / "features")
    assert _compress(feats, tmp_path / "pq", "--quiet", "--batch-rows", "40") == 0
    twin = _decoded_twin(tmp_path / "pq", tmp_path / "twin")
    for root, models in ((tmp_path / "pq", tmp_path / "m_pq"), (twin, tmp_path / "m_twin")):
        assert _train(root, models, "--eta0", "auto", "--block-size", "16") == 0
    a, b = (Path(tmp_path / x / "fs") for x in ("m_pq", "m_twin"))
    for name in ("coef.npy", "intercept.npy"):
        assert np.load(a / name).tobytes() == np.load(b / name).tobytes(), name
    log_a = [json.loads(r) for r in (a / "log.jsonl").read_text().splitlines()]
    assert log_a[-1]["top1"] > 0.5  # it learned something on decoded features
    # and scoring reads the pq set decoded: the same scores as on the twin
    for root, models, out in ((tmp_path / "pq", tmp_path / "m_pq", tmp_path / "s_pq"),
                              (twin, tmp_path / "m_pq", tmp_path / "s_twin")):
        assert cli.main(["score", "--feature-set", "fs", "--split", "val", "--features",
                         str(root), "--models", str(models), "--scores", str(out)]) == 0
    sa, sb = (papq.read_table(tmp_path / x / "fs" / "val" / "scores.parquet") for x in
              ("s_pq", "s_twin"))
    assert sa.equals(sb)


def test_rows_per_chunk_counts_the_decoded_chunk(tmp_path):
    feats = _make_dense(tmp_path / "features", d=400, n=(300, 30))
    assert _compress(feats, tmp_path / "pq", "--quiet", "--dims-per-code", "8") == 0
    fs_pq, fs_d = open_feature_set(tmp_path / "pq", "fs"), open_feature_set(feats, "fs")
    budget = 8 << 20
    rows_pq = rows_per_chunk(fs_pq, scan_split(fs_pq, "train"), budget)
    rows_d = rows_per_chunk(fs_d, scan_split(fs_d, "train"), budget)
    # a pq row costs its decoded 1600 bytes (plus codes), not its 50 bytes of codes
    assert rows_pq * 5 * 400 * 4 <= budget
    # (the dense set's larger row groups, 3 shards read side by side, take more of the budget)
    assert 0.9 * rows_d <= rows_pq <= 1.2 * rows_d


# ----------------------------------------------------------------- errors

@pytest.mark.parametrize("extra,match", [
    (["--dims-per-code", "0"], "--dims-per-code=0 is too small"),
    (["--dims-per-code", "28"], "--dims-per-code=28 exceeds the feature dimension 27"),
    (["--n-centroids", "257"], "--n-centroids=257 is too large"),
    (["--n-centroids", "0"], "--n-centroids=0 is too small"),
    (["--sample", "0"], "--sample=0 is too small"),
    (["--sample", "20"], "--n-centroids=32 exceeds the 20 train rows"),
    (["--max-iter", "0"], "--max-iter=0 is too small"),
    (["--batch-rows", "0"], "--batch-rows=0 is too small"),
    (["--n-jobs", "0"], "--n-jobs=0 is too small"),
    (["--seed", "-2"], "--seed=-2 is too small"),
])
def test_compress_refuses_bad_options(tmp_path, capsys, extra, match):
    feats = _make_dense(tmp_path / "features")
    assert _compress(feats, tmp_path / "pq", *extra) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "pq" / "fs").exists()


def test_compress_refuses_a_missing_feature_set(tmp_path, capsys):
    assert _compress(tmp_path / "nothing", tmp_path / "pq") == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture
def pq_set(tmp_path):
    feats = _make_dense(tmp_path / "features")
    assert _compress(feats, tmp_path / "pq", "--quiet") == 0
    return tmp_path / "pq"


def _fails(root, tmp_path, capsys, match):
    assert _train(root, tmp_path / "models") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert match in err, err


def test_a_changed_pq_file_is_refused_naming_it(pq_set, tmp_path, capsys):
    f = pq_set / "fs" / "pq.npz"
    data = bytearray(f.read_bytes())
    data[-40] ^= 0xFF
    f.write_bytes(bytes(data))
    _fails(pq_set, tmp_path, capsys, f"PQ codebook {str(f)!r} does not match the SHA-256")


def test_a_corrupt_pq_file_is_refused_naming_it(pq_set, tmp_path, capsys):
    import hashlib

    f = pq_set / "fs" / "pq.npz"
    f.write_bytes(f.read_bytes()[:300])  # truncated, and the manifest told so
    m = read_manifest(pq_set / "fs")
    m["pq"]["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
    write_json_atomic(pq_set / "fs" / "manifest.json", m)
    _fails(pq_set, tmp_path, capsys, f"PQ codebook {str(f)!r} is corrupt or truncated")


def test_a_pq_file_of_another_shape_is_refused(pq_set, tmp_path, capsys):
    from bowsvm.io.pq import write_pq_codebook

    f = pq_set / "fs" / "pq.npz"
    other = make_codebook(np.zeros((9, 32, 3), np.float32), 27, 3)
    m = read_manifest(pq_set / "fs")
    m["pq"]["sha256"] = write_pq_codebook(f, other)
    write_json_atomic(pq_set / "fs" / "manifest.json", m)
    _fails(pq_set, tmp_path, capsys, f"PQ codebook {str(f)!r} has dims_per_code=3, but the "
                                     f"feature set's manifest says 8")


def test_a_missing_pq_file_is_refused(pq_set, tmp_path, capsys):
    (pq_set / "fs" / "pq.npz").unlink()
    _fails(pq_set, tmp_path, capsys, "pq.npz' is missing; re-run `bowsvm compress`")


def test_a_shard_of_another_code_count_is_refused_naming_it(pq_set, tmp_path, capsys):
    f = pq_set / "fs" / "train" / "part-00001.parquet"
    with ShardWriter(f, 27, "pq", n_codes=5) as w:
        w.write(codes_to_table(["a", "b"], [0, 1], np.zeros((2, 5), np.uint8)))
    _reseal(pq_set / "fs")
    _fails(pq_set, tmp_path, capsys, f"shard {str(f)!r} holds 5 codes per row, but the feature "
                                     f"set's PQ codebook has 4 sub-spaces")
    pq = open_feature_set(pq_set, "fs").pq_codebook()
    with pytest.raises(ValueError, match="holds 5 codes per row"):  # the scorer's reader too
        next(iter_shard_batches(f, 27, 10, pq=pq))


def test_codes_beyond_the_centroids_are_refused_naming_the_row(pq_set, tmp_path, capsys):
    f = pq_set / "fs" / "train" / "part-00002.parquet"
    codes = np.zeros((4, 4), np.uint8)
    codes[2, 1] = 40  # the codebook has 32 centroids per sub-space
    with ShardWriter(f, 27, "pq", n_codes=4) as w:
        w.write(codes_to_table(list("abcd"), [0, 1, 2, 3], codes))
    _reseal(pq_set / "fs")
    _fails(pq_set, tmp_path, capsys, f"shard {str(f)!r} row 2 holds the code 40, but the PQ "
                                     f"codebook has 32 centroids")


def test_a_dense_shard_in_a_pq_set_is_refused(pq_set, tmp_path, capsys):
    f = pq_set / "fs" / "val" / "part-00000.parquet"
    write_shard(f, ["a"], [0], np.zeros((1, 27), np.float32), "dense")
    _reseal(pq_set / "fs")
    assert cli.main(["score", "--feature-set", "fs", "--split", "val", "--features",
                     str(pq_set), "--models", str(tmp_path / "nomodel"), "--scores",
                     str(tmp_path / "s")]) == 2  # (no model: fails before the shards)
    capsys.readouterr()
    fs = open_feature_set(pq_set, "fs")
    with pytest.raises(ValueError, match=f"shard {str(f)!r} has no column 'codes'"):
        scan_split(fs, "val")
    with pytest.raises(ValueError, match="has no column 'codes' but the feature set is product"):
        next(iter_shard_codes(f, 27, 10, pq=fs.pq_codebook()))
    with pytest.raises(ValueError, match="holds PQ codes"):
        next(iter_shard_batches(pq_set / "fs" / "train" / "part-00000.parquet", 27, 10))


def test_a_pq_manifest_without_its_entry_is_refused(pq_set):
    m = read_manifest(pq_set / "fs")
    del m["pq"]["sha256"]
    write_json_atomic(pq_set / "fs" / "manifest.json", m)
    with pytest.raises(ValueError, match="has layout 'pq' but no complete 'pq' entry"):
        open_feature_set(pq_set, "fs")


def test_table_to_features_decodes_a_checked_pq_table(rng):
    from bowsvm.io.features import table_to_features

    pq = _random_codebook(rng, 16, 8, 4)
    t = codes_to_table(["a", "b"], [1, 0], np.array([[0, 3], [2, 1]], np.uint8))
    ids, labels, X = table_to_features(t, 16, pq)
    assert list(ids) == ["a", "b"] and list(labels) == [1, 0] and X.dtype == np.float32
    np.testing.assert_array_equal(X, naive_pq_decode([[0, 3], [2, 1]], pq.centroids, 16))
    with pytest.raises(ValueError, match="needs its PQ codebook"):
        table_to_features(t, 16)
    bad = codes_to_table(["a"], [0], np.array([[0, 7]], np.uint8))
    with pytest.raises(ValueError, match="row 0 holds the code 7, but the PQ codebook has 4"):
        table_to_features(bad, 16, pq)
