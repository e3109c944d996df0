"""Extra fonts and shapes for latent-space training, and the guarantee that no unseen category or held-out
family enters the training of E or G."""

import numpy as np
import torch

from tagelib import glyph_shapes as gs
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.inversion import ShotInverter
from tagelib.latent_train import LatentTrainConfig, train_latent_space, training_sampler
from tests.test_latent import tiny_space


def _pairs(n=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    xa = torch.where(torch.rand(n, 1, size, size, generator=g) > 0.7, 1.0, -1.0)
    return xa, xa.flip(-1)


def test_augment_transforms_both_members_alike_and_keeps_range():
    xa, _ = _pairs()
    a1, b1 = gs.augment_pairs(xa, xa.clone(), 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(a1, b1)  # one transform per pair: identical inputs stay identical
    assert not torch.equal(a1, xa)
    assert a1.min() >= -1 and a1.max() <= 1
    a0, b0 = gs.augment_pairs(xa, xa.flip(-1), 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(a0, xa) and torch.equal(b0, xa.flip(-1))


def test_stroke_weight_makes_strokes_bolder_and_lighter():
    x = -torch.ones(3, 1, 9, 9)
    x[:, :, 4, 2:7] = 1  # a one-pixel horizontal stroke
    out = gs.stroke_weight(x, torch.tensor([-1, 0, 1]))
    ink = (out + 1).sum((1, 2, 3))
    assert ink[2] > ink[1] > ink[0]


def test_splice_takes_each_pixel_from_one_of_the_two_glyphs():
    xa, xb = -torch.ones(16, 1, 32, 32), torch.ones(16, 1, 32, 32)
    out = gs.splice(xa, xb, torch.Generator().manual_seed(0))
    share = (out > 0).float().mean((1, 2, 3))
    assert ((out == 1) | (out == -1)).all()
    assert (share > 0.1).all() and (share < 0.9).all()  # the cut runs through the middle region


def test_random_strokes_draw_some_ink_and_vary():
    s = gs.random_strokes(12, 32, torch.Generator().manual_seed(0))
    assert s.shape == (12, 1, 32, 32) and s.min() >= -1 and s.max() <= 1
    ink = (s > 0).float().mean((1, 2, 3))
    assert (ink > 0.02).all() and (ink < 0.6).all()
    assert (s[0] - s[1]).abs().mean() > 0.05


def test_no_unseen_category_or_heldout_family_enters_latent_training():
    """Every glyph E and G train on is read through the sampler: record which (style, category) it reads."""
    ds = GlyphDataset.load("data/glyphs")
    sampler = training_sampler(ds, seed=0)
    read = []

    class Recorder:
        def __getitem__(self, index):
            styles, cats = index
            read.append((np.asarray(styles).copy(), np.asarray(cats).copy()))
            return ds.images[index][:, ::2, ::2]  # 16 px for the miniature model

    sampler.images = Recorder()
    cfg = LatentTrainConfig(steps=6, batch_size=16, cross_warmup=2, augment=1.0, pseudo_fraction=0.5)
    train_latent_space(tiny_space(), sampler, len(ds.categories), cfg, perceptual=lambda a, b: (a - b).abs().mean((1, 2, 3)),
                       progress=False)
    styles = np.concatenate([s for s, _ in read])
    cats = np.concatenate([c for _, c in read])
    assert len(styles) == 6 * 2 * 16
    assert set(styles) <= set(ds.split_info["train_styles"])
    assert not set(styles) & set(ds.split_info["heldout_styles"])
    assert set(cats) <= set(ds.seen) and not set(cats) & set(ds.unseen)


def test_shot_inverter_caches_and_is_independent_of_batch_mates():
    m = tiny_space().freeze()
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    l1 = lambda a, b: (a - b).abs().flatten(1).mean(1)
    together = ShotInverter(m, 5, l1, lr=0.05)
    w_all = together(x)
    alone = ShotInverter(m, 5, l1, lr=0.05)(x[2:3])
    assert torch.allclose(w_all[2:3], alone, atol=1e-5)
    again = together(torch.cat([x[4:], x[:1]]))  # cache hits: nothing refined twice
    assert together.refined == 6 and torch.equal(again, torch.cat([w_all[4:], w_all[:1]]))
    assert torch.equal(ShotInverter(m, 0)(x), m.encode_batched(x))


def test_ablation_variants_are_known_to_the_parameter_rules():
    from tagelib.latent_ablation import VARIANTS
    from tagelib.params import ABLATION_VARIANTS

    assert tuple(VARIANTS) == ABLATION_VARIANTS
    for _, overrides in VARIANTS.values():
        LatentTrainConfig.from_dict(overrides)  # every variant is a valid training config


def test_ablation_table_lists_every_variant_with_both_font_sets():
    from tagelib.latent_ablation import ablation_table

    keys = [f"{w}, {f}" for w in ("E→G", "class embedding k=3", "continuous transfer k=3")
            for f in ("training fonts", "held-out families")]
    row = {"targets": {**dict.fromkeys(keys, 0.5), "FD-domain E→G, training fonts": 12.0}, "change": "x",
           "steps": 10, "batch_size": 4, "train_seconds": 60.0, "seed": 0, "machine": "m"}
    text = ablation_table({"base": row, "pseudo": {**row, "change": "y"}})
    assert text.count("| base |") == 1 and text.count("| pseudo |") == 1
    assert "50.0 % / 50.0 %" in text and "12.00" in text


def test_heldout_protocol_draws_shots_from_heldout_families_only():
    from tagelib.evaluation import heldout_protocol

    ds = GlyphDataset.load("data/glyphs")
    p = heldout_protocol(ds, 3, seed=0)
    heldout = set(ds.split_info["heldout_styles"])
    for c in ds.unseen:
        assert len(p.shot_styles[c]) == 3 and set(p.shot_styles[c]) <= heldout
        assert ds.coverage[p.shot_styles[c], c].all()
