"""Tests for tagelib.stylegan2: shapes, determinism, gradients, FIR filtering, losses, official names."""

from __future__ import annotations

import math

import pytest
import torch

from tagelib.stylegan2 import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    Upsample,
    d_logistic_loss,
    g_nonsaturating_loss,
    r1_penalty,
    truncate,
    upfirdn2d,
)


def small_cfg(size: int = 32, img_channels: int = 3, **kw) -> GeneratorConfig:
    return GeneratorConfig(size=size, style_dim=32, n_mlp=2, max_channels=32, img_channels=img_channels, **kw)


def _set_noise_strength(g: Generator, value: float = 0.5) -> None:
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(value)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("img_channels", [1, 3])
def test_generator_output_shape_and_n_latent(size, img_channels):
    torch.manual_seed(0)
    g = Generator(small_cfg(size, img_channels))
    assert g.n_latent == 2 * int(math.log2(size)) - 2
    assert g.num_layers == 2 * (int(math.log2(size)) - 2) + 1
    w = torch.randn(2, g.n_latent, 32)
    img = g(w)
    assert img.shape == (2, img_channels, size, size)
    assert torch.isfinite(img).all()


def test_generator_rejects_wrong_w_plus_shape():
    g = Generator(small_cfg(32))
    with pytest.raises(ValueError, match=r"\(B, 8, 32\)"):
        g(torch.randn(2, 7, 32))


def test_config_validation_and_from_dict():
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(size=48)
    cfg = GeneratorConfig.from_dict({"size": 64, "blur_kernel": [1, 3, 3, 1]})  # JSON gives lists
    assert cfg.blur_kernel == (1, 3, 3, 1)
    with pytest.raises(ValueError, match="valid"):
        GeneratorConfig.from_dict({"size": 64, "sytle_dim": 3})


def test_max_channels_caps_every_resolution():
    g = Generator(GeneratorConfig(size=64, style_dim=16, n_mlp=1, max_channels=24))
    assert set(g.channels.values()) == {24}
    assert g.input.input.shape == (1, 24, 4, 4)


def test_w_broadcast_equals_repeated_w_plus():
    torch.manual_seed(0)
    g = Generator(small_cfg(16))
    w = torch.randn(3, 32)
    a = g(w, randomize_noise=False)
    b = g(w[:, None].repeat(1, g.n_latent, 1), randomize_noise=False)
    assert torch.equal(a, b)


def test_mapping_mean_latent_truncate():
    torch.manual_seed(0)
    g = Generator(small_cfg(16))
    z = torch.randn(5, 32)
    assert g.mapping(z).shape == (5, 32)
    avg = g.mean_latent(64, generator=torch.Generator().manual_seed(1))
    assert avg.shape == (32,)
    assert torch.equal(avg, g.mean_latent(64, generator=torch.Generator().manual_seed(1)))
    w = g.mapping(z)
    assert torch.allclose(truncate(w, avg, 0.0), avg.expand_as(w))
    assert torch.allclose(truncate(w, avg, 1.0), w, atol=1e-6)
    assert torch.allclose(truncate(w, avg, 0.5), (w + avg) / 2, atol=1e-6)


# ----------------------------------------------------------------------------- determinism, noise, gradients


def test_same_seed_same_output_with_fixed_noise():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        g = Generator(small_cfg(32, 1))
        _set_noise_strength(g)
        w = torch.randn(2, g.n_latent, 32)
        outs.append(g(w, randomize_noise=False))
    assert torch.equal(outs[0], outs[1])


def test_noise_matters_only_when_randomized():
    torch.manual_seed(0)
    g = Generator(small_cfg(16))
    _set_noise_strength(g)
    w = torch.randn(2, g.n_latent, 32)
    assert torch.equal(g(w, randomize_noise=False), g(w, randomize_noise=False))
    assert not torch.allclose(g(w), g(w))
    fixed = g.make_noise(torch.Generator().manual_seed(0))
    assert [n.shape[-1] for n in fixed] == [4, 8, 8, 16, 16]
    assert torch.equal(g(w, noise=fixed), g(w, noise=fixed))


def test_fused_and_unfused_modconv_agree():
    torch.manual_seed(0)
    g = Generator(small_cfg(64, 3))
    _set_noise_strength(g)
    g2 = Generator(small_cfg(64, 3), fused=False)
    g2.load_state_dict(g.state_dict())
    w = torch.randn(3, g.n_latent, 32)
    a, b = g(w, randomize_noise=False), g2(w, randomize_noise=False)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_gradients_flow_to_w_and_every_parameter():
    torch.manual_seed(0)
    g = Generator(small_cfg(16, 1))
    w = torch.randn(2, g.n_latent, 32, requires_grad=True)
    g(w).square().mean().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    mlp = {n for n, _ in g.named_parameters() if n.startswith("style.")}  # mapping net: not on the W+ path
    for name, p in g.named_parameters():
        if name not in mlp:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    z = torch.randn(2, 32)
    g.zero_grad()
    g(g.mapping(z)).mean().backward()
    assert all(g.get_parameter(n).grad is not None for n in mlp)


