"""The attribute probe: a small CNN that says which style attributes a glyph image shows, one logit each.

A ruler for the PSM, as the judge is for the category: does a glyph generated for "a bold glyph" look
bold? It trains on real glyphs only (training font families, seen categories) against labels derived from
the styles' metadata, **measured values first** (`attribute_labels`):

- bold / light: the measured stroke thickness (stroke / cap height), not the declared OS/2 weight (fonts
  often lie: "Abecedario Bold" declares 400). Thresholds are the midpoints between the median strokes of the
  declared classes (`tagelib.glyphs.style.STROKE_BY_WEIGHT`): bold above the 600/700 midpoint (0.130), light
  below the 300/400 midpoint (0.084); each holds about a quarter of the styles;
- italic: measured |slant| > 5° (as the dataset's `italic` flag);
- serif / sans-serif: the style's classification; monospace: measured equal advance widths;
- condensed / wide: the measured width class (mean lowercase advance / cap height below 0.62 / above 0.90).

    probe = load_probe("data/clip/glyph32_attributes")
    p = probe.predict(x)     # x (N, 1, 32, 32) in [-1, 1] -> (N, A) probabilities, in ATTRIBUTES order
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import trange

from tagelib.checkpoint_io import (CheckpointMismatchError, build_stored_config, load_checked, load_module, save_module,
                                   stored_config_errors)
from tagelib.config import build_config
from tagelib.glyphs.style import CONDENSED_BELOW, EXTENDED_ABOVE, STROKE_BY_WEIGHT
from tagelib.paths import checkpoint_file

MADE_BY = "notebooks/00_clip.ipynb (probe_steps > 0), or `make clip` for the shipped data/clip/glyph32_attributes"
ATTRIBUTES = ("bold", "light", "italic", "serif", "sans-serif", "monospace", "condensed", "wide")  # = ATTRIBUTE_PROMPTS
BOLD_STROKE = (STROKE_BY_WEIGHT[600] + STROKE_BY_WEIGHT[700]) / 2  # 0.130
LIGHT_STROKE = (STROKE_BY_WEIGHT[300] + STROKE_BY_WEIGHT[400]) / 2  # 0.084
ITALIC_SLANT_DEG = 5.0


def attribute_labels(styles: list[dict]) -> np.ndarray:
    """(S, A) bool labels of `styles` in ATTRIBUTES order (module docstring)."""
    rows = [(s["stroke"] > BOLD_STROKE, s["stroke"] < LIGHT_STROKE, abs(s["slant_deg"]) > ITALIC_SLANT_DEG,
             s["classification"] == "serif", s["classification"] == "sans-serif", bool(s["monospace"]),
             s["width"] < CONDENSED_BELOW, s["width"] > EXTENDED_ABOVE) for s in styles]
    return np.array(rows, dtype=bool).reshape(len(styles), len(ATTRIBUTES))


@dataclass
class ProbeConfig:
    num_attributes: int = len(ATTRIBUTES)
    widths: tuple[int, ...] = (16, 32, 64)  # two 3x3 convs per stage, 2x2 max-pool after each
    dropout: float = 0.2

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.num_attributes < 1 or not self.widths or min(self.widths) < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"invalid probe config: {self}")

    @classmethod
    def from_dict(cls, values) -> "ProbeConfig":
        return build_config(cls, values)


class AttributeProbe(nn.Module):
    """(B, 1, S, S) in [-1, 1] -> (B, A) attribute logits. No standardisation: stroke weight is ink mass."""

    def __init__(self, cfg: ProbeConfig):
        super().__init__()
        self.cfg = cfg
        layers, c_in = [], 1
        for c in cfg.widths:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.trunk = nn.Sequential(*layers)  # (B, C, S / 2^n, S / 2^n)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(cfg.dropout),
                                  nn.Linear(c_in, cfg.num_attributes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """(N, A) probabilities, in eval mode."""
        was = self.training
        self.eval()
        out = [torch.sigmoid(self(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.cfg.num_attributes)


@dataclass
class ProbeTrainConfig:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 3e-3  # AdamW peak (one-cycle)
    weight_decay: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"need steps >= 1, batch_size >= 1, lr > 0: {self}")

    @classmethod
    def from_dict(cls, values) -> "ProbeTrainConfig":
        return build_config(cls, values)


def train_probe(probe: AttributeProbe, ink: np.ndarray, labels: np.ndarray, cfg: ProbeTrainConfig,
                progress: bool = True) -> dict[str, list]:
    """BCE on real glyphs `ink` uint8 (N, S, S) with `labels` (N, A) bool; each attribute's positives weighted
    by its negatives / positives (so 0.5 is the balanced threshold), ±1 px shifts. Returns the history."""
    if len(ink) != len(labels) or len(ink) == 0 or labels.shape[1] != probe.cfg.num_attributes:
        raise ValueError(f"need (N, S, S) images and (N, {probe.cfg.num_attributes}) labels, got {ink.shape}, {labels.shape}")
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    data, y = torch.from_numpy(ink), torch.from_numpy(labels).float()
    pos = y.sum(0).clamp(min=1)
    pos_weight = ((len(y) - pos) / pos).clamp(max=20)  # (A,)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)
    hist: dict[str, list] = {"loss": [], "seconds": []}
    start = time.perf_counter()
    probe.train()
    for _ in trange(cfg.steps, desc="attribute probe", disable=not progress):
        idx = torch.randint(len(data), (min(cfg.batch_size, len(data)),), generator=gen)
        x = data[idx].float().div(127.5).sub(1)[:, None]  # (B, 1, S, S)
        dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()  # one shift per batch: borders are paper
        x = torch.roll(x, (dy, dx), dims=(2, 3))
        loss = F.binary_cross_entropy_with_logits(probe(x), y[idx], pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist["loss"].append(loss.item())
        hist["seconds"].append(time.perf_counter() - start)
    probe.eval()
    return hist


def probe_accuracy(probs: Tensor, labels: np.ndarray, names: tuple[str, ...] = ATTRIBUTES) -> dict[str, dict]:
    """Per attribute: accuracy and balanced accuracy (None when one class is absent) at threshold 0.5, positives,
    images. probs (N, A), labels (N, A)."""
    pred, y = (probs > 0.5).numpy(), np.asarray(labels, dtype=bool)
    out = {}
    for a, name in enumerate(names):
        p, t = pred[:, a], y[:, a]
        recalls = [(p[t == v] == v).mean() for v in (True, False) if (t == v).any()]
        out[name] = {"accuracy": float((p == t).mean()), "balanced_accuracy": float(np.mean(recalls)) if len(recalls) == 2 else None,
                     "positives": int(t.sum()), "images": int(len(t))}
    return out


def save_probe(stem: str | Path, probe: AttributeProbe, extra_config: dict | None = None) -> Path:
    """Write `<stem>.safetensors` (weights, config, attribute names, `extra_config`) atomically."""
    config = {"probe": dataclasses.asdict(probe.cfg), "attributes": list(ATTRIBUTES), **(extra_config or {})}
    return save_module(stem, probe, config)


def load_probe(stem: str | Path) -> AttributeProbe:
    """Load a probe in eval mode, frozen; `.training_info` holds the rest of its stored config.

    Every error names the file: missing, corrupted, not a probe, an invalid stored config, or other weights."""
    path = checkpoint_file(stem)
    state, config = load_module(path, hint=f"it is made by {MADE_BY}")
    if not isinstance(config, dict) or config.get("attributes") != list(ATTRIBUTES):
        raise CheckpointMismatchError(f"{path}: not an attribute probe for {ATTRIBUTES}; probes are made by {MADE_BY}")
    cfg = build_stored_config(path, ProbeConfig, config, "attribute-probe", key="probe")
    with stored_config_errors(path, "attribute-probe"):
        if cfg.num_attributes != len(ATTRIBUTES):
            raise ValueError(f"num_attributes={cfg.num_attributes}, but it names {len(ATTRIBUTES)} attributes")
    probe = AttributeProbe(cfg)
    load_checked(probe, state, name="the attribute probe", source=path)
    probe.training_info = {k: v for k, v in config.items() if k not in ("probe", "attributes")}
    return probe.eval().requires_grad_(False)
