"""The evaluation ruler on inputs with known answers: FD, KID, LPIPS diversity, collapse, category preservation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cleanfid import fid as cleanfid

from tagelib.glyphs.dataset import GlyphDataset
from tagelib.metrics import (calibrate_collapse_floor, category_preservation, collapse_rate, frechet_distance,
                             kernel_distance, lpips_diversity, per_category_pairwise)
from tagelib.perceptual import load_lpips, lpips_distance


def gaussian(n, d, mean=0.0, std=1.0, seed=0):
    return np.random.default_rng(seed).normal(mean, std, size=(n, d))


# ----------------------------------------------------------------------------- Fréchet distance


def test_fd_of_identical_sets_is_zero():
    f = gaussian(400, 6)
    assert abs(frechet_distance(f, f)) < 1e-6


@pytest.mark.parametrize("shift", [0.5, 2.0])
def test_fd_of_shifted_gaussians_is_the_squared_shift(shift):
    """N(0, I) vs N(μ, I): FD = |μ|² (covariance terms cancel); 20k samples leave a small estimation error."""
    d = 4
    mu = np.full(d, shift / np.sqrt(d))  # |μ| = shift
    fd = frechet_distance(gaussian(20000, d, seed=1), gaussian(20000, d, seed=2) + mu)
    assert fd == pytest.approx(shift**2, abs=0.02 + 0.03 * shift**2)


def test_fd_of_scaled_gaussians_is_the_closed_form():
    """N(0, a² I) vs N(0, b² I) in d dims: FD = d (a − b)²."""
    d, a, b = 3, 1.0, 2.0
    fd = frechet_distance(gaussian(20000, d, std=a, seed=3), gaussian(20000, d, std=b, seed=4))
    assert fd == pytest.approx(d * (a - b) ** 2, rel=0.05)


def test_fd_equals_cleanfid_on_the_same_features():
    f1, f2 = gaussian(300, 5, seed=5), gaussian(200, 5, mean=0.3, seed=6)
    theirs = cleanfid.frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert frechet_distance(torch.from_numpy(f1).float(), f2) == pytest.approx(theirs, rel=1e-5)


def test_fd_refuses_bad_shapes():
    with pytest.raises(ValueError, match="features must be"):
        frechet_distance(np.zeros(5), np.zeros((5, 2)))


# ----------------------------------------------------------------------------- KID


def test_kid_is_unbiased_on_samples_of_one_distribution_and_positive_when_shifted():
    same = [kernel_distance(gaussian(200, 8, seed=10 + i), gaussian(200, 8, seed=50 + i), num_subsets=20) for i in range(12)]
    shifted = kernel_distance(gaussian(200, 8, seed=1), gaussian(200, 8, mean=1.0, seed=2), num_subsets=20)
    mean, sem = np.mean(same), np.std(same, ddof=1) / np.sqrt(len(same))
    assert abs(mean) < 3 * sem + 1e-4  # unbiased: centred on 0 (a biased estimator, like FD, is always > 0)
    assert min(same) < 0 < shifted and shifted > 20 * (abs(mean) + 3 * sem)


def test_kid_is_seeded_and_leaves_numpy_state_alone():
    f1, f2 = gaussian(300, 4, seed=1), gaussian(300, 4, mean=0.2, seed=2)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = kernel_distance(f1, f2, seed=7, num_subsets=10, max_subset_size=100)
    assert (np.random.get_state()[1] == before).all()
    assert a == kernel_distance(f1, f2, seed=7, num_subsets=10, max_subset_size=100)
    assert a != kernel_distance(f1, f2, seed=8, num_subsets=10, max_subset_size=100)


# ----------------------------------------------------------------------------- LPIPS diversity and collapse


@pytest.fixture(scope="module")
def lpips_vgg():
    return load_lpips("vgg")


@pytest.fixture(scope="module")
def ds():
    return GlyphDataset.load()


def test_lpips_diversity_equals_the_brute_force_loop(lpips_vgg):
    """LoFGAN: resize to 32 px, LPIPS-vgg over all pairs i < j within a category, mean, then mean over categories."""
    g = torch.Generator().manual_seed(0)
    sets = [torch.rand(5, 1, 48, 48, generator=g) * 2 - 1, torch.rand(4, 1, 48, 48, generator=g) * 2 - 1]
    per_set = []
    for imgs in sets:
        small = F.interpolate(imgs.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", align_corners=False)
        d = [lpips_distance(lpips_vgg, small[i:i + 1], small[j:j + 1]).item()
             for i in range(len(imgs)) for j in range(i + 1, len(imgs))]
        per_set.append(np.mean(d))
    assert lpips_diversity(per_category_pairwise(lpips_vgg, sets)) == pytest.approx(np.mean(per_set), rel=1e-5)


def _farthest_fonts(ds, category, n, pool=200):
    """n real fonts of one character chosen far apart (greedy farthest-first on pixels)."""
    styles = np.nonzero(ds.coverage[:, category])[0][:pool]
    x = ds.images[styles, category].reshape(len(styles), -1).astype(np.float32)
    chosen = [0]
    dist = np.abs(x - x[0]).sum(1)
    for _ in range(n - 1):
        chosen.append(int(dist.argmax()))
        dist = np.minimum(dist, np.abs(x - x[chosen[-1]]).sum(1))
    return ds.tensor(styles[chosen], category)


def test_collapse_rate_is_one_on_duplicates_and_zero_on_distinct_real_fonts(ds, lpips_vgg):
    calib = [ds.tensor(ds.split_info["train_styles"][:24], c) for c in ds.seen[:6]]
    floor = calibrate_collapse_floor(lpips_vgg, calib, quantile=0.01)
    assert floor > 0
    c = ds.unseen[0]
    distinct = _farthest_fonts(ds, c, 8)
    duplicates = distinct[:1].expand(6, -1, -1, -1)
    pairs = per_category_pairwise(lpips_vgg, [duplicates, distinct])
    assert collapse_rate(pairs[:1], floor) == 1.0
    assert collapse_rate(pairs[1:], floor) == 0.0


# ----------------------------------------------------------------------------- category preservation


def test_category_preservation_counts_hits_misses_and_homoglyphs():
    names = ["A", "B", "Γ", "Г"]
    seen = [0, 3]
    intended = torch.tensor([1, 1, 1, 1, 2, 2])
    judged = torch.tensor([1, 0, 0, 2, 3, 2])  # B: 1 of 4; Γ judged as its homoglyph Г once
    strict = category_preservation(judged, intended, names, seen)
    assert strict["accuracy"] == pytest.approx(2 / 6) and strict["strict"] == pytest.approx(2 / 6)
    assert strict["per_category"] == {"B": pytest.approx(0.25), "Γ": pytest.approx(0.5)}
    assert strict["confusions"][0] == ("B", "A", 2)
    assert strict["wrong_onto_seen"] == pytest.approx(3 / 4)  # misses: A, A, Г (seen) and Γ (unseen)
    merged = category_preservation(judged, intended, names, seen, canonical=torch.tensor([0, 1, 2, 2]))
    assert merged["accuracy"] == pytest.approx(3 / 6) and merged["strict"] == pytest.approx(2 / 6)
    assert ("Γ", "Г", 1) not in merged["confusions"]


# ----------------------------------------------------------------------------- feature extractors


def test_inception_without_its_file_says_what_to_do(tmp_path):
    from tagelib.metrics import feature_extractor

    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt.*FD-VGG16 or FD-domain"):
        feature_extractor("inception", inception_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown feature extractor"):
        feature_extractor("alexnet")


def test_named_extractors_give_fd_names():
    from tagelib.metrics import feature_extractor

    vgg = feature_extractor("vgg16")
    assert vgg.fd_name == "FD-VGG16" and vgg.kid_name == "KID-VGG16"
    feats = vgg(torch.rand(3, 1, 32, 32) * 2 - 1)
    assert feats.shape == (3, 512) and torch.isfinite(feats).all()


def test_one_vgg_pass_gives_the_pairwise_lpips_and_the_vgg_features(lpips_vgg):
    from tagelib.metrics import feature_extractor, pairs_and_vgg_features

    g = torch.Generator().manual_seed(1)
    sets = [torch.rand(4, 1, 32, 32, generator=g) * 2 - 1, torch.rand(3, 1, 32, 32, generator=g) * 2 - 1]
    pairs, feats = pairs_and_vgg_features(lpips_vgg, sets)
    for got, expected in zip(pairs, per_category_pairwise(lpips_vgg, sets)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(feats, feature_extractor("vgg16", lpips_vgg=lpips_vgg)(torch.cat(sets)), rtol=1e-4, atol=1e-5)


def test_photographs_are_measured_at_their_own_size_not_the_glyphs_32_px(lpips_vgg):
    """A 64 px set measured at 64 px: pairs and FD-VGG16 features agree with the full-size LPIPS, and differ from 32 px."""
    from tagelib.metrics import feature_extractor, pairs_and_vgg_features

    g = torch.Generator().manual_seed(2)
    sets = [torch.rand(3, 3, 64, 64, generator=g) * 2 - 1, torch.rand(3, 3, 64, 64, generator=g) * 2 - 1]
    pairs, feats = pairs_and_vgg_features(lpips_vgg, sets, size=64)
    full = per_category_pairwise(lpips_vgg, sets, size=64)
    small = per_category_pairwise(lpips_vgg, sets)
    for got, expected, at32 in zip(pairs, full, small):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        assert (got - at32).abs().max() > 1e-3
    extractor = feature_extractor("vgg16", lpips_vgg=lpips_vgg, lpips_size=64)
    torch.testing.assert_close(feats, extractor(torch.cat(sets)), rtol=1e-4, atol=1e-5)
