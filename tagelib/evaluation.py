"""One call evaluates a few-shot generation method over the LoFGAN protocol on glyphs.

    protocol = lofgan_protocol(ds, k=3)                      # shots + 128 real reference images per unseen category
    ruler = Ruler.build(judge, lpips_vgg, ds, floor)         # judge, FD extractors, LPIPS-vgg, collapse floor
    result = evaluate(generate_fn, protocol, ruler)          # -> Evaluation(metrics=dict, images, predicted)

A method is a `GenerateFn`: ``generate_fn(category, shots, n, generator) -> images`` with `category` the
global category id, `shots` its k shot images (k, 1, H, W) and the result (n, 1, H, W), all in [-1, 1].

**LoFGAN protocol** (design.md): for every unseen category, k shots from its shot pool (a fixed shuffle of
its first styles), `n_generated` generated images, `n_real` real images drawn from the category's reference
half (the second half of its evaluation pool, which the judge never trains on). Fréchet distances and KID are
pooled over categories; LPIPS diversity and collapse are computed within each category, then averaged.

**Few-shot classification gain** (`few_shot_gain`, DeltaGAN / SAGE style): `episodes` random `ways`-way
episodes over the unseen categories; supports are `shots` real glyphs from the shot pools, queries real glyphs
from the reference halves (never a support). A small classifier (a pixel MLP) is trained from scratch on the support set alone, and
again, same seed, on the support set plus `n_generated` images per class generated from that support; the gain
is the difference of their query accuracies, reported as mean ± 95 % CI (1.96 standard errors) over episodes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tagelib.glyphs.dataset import GlyphDataset
from tagelib.judge import GlyphJudge
from tagelib.run_cache import RunCache, cached, content_key
from tagelib.metrics import (FeatureExtractor, category_preservation, collapse_rate, feature_extractor,
                             frechet_distance, kernel_distance, lpips_diversity, pairs_and_vgg_features)

GenerateFn = Callable[[int, torch.Tensor, int, torch.Generator], torch.Tensor]


# ----------------------------------------------------------------------------- the protocol


@dataclass
class Protocol:
    """Shots and real reference images of the unseen categories (LoFGAN protocol)."""

    k: int
    categories: list[int]  # global ids of the unseen categories
    shot_styles: dict[int, list[int]]  # category -> its k shot style ids (from the shot pool)
    reference_styles: dict[int, list[int]]  # category -> n_real style ids (from the reference half)
    n_generated: int
    seed: int
    ds: GlyphDataset = field(repr=False)

    def shots(self, category: int) -> torch.Tensor:
        """The k shot images of a category: (k, 1, H, W) in [-1, 1]."""
        return self.ds.tensor(self.shot_styles[category], category)

    @property
    def reference(self) -> torch.Tensor:
        """Real reference images (C, n_real, 1, H, W), categories in protocol order."""
        return torch.stack([self.ds.tensor(self.reference_styles[c], c) for c in self.categories])


def lofgan_protocol(ds: GlyphDataset, k: int, n_generated: int = 128, n_real: int = 128, seed: int = 0,
                    categories: Sequence[int] | None = None) -> Protocol:
    """k shots per unseen category from its shot pool, `n_real` reference images from its reference half."""
    if k < 1 or n_generated < 2 or n_real < 2:
        raise ValueError(f"need k >= 1, n_generated >= 2 and n_real >= 2, got {k}, {n_generated}, {n_real}")
    cats = list(ds.unseen if categories is None else categories)
    rng, rng_ref = np.random.default_rng(seed), np.random.default_rng(seed + 1)  # the reference does not depend on k
    shots, reference = {}, {}
    for c in cats:
        name = ds.categories[c]
        shot_pool, ref_pool = ds.pool(name, "unseen_shots"), ds.pool(name, "unseen_reference")
        if k > len(shot_pool) or n_real > len(ref_pool):
            raise ValueError(f"category {name!r}: k={k} shots from a pool of {len(shot_pool)}, n_real={n_real} "
                             f"from a reference half of {len(ref_pool)}")
        shots[c] = [int(s) for s in rng.choice(shot_pool, size=k, replace=False)]
        reference[c] = sorted(int(s) for s in rng_ref.choice(ref_pool, size=n_real, replace=False))
    return Protocol(k, cats, shots, reference, n_generated, seed, ds)


def heldout_protocol(ds: GlyphDataset, k: int, n_generated: int = 32, seed: int = 0) -> Protocol:
    """k shots per unseen category from fonts of the held-out families (never seen by E, G or the editing
    modules). These families cover some unseen categories with only ~10 fonts, too few for a real reference
    sample: the protocol has none, and serves `heldout_recognition` (the judge's verdicts) only."""
    rng = np.random.default_rng(seed + 2)
    heldout = np.array(ds.split_info["heldout_styles"])
    shots = {c: sorted(int(s) for s in rng.choice(heldout[ds.coverage[heldout, c]], size=k, replace=False))
             for c in ds.unseen}
    return Protocol(k, list(ds.unseen), shots, {c: [] for c in ds.unseen}, n_generated, seed, ds)


@torch.no_grad()
def heldout_recognition(generate_fn: GenerateFn, ds: GlyphDataset, ruler: "Ruler", k: int = 3, n_generated: int = 32,
                        seed: int = 0) -> float:
    """Share of a method's images that the judge recognises, from k shots in held-out-family fonts."""
    protocol = heldout_protocol(ds, k, n_generated, seed)
    images = generate_all(generate_fn, protocol, seed, progress=False)  # (C, n, 1, H, W)
    intended = torch.tensor(protocol.categories).repeat_interleave(n_generated)
    return ruler.recognised(images.flatten(0, 1), intended).float().mean().item()


def other_real_styles(protocol: Protocol, category: int, n: int, seed: int = 0) -> list[int]:
    """n styles of the category's reference half outside the protocol's reference sample (for the real ceiling)."""
    name = protocol.ds.categories[category]
    rest = sorted(set(protocol.ds.pool(name, "unseen_reference")) - set(protocol.reference_styles[category]))
    if n > len(rest):
        raise ValueError(f"category {name!r}: {n} other real images asked, {len(rest)} left in its reference half")
    return [int(s) for s in np.random.default_rng(seed + category).choice(rest, size=n, replace=False)]


# ----------------------------------------------------------------------------- the ruler


@dataclass
class Ruler:
    """What measures a method: the judge, named feature extractors, LPIPS-vgg and the collapse floor."""

    judge: GlyphJudge
    lpips_vgg: nn.Module
    extractors: list[FeatureExtractor]  # "judge" (FD-domain) first
    collapse_floor: float
    categories: list[str]
    seen: list[int]
    kid_on: tuple[str, ...] = ("judge",)  # extractors whose KID is computed (clean-fid's KID costs ~8-10 s each here)
    lpips_size: int = 32  # LPIPS diversity, collapse and FD-VGG16 at this size: the dataset's (glyphs 32 px)
    cache: RunCache | None = None  # the run's cache: reference features and measured image sets, keyed by content
    _reference_features: dict = field(default_factory=dict, repr=False)
    _identity: str = field(default="", repr=False)

    @classmethod
    def build(cls, judge: GlyphJudge, lpips_vgg: nn.Module, ds: GlyphDataset, collapse_floor: float,
              extractors: Sequence[str] = ("judge", "vgg16"), inception_dir: str | None = None,
              cache: RunCache | None = None) -> "Ruler":
        if list(judge.categories) != list(ds.categories):
            raise ValueError("the judge's categories differ from the dataset's; load the judge with this dataset")
        device = next(judge.parameters()).device  # every extractor on the judge's device
        extr = [feature_extractor(name, judge=judge, lpips_vgg=lpips_vgg, device=device, inception_dir=inception_dir,
                                  lpips_size=ds.size) for name in extractors]
        return cls(judge, lpips_vgg, extr, collapse_floor, list(ds.categories), list(ds.seen), lpips_size=ds.size,
                   cache=cache)

    @property
    def identity(self) -> str:
        """A content key of everything that measures: the judge's and LPIPS-vgg's weights, the extractors (with
        their networks' weights), the collapse floor, KID's extractors and the LPIPS size."""
        if not self._identity:
            self._identity = content_key(judge=self.judge, lpips_vgg=self.lpips_vgg, floor=self.collapse_floor,
                                         extractors=[(e.name, e.weights) for e in self.extractors], kid_on=self.kid_on,
                                         lpips_size=self.lpips_size, categories=self.categories, seen=self.seen)
        return self._identity

    @torch.no_grad()
    def recognised(self, images: torch.Tensor, intended: torch.Tensor) -> torch.Tensor:
        """Judge verdicts (N,) bool for images (N, 1, H, W) of intended categories (N,), homoglyphs merged."""
        canon = self.judge.canonical
        return canon[self.judge.predict(images)[0]] == canon[intended]

    def reference_features(self, protocol: Protocol, extractor: FeatureExtractor) -> torch.Tensor:
        """Features (N, D) of the protocol's real reference images: computed once per run when the ruler has a cache
        (key: the images' pixels, the extractor and its network's weights)."""
        key = (extractor.name, tuple((c, tuple(s)) for c, s in protocol.reference_styles.items()))
        if key not in self._reference_features:
            reference = protocol.reference.flatten(0, 1)
            compute = lambda: ({"features": extractor(reference)}, {})
            stored_key = content_key(what="reference features", extractor=extractor.name, weights=extractor.weights,
                                     images=reference, lpips_size=self.lpips_size) if self.cache is not None else ""
            self._reference_features[key] = cached(self.cache, "reference-features", stored_key, compute)[0]["features"]
        return self._reference_features[key]


@dataclass
class Evaluation:
    """What `evaluate` returns: JSON-able `metrics`, the images (C, n, 1, H, W) and the judge's verdicts (C, n)."""

    metrics: dict
    images: torch.Tensor
    predicted: torch.Tensor
    intended: torch.Tensor

    @property
    def correct(self) -> torch.Tensor:
        return self.predicted == self.intended


def _check_images(images: torch.Tensor, n: int, shape: tuple, category: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or tuple(images.shape) != (n, *shape):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"generate_fn for {category!r} returned {got}; expected ({n}, {', '.join(map(str, shape))})")
    if not torch.isfinite(images).all() or images.min() < -1.001 or images.max() > 1.001:
        raise ValueError(f"generate_fn for {category!r} returned values outside [-1, 1] (or NaN); clamp decoded images")
    return images.float().cpu()


@torch.no_grad()
def generate_all(generate_fn: GenerateFn, protocol: Protocol, seed: int = 0, n: int | None = None,
                 progress: bool = True, desc: str = "generate") -> torch.Tensor:
    """Call the method once per category: images (C, n, 1, H, W) in protocol order."""
    n = protocol.n_generated if n is None else n
    gen = torch.Generator().manual_seed(seed)
    out = []
    for c in tqdm(protocol.categories, desc=desc, disable=not progress, leave=False):
        shots = protocol.shots(c)
        out.append(_check_images(generate_fn(c, shots, n, gen), n, tuple(shots.shape[1:]), protocol.ds.categories[c]))
    return torch.stack(out)


@torch.no_grad()
def evaluate(generate_fn: GenerateFn, protocol: Protocol, ruler: Ruler, seed: int = 0, progress: bool = True,
             desc: str = "generate") -> Evaluation:
    """Every metric but the episodes over the LoFGAN protocol (module docstring); timings in metrics['seconds']."""
    t0 = time.perf_counter()
    images = generate_all(generate_fn, protocol, seed, progress=progress, desc=desc)  # (C, n, 1, H, W)
    t1 = time.perf_counter()
    return measure(images, protocol, ruler, seed, generate_seconds=t1 - t0)


@torch.no_grad()
def measure(images: torch.Tensor, protocol: Protocol, ruler: Ruler, seed: int = 0, generate_seconds: float = 0.0) -> Evaluation:
    """The metrics of already generated images (C, n, 1, H, W), categories in protocol order. With the ruler's run
    cache, an image set measured before against the same reference by the same ruler (the real ceiling, a rerun
    notebook) is read back, not measured again."""
    t1 = time.perf_counter()
    C, n = images.shape[:2]
    if C != len(protocol.categories):
        raise ValueError(f"images hold {C} categories, the protocol {len(protocol.categories)}")
    key = content_key(what="measure", images=images, categories=protocol.categories, k=protocol.k, seed=seed,
                      reference=[ruler.reference_features(protocol, e) for e in ruler.extractors],
                      ruler=ruler.identity) if ruler.cache is not None else ""
    stored, metrics = cached(ruler.cache, "measure", key, lambda: _measure(images, protocol, ruler, seed))
    metrics["seconds"] = {"generate": generate_seconds, "metrics": time.perf_counter() - t1}
    intended = torch.tensor(protocol.categories).repeat_interleave(n)
    return Evaluation(metrics, images, stored["predicted"].view(C, n), intended.view(C, n))


def _measure(images: torch.Tensor, protocol: Protocol, ruler: Ruler, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Every metric of `measure`: ({"predicted": the judge's verdicts (C * n,)}, metrics)."""
    C, n = images.shape[:2]
    metrics: dict = {}
    flat = images.flatten(0, 1)
    intended = torch.tensor(protocol.categories).repeat_interleave(n)
    predicted, judge_feats = ruler.judge.predict(flat)
    metrics.update({"k": protocol.k, "n_per_category": n, "categories": C,
                    "n_real_per_category": len(protocol.reference_styles[protocol.categories[0]])})
    pres = category_preservation(predicted, intended, ruler.categories, ruler.seen, ruler.judge.canonical)
    metrics.update(preservation=pres["accuracy"], preservation_strict=pres["strict"], wrong_onto_seen=pres["wrong_onto_seen"],
                   confusions=pres["confusions"], per_category=pres["per_category"])
    pairs, vgg_feats = pairs_and_vgg_features(ruler.lpips_vgg, images, ruler.lpips_size)  # diversity and FD-VGG16
    for extractor in ruler.extractors:
        feats = {"judge": judge_feats, "vgg16": vgg_feats}.get(extractor.name)
        feats = extractor(flat) if feats is None else feats
        ref = ruler.reference_features(protocol, extractor)
        metrics[extractor.fd_name] = frechet_distance(feats, ref)
        if extractor.name in ruler.kid_on:
            metrics[extractor.kid_name] = kernel_distance(feats, ref, seed=seed)
    metrics["lpips_diversity"] = lpips_diversity(pairs)
    metrics["collapse_rate"] = collapse_rate(pairs, ruler.collapse_floor)
    metrics["collapse_floor"] = ruler.collapse_floor
    return {"predicted": predicted.cpu()}, metrics


# ----------------------------------------------------------------------------- few-shot classification gain


@dataclass
class Episode:
    categories: list[int]  # `ways` global category ids
    support_styles: np.ndarray  # (ways, shots) from the shot pools
    query_styles: np.ndarray  # (ways, n_query) from the reference halves


def sample_episode(ds: GlyphDataset, ways: int, shots: int, n_query: int, rng: np.random.Generator,
                   categories: Sequence[int] | None = None) -> Episode:
    """A `ways`-way episode: supports from the shot pools, queries from the reference halves (never a support)."""
    cats = list(ds.unseen if categories is None else categories)
    if ways > len(cats):
        raise ValueError(f"{ways}-way episodes need {ways} categories, {len(cats)} given")
    chosen = [int(c) for c in rng.choice(cats, size=ways, replace=False)]
    sup = [rng.choice(ds.pool(ds.categories[c], "unseen_shots"), size=shots, replace=False) for c in chosen]
    qry = [rng.choice(ds.pool(ds.categories[c], "unseen_reference"), size=n_query, replace=False) for c in chosen]
    return Episode(chosen, np.array(sup), np.array(qry))


class EpisodeClassifiers(nn.Module):
    """E independent small MLPs (pixels -> `hidden` ReLU units -> ways), one per episode, trained side by side.

    x (E, N, C, H, W) -> logits (E, N, ways) with batched matrix products. A pixel MLP rather than a CNN: on a
    2-core CPU a small CNN's training step costs ~40 ms against ~3 ms, and 20 episodes × 2 shot counts × 2 arms
    must fit in seconds. Adam's update is element-wise, so training the sum of the E losses trains E
    classifiers from scratch, independently.
    """

    def __init__(self, n_models: int, in_features: int, ways: int, hidden: int = 128):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(n_models, in_features, hidden) * (2 / in_features) ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(n_models, 1, hidden))
        self.w2 = nn.Parameter(torch.randn(n_models, hidden, ways) * (1 / hidden) ** 0.5)
        self.b2 = nn.Parameter(torch.zeros(n_models, 1, ways))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.baddbmm(self.b1, x.flatten(2), self.w1))  # (E, N, hidden)
        return torch.baddbmm(self.b2, h, self.w2)  # (E, N, ways)


def train_episode_classifiers(x: torch.Tensor, y: torch.Tensor, ways: int, steps: int, seed: int,
                              lr: float = 1e-3, weight_decay: float = 1e-4) -> EpisodeClassifiers:
    """Full-batch AdamW on x (E, N, 1, H, W), y (E, N): one classifier per episode, from the same seeded start."""
    torch.manual_seed(seed)
    net = EpisodeClassifiers(x.shape[0], x[0, 0].numel(), ways)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="sum") / y.shape[1]  # sum over models
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def _mean_ci(values: Sequence[float]) -> dict:
    v = np.asarray(values, dtype=float)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": float(half)}


@torch.no_grad()
def few_shot_gain(generate_fn: GenerateFn, ds: GlyphDataset, ways: int = 10, shots: Sequence[int] = (1, 5),
                  episodes: int = 20, n_generated: int = 10, n_query: int = 20, steps: int = 100, seed: int = 0,
                  progress: bool = True) -> dict:
    """Query accuracy real-only vs real + generated, and the gain, per shot count: mean ± 95 % CI over episodes.

    Both arms start from the same initial weights (same seed) and train `steps` full-batch steps; all episodes
    of one arm train together (`EpisodeClassifiers`, pixel MLPs). `n_query` shrinks to the smallest reference half."""
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2 for a confidence interval, got {episodes}")
    n_query = min(n_query, *(len(ds.pool(ds.categories[c], "unseen_reference")) for c in ds.unseen))
    out = {}
    labels = torch.arange(ways)
    for k in shots:
        rng = np.random.default_rng(seed + 1000 * k)
        gen = torch.Generator().manual_seed(seed + k)
        sup, qry, fake = [], [], []
        for _ in tqdm(range(episodes), desc=f"{ways}-way {k}-shot episodes", disable=not progress, leave=False):
            ep = sample_episode(ds, ways, k, n_query, rng)
            cats = np.array(ep.categories)[:, None]
            sup.append(ds.tensor(ep.support_styles, cats))  # (W, k, 1, H, W)
            qry.append(ds.tensor(ep.query_styles, cats).flatten(0, 1))
            fake.append(torch.stack([_check_images(generate_fn(c, sup[-1][i], n_generated, gen), n_generated,
                                                   tuple(sup[-1].shape[2:]), ds.categories[c])
                                     for i, c in enumerate(ep.categories)]))
        x_real = torch.stack(sup).flatten(1, 2)  # (E, W * k, 1, H, W)
        y_real = labels.repeat_interleave(k).expand(episodes, -1)
        x_aug = torch.cat([x_real, torch.stack(fake).flatten(1, 2)], 1)
        y_aug = torch.cat([y_real, labels.repeat_interleave(n_generated).expand(episodes, -1)], 1)
        y_q = labels.repeat_interleave(n_query)
        acc = {}
        for arm, x, y in (("real", x_real, y_real), ("real+generated", x_aug, y_aug)):
            net = train_episode_classifiers(x, y, ways, steps, seed + k)
            acc[arm] = (net(torch.stack(qry)).argmax(-1) == y_q).float().mean(1).numpy()  # (E,)
        out[f"{k}-shot"] = {"real": _mean_ci(acc["real"]), "real+generated": _mean_ci(acc["real+generated"]),
                            "gain": _mean_ci(acc["real+generated"] - acc["real"]), "episodes": episodes}
    return out


# ----------------------------------------------------------------------------- set-up shared by the notebooks


def seen_calibration_sets(ds: GlyphDataset, n_categories: int = 24, n_fonts: int = 48, seed: int = 0) -> list[torch.Tensor]:
    """Real glyphs for the collapse floor: `n_fonts` random training-family fonts (all when fewer) of `n_categories`
    random seen characters (never the unseen categories the metrics evaluate)."""
    rng = np.random.default_rng(seed + 5)
    cats = rng.choice(ds.seen, size=min(n_categories, len(ds.seen)), replace=False)
    train = np.array(ds.split_info["train_styles"])
    return [ds.tensor(rng.choice(covered, size=min(n_fonts, len(covered)), replace=False), c)
            for c in cats for covered in [train[ds.coverage[train, c]]]]


def cached_collapse_floor(lpips_vgg: nn.Module, sets: Sequence[torch.Tensor], quantile: float, size: int,
                          cache: str | Path | None = None) -> float:
    """`calibrate_collapse_floor`, remembered in the JSON file `cache` under a key of the calibration images' sha256,
    the size, the quantile and the LPIPS backbone: the notebooks of one run pay for it once. An unreadable cache is
    recomputed and rewritten."""
    from tagelib.atomic import write_text_atomic
    from tagelib.metrics import calibrate_collapse_floor

    if cache is None:
        return calibrate_collapse_floor(lpips_vgg, sets, quantile=quantile, size=size)
    digest = hashlib.sha256()
    for images in sets:
        digest.update(images.float().contiguous().numpy().tobytes())
    key = f"{digest.hexdigest()[:20]} size={size} q={quantile} {getattr(lpips_vgg, 'backbone_source', '')}"
    path = Path(cache)
    try:
        table = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        table = {}
    if key not in table:
        table[key] = calibrate_collapse_floor(lpips_vgg, sets, quantile=quantile, size=size)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(table, indent=1))
    return float(table[key])


