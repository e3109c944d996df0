"""Integrity of the shipped glyph artefact (data/glyphs) and of its loader."""

import json
import re

import numpy as np
import pytest
import torch

from tagelib.glyphs import charset, curate
from tagelib.glyphs.dataset import SPLITS, GlyphDataset
from tagelib.paths import DATA_DIR


@pytest.fixture(scope="module")
def ds():
    return GlyphDataset.load()


def test_artefact_is_small():
    assert (DATA_DIR / "glyphs" / "glyphs32.npz").stat().st_size <= 30 * 2**20


def test_shapes_and_counts(ds):
    s, k = ds.coverage.shape
    assert ds.images.shape == (s, k, 32, 32) and ds.images.dtype == np.uint8
    assert s >= 800 and k >= 62 and len(ds.styles) == s
    assert ds.categories[:62] == list(charset.REQUIRED)
    assert ds.coverage[:, :62].all(), "every style covers A-Z, a-z, 0-9"
    assert ds.coverage.sum(0).min() >= 200, "every category has at least 200 styles"


def test_no_empty_glyph_and_nothing_outside_coverage(ds):
    peak = ds.images.max(axis=(2, 3))  # (S, K)
    assert peak[ds.coverage].min() >= 64
    assert peak[~ds.coverage].max(initial=0) == 0


def test_no_duplicate_style(ds):
    keys = [(s["path"], s["face_index"]) for s in ds.styles]
    assert len(set(keys)) == len(keys)
    assert curate.find_clones(ds.images[:, :62]) == [], "clones must have been merged at build time"


def test_metadata_fields(ds):
    need = {"family", "weight", "italic", "slant_deg", "width", "monospace", "classification", "license", "source", "caption"}
    assert all(need <= set(s) for s in ds.styles)
    assert all(s["caption"].endswith("glyph") for s in ds.styles)


def test_splits_are_disjoint_and_fixed(ds):
    sp = ds.split_info
    assert not set(sp["seen_categories"]) & set(sp["unseen_categories"])
    assert set(sp["seen_categories"]) | set(sp["unseen_categories"]) == set(ds.categories)
    assert 0.15 <= len(sp["unseen_categories"]) / len(ds.categories) <= 0.25
    assert not set(sp["unseen_categories"]) <= set(charset.DIGITS)
    assert not set(sp["train_styles"]) & set(sp["heldout_styles"])
    heldout_fams = {ds.styles[i]["family_key"] for i in sp["heldout_styles"]}
    train_fams = {ds.styles[i]["family_key"] for i in sp["train_styles"]}
    assert not heldout_fams & train_fams, "held out by family, not by style"
    for c, pools in sp["unseen_pools"].items():
        assert len(pools["shot_pool"]) == 10 and len(pools["eval_pool"]) >= 128
        assert not set(pools["shot_pool"]) & set(pools["eval_pool"])


def test_loader_tensors(ds):
    train = ds.split("train")
    assert train.images.dtype == torch.float32 and train.images.shape[1:] == (1, 32, 32)
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert set(train.category.unique().tolist()) == set(ds.seen)
    shots = ds.split("unseen_shots")
    assert set(shots.category.unique().tolist()) == set(ds.unseen) and len(shots) == 10 * len(ds.unseen)
    small = ds.split("train", max_styles=3)
    assert torch.bincount(small.category).max() == 3
    i = 5
    np.testing.assert_array_equal(GlyphDataset.to_ink(train.images[i]), ds.images[train.style[i], train.category[i]])
    with pytest.raises(ValueError, match="valid"):
        ds.split("bogus")
    assert set(SPLITS) >= {"train", "unseen_shots", "unseen_eval", "heldout_seen"}


# A broken artefact is refused as it loads, naming the file and the reason.

def _write_tiny_artefact(root, coverage_shape=(5, 3)):
    """5 styles x 3 categories (A, B seen; C unseen) in the shipped layout: glyphs32.npz, styles.json, split.json."""
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    np.savez(root / "glyphs32.npz", images=images, coverage=np.ones(coverage_shape, bool),
             categories=np.array(list("ABC")))
    (root / "styles.json").write_text(json.dumps([{"family_key": f"f{i}"} for i in range(5)]))
    split = {"seed": 0, "seen_categories": ["A", "B"], "unseen_categories": ["C"], "heldout_families": ["f4"],
             "train_styles": [0, 1, 2, 3], "heldout_styles": [4],
             "unseen_pools": {"C": {"shot_pool": [0], "eval_pool": [1, 2, 3]}}}
    (root / "split.json").write_text(json.dumps(split))


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


BROKEN = {  # case: (damage done to a good artefact in `root`, the file the message names, the reason it gives)
    "coverage wrong shape": (lambda root: _write_tiny_artefact(root, coverage_shape=(5, 2)), "glyphs32.npz",
                             r"coverage is bool \(5, 2\), expected bool \(S, K\) = \(5, 3\)"),
    "split.json not JSON": (lambda root: (root / "split.json").write_text('{"seen_categories": ["A"'), "split.json",
                            "not valid JSON"),
    "split.json missing a key": (lambda root: _edit_json(root / "split.json", lambda d: d.pop("unseen_pools")),
                                 "split.json", r"missing keys \['unseen_pools'\]"),
    "split.json unknown category": (lambda root: _edit_json(root / "split.json",
                                                            lambda d: d["seen_categories"].append("Z")),
                                    "split.json", r"unknown categories \['Z'\]"),
    "split.json style out of range": (lambda root: _edit_json(root / "split.json",
                                                              lambda d: d["train_styles"].append(9)),
                                      "split.json", r"train_styles must be a list of style ids in 0..4"),
    "styles.json wrong length": (lambda root: _edit_json(root / "styles.json", lambda d: d.pop()), "styles.json",
                                 "4 styles, the images have 5"),
}


def test_tiny_artefact_loads(tmp_path):
    _write_tiny_artefact(tmp_path)
    ds = GlyphDataset.load(tmp_path)
    assert ds.unseen == [2] and len(ds.split("train")) == 8 and ds.pool("C", "unseen_shots") == [0]


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_artefact_is_refused_naming_the_file(tmp_path, case):
    damage, name, reason = BROKEN[case]
    _write_tiny_artefact(tmp_path)
    damage(tmp_path)
    with pytest.raises(ValueError) as refused:
        GlyphDataset.load(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path / name}: ") and re.search(reason, str(refused.value))


def test_missing_split_json_is_named(tmp_path):
    _write_tiny_artefact(tmp_path)
    (tmp_path / "split.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "split.json"))):
        GlyphDataset.load(tmp_path)
