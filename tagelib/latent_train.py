"""Training the glyph latent space: E and G jointly, as an autoencoder in W+ that also learns to transfer.

Losses on a batch of glyph pairs (x_{c,f}, x_{c',f}) — two characters of one font f:
- reconstruction  L1 + λ_lpips·LPIPS between G(E(x)) and x, for both members of the pair;
- cross-reconstruction  G(m_{c'} + E(x_{c,f}) − m_c) against the real x_{c',f}, where m_c is an
  exponential moving average of E over category c (the class embedding AGE and TAGE use). This trains the
  factorisation the editing stages rely on: the residual E(x) − m_c carries the style and nothing else;
- extra shapes and fonts (optional, `tagelib.glyph_shapes`): a share of the pairs drawn in a randomly
  transformed font (`augment`), and pseudo-glyphs of no category in the reconstruction loss (`pseudo_fraction`),
  so that E learns to encode shapes rather than to recognise the seen characters;
- adversarial (optional, λ_adv > 0)  StyleGAN2's non-saturating loss with a small discriminator and R1,
  for sharper strokes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from tagelib.config import build_config
from tagelib.glyph_shapes import augment_pairs, pseudo_glyphs
from tagelib.latent import LatentSpace


@dataclass
class LatentTrainConfig:
    steps: int = 2000  # optimisation steps
    batch_size: int = 32  # pairs per step (2 images each)
    lr: float = 2e-3  # Adam learning rate (E and G)
    lambda_l1: float = 1.0  # pixel reconstruction
    lambda_lpips: float = 1.0  # LPIPS (alex, real weights) reconstruction
    lambda_cross: float = 1.0  # weight of the cross-reconstruction terms (same losses)
    lambda_adv: float = 0.0  # adversarial term; 0 switches the discriminator off
    r1_gamma: float = 1.0  # R1 penalty weight (when lambda_adv > 0)
    class_ema: float = 0.99  # momentum of the class-embedding averages m_c
    cross_warmup: int = 200  # steps of plain reconstruction before the cross terms start
    lr_decay_start: float = 0.6  # fraction of steps after which the lr decays linearly to 10 %
    augment: float = 0.0  # share of pairs drawn in a randomly transformed font (glyph_shapes.augment_pairs)
    pseudo_fraction: float = 0.0  # pseudo-glyphs per step, as a share of the pairs (reconstruction loss only)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got steps={self.steps}, batch_size={self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not (0 <= self.augment <= 1 and 0 <= self.pseudo_fraction <= 1):
            raise ValueError(f"augment and pseudo_fraction must lie in [0, 1], got {self.augment}, {self.pseudo_fraction}")

    @classmethod
    def from_dict(cls, values) -> "LatentTrainConfig":
        return build_config(cls, values)


class PairSampler:
    """Draws (style, c, c') triples with both glyphs present: ink images (S, K, H, W), coverage (S, K)."""

    def __init__(self, images: np.ndarray, coverage: np.ndarray, styles: list[int], categories: list[int], seed: int):
        self.images, self.styles, self.categories = images, np.asarray(styles), np.asarray(categories)
        self.cov = coverage[np.ix_(self.styles, self.categories)]  # (S', K')
        empty = self.styles[self.cov.sum(1) == 0]
        if len(empty):
            raise ValueError(f"styles {empty[:10].tolist()} cover none of the training categories")
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> x_a, x_b (n, 1, H, W) in [-1, 1], categories c_a, c_b (n,) (global ids)."""
        s = self.rng.integers(len(self.styles), size=n)
        prob = self.cov[s] / self.cov[s].sum(1, keepdims=True)  # (n, K') uniform over covered categories
        cum = prob.cumsum(1)
        a = (cum < self.rng.random((n, 1))).sum(1)
        b = (cum < self.rng.random((n, 1))).sum(1)
        a, b = np.minimum(a, cum.shape[1] - 1), np.minimum(b, cum.shape[1] - 1)
        ca, cb, st = self.categories[a], self.categories[b], self.styles[s]
        to_t = lambda ink: torch.from_numpy(ink).float().div(127.5).sub(1).unsqueeze(1)
        return to_t(self.images[st, ca]), to_t(self.images[st, cb]), torch.from_numpy(ca), torch.from_numpy(cb)


def training_sampler(ds, max_styles: int = 0, seed: int = 0) -> PairSampler:
    """The pairs E and G train on: seen categories x training font families only (unseen categories and
    held-out families never enter), optionally a random `max_styles` of the training styles (0: all)."""
    styles = ds.split_info["train_styles"]
    if max_styles:
        styles = sorted(np.random.default_rng(seed).choice(styles, size=max_styles, replace=False).tolist())
    return PairSampler(ds.images, ds.coverage, styles, ds.seen, seed=seed)


def image_loss(fake: torch.Tensor, real: torch.Tensor, perceptual, cfg: LatentTrainConfig) -> tuple[torch.Tensor, dict]:
    l1 = (fake - real).abs().mean()  # on the raw output: pulls out-of-range pixels back
    lp = perceptual(fake.clamp(-1, 1), real).mean() if cfg.lambda_lpips > 0 else fake.new_zeros(())
    return cfg.lambda_l1 * l1 + cfg.lambda_lpips * lp, {"l1": l1.item(), "lpips": lp.item()}


def train_latent_space(model: LatentSpace, sampler: PairSampler, num_categories: int, cfg: LatentTrainConfig,
                       perceptual, discriminator=None, progress: bool = True) -> dict[str, list[float]]:
    """Train E and G in place; returns the loss history. `perceptual(x, y) -> (B,)` must be differentiable."""
    from tagelib.stylegan2 import d_logistic_loss, g_nonsaturating_loss, r1_penalty

    torch.manual_seed(cfg.seed)
    shapes_rng = torch.Generator().manual_seed(cfg.seed + 1)
    n_pseudo = round(cfg.pseudo_fraction * cfg.batch_size)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.0 if cfg.lambda_adv > 0 else 0.9, 0.99))
    decay_from = int(cfg.lr_decay_start * cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 1.0 if t < decay_from else 1.0 - 0.9 * (t - decay_from) / max(cfg.steps - decay_from, 1))
    use_adv = cfg.lambda_adv > 0 and discriminator is not None
    if use_adv:
        d_opt = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
    class_mean = torch.zeros(num_categories, model.n_latent, model.cfg.generator.style_dim)  # m_c
    seen = torch.zeros(num_categories, dtype=torch.bool)
    hist: dict[str, list[float]] = {k: [] for k in ("loss", "l1", "lpips", "cross_l1", "cross_lpips", "d_loss", "seconds")}
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train E+G", disable=not progress)
    for step in bar:
        xa, xb, ca, cb = sampler.sample(cfg.batch_size)
        xa, xb = augment_pairs(xa, xb, cfg.augment, shapes_rng)
        x, c = torch.cat([xa, xb]), torch.cat([ca, cb])
        x_rec = torch.cat([x, pseudo_glyphs(xa[:n_pseudo], xb[:n_pseudo], shapes_rng)]) if n_pseudo else x
        w_all = model.encode(x_rec)  # (2n + n_pseudo, L, D)
        fake = model.decode(w_all)
        loss, parts = image_loss(fake, x_rec, perceptual, cfg)
        w = w_all[: len(x)]  # codes of the real glyphs: (2n, L, D)
        with torch.no_grad():  # m_c <- EMA of the batch's per-category mean code
            sums = torch.zeros_like(class_mean).index_add_(0, c, w.detach())
            counts = torch.bincount(c, minlength=num_categories).float()
            present = counts > 0
            batch_mean = sums[present] / counts[present, None, None]
            first = present & ~seen
            class_mean[first] = batch_mean[first[present]]
            class_mean[present] = cfg.class_ema * class_mean[present] + (1 - cfg.class_ema) * batch_mean
            seen |= present
        cross = {"l1": float("nan"), "lpips": float("nan")}
        if cfg.lambda_cross > 0 and step >= cfg.cross_warmup:
            n = len(xa)
            w_ab = class_mean[cb] + (w[:n] - class_mean[ca])  # style of a, category of b
            w_ba = class_mean[ca] + (w[n:] - class_mean[cb])
            fake_x = model.decode(torch.cat([w_ab, w_ba]))
            cross_loss, cross = image_loss(fake_x, torch.cat([xb, xa]), perceptual, cfg)
            loss = loss + cfg.lambda_cross * cross_loss
        d_loss_value = float("nan")
        if use_adv:
            loss = loss + cfg.lambda_adv * g_nonsaturating_loss(discriminator(fake))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if use_adv:  # discriminator step on the same batch
            real = x_rec.detach().requires_grad_(step % 4 == 0)
            real_pred, fake_pred = discriminator(real), discriminator(fake.detach())
            d_loss = d_logistic_loss(real_pred, fake_pred)
            if step % 4 == 0:
                d_loss = d_loss + cfg.r1_gamma / 2 * r1_penalty(real_pred, real) * 4
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            d_loss_value = d_loss.item()
        for k, v in (("loss", loss.item()), ("l1", parts["l1"]), ("lpips", parts["lpips"]), ("cross_l1", cross["l1"]),
                     ("cross_lpips", cross["lpips"]), ("d_loss", d_loss_value), ("seconds", time.perf_counter() - start)):
            hist[k].append(v)
        if step % 20 == 0:
            bar.set_postfix(l1=f"{parts['l1']:.3f}", lpips=f"{parts['lpips']:.3f}", cross=f"{cross['lpips']:.3f}")
    model.eval()
    model.class_mean = class_mean
    return hist