def glyph_ruler(ds: GlyphDataset, judge_path: str, lpips_vgg: nn.Module, seed: int = 0, collapse_quantile: float = 0.01,
                extractors: Sequence[str] | str = ("judge", "vgg16"), inception_dir: str | None = None,
                floor_cache: str | Path | None = None, cache: RunCache | None = None) -> Ruler:
    """The ruler of notebooks 01–05: the judge from `judge_path` (made by 00_judge), FD extractors (a sequence or a
    comma-separated string; `inception` = FID, needs clean-fid's file in `inception_dir`), LPIPS-vgg and a collapse
    floor at the `collapse_quantile` of LPIPS between distinct real images of seen classes. The judge and the
    extractors run on LPIPS-vgg's device; `floor_cache` (a JSON file) keeps the floor for the run's other notebooks, and
    `cache` (`RunCache.of_run(out_dir)`) the reference features and measured image sets."""
    from tagelib.judge import load_judge
    from tagelib.paths import resolve

    names = [e.strip() for e in extractors.split(",")] if isinstance(extractors, str) else list(extractors)
    if not names or names[0] != "judge":
        raise ValueError(f"the FD extractors must start with 'judge' (FD-domain), got {names}")
    judge = load_judge(resolve(judge_path), categories=ds.categories).to(next(lpips_vgg.parameters()).device)
    floor = cached_collapse_floor(lpips_vgg, seen_calibration_sets(ds, seed=seed), collapse_quantile, ds.size,
                                  floor_cache)
    return Ruler.build(judge, lpips_vgg, ds, floor, extractors=names, inception_dir=inception_dir or None, cache=cache)
