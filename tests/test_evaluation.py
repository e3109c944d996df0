"""The LoFGAN protocol, the episode sampler and `evaluate` on methods with known behaviour."""

import numpy as np
import pytest
import torch
import yaml

from tagelib import evaluation, generators
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.judge import load_judge
from tagelib.paths import DATA_DIR, PROFILES_DIR
from tagelib.perceptual import load_lpips

JUDGE = DATA_DIR / "judge" / "glyph32_judge"


@pytest.fixture(scope="module")
def ds():
    return GlyphDataset.load()


@pytest.fixture(scope="module")
def judge(ds):
    return load_judge(JUDGE, categories=ds.categories)


def test_protocol_draws_shots_from_shot_pools_and_reference_from_reference_halves(ds):
    p1, p3 = (evaluation.lofgan_protocol(ds, k, n_generated=8, n_real=16, seed=0) for k in (1, 3))
    assert p3.categories == ds.unseen
    for c in ds.unseen:
        name = ds.categories[c]
        assert len(p3.shot_styles[c]) == 3 and set(p3.shot_styles[c]) <= set(ds.pool(name, "unseen_shots"))
        assert set(p3.reference_styles[c]) <= set(ds.pool(name, "unseen_reference"))
        assert p1.reference_styles[c] == p3.reference_styles[c]  # one reference for every k
        other = evaluation.other_real_styles(p3, c, 16)
        assert not set(other) & set(p3.reference_styles[c]) and set(other) <= set(ds.pool(name, "unseen_reference"))
    assert p3.reference.shape == (len(ds.unseen), 16, 1, 32, 32)
    with pytest.raises(ValueError, match="k=11 shots"):
        evaluation.lofgan_protocol(ds, 11)


def test_episodes_never_put_evaluation_images_into_supports(ds):
    rng = np.random.default_rng(0)
    for _ in range(50):
        ep = evaluation.sample_episode(ds, ways=10, shots=5, n_query=20, rng=rng)
        assert len(set(ep.categories)) == 10 and set(ep.categories) <= set(ds.unseen)
        for i, c in enumerate(ep.categories):
            name = ds.categories[c]
            assert set(ep.support_styles[i]) <= set(ds.pool(name, "unseen_shots"))
            assert not set(ep.support_styles[i]) & set(ds.pool(name, "unseen_eval"))
            assert set(ep.query_styles[i]) <= set(ds.pool(name, "unseen_reference"))


@pytest.fixture(scope="module")
def small_run(ds, judge):
    """4 unseen categories, 24 images: the real ceiling vs noise vs one real image repeated."""
    protocol = evaluation.lofgan_protocol(ds, 3, n_generated=24, n_real=24, seed=0, categories=ds.unseen[:4])
    ruler = evaluation.Ruler.build(judge, load_lpips("vgg"), ds, collapse_floor=0.02, extractors=("judge",))  # ~ calibrated
    real = generators.real_glyphs(protocol)
    noise = lambda c, shots, n, g: torch.rand(n, 1, 32, 32, generator=g) * 2 - 1
    copies = lambda c, shots, n, g: shots[:1].expand(n, -1, -1, -1).clone()
    return {name: evaluation.evaluate(fn, protocol, ruler, progress=False)
            for name, fn in (("real", real), ("noise", noise), ("copies", copies))}


def test_evaluate_separates_real_glyphs_from_noise_and_copies(small_run):
    real, noise, copies = (small_run[k].metrics for k in ("real", "noise", "copies"))
    assert real["preservation"] > 0.8 and noise["preservation"] < 0.2  # G I M O: I and O have real look-alikes
    assert real["FD-domain"] < noise["FD-domain"] / 5
    assert copies["collapse_rate"] == 1.0 and copies["lpips_diversity"] == 0.0
    assert real["collapse_rate"] < 0.1 and real["lpips_diversity"] > 0.1
    assert small_run["real"].images.shape == (4, 24, 1, 32, 32) and small_run["real"].correct.shape == (4, 24)


def test_evaluate_refuses_images_of_the_wrong_shape_or_range(ds, judge):
    protocol = evaluation.lofgan_protocol(ds, 1, n_generated=4, n_real=4, categories=ds.unseen[:2])
    ruler = evaluation.Ruler.build(judge, load_lpips("vgg"), ds, collapse_floor=0.05, extractors=("judge",))
    with pytest.raises(ValueError, match=r"expected \(4, 1, 32, 32\)"):
        evaluation.evaluate(lambda c, s, n, g: torch.zeros(n, 32, 32), protocol, ruler, progress=False)
    with pytest.raises(ValueError, match="outside"):
        evaluation.evaluate(lambda c, s, n, g: torch.full((n, 1, 32, 32), 3.0), protocol, ruler, progress=False)


def test_few_shot_gain_is_positive_for_extra_real_glyphs_and_nil_for_copies_of_the_shots(ds):
    """10 more real glyphs per class must help a 1-shot classifier; copies of the shots add nothing (a collapsed
    generator): the full-batch loss, hence the trained classifier, is the same."""
    def more_real(c, shots, n, g):
        pool = ds.pool(ds.categories[c], "unseen_judge")
        return ds.tensor(pool[:n], c)

    copies = lambda c, shots, n, g: shots[torch.arange(n) % len(shots)]
    kw = dict(ways=5, shots=(1,), episodes=4, n_generated=10, n_query=10, progress=False)
    real = evaluation.few_shot_gain(more_real, ds, **kw)["1-shot"]
    assert real["gain"]["mean"] > 0.1 and real["episodes"] == 4
    assert real["real+generated"]["mean"] > real["real"]["mean"]
    assert abs(evaluation.few_shot_gain(copies, ds, **kw)["1-shot"]["gain"]["mean"]) < 0.02


def test_shipped_judge_fits_the_budget_and_matches_the_judge_profile(judge):
    assert JUDGE.with_suffix(".safetensors").stat().st_size <= 5 * 10**6
    profile = yaml.safe_load((PROFILES_DIR / "judge.yaml").read_text())
    params = {**profile["defaults"], **profile["notebooks"]["00_judge"]}
    train = judge.training_info["train"]
    assert (train["steps"], train["seed"]) == (params["judge_steps"], params["seed"])
    assert len(judge.training_info["history"]["loss"]) == params["judge_steps"]


def test_collapse_floor_is_computed_once_per_run_and_keyed_by_its_inputs(tmp_path, monkeypatch):
    from tagelib import metrics
    from tagelib.evaluation import cached_collapse_floor
    from tagelib.perceptual import load_lpips

    vgg = load_lpips("vgg")
    g = torch.Generator().manual_seed(0)
    sets = [torch.rand(4, 1, 32, 32, generator=g) * 2 - 1 for _ in range(2)]
    cache = tmp_path / "collapse_floor.json"
    first = cached_collapse_floor(vgg, sets, 0.1, 32, cache)
    assert first == metrics.calibrate_collapse_floor(vgg, sets, quantile=0.1)
    monkeypatch.setattr(metrics, "calibrate_collapse_floor", lambda *a, **k: pytest.fail("recomputed a cached floor"))
    assert cached_collapse_floor(vgg, sets, 0.1, 32, cache) == first
    monkeypatch.undo()
    other = cached_collapse_floor(vgg, [s.flip(-1) for s in sets], 0.1, 32, cache)  # other images: another key
    assert len(__import__("json").loads(cache.read_text())) == 2 and other != first
    cache.write_text("{not json")  # an unreadable cache is recomputed, not trusted
    assert cached_collapse_floor(vgg, sets, 0.1, 32, cache) == first
