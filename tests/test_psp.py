"""Tests for tagelib.psp: W+ output shapes, pyramid sizes, latent_avg, gradients, official names."""

from __future__ import annotations

import math

import pytest
import torch

from tagelib.psp import EncoderConfig, GradualStyleEncoder, PSPEncoder, encode


def small_cfg(**kw) -> EncoderConfig:
    base = dict(input_size=32, in_channels=1, n_styles=8, style_dim=32, units=(1, 1, 1, 1), widths=(16, 16, 32, 32))
    base.update(kw)
    return EncoderConfig(**base)


@pytest.mark.parametrize("mode", ["ir", "ir_se"])
@pytest.mark.parametrize("input_size,in_channels,n_styles", [(32, 1, 8), (64, 3, 10), (32, 3, 6)])  # 6 < middle_ind: no fine layers
def test_output_shape(mode, input_size, in_channels, n_styles):
    torch.manual_seed(0)
    e = GradualStyleEncoder(small_cfg(input_size=input_size, in_channels=in_channels, n_styles=n_styles, mode=mode))
    out = e(torch.randn(2, in_channels, input_size, input_size))
    assert out.shape == (2, n_styles, 32)
    assert torch.isfinite(out).all()


def test_pyramid_sizes_follow_input_size():
    # coarse styles read input/16, middle input/8, fine input/4; log2(spatial) stride-2 convs each
    for size in (32, 64, 256):
        cfg = small_cfg(input_size=size, n_styles=9, coarse_ind=3, middle_ind=7)
        with torch.device("meta"):
            e = GradualStyleEncoder(cfg)
        n_convs = [sum(isinstance(m, torch.nn.Conv2d) for m in s.convs) for s in e.styles]
        expect = [int(math.log2(size // 16))] * 3 + [int(math.log2(size // 8))] * 4 + [int(math.log2(size // 4))] * 2
        assert n_convs == [max(n, 1) for n in expect]


def test_taps_are_stage_ends():
    assert GradualStyleEncoder(small_cfg(units=(1, 2, 3, 2))).taps == (2, 5, 7)
    with torch.device("meta"):
        assert GradualStyleEncoder(EncoderConfig()).taps == (6, 20, 23)  # pSp's hard-coded indices


def test_wrong_input_shape_raises():
    e = GradualStyleEncoder(small_cfg())
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        e(torch.randn(2, 3, 32, 32))


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        EncoderConfig(mode="resnet")
    with pytest.raises(ValueError, match="num_layers"):
        EncoderConfig(num_layers=34)
    with pytest.raises(ValueError, match="power of two"):
        EncoderConfig(input_size=48)
    cfg = EncoderConfig.from_dict({"units": [1, 1, 1, 1], "widths": [8, 16, 32, 64]})  # JSON lists
    assert cfg.units == (1, 1, 1, 1) and cfg.widths == (8, 16, 32, 64)
    with pytest.raises(ValueError, match="valid"):
        EncoderConfig.from_dict({"n_style": 8})


def test_latent_avg_is_added():
    torch.manual_seed(0)
    cfg = small_cfg()
    wrapped = PSPEncoder(cfg).eval()
    x = torch.randn(3, 1, 32, 32)
    raw = wrapped.encoder(x)
    assert torch.equal(wrapped(x), raw)  # zeros by default
    avg_d = torch.randn(32)
    wrapped.set_latent_avg(avg_d)  # (D,) broadcast to every layer
    assert torch.allclose(wrapped(x), raw + avg_d)
    avg_ld = torch.randn(8, 32)
    assert torch.allclose(encode(wrapped.encoder, x, avg_ld), raw + avg_ld)
    assert torch.equal(encode(wrapped.encoder, x), raw)
    assert set(wrapped.state_dict()) == {f"encoder.{k}" for k in wrapped.encoder.state_dict()} | {"latent_avg"}


def test_gradients_flow():
    torch.manual_seed(0)
    e = GradualStyleEncoder(small_cfg())
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    e(x).square().mean().backward()
    assert x.grad.abs().sum() > 0
    for name, p in e.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_eval_mode_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    e = GradualStyleEncoder(small_cfg()).eval()
    x = torch.randn(4, 1, 32, 32)
    assert torch.allclose(e(x)[:2], e(x[:2]), atol=1e-5)


# ----------------------------------------------------------------------------- official names and shapes

# Entries of the official pSp encoder (GradualStyleEncoder(50, 'ir_se'), 18 styles, 256 px input),
# i.e. the `encoder.*` keys of pSp / AGE checkpoints with the prefix removed. Read off
# eladrich/pixel2style2pixel `models/encoders/psp_encoders.py` (GradualStyleEncoder, GradualStyleBlock)
# and `models/encoders/helpers.py` (get_blocks(50) = 3/4/14/3 units of 64/128/256/512,
# bottleneck_IR_SE, SEModule(depth, 16)).
PSP_ENCODER = {
    "input_layer.0.weight": (64, 3, 3, 3),
    "input_layer.1.running_var": (64,),
    "input_layer.2.weight": (64,),  # PReLU
    "body.0.res_layer.0.weight": (64,),  # BN(in)
    "body.0.res_layer.1.weight": (64, 64, 3, 3),
    "body.0.res_layer.5.fc1.weight": (4, 64, 1, 1),  # SE 64 // 16
    "body.0.res_layer.5.fc2.weight": (64, 4, 1, 1),
    "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),  # first unit of stage 2
    "body.3.shortcut_layer.1.running_mean": (128,),
    "body.23.res_layer.3.weight": (512, 512, 3, 3),
    "styles.0.convs.0.weight": (512, 512, 3, 3),
    "styles.0.convs.6.weight": (512, 512, 3, 3),  # coarse: 16 -> 1 in 4 convs (indices 0, 2, 4, 6)
    "styles.0.linear.weight": (512, 512),
    "styles.0.linear.bias": (512,),
    "styles.17.convs.10.bias": (512,),  # fine: 64 -> 1 in 6 convs
    "latlayer1.weight": (512, 256, 1, 1),
    "latlayer1.bias": (512,),
    "latlayer2.weight": (512, 128, 1, 1),
}


def psp_encoder_keys(n_styles: int = 18, se: bool = True) -> dict[str, tuple]:
    """Every GradualStyleEncoder(50) key -> shape, enumerated from the rules in pSp's code."""
    keys: dict[str, tuple] = {}

    def bn(prefix, c):
        for n in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{n}"] = (c,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    keys["input_layer.0.weight"] = (64, 3, 3, 3)
    bn("input_layer.1", 64)
    keys["input_layer.2.weight"] = (64,)
    i = 0
    for cin, depth, units in ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3)):
        for u in range(units):
            c = cin if u == 0 else depth
            p = f"body.{i}"
            if c != depth:
                keys[f"{p}.shortcut_layer.0.weight"] = (depth, c, 1, 1)
                bn(f"{p}.shortcut_layer.1", depth)
            bn(f"{p}.res_layer.0", c)
            keys[f"{p}.res_layer.1.weight"] = (depth, c, 3, 3)
            keys[f"{p}.res_layer.2.weight"] = (depth,)
            keys[f"{p}.res_layer.3.weight"] = (depth, depth, 3, 3)
            bn(f"{p}.res_layer.4", depth)
            if se:
                keys[f"{p}.res_layer.5.fc1.weight"] = (depth // 16, depth, 1, 1)
                keys[f"{p}.res_layer.5.fc2.weight"] = (depth, depth // 16, 1, 1)
            i += 1
    for s in range(n_styles):
        n_convs = 4 if s < 3 else 5 if s < 7 else 6  # log2(16), log2(32), log2(64)
        for j in range(n_convs):
            keys[f"styles.{s}.convs.{2 * j}.weight"] = (512, 512, 3, 3)
            keys[f"styles.{s}.convs.{2 * j}.bias"] = (512,)
        keys[f"styles.{s}.linear.weight"], keys[f"styles.{s}.linear.bias"] = (512, 512), (512,)
    keys["latlayer1.weight"], keys["latlayer1.bias"] = (512, 256, 1, 1), (512,)
    keys["latlayer2.weight"], keys["latlayer2.bias"] = (512, 128, 1, 1), (512,)
    return keys


@pytest.mark.parametrize("mode", ["ir_se", "ir"])
def test_default_config_matches_psp_names_and_shapes(mode):
    with torch.device("meta"):
        e = GradualStyleEncoder(EncoderConfig(mode=mode))
    ours = {k: tuple(v.shape) for k, v in e.state_dict().items()}
    if mode == "ir_se":
        for k, shape in PSP_ENCODER.items():
            assert ours.get(k) == shape, k
    assert ours == psp_encoder_keys(se=mode == "ir_se")
    assert len(e.body) == 24


def test_other_depths_build():
    with torch.device("meta"):
        assert len(GradualStyleEncoder(EncoderConfig(num_layers=100)).body) == 49
        assert len(GradualStyleEncoder(EncoderConfig(num_layers=152)).body) == 50
