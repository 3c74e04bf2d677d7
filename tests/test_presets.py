"""Tests of the feature-set presets (bowsvm.presets)."""

import copy

import pytest

from bowsvm.features import descriptor_dim
from bowsvm.presets import PRESET_DIR, list_presets, load_preset, preset_hash

# the paper's Table 1: (coding, descriptors, coding dimension, blocks, total)
PAPER = {
    "paper-1-lcc-hoglbp-8k": ("lcc", "hog+lbp", 8192, 10, 81920),
    "paper-2-lcc-hog-16k": ("lcc", "hog", 16384, 10, 163840),
    "paper-3-lcc-hoglbp-20k": ("lcc", "hog+lbp", 20480, 10, 204800),
    "paper-4-sv-hog-32k": ("sv", "hog", 32768, 8, 262144),
    "paper-5-sv-hoglbp-51k": ("sv", "hog+lbp", 51200, 4, 204800),
    "paper-6-sv-hog-64k": ("sv", "hog", 65536, 4, 262144),
}
DERIVED = [("output", "dim"), ("descriptors", "dim"), ("coding", "dim"),
           ("pooling", "n_blocks"), ("pooling", "method")]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_have_exact_dims(name):
    method, kind, coding_dim, blocks, total = PAPER[name]
    p = load_preset(name)
    assert p["name"] == name
    assert p["coding"]["method"] == method
    assert p["descriptors"]["kind"] == kind
    assert p["coding"]["dim"] == coding_dim
    assert p["pooling"]["n_blocks"] == blocks
    assert p["output"]["dim"] == total
    if method == "sv":
        d = p["codebook"]["pca_dim"] or p["descriptors"]["dim"]
        assert p["codebook"]["n_bases"] * (d + 1) == coding_dim
    else:
        assert p["codebook"]["n_bases"] == coding_dim and p["coding"]["k"] == 20


def test_shipped_presets_listed_and_valid():
    names = list_presets()
    assert set(PAPER) <= set(names)
    assert any(n.startswith("fmnist-lcc-") for n in names)
    assert any(n.startswith("fmnist-sv-") for n in names)
    assert any(n.startswith("quick-") for n in names)
    for n in names:
        p = load_preset(n)
        de = p["descriptors"]
        # our dimension formula agrees with the descriptor module's
        assert de["dim"] == descriptor_dim(
            de["kind"], n_bins=de.get("n_bins", 8), cells=de.get("cells", 2),
            method=de.get("method", "nri_uniform"),
        )
        assert p["output"]["dim"] == p["pooling"]["n_blocks"] * p["coding"]["dim"]


def test_fmnist_presets_fit_28x28():
    for n in list_presets():
        if n.startswith("fmnist-"):
            p = load_preset(n)
            assert max(p["descriptors"]["patch_sizes"]) <= 28
            assert p["max_side"] >= 28


def test_load_by_path_and_dict_round_trip(tmp_path):
    p = load_preset(PRESET_DIR / "quick-lcc-hog.toml")
    assert p == load_preset("quick-lcc-hog")
    assert load_preset(p) == p  # a resolved dict resolves to itself
    f = tmp_path / "mine.toml"
    f.write_text((PRESET_DIR / "quick-sv-hog.toml").read_text())
    q = load_preset(str(f))
    assert q["name"] == "mine"
    assert preset_hash(q) == preset_hash("quick-sv-hog")  # name is not hashed


def test_hash_is_stable():
    # a fixed value: a change here means every manifest built so far is stale
    assert preset_hash("quick-lcc-hog") == preset_hash(load_preset("quick-lcc-hog"))
    assert preset_hash("quick-lcc-hog") == "1445b65734d0c349"
    p = load_preset("quick-lcc-hog")
    p2 = copy.deepcopy(p)
    p2["description"] = "another text"
    assert preset_hash(p2) == preset_hash(p)


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


_ALTERNATIVES = {
    "kind": {"hog": "lbp", "lbp": "hog", "hog+lbp": "hog"},
    "method": {"nri_uniform": "uniform", "uniform": "nri_uniform", "lcc": "sv", "sv": "lcc"},
    "layout": {"dense": "sparse", "sparse": "dense"},
    "normalize": {"l2": "none", "none": "l2"},
}