# ----------------------------------------------------------------------------- FIR filtering


def test_upfirdn2d_zero_insertion_and_subsampling():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    one = torch.ones(1, 1)
    up = upfirdn2d(x, one, up=2)
    assert up.shape == (1, 1, 8, 8)
    assert torch.equal(up[..., ::2, ::2], x) and up[..., 1::2, :].abs().sum() == 0
    assert torch.equal(upfirdn2d(x, one, down=2), x[..., ::2, ::2])
    # negative padding crops
    assert torch.equal(upfirdn2d(x, one, pad=(-1, -1)), x[..., 1:-1, 1:-1])


def test_upsample_preserves_constant_interior():
    up = Upsample((1, 3, 3, 1))
    y = up(torch.full((1, 2, 6, 6), 3.0))
    assert y.shape == (1, 2, 12, 12)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.tensor(3.0))


# ----------------------------------------------------------------------------- discriminator and losses


@pytest.mark.parametrize("size,img_channels,batch", [(32, 1, 4), (16, 3, 6)])  # 6: not a multiple of 4
def test_discriminator_shape_and_grad(size, img_channels, batch):
    torch.manual_seed(0)
    d = Discriminator(DiscriminatorConfig(size=size, img_channels=img_channels, max_channels=16))
    x = torch.randn(batch, img_channels, size, size, requires_grad=True)
    out = d(x)
    assert out.shape == (batch, 1)
    (r1_penalty(out, x) + d_logistic_loss(out, -out)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())


def test_logistic_losses_values():
    zero = torch.zeros(4, 1)
    assert torch.isclose(d_logistic_loss(zero, zero), torch.tensor(2 * math.log(2)))
    assert torch.isclose(g_nonsaturating_loss(zero), torch.tensor(math.log(2)))
    # confident, correct discriminator -> small loss; fooled generator -> small loss
    assert d_logistic_loss(torch.full((4, 1), 10.0), torch.full((4, 1), -10.0)) < 1e-3
    assert g_nonsaturating_loss(torch.full((4, 1), 10.0)) < 1e-3


