"""Top-k accuracy, per-class hit rates and confusion pairs against direct numpy/loops."""

import numpy as np
import pytest

from bowsvm.evaluation.metrics import (
    confusion_pairs,
    per_class_hit_rates,
    top_k_accuracy,
    top_k_indices,
    true_class_ranks,
)


def _naive_topk_hits(S, y, k):
    # stable argsort of -S puts ties in ascending class order
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.array([y[i] in order[i] for i in range(len(y))])


def _data(rng, n=300, C=17, ties=False):
    S = rng.normal(size=(n, C)).astype(np.float32)
    if ties:
        S = np.round(S).astype(np.float32)  # many exact ties
    y = rng.integers(0, C, size=n)
    return S, y


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 2, 5, 17, 30])
def test_top_k_accuracy_matches_numpy(rng, k, ties):
    S, y = _data(rng, ties=ties)
    assert top_k_accuracy(S, y, k) == pytest.approx(_naive_topk_hits(S, y, k).mean(), abs=0)


def test_ranks_against_loops(rng):
    S, y = _data(rng, n=50, C=6, ties=True)
    r = true_class_ranks(S, y)
    for i in range(len(y)):
        order = sorted(range(6), key=lambda c: (-S[i, c], c))
        assert r[i] == order.index(y[i])
    assert r.dtype == np.int64


def test_top_k_indices(rng):
    S, _ = _data(rng, ties=True)
    idx = top_k_indices(S, 5)
    assert idx.shape == (300, 5) and idx.dtype == np.int64
    for i in range(20):
        assert list(idx[i]) == sorted(range(17), key=lambda c: (-S[i, c], c))[:5]
    assert top_k_indices(S, 50).shape == (300, 17)


def test_per_class_hit_rates_loops(rng):
    S, y = _data(rng, n=400, C=9)
    y[y == 4] = 3  # class 4 has no samples
    rates, counts = per_class_hit_rates(S, y, k=3)
    hits = _naive_topk_hits(S, y, 3)
    for c in range(9):
        assert counts[c] == np.sum(y == c)
        if counts[c]:
            assert rates[c] == pytest.approx(hits[y == c].mean())
        else:
            assert np.isnan(rates[c])
    assert rates.dtype == np.float64


def test_confusion_pairs_loops(rng):
    S, y = _data(rng, n=500, C=5)
    pairs = confusion_pairs(S, y, top=100)
    pred = np.argmax(S, axis=1)
    counts = {}
    for t, p in zip(y, pred):
        if t != p:
            counts[(int(t), int(p))] = counts.get((int(t), int(p)), 0) + 1
    expect = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert [((d["true"], d["predicted"]), d["count"]) for d in pairs] == expect
    assert pairs[0]["rate"] == pytest.approx(expect[0][1] / np.sum(y == expect[0][0][0]))
    assert len(confusion_pairs(S, y, top=3)) == 3


def test_perfect_and_edge_cases():
    S = np.eye(4, dtype=np.float32)
    y = np.arange(4)
    assert top_k_accuracy(S, y, 1) == 1.0
    assert confusion_pairs(S, y) == []
    assert np.isnan(top_k_accuracy(np.zeros((0, 3), np.float32), np.zeros(0, int), 1))
    # all-equal scores: the lowest index wins, so only class 0 is a top-1 hit
    assert top_k_accuracy(np.zeros((4, 4)), y, 1) == 0.25


def test_errors():
    S = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        top_k_accuracy(S, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="labels has 2 entries but scores has 3 rows"):
        top_k_accuracy(S, np.array([0, 1]))
    with pytest.raises(TypeError, match="labels must be an integer array"):
        top_k_accuracy(S, np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="k=0 is too small"):
        top_k_accuracy(S, np.array([0, 1, 2]), k=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        top_k_accuracy(np.full((3, 4), np.nan), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="must be 2-dimensional"):
        top_k_indices(np.zeros(4))


def test_more_errors():
    from bowsvm.evaluation.metrics import check_scores_labels

    with pytest.raises(ValueError, match="labels must be 1-dimensional"):
        check_scores_labels(np.zeros((2, 3)), np.zeros((2, 1), int))
    with pytest.raises(ValueError, match="scores has 3 columns, expected n_classes=4"):
        check_scores_labels(np.zeros((2, 3)), np.zeros(2, int), n_classes=4)
    with pytest.raises(TypeError, match="scores must be a numeric array"):
        check_scores_labels(np.array([["a"]]), np.zeros(1, int))
    with pytest.raises(ValueError, match="top=0 is too small"):
        confusion_pairs(np.zeros((2, 3)), np.zeros(2, int), top=0)
    s, y = check_scores_labels(np.zeros((2, 3), np.float32), [0, 1])
    assert s.dtype == np.float32 and y.dtype == np.int64
    s, _ = check_scores_labels(np.zeros((2, 3), np.int32), [0, 1])
    assert s.dtype == np.float64
