"""The run cache: content keys, corrupt files recomputed, and the three things it keeps (shot codes, reference
features, measured image sets) read back equal and invalidated when an input changes."""

import warnings

import pytest
import torch

from tagelib import evaluation, generators
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.inversion import ShotInverter
from tagelib.judge import load_judge
from tagelib.paths import DATA_DIR
from tagelib.perceptual import load_lpips
from tagelib.run_cache import RunCache, cached, content_key
from tests.test_latent import tiny_space

L1 = lambda a, b: (a - b).abs().flatten(1).mean(1)


def test_content_key_follows_content_not_names():
    a, net = torch.arange(6.0), torch.nn.Linear(2, 2)
    key = content_key(x=a, net=net, steps=5)
    assert key == content_key(steps=5, net=net, x=a.clone())  # same content, any order
    assert key != content_key(x=a + 1e-6, net=net, steps=5)  # a changed pixel
    assert key != content_key(x=a.view(2, 3), net=net, steps=5)  # a changed shape
    assert key != content_key(x=a, net=net, steps=6)  # a changed parameter
    with torch.no_grad():
        net.weight[0, 0] += 1
    assert key != content_key(x=a, net=net, steps=5)  # retrained weights


def _flip_a_byte(path, offset=-8):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_corrupt_entry_is_recomputed_never_trusted(tmp_path):
    cache, calls = RunCache(tmp_path), []
    compute = lambda: (calls.append(1) or {"t": torch.arange(4.0)}, {"n": 4})
    first = cached(cache, "demo", "k" * 64, compute)
    again = cached(cache, "demo", "k" * 64, compute)
    assert len(calls) == 1 and torch.equal(first[0]["t"], again[0]["t"]) and first[1] == again[1] == {"n": 4}
    _flip_a_byte(cache.path("demo", "k" * 64))  # damage the stored tensor
    with pytest.warns(UserWarning, match="unusable"):
        third = cached(cache, "demo", "k" * 64, compute)
    assert len(calls) == 2 and torch.equal(third[0]["t"], torch.arange(4.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: the next read is clean
        assert cache.load("demo", "k" * 64) is not None
    cache.path("demo", "k" * 64).write_bytes(b"\0" * 10)  # truncated
    with pytest.warns(UserWarning, match="unusable"):
        assert cache.load("demo", "k" * 64) is None


def test_shot_codes_are_refined_once_per_run_and_per_model(tmp_path):
    m = tiny_space().freeze()
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    cache = RunCache(tmp_path)
    key = content_key(model=m, steps=3)
    first = ShotInverter(m, 3, L1, lr=0.05, cache=cache, cache_key=key)
    w = first(x)
    second = ShotInverter(m, 3, L1, lr=0.05, cache=cache, cache_key=key)  # the next notebook of the run
    assert torch.equal(second(x), w) and second.refined == 0 and second.from_cache == 5
    assert second.seconds_per_shot == pytest.approx(first.seconds_per_shot)  # the cost measured when computed
    new = torch.rand(2, 1, 16, 16) * 2 - 1
    second(new)  # only the new images are refined, and they join the run's codes
    assert second.refined == 2 and ShotInverter(m, 3, L1, cache=cache, cache_key=key).from_cache == 7
    other = tiny_space(seed=1).freeze()  # another checkpoint: another key, nothing reused
    assert content_key(model=other, steps=3) != key
    fresh = ShotInverter(other, 3, L1, lr=0.05, cache=cache, cache_key=content_key(model=other, steps=3))
    assert fresh.from_cache == 0 and not torch.equal(fresh(x), w)


@pytest.fixture(scope="module")
def glyph_ruler_parts():
    ds = GlyphDataset.load()
    return ds, load_judge(DATA_DIR / "judge" / "glyph32_judge", categories=ds.categories), load_lpips("vgg")


def test_reference_features_and_measured_sets_are_read_back_equal(tmp_path, glyph_ruler_parts, monkeypatch):
    ds, judge, vgg = glyph_ruler_parts
    protocol = evaluation.lofgan_protocol(ds, 3, n_generated=8, n_real=8, seed=0, categories=ds.unseen[:3])
    build = lambda: evaluation.Ruler.build(judge, vgg, ds, collapse_floor=0.02, cache=RunCache(tmp_path))
    real = generators.real_glyphs(protocol)
    first = evaluation.evaluate(real, protocol, build(), progress=False)
    from tagelib import metrics

    monkeypatch.setattr(evaluation, "pairs_and_vgg_features", lambda *a, **k: pytest.fail("measured a cached set"))
    monkeypatch.setattr(metrics.FeatureExtractor, "__call__", lambda *a, **k: pytest.fail("extracted cached features"))
    again = evaluation.evaluate(real, protocol, build(), progress=False)  # a new ruler: the next notebook
    drop = lambda m: {k: v for k, v in m.items() if k != "seconds"}
    assert drop(again.metrics) == drop(first.metrics) and torch.equal(again.predicted, first.predicted)
    monkeypatch.undo()
    other = evaluation.lofgan_protocol(ds, 3, n_generated=8, n_real=8, seed=1, categories=ds.unseen[:3])
    moved = evaluation.evaluate(generators.real_glyphs(other), other, build(), progress=False)  # other images
    assert drop(moved.metrics) != drop(first.metrics)
    ruler = build()
    ruler.collapse_floor = 0.5  # another ruler: its own key
    assert evaluation.evaluate(real, protocol, ruler, progress=False).metrics["collapse_rate"] != first.metrics["collapse_rate"]


def test_the_inverter_keeps_each_trajectory_for_the_refinement_sweep(tmp_path):
    from tagelib.inversion import refine_codes

    m = tiny_space().freeze()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    invert = ShotInverter(m, 4, L1, lr=0.05, record_at=(0, 2), cache=RunCache(tmp_path), cache_key="t" * 64)
    final = invert(x)
    reference = refine_codes(m, x, L1, steps=4, lr=0.05, record_at=(0, 2))
    assert torch.allclose(invert.codes_at(x, 0), m.encode_batched(x)) and torch.equal(invert.codes_at(x, 4), final)
    assert torch.allclose(invert.codes_at(x, 2), reference[2], atol=1e-6) and invert.refined == 4  # nothing refined twice
    again = ShotInverter(m, 4, L1, lr=0.05, record_at=(0, 2), cache=RunCache(tmp_path), cache_key="t" * 64)
    assert torch.equal(again.codes_at(x, 2), invert.codes_at(x, 2)) and again.refined == 0
    with pytest.raises(ValueError, match="keeps 4 and record_at"):
        invert.codes_at(x, 3)


def test_shipped_codes_start_a_fresh_run_only_when_made_for_the_same_key(tmp_path):
    m = tiny_space().freeze()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    made = ShotInverter(m, 3, L1, lr=0.05, cache=RunCache(tmp_path / "method_run"), cache_key="a" * 64)
    w = made(x)
    made.save_as(tmp_path / "shot_codes")  # what `make method` ships
    fresh = ShotInverter(m, 3, L1, lr=0.05, cache=RunCache(tmp_path / "new_run"), cache_key="a" * 64,
                         shipped=tmp_path / "shot_codes")
    assert fresh.from_cache == 3 and torch.equal(fresh(x), w) and fresh.refined == 0 and "shipped" in fresh.summary()
    other = ShotInverter(m, 3, L1, lr=0.05, cache=RunCache(tmp_path / "other_run"), cache_key="b" * 64,
                         shipped=tmp_path / "shot_codes")  # another latent space or setting: not used
    assert other.from_cache == 0 and other.shipped_used is None
