"""The latent-space wrapper, its training loop and its evaluation helpers, on miniature models."""

import numpy as np
import pytest
import torch

from tagelib.latent import LatentSpace, LatentSpaceConfig
from tagelib.latent_eval import psnr, transfer_pairs
from tagelib.latent_train import LatentTrainConfig, PairSampler, train_latent_space
from tagelib.inversion import refine_codes
from tagelib.psp import EncoderConfig
from tagelib.stylegan2 import GeneratorConfig


def tiny_space(seed: int = 0) -> LatentSpace:
    torch.manual_seed(seed)
    return LatentSpace(LatentSpaceConfig(
        GeneratorConfig(size=16, style_dim=16, n_mlp=1, img_channels=1, widths=(16, 16, 8)),
        EncoderConfig(input_size=16, in_channels=1, n_styles=6, style_dim=16, units=(1, 1, 1, 1), widths=(8, 8, 8, 16), mode="ir"),
    ))


def toy_glyphs(n_styles=6, n_cats=5, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.random((n_styles, n_cats, size, size)) > 0.7).astype(np.uint8) * 255
    return images, np.ones((n_styles, n_cats), dtype=bool)


def test_config_mismatch_is_rejected():
    with pytest.raises(ValueError, match="codes"):
        LatentSpaceConfig(GeneratorConfig(size=16, style_dim=16, img_channels=1),
                          EncoderConfig(input_size=16, in_channels=1, n_styles=8, style_dim=16))


def test_freeze_survives_train_and_blocks_gradients():
    m = tiny_space().freeze()
    m.train()
    assert not m.training and not m.encoder.training
    assert all(not p.requires_grad for p in m.parameters())


def test_save_load_round_trip(tmp_path):
    m = tiny_space()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    m.eval()
    m.save(tmp_path / "space", {"note": "test"})
    back = LatentSpace.load(tmp_path / "space")
    assert back.training_info["note"] == "test"
    torch.testing.assert_close(back(x), m(x))


def test_missing_checkpoint_names_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_latent_space"):
        LatentSpace.load(tmp_path / "absent")


def test_pair_sampler_draws_two_characters_of_one_font():
    images, cov = toy_glyphs()
    cov[2, 3] = False
    sampler = PairSampler(images, cov, styles=[1, 2, 4], categories=[0, 2, 3], seed=0)
    xa, xb, ca, cb = sampler.sample(200)
    assert xa.shape == (200, 1, 16, 16) and set(ca.tolist()) <= {0, 2, 3}
    flat = images.reshape(6 * 5, -1).astype(np.float32) / 127.5 - 1
    for x, c in ((xa, ca), (xb, cb)):  # every image is the real glyph of its category in an allowed style
        match = (np.abs(flat[None] - x.flatten(1).numpy()[:, None]).sum(-1) == 0)  # (n, S*K)
        style, cat = np.divmod(match.argmax(1), 5)
        assert (cat == c.numpy()).all() and set(style) <= {1, 2, 4}
    assert not any((s == 2) and (c == 3) for s, c in zip(*np.divmod(match.argmax(1), 5)))


def test_training_reduces_reconstruction_and_learns_class_means():
    images, cov = toy_glyphs()
    m = tiny_space()
    sampler = PairSampler(images, cov, list(range(6)), list(range(5)), seed=0)
    l1 = lambda a, b: (a - b).abs().flatten(1).mean(1)
    hist = train_latent_space(m, sampler, 5, LatentTrainConfig(steps=60, batch_size=8, lr=3e-3, cross_warmup=5),
                              perceptual=l1, progress=False)
    assert np.mean(hist["l1"][-10:]) < 0.8 * np.mean(hist["l1"][:5])
    assert not np.isnan(hist["cross_l1"][-1])
    assert m.class_mean.shape == (5, 6, 16) and m.class_mean.abs().sum() > 0


def test_psnr_known_values():
    x = torch.zeros(2, 1, 4, 4)
    assert torch.allclose(psnr(x + 0.2, x), torch.full((2,), 20.0), atol=1e-4)  # (0.1)^2 MSE on [0, 1]


def test_transfer_pairs_respect_coverage():
    class Stub:
        coverage = np.ones((5, 4), dtype=bool)
    Stub.coverage[3, 2] = False
    rows = transfer_pairs(Stub, [0, 1, 3], [0, 1], [2, 3], 50, np.random.default_rng(0))
    assert rows.shape == (50, 4)
    assert all(f != o and c != t and Stub.coverage[f, t] and Stub.coverage[o, t] for f, c, t, o in rows)


def test_refinement_lowers_the_loss_and_leaves_weights():
    m = tiny_space().freeze()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    before = [p.clone() for p in m.parameters()]
    l1 = lambda a, b: (a - b).abs().flatten(1).mean(1)
    w0 = m.encode_batched(x)
    w = refine_codes(m, x, l1, steps=20, lr=0.05)
    err = lambda w: (m.decode(w) - x).abs().mean().item()
    assert err(w) < err(w0)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_sampler_rejects_styles_without_categories():
    images, cov = toy_glyphs()
    cov[1] = False
    with pytest.raises(ValueError, match="cover none"):
        PairSampler(images, cov, styles=[0, 1], categories=[0, 1], seed=0)
