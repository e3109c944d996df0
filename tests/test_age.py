"""AGE baseline: config, dictionary layout, losses against hand values, training, Gaussian, generation."""

import copy
import math

import pytest
import torch
from torch import nn

from tagelib.age import (
    AGE,
    AGEConfig,
    fit_coefficient_gaussian,
    gaussian_from_samples,
    generate,
    load_official_ax,
    orthogonality_loss,
    sparsity_loss,
    train_age,
)
from tagelib.factorize import class_embeddings, residuals

L, D, K = 6, 8, 5


def small_cfg(**kw):
    base = dict(n_latent=L, style_dim=D, edit_layers=(0, 1, 2, 3), groups=((0, 1), (2, 3)), dict_size=K)
    return AGEConfig(**(base | kw))


class LinearGenerator(nn.Module):
    """Toy frozen 'generator': a fixed random linear map from W+ (B, L, D) to a (B, 1, 8, 8) image."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(L * D, 64)

    def forward(self, w):
        return self.lin(w.flatten(1)).view(-1, 1, 8, 8)


def perceptual(x, y):  # any callable (x, y) -> (B,) distances
    return (x - y).abs().flatten(1).mean(1)


@pytest.fixture
def toy():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(6)  # 4 categories x 6 codes
    w = torch.randn(4, L, D)[labels] + 0.3 * torch.randn(24, L, D)  # (24, L, D) clustered by category
    return w, labels, class_embeddings(w, labels)


def test_config_defaults_are_ages_and_validation():
    cfg = AGEConfig(n_latent=18, style_dim=512)
    assert cfg.edit_layers == (0, 1, 2, 3, 4, 5) and cfg.groups == ((0, 1, 2), (3, 4, 5))
    assert (cfg.dict_size, cfg.lambda_l2, cfg.lambda_lpips, cfg.lambda_sparse, cfg.lambda_orth, cfg.lr) == (
        100, 1.0, 1.0, 0.005, 0.0005, 1e-4)
    with pytest.raises(ValueError, match="partition"):
        small_cfg(groups=((0, 1), (2,)))
    with pytest.raises(ValueError, match=r"0\.\.5"):
        small_cfg(edit_layers=(0, 9), groups=((0, 9),))
    with pytest.raises(ValueError, match="optimizer"):
        small_cfg(optimizer="sgd")
    with pytest.raises(ValueError, match="valid"):
        AGEConfig.from_dict({"n_latent": 6, "style_dim": 8, "dictsize": 3})
    assert AGEConfig.from_dict(dict(small_cfg().to_dict(), groups=[[0, 1], [2, 3]])) == small_cfg()


def test_dictionary_layout_and_edit_formula(toy):
    w, labels, ce = toy
    torch.manual_seed(1)
    model = AGE(small_cfg())
    assert model.A.shape == (4, D, K) and len(model.mlps) == 2
    assert model.mlps[0][0].in_features == 2 * D  # a group's residual is flattened
    cps = ce[labels]
    out = model(w, cps)
    n = out["n"]
    assert n.shape == (24, 2, K) and out["w"].shape == w.shape
    # layer 3 is in group 1: edited code = w̄ + A_3 n_1; layers off S come from w unchanged
    torch.testing.assert_close(out["w"][:, 3], cps[:, 3] + n[:, 1] @ model.A[3].T)
    torch.testing.assert_close(out["w"][:, 0], cps[:, 0] + n[:, 0] @ model.A[0].T)
    assert torch.equal(out["w"][:, 4:], w[:, 4:])
    torch.testing.assert_close(n[:, 0], model.mlps[0](residuals(w, cps, [0, 1]).flatten(1)))


def test_age_default_mlp_widths():
    m = AGE(AGEConfig(n_latent=6, style_dim=16, dict_size=7))
    lin = [l for l in m.mlps[0] if isinstance(l, nn.Linear)]  # AGE EqualLinear: 3D->2D->2D->D->K->K
    assert [(l.in_features, l.out_features) for l in lin] == [(48, 32), (32, 32), (32, 16), (16, 7), (7, 7)]
    assert m.A.shape == (6, 16, 7)


def test_sparsity_loss_hand_value():
    n = torch.tensor([[0.0, 2.0], [-4.0, 1.0]])
    sig = lambda x: 1 / (1 + math.exp(-x))
    expect = (sig(-1) + sig(0) + sig(1) + sig(-0.5)) / 32
    assert sparsity_loss(n).item() == pytest.approx(expect, rel=1e-6)
    assert sparsity_loss(n, denominator=1.0).item() == pytest.approx(expect * 32, rel=1e-6)


def test_orthogonality_loss_hand_value():
    A = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # (|S|=1, D=2, K=2): directions (1,0), (0,2)
    ce = torch.tensor([[[3.0, 4.0]], [[-1.0, 0.0]]])  # (C=2, |S|=1, D=2)
    # |A^T w̄|: dir0·c0 = 3, dir1·c0 = 8, dir0·c1 = -1, dir1·c1 = 0 -> (3 + 8 + 1 + 0) / (K*C*|S| = 4)
    assert orthogonality_loss(A, ce).item() == pytest.approx(3.0)
    assert orthogonality_loss(torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[5.0, 0.0]]])).item() == 0.0


@pytest.mark.parametrize("optimizer,lr", [("adam", 1e-3), ("ranger", 1e-3)])
def test_training_step_reduces_loss_and_keeps_generator_frozen(toy, optimizer, lr):
    w, labels, ce = toy
    torch.manual_seed(2)
    gen = LinearGenerator()
    before = copy.deepcopy(gen.state_dict())
    torch.manual_seed(3)
    model = AGE(small_cfg(optimizer=optimizer, lr=lr))
    m0 = copy.deepcopy(model)
    hist = train_age(model, w, labels, ce, gen, perceptual, steps=1, batch_size=24, seed=0, progress=False)
    assert set(hist) == {"loss", "l2", "lpips", "sparse", "orth"} and len(hist["loss"]) == 1
    hist2 = train_age(m0, w, labels, ce, gen, perceptual, steps=1, batch_size=24, seed=0, progress=False)
    assert hist2 == hist  # same init + seed -> same history
    after = train_age(model, w, labels, ce, gen, perceptual, steps=1, batch_size=24, seed=0, progress=False)
    assert after["loss"][0] < hist["loss"][0]  # full batch: loss after one step < loss before it
    assert all(not p.requires_grad for p in gen.parameters())
    assert all(torch.equal(v, gen.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), m0.parameters()))


def test_training_on_real_images_and_lpips_off(toy):
    w, labels, ce = toy
    gen = LinearGenerator()
    images = torch.randn(24, 1, 8, 8)
    model = AGE(small_cfg(lambda_lpips=0.0))
    hist = train_age(model, w, labels, ce, gen, None, images=images, steps=3, batch_size=5, progress=False)
    assert "lpips" not in hist and len(hist["l2"]) == 3
    with pytest.raises(ValueError, match="perceptual"):
        train_age(AGE(small_cfg()), w, labels, ce, gen, None, steps=1, batch_size=4, progress=False)


def test_gaussian_recovers_known_mean_and_cov():
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([[1.0, -2.0], [0.0, 3.0]])  # (G=2, K=2)
    chol = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[2.0, 0.0], [-1.0, 1.0]]])
    cov = chol @ chol.transpose(1, 2)
    z = torch.randn(40000, 2, 2, generator=g)
    n = mean + torch.einsum("gkj,ngj->ngk", chol, z)
    fit = gaussian_from_samples(n)
    torch.testing.assert_close(fit.mean.float(), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(fit.cov.float(), cov, atol=0.1, rtol=0)
    # unbiased divisor, exactly like np.cov / torch.cov
    torch.testing.assert_close(fit.cov[1], torch.cov(n[:, 1].double().T))


def test_fit_coefficient_gaussian_matches_model_coefficients(toy):
    w, labels, ce = toy
    model = AGE(small_cfg())
    fit = fit_coefficient_gaussian(model, w, ce[labels], batch_size=7)  # batched == one pass
    with torch.no_grad():
        n = model(w, ce[labels])["n"].double()
    assert fit.mean.shape == (2, K) and fit.cov.shape == (2, K, K)
    torch.testing.assert_close(fit.mean, n.mean(0))
    torch.testing.assert_close(fit.cov[0], torch.cov(n[:, 0].T))
    torch.testing.assert_close(fit.mean_abs, n.abs().mean(0))


def test_generate_shapes_alpha_zero_and_masking(toy):
    w, labels, ce = toy
    model = AGE(small_cfg())
    fit = fit_coefficient_gaussian(model, w, ce[labels])
    shots = w[:3]
    out = generate(model, shots, 4, 1.0, fit, rng=torch.Generator().manual_seed(0))
    assert out.shape == (12, L, D)
    assert torch.equal(out[:, 4:], shots.repeat_interleave(4, 0)[:, 4:])  # only S edited, shot-major
    assert not torch.allclose(out[0, :4], out[1, :4])  # different samples differ
    same = generate(model, shots, 4, 1.0, fit, rng=torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    zero = generate(model, shots, 4, 0.0, fit, rng=torch.Generator().manual_seed(0))
    assert torch.equal(zero, shots.repeat_interleave(4, 0))
    masked = generate(model, shots, 4, 1.0, fit, beta=float("inf"))  # every direction masked
    assert torch.equal(masked, shots.repeat_interleave(4, 0))


def test_load_official_ax_key_mapping():
    model = AGE(AGEConfig(n_latent=18, style_dim=16, dict_size=3))  # AGE layout at a small D
    src = AGE(AGEConfig(n_latent=18, style_dim=16, dict_size=3))
    official = {"module.ax.A": src.A.detach().clone(), "encoder.x": torch.zeros(1)}
    for g in range(2):
        lin = [l for l in src.mlps[g] if isinstance(l, nn.Linear)]
        for i, l in enumerate(lin, start=1):
            official[f"module.ax.encoder{g}.fc{i}.weight"] = l.weight.detach().clone()
            official[f"module.ax.encoder{g}.fc{i}.bias"] = l.bias.detach().clone()
    load_official_ax(model, {"state_dict": official})
    for (k, v), (_, u) in zip(model.state_dict().items(), src.state_dict().items()):
        assert torch.equal(v, u), k
