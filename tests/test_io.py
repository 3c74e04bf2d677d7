"""Shared I/O and validation: atomic outputs, manifests, feature shards, argument checks."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from bowsvm._validation import check_array, check_choice, check_int, check_real
from bowsvm.io import (
    atomic_output_dir, check_complete, is_complete, read_manifest, require_manifest_match,
    write_json_atomic,
)
from bowsvm.io.features import features_to_table, table_to_features, write_shard


def test_atomic_output_dir_commits_only_on_success(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output_dir(out) as tmp:
            (tmp / "a").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    with atomic_output_dir(out) as tmp:
        write_json_atomic(tmp / "manifest.json", {"stage": "s", "v": 1})
    assert is_complete(out) and read_manifest(out, stage="s")["v"] == 1
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        with atomic_output_dir(out):
            pass
    with atomic_output_dir(out, overwrite=True) as tmp:
        write_json_atomic(tmp / "manifest.json", {"stage": "s", "v": 2})
    assert read_manifest(out)["v"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_stage_without_manifest_is_a_bug(tmp_path):
    with pytest.raises(RuntimeError, match="wrote no manifest.json"):
        with atomic_output_dir(tmp_path / "o"):
            pass
    assert not (tmp_path / "o").exists()


def test_incomplete_and_wrong_stage_outputs_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_complete(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="is incomplete"):
        check_complete(tmp_path / "half")
    with atomic_output_dir(tmp_path / "o") as tmp:
        write_json_atomic(tmp / "manifest.json", {"stage": "extract"})
    with pytest.raises(ValueError, match="holds the output of stage 'extract', expected 'train'"):
        read_manifest(tmp_path / "o", stage="train")


def test_require_manifest_match_names_every_difference():
    require_manifest_match("x", {"a": 1}, {"a": 1, "b": 2})
    with pytest.raises(ValueError, match=r"a: expected 1, found 2; c: expected 3, found None"):
        require_manifest_match("x", {"a": 1, "c": 3}, {"a": 2})


@pytest.mark.parametrize("sparse", [False, True])
def test_feature_shard_round_trip(tmp_path, sparse):
    rng = np.random.default_rng(0)
    X = rng.random((7, 5)).astype(np.float32)
    X[X < 0.6] = 0
    Xin = sp.csr_matrix(X) if sparse else X
    write_shard(tmp_path / "p.parquet", [f"i{k}" for k in range(7)], np.arange(7), Xin)
    ids, labels, Y = table_to_features(pq.read_table(tmp_path / "p.parquet"), 5)
    assert list(ids) == [f"i{k}" for k in range(7)] and labels.tolist() == list(range(7))
    assert sp.issparse(Y) == sparse and Y.dtype == np.float32
    np.testing.assert_array_equal(Y.toarray() if sparse else Y, X)
    with pytest.raises(ValueError, match="layout='coo' is not valid"):
        features_to_table(["a"], [0], X[:1], layout="coo")


def test_validation_messages():
    assert check_choice("kind", "a", {"a": 1}) == 1
    with pytest.raises(ValueError, match=r"kind='z' is not a valid option; expected one of 'a', 'b'"):
        check_choice("kind", "z", {"a": 1, "b": 2})
    assert check_int("n", np.int64(3), low=1) == 3
    with pytest.raises(TypeError, match="n must be an integer, got float"):
        check_int("n", 3.0)
    with pytest.raises(TypeError, match="n must be an integer, got bool"):
        check_int("n", True)
    with pytest.raises(ValueError, match="n=0 is too small; expected n >= 1"):
        check_int("n", 0, low=1)
    with pytest.raises(ValueError, match="n=9 is too large; expected n <= 8"):
        check_int("n", 9, high=8)
    assert check_real("r", 1) == 1.0
    with pytest.raises(ValueError, match="r=nan is not finite"):
        check_real("r", float("nan"))
    with pytest.raises(ValueError, match="expected r > 0"):
        check_real("r", 0.0, low=0, low_open=True)
    with pytest.raises(TypeError, match="r must be a real number"):
        check_real("r", "1")
    with pytest.raises(TypeError, match="X must be a numeric array"):
        check_array("X", np.array(["a"]))
    with pytest.raises(TypeError, match="X must be real-valued"):
        check_array("X", np.ones(2, complex))
    with pytest.raises(ValueError, match=r"X must be 2-dimensional, got an array of shape \(3,\)"):
        check_array("X", np.ones(3), ndim=2)
    with pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at index \(1,\)\)"):
        check_array("X", np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="at least 2 row"):
        check_array("X", np.ones((1, 2)), min_rows=2)
    assert check_array("X", np.ones(2, np.float32)).dtype == np.float32
    assert check_array("X", np.ones(2, np.int16)).dtype == np.float64


def test_shard_writer_series_and_single_file(tmp_path):
    import pyarrow as pa

    from bowsvm.io import parquet
    from bowsvm.io.features import ShardWriter, feature_schema, shard_table

    X = np.arange(14, dtype=np.float32).reshape(7, 2)
    t = features_to_table([f"i{k}" for k in range(7)], np.arange(7), X)
    with ShardWriter(lambda k: tmp_path / "s" / f"part-{k:03d}.parquet", 2, "dense", 3) as w:
        w.write(t.slice(0, 2))
        w.write(t.slice(2))
    assert [(p.name, n) for p, n in w.files] == [
        ("part-000.parquet", 3), ("part-001.parquet", 3), ("part-002.parquet", 1)]
    back = pa.concat_tables([parquet.read_table(p) for p, _ in w.files])
    assert back.schema == feature_schema(2, "dense") and back.equals(t)
    # write_shard is the same writer: the same bytes as one write_table of the table
    write_shard(tmp_path / "a.parquet", [f"i{k}" for k in range(7)], np.arange(7), X)
    parquet.write_table(t, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    # an empty single shard is still written; an empty series writes nothing
    write_shard(tmp_path / "e.parquet", [], [], np.zeros((0, 2), np.float32))
    assert parquet.read_table(tmp_path / "e.parquet").num_rows == 0
    assert ShardWriter(lambda k: tmp_path / "none" / f"{k}.parquet", 2, "dense", 3).close() == []
    assert not (tmp_path / "none").exists()
    # list<float32> rows (as Spark hands them over) are cast to the fixed-size format
    loose = pa.table({"id": ["a"], "label": pa.array([1], pa.int32()), "split": ["train"],
                      "x": pa.array([[1.0, 2.0]], pa.list_(pa.float32()))})
    assert shard_table(loose, 2).schema == feature_schema(2, "dense")
    with pytest.raises(ValueError, match="do not fit the dense feature-shard format of dim=3"):
        shard_table(loose, 3)
    big = loose.set_column(1, "label", pa.array([2**40], pa.int64()))
    with pytest.raises(ValueError, match="labels int32"):
        shard_table(big, 2)
    with pytest.raises(ValueError, match=r"\['indices', 'values'\] missing"):
        shard_table(loose.drop(["x"]), 2)
    with pytest.raises(ValueError, match="do not fit this sparse shard writer"):
        ShardWriter(tmp_path / "z.parquet", 2, "sparse").write(t)
