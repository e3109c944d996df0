"""The judge: a glyph category classifier trained on real glyphs only, the ruler of category preservation.

Generated images are scored by whether an independent classifier still recognises their intended
character (DeltaGAN / SAGE call it category retention). The judge never sees a generated image, the shots,
or the reference images the metrics compare against. Its data (`judge_split`):

- **train**: every real glyph of the training font families, seen and unseen categories, except
  (a) the unseen categories' shot pools, (b) their reference halves (`GlyphDataset` split
  ``unseen_reference``: the second half of each evaluation pool) and (c) a seeded `val_fraction` of the
  training styles, kept for validation of the seen categories;
- **val_seen**: seen categories in those validation styles; **reference**: the unseen reference halves;
  **heldout**: every category in the held-out font families (never trained on).

Its penultimate layer (`features`, 128-d) is the "FD-domain" feature space of `tagelib.metrics`.

    judge = load_judge("data/judge/glyph32_judge")
    logits = judge(x)                   # x (B, 1, 32, 32) in [-1, 1] -> (B, num_classes)
    feats = judge.features(x)           # (B, embed_dim)
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import trange

from tagelib.checkpoint_io import (CheckpointMismatchError, build_stored_config, load_checked, load_module, save_module,
                                   stored_config_errors, stored_value)
from tagelib.config import build_config
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.paths import checkpoint_file

MADE_BY = "notebooks/00_judge.ipynb (or `make judge` for the shipped data/judge/glyph32_judge)"


@dataclass
class JudgeConfig:
    num_classes: int = 123  # categories, in the dataset's order
    image_size: int = 32
    in_channels: int = 1
    widths: tuple[int, ...] = (32, 64, 128)  # two 3x3 convs per stage, 2x2 max-pool after each
    embed_dim: int = 128  # penultimate features (FD-domain)
    dropout: float = 0.2

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.num_classes < 2 or not self.widths or min(self.embed_dim, self.in_channels, *self.widths) < 1:
            raise ValueError(f"invalid judge config: {self}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size < 2 ** len(self.widths) or self.image_size % 2 ** len(self.widths):
            raise ValueError(f"image_size {self.image_size} must be a positive multiple of 2**{len(self.widths)}")

    @classmethod
    def from_dict(cls, values) -> "JudgeConfig":
        return build_config(cls, values)


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2))


class GlyphJudge(nn.Module):
    """VGG-style CNN: (B, C, S, S) in [-1, 1] -> logits (B, num_classes); `features` -> (B, embed_dim)."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.cfg = cfg
        chans = (cfg.in_channels, *cfg.widths)
        self.trunk = nn.Sequential(*[_stage(a, b) for a, b in zip(chans[:-1], chans[1:])])
        side = cfg.image_size // 2 ** len(cfg.widths)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(cfg.widths[-1] * side * side, cfg.embed_dim),
                                   nn.BatchNorm1d(cfg.embed_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.embed_dim, cfg.num_classes))
        self.categories: list[str] = []  # class index -> character, set by training or loading
        self.homoglyphs: list[list[str]] = []  # groups of characters drawn identically (`homoglyph_groups`)

    @property
    def canonical(self) -> Tensor:
        """(num_classes,) category id -> the id its homoglyph group is scored as."""
        return canonical_ids(self.categories, self.homoglyphs)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, embed_dim): the FD-domain space. Each image is first standardised (zero mean,
        unit deviation), so the verdict does not depend on the ink and paper levels a generator happens to draw."""
        x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-3)
        return self.embed(self.trunk(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
        """Top-1 class (N,) and penultimate features (N, embed_dim) of many images, in eval mode; computed on the
        judge's device, returned on x's."""
        was = self.training
        self.eval()
        preds, feats = [], []
        device = next(self.parameters()).device
        for i in range(0, len(x), batch_size):
            f = self.features(x[i:i + batch_size].to(device))
            feats.append(f.to(x.device))
            preds.append(self.head(f).argmax(1).to(x.device))
        self.train(was)
        if not preds:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, self.cfg.embed_dim)
        return torch.cat(preds), torch.cat(feats)

    @torch.no_grad()
    def accuracy(self, x: Tensor, labels: Tensor) -> float:
        return (self.predict(x)[0] == labels).float().mean().item()


# ----------------------------------------------------------------------------- data


def judge_split(ds: GlyphDataset, val_fraction: float = 0.1, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(style ids, category ids) of the judge's train / val_seen / reference / heldout sets (module docstring)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train_styles = np.array(ds.split_info["train_styles"])
    rng = np.random.default_rng(seed + 17)
    val_styles = np.sort(rng.choice(train_styles, size=max(1, round(val_fraction * len(train_styles))), replace=False))
    excluded = {(int(s), int(c)) for split in ("unseen_shots", "unseen_reference") for s, c in zip(*ds.pairs(split))}
    s_all, c_all = np.meshgrid(train_styles, np.arange(len(ds.categories)), indexing="ij")
    s_all, c_all = s_all.ravel(), c_all.ravel()
    keep = ds.coverage[s_all, c_all] & ~np.isin(s_all, val_styles)
    keep &= np.array([(int(s), int(c)) not in excluded for s, c in zip(s_all, c_all)])
    is_seen = np.isin(c_all, ds.seen)
    val = ds.coverage[s_all, c_all] & np.isin(s_all, val_styles) & is_seen
    held_s, held_c = np.meshgrid(np.array(ds.split_info["heldout_styles"], dtype=np.int64), np.arange(len(ds.categories)),
                                 indexing="ij")
    held = ds.coverage[held_s, held_c]
    return {"train": (s_all[keep], c_all[keep]), "val_seen": (s_all[val], c_all[val]),
            "reference": ds.pairs("unseen_reference"), "heldout": (held_s[held], held_c[held])}


def homoglyph_groups(ds: GlyphDataset, max_difference: float = 0.02, min_share: float = 0.5) -> list[list[str]]:
    """Categories that fonts draw with the same outline, which no judge can tell apart (e.g. Greek Γ, Cyrillic Г).

    Glyphs only (an RGB dataset has none). Two categories are homoglyphs when more than `min_share` of the fonts covering both render them
    identically: Σ|x − y| / (Σx + Σy) < `max_difference` (the curation's clone measure). Pairs are first
    screened on their mean images (a pair can only be identical in most fonts if its means are close), then
    measured font by font. Returns the groups (connected pairs), each sorted by category id.
    """
    if ds.channels != 1:
        return []  # photographs: slot i of two classes are unrelated images, and no two classes are drawn alike
    K = len(ds.categories)
    ink = ds.images.reshape(len(ds.images), K, -1)  # (S, K, P) uint8
    cov = ds.coverage
    means = np.stack([ink[cov[:, k], k].mean(0) for k in range(K)])  # (K, P)
    mean_diff = np.abs(means[:, None] - means[None]).sum(-1) / (means.sum(-1)[:, None] + means.sum(-1)[None] + 1e-8)
    parent = list(range(K))
    find = lambda i: i if parent[i] == i else find(parent[i])
    for a, b in zip(*np.nonzero(np.triu(mean_diff < 4 * max_difference, 1))):
        both = cov[:, a] & cov[:, b]
        if not both.any():
            continue
        x, y = ink[both, a].astype(np.float32), ink[both, b].astype(np.float32)
        share = (np.abs(x - y).sum(-1) / (x.sum(-1) + y.sum(-1) + 1e-8) < max_difference).mean()
        if share > min_share:
            parent[find(b)] = find(a)
    groups: dict[int, list[int]] = {}
    for k in range(K):
        groups.setdefault(find(k), []).append(k)
    return [[ds.categories[k] for k in g] for g in groups.values() if len(g) > 1]


def canonical_ids(categories: list[str], groups: list[list[str]]) -> torch.Tensor:
    """(K,) map from category id to its homoglyph group's first id (itself when it has no homoglyph)."""
    index = {c: i for i, c in enumerate(categories)}
    canon = torch.arange(len(categories))
    for g in groups:
        canon[[index[c] for c in g]] = index[g[0]]
    return canon


@torch.no_grad()
def real_accuracy(judge: GlyphJudge, ds: GlyphDataset, styles: np.ndarray, cats: np.ndarray) -> dict:
    """The judge on real glyphs (styles, cats): accuracy with homoglyphs merged and strict, over all categories and
    over the unseen ones, plus the per-category verdicts and confusions (`metrics.category_preservation`)."""
    from tagelib.metrics import category_preservation

    pred, _ = judge.predict(ds.tensor(styles, cats))
    y = torch.from_numpy(np.asarray(cats))
    unseen = torch.isin(y, torch.tensor(ds.unseen))
    verdicts = category_preservation(pred, y, ds.categories, ds.seen, judge.canonical)
    sub = category_preservation(pred[unseen], y[unseen], ds.categories, ds.seen, judge.canonical) if unseen.any() else None
    return {"n": len(y), "all": verdicts["accuracy"], "all_strict": verdicts["strict"],
            "unseen": sub and sub["accuracy"], "unseen_strict": sub and sub["strict"], "n_unseen": int(unseen.sum()),
            "per_category": verdicts["per_category"], "confusions": verdicts["confusions"], "predicted": pred}


# ----------------------------------------------------------------------------- training


@dataclass
class JudgeTrainConfig:
    steps: int = 3000  # optimisation steps
    batch_size: int = 256
    lr: float = 3e-3  # AdamW peak learning rate (one-cycle: warm-up, then cosine decay)
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True  # small affine, stroke-width and blur changes of the real glyphs
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def augment_glyphs(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random small affine (±5° rotation, ±4 % scale, ±1 px shift, shear ±0.1), stroke thickening or thinning
    (3x3 max/min filter, 15 % each), Gaussian blur (σ up to 1.2 px, 30 %) and pixel noise (σ up to 0.15, 50 %) of a
    batch (B, 1, S, S) in [-1, 1]; vectorized. Real glyphs made to look like a generator's soft, noisy drawings.

    Size and position stay nearly as rendered (one scale per font, glyphs on the baseline): they are what tells
    `I` from `l`, `O` from `0` and `o`, `θ` from `Θ`."""
    b, _, s, _ = x.shape
    u = lambda *shape: torch.rand(*shape, generator=generator)
    angle = (u(b) - 0.5) * 2 * math.radians(5)
    scale = 1 + (u(b) - 0.5) * 0.08
    shear = (u(b) - 0.5) * 0.2
    shift = (u(b, 2) - 0.5) * 2 * (2 * 1 / s)  # ±1 px in normalised coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1  # background = -1
    r = u(b)
    thick, thin = F.max_pool2d(x, 3, 1, 1), -F.max_pool2d(-x, 3, 1, 1)
    x = torch.where((r < 0.15)[:, None, None, None], thick, torch.where((r > 0.85)[:, None, None, None], thin, x))
    sigma = 0.3 + 0.9 * u(b, 1, 1)  # (B, 1, 1) per-image blur
    taps = torch.exp(-torch.arange(-2, 3).float().pow(2)[None, None] / (2 * sigma**2))  # (B, 1, 5)
    taps = taps / taps.sum(-1, keepdim=True)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")  # separable blur, one kernel per image
    blurred = (padded.unfold(3, 5, 1) * taps[:, :, None, None, :]).sum(-1)  # (B, 1, S + 4, S)
    blurred = (blurred.unfold(2, 5, 1) * taps[:, :, None, None, :]).sum(-1)  # (B, 1, S, S)
    x = torch.where((u(b) < 0.3)[:, None, None, None], blurred, x)
    noise = torch.randn(x.shape, generator=generator) * 0.15 * u(b, 1, 1, 1) * (u(b, 1, 1, 1) < 0.5)
    return (x + noise).clamp(-1, 1)


def train_judge(judge: GlyphJudge, images, labels: np.ndarray, cfg: JudgeTrainConfig, progress: bool = True,
                to_tensor: Callable[[np.ndarray], Tensor] = GlyphDataset.to_tensor) -> dict[str, list]:
    """Train on real images: `images` indexable by an index array (uint8 glyph ink (N, S, S), or a dataset's lazy
    `ds.view(styles, categories)`), `labels` (N,) category ids, `to_tensor` the dataset's conversion. Returns the
    loss history. Trains on the judge's device (batches are drawn and augmented on the CPU, then moved)."""
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many labels as images (> 0), got {len(images)} and {len(labels)}")
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)
    hist: dict[str, list] = {"loss": [], "accuracy": [], "seconds": []}
    start = time.perf_counter()
    judge.train()
    device = next(judge.parameters()).device
    for _ in trange(cfg.steps, desc="judge", disable=not progress):
        idx = torch.randint(len(y), (min(cfg.batch_size, len(y)),), generator=gen)
        x = to_tensor(images[idx.numpy()])
        if cfg.augment:
            x = augment_glyphs(x, gen)
        x, target = x.to(device), y[idx].to(device)
        logits = judge(x)
        loss = F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist["loss"].append(loss.item())
        hist["accuracy"].append((logits.argmax(1) == target).float().mean().item())
        hist["seconds"].append(time.perf_counter() - start)
    judge.eval()
    return hist


# ----------------------------------------------------------------------------- checkpoints


def save_judge(stem: str | Path, judge: GlyphJudge, extra_config: dict | None = None) -> Path:
    """Write `<stem>.safetensors` (weights, config, category names, `extra_config`) atomically."""
    if len(judge.categories) != judge.cfg.num_classes:
        raise ValueError(f"judge.categories has {len(judge.categories)} names for {judge.cfg.num_classes} classes")
    config = {"judge": dataclasses.asdict(judge.cfg), "categories": list(judge.categories),
              "homoglyphs": judge.homoglyphs, **(extra_config or {})}
    return save_module(stem, judge, config)


def load_judge(stem: str | Path, categories: list[str] | None = None) -> GlyphJudge:
    """Load a judge in eval mode, frozen; with `categories`, check it names the same characters in the same order.

    Every error names the file: missing, corrupted, not a judge, an invalid stored config, or other weights."""
    path = checkpoint_file(stem)
    state, config = load_module(path, hint=f"it is made by {MADE_BY}")
    if not isinstance(config, dict) or "judge" not in config:
        raise CheckpointMismatchError(f"{path}: not a judge checkpoint (no 'judge' config); judges are made by "
                                      f"{MADE_BY}")
    cfg = build_stored_config(path, JudgeConfig, config, "judge", key="judge")
    names = stored_value(path, config, "categories", list[str], "judge", default=[])
    homoglyphs = stored_value(path, config, "homoglyphs", list[list[str]], "judge", default=[])
    with stored_config_errors(path, "judge"):
        if names and len(names) != cfg.num_classes:
            raise ValueError(f"{len(names)} category names for {cfg.num_classes} classes")
    judge = GlyphJudge(cfg)
    load_checked(judge, state, name="the judge", source=path)
    judge.categories = list(names)
    judge.homoglyphs = [list(g) for g in homoglyphs]
    if categories is not None and judge.categories != list(categories):
        raise CheckpointMismatchError(f"{path}: the judge was trained on other categories than this dataset's "
                                      f"({len(judge.categories)} vs {len(categories)}); retrain it ({MADE_BY})")
    judge.training_info = {k: v for k, v in config.items() if k not in ("judge", "categories", "homoglyphs")}
    judge.requires_grad_(False)
    return judge.eval()
