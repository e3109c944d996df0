"""PSM — TAGE's Prompt-driven Semantic Module: CLIP text prompts steer the CPM's code prediction.

Injection: the prompt's CLIP text embedding becomes ONE prefix token of the CPM's sequence (`CPMConfig.prompt_dim`,
`CodePredictor.prompt_in`), between the conditioning code's L tokens and the |S| code tokens. Every Transformer
block attends to it, so it is injected into every layer. We chose a prefix token over cross-attention because the
sequence is tiny (L + 1 + |S| = 17 tokens for glyphs): one more token costs nothing, needs no new attention
modules, and the same pretrained CPM weights serve with or without a prompt (a learned null token = no prompt).

Training (fine-tuning the notebook-04 CPM):
- supervised: each training code's prompt is a caption of ITS font's style (a random subset of the style's
  attributes, `tagelib.clip_glyph`), dropped (null token) with probability `prompt_dropout`, so the CPM learns
  p(codes | w̄, prompt) and keeps p(codes | w̄);
- CLIP loss, through a differentiable path to the codes: soft codes softmax(logits/t)·C on every layer, decoded by
  the frozen G, embedded by the frozen glyph CLIP; loss = λ_text (1 − cos(image, prompt)) + λ_image (1 − cos(image,
  the conditioning shot's image)) — the prompt's attributes, the shot's character.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tagelib.config import build_config
from tagelib.cpm import CodePredictor, CPMConfig
from tagelib.cpm_train import CPMData, CPMTrainConfig, train_cpm
from tagelib.distributed import SINGLE, Distributed
from tagelib.factorize import compose


@dataclass
class PSMTrainConfig:
    captions_per_style: int = 4  # random captions per font style, embedded once by the CLIP text tower
    prompt_dropout: float = 0.2  # share of training codes that see the null prompt (keeps the unprompted CPM)
    clip_batch: int = 16  # codes per step decoded through G for the CLIP loss (0: no CLIP loss)
    lambda_text: float = 0.5  # weight of 1 − cos(CLIP image, prompt)
    lambda_image: float = 0.5  # weight of 1 − cos(CLIP image, CLIP of the conditioning shot)
    soft_temperature: float = 1.0  # temperature of the soft codes on the CLIP path
    seed: int = 0

    def __post_init__(self) -> None:
        if self.captions_per_style < 1 or self.clip_batch < 0 or not 0 <= self.prompt_dropout < 1:
            raise ValueError(f"need captions_per_style >= 1, clip_batch >= 0, 0 <= prompt_dropout < 1; got {self}")
        if self.lambda_text < 0 or self.lambda_image < 0 or not self.soft_temperature > 0:
            raise ValueError(f"need non-negative CLIP weights and soft_temperature > 0; got {self}")

    @classmethod
    def from_dict(cls, values) -> "PSMTrainConfig":
        return build_config(cls, values)


def with_prompt_token(cpm: CodePredictor, prompt_dim: int) -> CodePredictor:
    """A copy of a trained CPM with a (new, trainable) prompt token of size `prompt_dim`."""
    cfg = CPMConfig(**{**cpm.config.__dict__, "prompt_dim": prompt_dim})
    out = CodePredictor(cfg, cpm.codebook)
    missing, unexpected = out.load_state_dict(cpm.state_dict(), strict=False)
    if unexpected or set(missing) - {"prompt_in.weight", "prompt_in.bias", "null_prompt"}:
        raise ValueError(f"not a CPM of the same shape: missing {missing}, unexpected {unexpected}")
    return out


class PromptBank:
    """Prompt embeddings (n_rows, M, E) — captions of each training code's font, or its image's own CLIP embedding
    (`tagelib.prompts`) — drawn per step with prompt dropout; `noise` > 0 moves each drawn unit embedding by that
    length in a random direction and renormalises it (LAFITE's bridge from image to text embeddings)."""

    def __init__(self, embeddings: torch.Tensor, style_row: torch.Tensor, dropout: float, noise: float = 0.0):
        if noise < 0:
            raise ValueError(f"prompt noise must be >= 0, got {noise}")
        self.embeddings, self.style_row, self.dropout, self.noise = embeddings, style_row, dropout, noise

    def __call__(self, i: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(self.embeddings.shape[1], (len(i),), generator=generator)
        on = torch.rand(len(i), generator=generator) >= self.dropout
        emb = self.embeddings[self.style_row[i], pick]  # (B, E)
        if self.noise:
            eps = torch.randn(emb.shape, generator=generator).to(emb)
            emb = F.normalize(emb + self.noise * F.normalize(eps, dim=-1), dim=-1)
        return emb, on  # (B, E), (B,)


@torch.no_grad()
def prompt_bank(embed_text: Callable[[list[str]], torch.Tensor], styles: Sequence[dict], style_ids: torch.Tensor,
                caption: Callable[[dict, np.random.Generator], str], cfg: PSMTrainConfig) -> PromptBank:
    """Embed `captions_per_style` random captions of each font in `style_ids` (N,) once: the PSM's training prompts."""
    rng = np.random.default_rng(cfg.seed)
    fonts, style_row = style_ids.unique(return_inverse=True)
    texts = [caption(styles[int(s)], rng) for s in fonts for _ in range(cfg.captions_per_style)]
    emb = embed_text(texts).view(len(fonts), cfg.captions_per_style, -1)  # (n_styles, M, E)
    return PromptBank(emb, style_row, cfg.prompt_dropout)


def clip_loss(model, layers: list[int], embed_images: Callable[[torch.Tensor], torch.Tensor], shot_images: torch.Tensor,
              cfg: PSMTrainConfig):
    """PSM's CLIP loss as a `train_cpm` extra term. `model.decode` is the frozen G, `embed_images` the frozen CLIP image
    tower (normalised, differentiable), `shot_images` (N, 1, H, W) the training codes' images."""

    def loss(cpm: CodePredictor, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        b = min(cfg.clip_batch, len(batch["cond"]))
        cond, prompt, on = batch["cond"][:b], batch["prompt"][:b], batch["prompt_on"][:b]
        all_masked = torch.ones(b, cpm.config.n_edit, dtype=torch.bool, device=cond.device)
        logits = cpm(cond, torch.zeros(b, cpm.config.n_edit, dtype=torch.long, device=cond.device), all_masked, prompt, on)
        q = cpm.soft_codes(logits, cfg.soft_temperature)  # (b, |S|, D), differentiable
        image = embed_images(model.decode(compose(cond, q, layers, base=cond)).clamp(-1, 1))  # (b, E)
        with torch.no_grad():
            shot = embed_images(shot_images[batch["shot"][:b].to(shot_images.device)].to(cond.device))
        text_term = ((1 - (image * prompt).sum(-1)) * on).sum() / on.sum().clamp_min(1)
        image_term = (1 - (image * shot).sum(-1)).mean()
        total = cfg.lambda_text * text_term + cfg.lambda_image * image_term
        return total, {"clip_text": text_term.item(), "clip_image": image_term.item()}

    return loss


def train_psm(cpm: CodePredictor, data: CPMData, bank: PromptBank, cpm_cfg: CPMTrainConfig, cfg: PSMTrainConfig,
              clip_term=None, progress: bool = True, dist: Distributed = SINGLE) -> dict[str, list]:
    """Fine-tune a prompt-token CPM (`with_prompt_token`) with the supervised prompts and, if given, the CLIP term,
    on `dist.device` (one process: the CLIP term is not data-parallel)."""
    if not cpm.config.prompt_dim:
        raise ValueError("the CPM has no prompt token; wrap it with psm.with_prompt_token(cpm, clip_embed_dim)")
    if bank.embeddings.shape[-1] != cpm.config.prompt_dim:
        raise ValueError(f"prompt embeddings have size {bank.embeddings.shape[-1]}, the CPM expects {cpm.config.prompt_dim}")
    extra = clip_term if cfg.clip_batch and (cfg.lambda_text or cfg.lambda_image) else None
    return train_cpm(cpm, data, cpm_cfg, prompts=bank, extra_loss=extra, progress=progress, desc="PSM", dist=dist)
