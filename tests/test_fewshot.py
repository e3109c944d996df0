"""The few-shot protocol helpers on the shipped glyph split."""

import numpy as np
import pytest
import torch

from tagelib import fewshot
from tagelib.glyphs.dataset import GlyphDataset


@pytest.fixture(scope="module")
def ds():
    return GlyphDataset.load()


def test_shots_come_from_the_shot_pool(ds):
    shots = fewshot.draw_shots(ds, 3, seed=0)
    assert set(shots) == set(ds.unseen)
    for c, styles in shots.items():
        pool = ds.split_info["unseen_pools"][ds.categories[c]]["shot_pool"]
        assert len(set(styles)) == 3 and set(styles) <= set(pool)
    assert shots == fewshot.draw_shots(ds, 3, seed=0) != fewshot.draw_shots(ds, 3, seed=1)


def test_eval_pairs_use_the_evaluation_pools(ds):
    rows = fewshot.eval_pairs(ds, ds.unseen, 50, np.random.default_rng(0))
    for f, c, t in rows:
        assert c != t
        for k in (c, t):
            assert f in ds.split_info["unseen_pools"][ds.categories[k]]["eval_pool"]


def test_diversity_of_identical_images_is_zero():
    from tagelib.metrics import lpips_diversity, per_category_pairwise
    from tagelib.perceptual import load_lpips

    vgg = load_lpips("vgg")
    same = [torch.zeros(4, 1, 32, 32).uniform_(-1, 1)[:1].repeat(4, 1, 1, 1)]
    varied = [torch.rand(4, 1, 32, 32) * 2 - 1]
    assert lpips_diversity(per_category_pairwise(vgg, same)) == pytest.approx(0.0, abs=1e-6)
    assert lpips_diversity(per_category_pairwise(vgg, varied)) > 0.05


def test_seen_class_embeddings_index_the_seen_categories(ds):
    two_seen = {**ds.split_info, "seen_categories": [ds.categories[ds.seen[0]], ds.categories[ds.seen[2]]]}
    small = GlyphDataset(ds.images, ds.coverage, ds.categories, ds.styles, two_seen)
    w = torch.randn(5, 2, 3)
    labels = torch.tensor([ds.seen[0], ds.seen[0], ds.seen[2], ds.seen[2], ds.seen[2]])
    seen_labels, emb = fewshot.seen_class_embeddings(w, labels, small)
    assert seen_labels.tolist() == [0, 0, 1, 1, 1] and emb.shape == (2, 2, 3)
    torch.testing.assert_close(emb[1], w[2:5].mean(0))
    with pytest.raises(ValueError, match="unseen"):
        fewshot.seen_class_embeddings(w, torch.tensor([ds.unseen[0]] * 5), ds)


def test_editing_context_names_notebook_01_when_the_checkpoint_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_latent_space"):
        fewshot.editing_context("02_x", str(tmp_path), str(tmp_path), "data/glyphs", str(tmp_path / "absent"), "0,1", 0, 1)