def test_r1_penalty_of_linear_critic_is_squared_weight_norm():
    a = torch.randn(1, 3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    pred = (x * a).sum(dim=(1, 2, 3))[:, None]
    assert torch.allclose(r1_penalty(pred, x), a.pow(2).sum())


# ----------------------------------------------------------------------------- official names and shapes

# A few g_ema entries of rosinality's 1024 px model (Generator(1024, 512, 8, channel_multiplier=2)),
# read off rosinality/stylegan2-pytorch `model.py` (Generator.__init__, StyledConv, ModulatedConv2d,
# ToRGB, Upsample/Blur with make_kernel([1, 3, 3, 1]), NoiseInjection, ConstantInput).
ROSINALITY_1024_G_EMA = {
    "style.1.weight": (512, 512),  # style[0] is PixelNorm; EqualLinear weight (out, in)
    "style.8.bias": (512,),
    "input.input": (1, 512, 4, 4),
    "conv1.conv.weight": (1, 512, 512, 3, 3),
    "conv1.conv.modulation.weight": (512, 512),
    "conv1.noise.weight": (1,),
    "conv1.activate.bias": (512,),
    "to_rgb1.conv.weight": (1, 3, 512, 1, 1),
    "to_rgb1.bias": (1, 3, 1, 1),
    "convs.0.conv.weight": (1, 512, 512, 3, 3),
    "convs.0.conv.blur.kernel": (4, 4),
    "convs.6.conv.weight": (1, 512, 512, 3, 3),  # 64 px, first conv: 512 -> 256*2
    "convs.8.conv.weight": (1, 256, 512, 3, 3),  # 128 px: 512 -> 128*2
    "convs.15.conv.weight": (1, 32, 32, 3, 3),  # 1024 px: 16*2
    "to_rgbs.0.upsample.kernel": (4, 4),
    "to_rgbs.7.conv.weight": (1, 3, 32, 1, 1),
    "noises.noise_0": (1, 1, 4, 4),
    "noises.noise_1": (1, 1, 8, 8),
    "noises.noise_16": (1, 1, 1024, 1024),
}


def rosinality_g_keys(size: int, style_dim: int = 512, n_mlp: int = 8, cm: int = 2) -> dict[str, tuple]:
    """Every g_ema key -> shape, enumerated from the rules in rosinality's model.py."""
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}
    d = style_dim
    keys: dict[str, tuple] = {}
    for i in range(1, n_mlp + 1):
        keys[f"style.{i}.weight"], keys[f"style.{i}.bias"] = (d, d), (d,)

    def styled(prefix, cin, cout, up):
        keys[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        if up:
            keys[f"{prefix}.conv.blur.kernel"] = (4, 4)
        keys[f"{prefix}.conv.modulation.weight"], keys[f"{prefix}.conv.modulation.bias"] = (cin, d), (cin,)
        keys[f"{prefix}.noise.weight"], keys[f"{prefix}.activate.bias"] = (1,), (cout,)

    def to_rgb(prefix, cin, up):
        if up:
            keys[f"{prefix}.upsample.kernel"] = (4, 4)
        keys[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
        keys[f"{prefix}.conv.modulation.weight"], keys[f"{prefix}.conv.modulation.bias"] = (cin, d), (cin,)
        keys[f"{prefix}.bias"] = (1, 3, 1, 1)

    keys["input.input"] = (1, ch[4], 4, 4)
    styled("conv1", ch[4], ch[4], False)
    to_rgb("to_rgb1", ch[4], False)
    log = int(math.log2(size))
    for j, i in enumerate(range(3, log + 1)):
        cin, cout = ch[2 ** (i - 1)], ch[2**i]
        styled(f"convs.{2 * j}", cin, cout, True)
        styled(f"convs.{2 * j + 1}", cout, cout, False)
        to_rgb(f"to_rgbs.{j}", cout, True)
    for n in range(2 * (log - 2) + 1):
        r = 2 ** ((n + 5) // 2)
        keys[f"noises.noise_{n}"] = (1, 1, r, r)
    return keys


def _meta_shapes(module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_1024_generator_matches_rosinality_g_ema_names_and_shapes():
    with torch.device("meta"):  # shapes only: no memory, no time
        g = Generator(GeneratorConfig(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2))
    ours = _meta_shapes(g)
    for k, shape in ROSINALITY_1024_G_EMA.items():
        assert ours.get(k) == shape, k
    expected = rosinality_g_keys(1024)
    assert ours == expected
    assert len(ours) == 171
    assert sum(p.numel() for p in g.parameters()) == 30_370_060  # StyleGAN2 config-f generator
    assert g.n_latent == 18


@pytest.mark.parametrize("size,cm", [(256, 2), (64, 1)])
def test_other_sizes_match_rosinality_rules(size, cm):
    with torch.device("meta"):
        g = Generator(GeneratorConfig(size=size, style_dim=64, n_mlp=3, channel_multiplier=cm))
    assert _meta_shapes(g) == rosinality_g_keys(size, 64, 3, cm)


def test_discriminator_names_follow_rosinality():
    # rosinality Discriminator: convs.0 = ConvLayer(3, ch, 1) = [EqualConv2d, FusedLeakyReLU];
    # ResBlock conv2/skip start with a Blur (buffer `kernel`); final_linear = 2 EqualLinear.
    with torch.device("meta"):
        d = Discriminator(DiscriminatorConfig(size=256))
    s = _meta_shapes(d)
    assert s["convs.0.0.weight"] == (128, 3, 1, 1) and s["convs.0.1.bias"] == (128,)
    assert s["convs.1.conv1.0.weight"] == (128, 128, 3, 3)
    assert s["convs.1.conv2.0.kernel"] == (4, 4) and s["convs.1.conv2.1.weight"] == (256, 128, 3, 3)
    assert s["convs.1.skip.1.weight"] == (256, 128, 1, 1) and "convs.1.skip.1.bias" not in s
    assert s["final_conv.0.weight"] == (512, 513, 3, 3)
    assert s["final_linear.0.weight"] == (512, 512 * 16) and s["final_linear.1.weight"] == (1, 512)
    assert len(d.convs) == 7  # 256 -> 4: one 1x1 conv + 6 residual blocks


def test_explicit_widths_per_resolution():
    from tagelib.stylegan2 import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

    g = Generator(GeneratorConfig(size=32, style_dim=16, n_mlp=1, img_channels=1, widths=(64, 48, 32, 16)))
    assert g.channels == {4: 64, 8: 48, 16: 32, 32: 16}
    assert g.convs[-1].conv.weight.shape[1:3] == (16, 16)
    assert g(torch.randn(2, g.n_latent, 16)).shape == (2, 1, 32, 32)
    d = Discriminator(DiscriminatorConfig(size=32, img_channels=1, widths=(64, 48, 32, 16)))
    assert d(torch.randn(4, 1, 32, 32)).shape == (4, 1)
    with pytest.raises(ValueError, match="one entry per resolution"):
        Generator(GeneratorConfig(size=32, widths=(8, 8)))
