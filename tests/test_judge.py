"""The judge: its data never includes the shots, the reference halves or held-out families; it trains on a slice;
its checkpoint round-trips; homoglyphs are found in the data."""

import numpy as np
import pytest
import torch

from tagelib.checkpoint_io import CheckpointMismatchError
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.judge import (GlyphJudge, JudgeConfig, JudgeTrainConfig, augment_glyphs, canonical_ids, homoglyph_groups,
                           judge_split, load_judge, save_judge, train_judge)


@pytest.fixture(scope="module")
def ds():
    return GlyphDataset.load()


@pytest.fixture(scope="module")
def parts(ds):
    return judge_split(ds, val_fraction=0.1, seed=0)


def _pairs(styles, cats):
    return set(zip(styles.tolist(), cats.tolist()))


def test_training_data_excludes_shots_reference_validation_and_heldout_families(ds, parts):
    train = _pairs(*parts["train"])
    for split in ("unseen_shots", "unseen_reference"):
        assert not train & _pairs(*ds.pairs(split)), split
    assert not train & _pairs(*parts["val_seen"])
    assert not {s for s, _ in train} & set(ds.split_info["heldout_styles"])
    # every category is trained on, and the unseen ones only on the first half of their evaluation pools
    assert {c for _, c in train} == set(range(len(ds.categories)))
    assert {p for p in train if p[1] in ds.unseen} <= _pairs(*ds.pairs("unseen_judge"))


def test_evaluation_pool_halves_partition_the_pool(ds):
    for c in ds.split_info["unseen_categories"]:
        judge_half, reference = ds.pool(c, "unseen_judge"), ds.pool(c, "unseen_reference")
        assert not set(judge_half) & set(reference)
        assert sorted(judge_half + reference) == sorted(ds.pool(c, "unseen_eval"))
        assert len(reference) >= 256  # the protocol's 128 reference + 128 ceiling images fit


def test_homoglyphs_are_found_in_the_data(ds):
    groups = homoglyph_groups(ds)
    assert ["Γ", "Г"] in groups and ["Π", "П"] in groups
    assert not any("O" in g or "0" in g for g in groups)  # look-alikes that fonts draw differently stay apart
    canon = canonical_ids(ds.categories, groups)
    assert canon[ds.category_index["Г"]] == ds.category_index["Γ"]
    assert canon[ds.category_index["A"]] == ds.category_index["A"]


def test_verdicts_do_not_depend_on_ink_and_paper_levels():
    """Each image is standardised first: a generator's greyish paper or faint ink does not change the verdict."""
    judge = GlyphJudge(JudgeConfig(num_classes=5, widths=(8, 16, 16), embed_dim=16)).eval()
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(judge(0.6 * x - 0.2), judge(x), rtol=1e-4, atol=1e-4)


def test_augmentation_keeps_shape_range_and_changes_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 32, 32, generator=g) * 2 - 1
    y = augment_glyphs(x, g)
    assert y.shape == x.shape and y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    assert (y - x).abs().mean() > 0.01


def test_judge_learns_a_smoke_slice_and_round_trips(ds, tmp_path):
    """60 steps on 6 characters × 150 fonts: well above chance (1/6) on 150 other fonts; save/load is exact."""
    cats = [ds.category_index[c] for c in "AOx7яж"]
    styles = np.array(ds.split_info["train_styles"])
    ink = lambda s: ds.images[s[:, None], np.array(cats)[None]].reshape(-1, 32, 32)
    labels = np.tile(np.arange(len(cats)), 150)
    judge = GlyphJudge(JudgeConfig(num_classes=len(cats), widths=(8, 16, 16), embed_dim=32))
    judge.categories = list("AOx7яж")
    train_judge(judge, ink(styles[:150]), labels, JudgeTrainConfig(steps=60, batch_size=64, lr=5e-3), progress=False)
    test_x = GlyphDataset.to_tensor(ink(styles[150:300]))
    assert judge.accuracy(test_x, torch.from_numpy(labels)) > 0.7
    save_judge(tmp_path / "j", judge, {"note": "smoke"})
    again = load_judge(tmp_path / "j", categories=judge.categories)
    torch.testing.assert_close(again(test_x[:32]), judge.eval()(test_x[:32]))
    assert again.training_info["note"] == "smoke"
    with pytest.raises(CheckpointMismatchError, match="other categories"):
        load_judge(tmp_path / "j", categories=["A", "B"])


def test_missing_judge_names_the_notebook_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="00_judge"):
        load_judge(tmp_path / "nowhere")
