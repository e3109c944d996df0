"""CLM — the Codebook Learning Module — and nearest-neighbour generation on top of it.

Every edited layer's residual a_l = w_l − w̄_c is replaced by its nearest code of one shared codebook
(`tagelib.codebook.Codebook`). E and G are frozen, so the residuals are fixed data: the reconstruction
loss reaches the selected codes directly (the straight-through path would have nothing to train), and
the VQ codebook term pulls codes towards the residuals they quantize. k-means initialisation and periodic
dead-code revival keep the codebook in use.

Generation for an unseen category from a shot code w_shot and the k-shot class embedding w̄:
- NN matching: quantize the shot's residual to its nearest codes and decode — faithful, but one image per
  shot ("image collapse", the baseline TAGE's CPM must beat);
- k-nearest sampling: per layer, draw one of the k nearest codes — the fair, diversity-seeking version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import repeat
from tqdm.auto import trange

from tagelib.codebook import Codebook, perplexity, usage
from tagelib.config import build_config
from tagelib.distributed import SINGLE, Distributed
from tagelib.factorize import compose, residuals


@dataclass
class CLMTrainConfig:
    steps: int = 600  # optimisation steps
    batch_size: int = 64  # codes per step
    lr: float = 1e-3  # Adam learning rate of the codebook
    lambda_lpips: float = 1.0  # LPIPS weight in the reconstruction loss
    lambda_vq: float = 1.0  # weight of the VQ loss (codebook term + beta * commitment term)
    revive_every: int = 100  # steps between dead-code revivals (0: never)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got steps={self.steps}, batch_size={self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    @classmethod
    def from_dict(cls, values) -> "CLMTrainConfig":
        return build_config(cls, values)


def train_clm(codebook: Codebook, w: torch.Tensor, class_emb_per_sample: torch.Tensor, layers: Sequence[int],
              decode: Callable, perceptual: Callable, cfg: CLMTrainConfig, progress: bool = True,
              dist: Distributed = SINGLE) -> dict[str, list]:
    """Train `codebook` on residuals of codes w (N, L, D) around their class embeddings (N, L, D).

    `decode(w) -> images` is the frozen generator; targets are the decoded original codes G(w).
    Returns the per-step history (loss, l1, lpips, vq, revived, seconds) and the final usage and
    perplexity of the codebook over all residuals (one value each). `dist` (torchrun): every rank draws the
    same global batch, decodes its rows, and sums its code hits with the others', so usage and revivals agree.
    Training runs on `dist.device`; the codebook ends on the device it started on.
    """
    gen = torch.Generator().manual_seed(cfg.seed)  # CPU: the same draws on every device
    device, home = dist.device, codebook.embed.device  # train on this rank's device, hand the codebook back
    codebook.to(device)
    w, class_emb_per_sample = w.to(device), class_emb_per_sample.to(device)
    a = residuals(w, class_emb_per_sample, layers)  # (N, |S|, D)
    codebook.init_kmeans(a, generator=gen)
    model = dist.wrap(codebook)
    codebook.hits_reducer = dist.sum if dist.active else None
    opt = torch.optim.Adam(codebook.parameters(), lr=cfg.lr)
    hist: dict[str, list] = {k: [] for k in ("loss", "l1", "lpips", "vq", "revived", "usage", "perplexity", "seconds")}
    start = time.perf_counter()
    codebook.train()
    for step in trange(cfg.steps, desc="CLM", disable=not progress or not dist.is_main):
        batch = torch.randint(len(w), (min(cfg.batch_size, len(w)),), generator=gen)  # global, same on every rank
        batch = batch.to(device)
        idx = batch[dist.rows(len(batch))]  # this rank's rows
        _, codes, vq = model(a[idx])  # codes (b, |S|)
        q = codebook.get_output_from_indices(codes)  # (b, |S|, D), differentiable w.r.t. the codebook
        w_hat = compose(class_emb_per_sample[idx], q, layers, base=w[idx])
        with torch.no_grad():
            target = decode(w[idx]).clamp(-1, 1)
        fake = decode(w_hat)
        l1 = (fake - target).abs().mean()
        lp = perceptual(fake.clamp(-1, 1), target).mean()
        loss = l1 + cfg.lambda_lpips * lp + cfg.lambda_vq * vq
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        revived = codebook.revive_dead_codes(a[batch], generator=gen) if cfg.revive_every and (step + 1) % cfg.revive_every == 0 else 0
        for k, v in (("loss", dist.mean(loss.item())), ("l1", dist.mean(l1.item())), ("lpips", dist.mean(lp.item())),
                     ("vq", dist.mean(vq.item())), ("revived", revived), ("seconds", time.perf_counter() - start)):
            hist[k].append(v)
    codebook.hits_reducer = None
    codebook.eval()
    _, all_codes = quantize(codebook, a)
    hist["usage"].append(usage(all_codes, codebook.config.num_codes))
    hist["perplexity"].append(perplexity(all_codes, codebook.config.num_codes))
    codebook.to(home)
    return hist


@torch.no_grad()
def quantize(codebook: Codebook, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codes of residuals a (..., D): (quantized (..., D), indices (...))."""
    q, idx, _ = codebook(a)
    return q, idx


@torch.no_grad()
def nn_generate(codebook: Codebook, w_shot: torch.Tensor, class_emb: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
    """NN matching: w_shot (B, L, D), class embedding (B, L, D) or (L, D) -> one W+ code per shot (B, L, D)."""
    q, _ = quantize(codebook, residuals(w_shot, class_emb, layers))
    return compose(class_emb.expand_as(w_shot), q, layers, base=w_shot)


@torch.no_grad()
def knn_generate(codebook: Codebook, w_shot: torch.Tensor, class_emb: torch.Tensor, layers: Sequence[int],
                 n_samples: int, k: int = 8, temperature: float = 1.0, rng: torch.Generator | None = None) -> torch.Tensor:
    """k-nearest sampling: n_samples codes per shot, each layer drawing one of its k nearest codes.

    w_shot (B, L, D) -> (B * n_samples, L, D), shot-major. `temperature` is relative to the mean squared
    distance to the nearest code, so it is scale-free.
    """
    a = residuals(w_shot, class_emb, layers)  # (B, |S|, D)
    a_rep = repeat(a, "b s d -> (b m) s d", m=n_samples)
    scale = F.mse_loss(quantize(codebook, a)[0], a, reduction="none").sum(-1).mean().clamp_min(1e-8)
    q, _ = codebook.sample_k_nearest(a_rep, k, temperature=temperature * scale.item(), generator=rng)
    w_rep = repeat(w_shot, "b l d -> (b m) l d", m=n_samples)
    ce = repeat(class_emb.expand_as(w_shot), "b l d -> (b m) l d", m=n_samples)
    return compose(ce, q, layers, base=w_rep)