def _perturb(key, v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1 if key != "pca_dim" or v == 0 else v - 1
    if isinstance(v, float):
        return v * 2
    if isinstance(v, str):
        return _ALTERNATIVES[key][v]
    if key == "grids":
        return v + [[1, 2]]
    if key == "patch_sizes":
        return [v[0] + 1] + v[1:]
    raise AssertionError(f"no perturbation for {key}={v!r}")


@pytest.mark.parametrize("name", ["quick-lcc-hoglbp", "quick-sv-hog", "paper-5-sv-hoglbp-51k"])
def test_hash_changes_when_any_field_changes(name):
    base = load_preset(name)
    for sec, key in DERIVED:
        base[sec].pop(key)
    h0 = preset_hash(base)
    n_checked = 0
    for path, v in _leaves(base):
        if path[-1] in ("name", "description"):
            continue
        p = copy.deepcopy(base)
        node = p
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = _perturb(path[-1], v)
        if path == ("coding", "method") and node["method"] == "lcc":
            node["k"] = 2  # the default k = 20 exceeds the tiny codebooks
        assert preset_hash(p) != h0, f"changing {'.'.join(path)} kept the hash"
        n_checked += 1
    assert n_checked >= 12


def test_preset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no preset 'nope'"):
        load_preset("nope")
    with pytest.raises(TypeError, match="preset must be a name"):
        load_preset(42)
    base = {"descriptors": {"kind": "hog"}, "codebook": {"n_bases": 16, "n_samples": 100},
            "coding": {"method": "lcc", "k": 4}}
    assert load_preset(base)["output"]["dim"] == 160
    bad = copy.deepcopy(base)
    bad["output"] = {"dim": 100}
    with pytest.raises(ValueError, match=r"states output.dim=100 but its settings give 10 blocks x 16 = 160"):
        load_preset(bad)
    bad = copy.deepcopy(base)
    bad["coding"]["kk"] = 3
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['kk'\] in preset section \[coding\]"):
        load_preset(bad)
    bad = copy.deepcopy(base)
    bad["extra"] = 1
    with pytest.raises(ValueError, match=r"unknown preset key\(s\) \['extra'\]"):
        load_preset(bad)
    bad = copy.deepcopy(base)
    bad["descriptors"]["kind"] = "sift"
    with pytest.raises(ValueError, match="descriptors.kind='sift' is not a valid option"):
        load_preset(bad)
    bad = copy.deepcopy(base)
    bad["coding"]["k"] = 17
    with pytest.raises(ValueError, match="coding.k=17 is too large"):
        load_preset(bad)
    bad = copy.deepcopy(base)
    bad["pooling"] = {"method": "sv"}
    with pytest.raises(ValueError, match="pooling.method='sv' does not fit coding.method='lcc'"):
        load_preset(bad)
    bad = copy.deepcopy(base)
    del bad["coding"]["method"]
    with pytest.raises(ValueError, match="preset needs coding.method"):
        load_preset(bad)
    bad = copy.deepcopy(base)
    bad["codebook"]["pca_dim"] = 200
    with pytest.raises(ValueError, match="codebook.pca_dim=200 is too large"):
        load_preset(bad)
    f = tmp_path / "broken.toml"
    f.write_text("[descriptors\nkind=1")
    with pytest.raises(ValueError, match="broken.toml"):
        load_preset(f)


def test_feature_set_preset_and_hash_function():
    from bowsvm.io.manifest import content_hash
    from bowsvm.presets import feature_set_preset

    for name in list_presets():
        preset, h = feature_set_preset(name)
        assert preset == load_preset(name) and h == preset_hash(name) == preset_hash(preset)
        # the same canonical hash as every other content hash bowsvm records
        assert h == content_hash({k: v for k, v in preset.items()
                                  if k not in ("name", "description")})
    with pytest.raises(FileNotFoundError, match="no preset 'nope'"):
        feature_set_preset("nope")


def test_presets_import_only_validation():
    import ast

    import bowsvm.presets as presets

    tree = ast.parse(open(presets.__file__).read())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in mods if m and m.startswith("bowsvm")} == {"bowsvm._validation"}


def test_benchmark_presets_valid():
    """The benchmarks' own preset files (benchmarks/presets/*.toml) load and fit their images."""
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parent.parent / "benchmarks" / "presets").glob("*.toml"))
    assert files
    for f in files:
        p = load_preset(f)
        de = p["descriptors"]
        assert de["dim"] == descriptor_dim(de["kind"], n_bins=de.get("n_bins", 8),
                                           cells=de.get("cells", 2),
                                           method=de.get("method", "nri_uniform"))
        assert p["output"]["dim"] == p["pooling"]["n_blocks"] * p["coding"]["dim"]
        assert max(de["patch_sizes"]) <= p["max_side"], f
