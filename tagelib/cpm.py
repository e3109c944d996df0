"""CPM — TAGE's Code Prediction Module: a bidirectional Transformer over the |S| edited layers' CLM codes.

What it models. Conditioned on a shot's own full code, the residual — hence the codes — would be determined, and a
predictor could only re-learn NN matching. The CPM instead models the JOINT distribution of the |S| attribute codes
given the category part of the code: p(c_1..c_|S| | w̄), with w̄ a k-shot class embedding (the mean code of k glyphs
of one category; the category always comes from shots, never from a label). Sampling then proposes code
combinations that glyphs of seen categories actually use together. `condition="own_code"` trains the
degenerate alternative p(codes | the sample's own code) so the notebook can show it collapses onto NN matching.

Sequence (B, T, d_model), T = L + P + |S|:
    [ L conditioning tokens: Linear(w̄_l) + layer embedding ] [ P prompt tokens (PSM, 0 or 1) ] [ |S| code tokens ]
Code tokens embed their code vector (the frozen CLM codebook, projected) or a learned [MASK]. Attention is
bidirectional. Training is MaskGIT's: a cosine-scheduled random subset of code tokens is masked and predicted
(cross-entropy against the CLM indices plus λ·L2 between the soft code softmax(logits)·C and the true residual).
Sampling is MaskGIT's iterative parallel decoding (`sample`): every step samples all masked layers (temperature,
top-k) and keeps the most confident, so |S| = 8 layers take a few passes instead of 8, no layer order is
imposed (coarse and fine layers inform each other), and any subset of layers can be held fixed while the
others are re-sampled (attribute editing).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagelib.codebook import nearest_codes
from tagelib.config import build_config
from tagelib.distributed import draw, multinomial


@dataclass
class CPMConfig:
    num_codes: int  # N, CLM codebook size
    code_dim: int  # D, one W+ layer
    n_latent: int  # L, layers of the conditioning code w̄
    n_edit: int  # |S|, edited layers = code tokens
    d_model: int = 128  # Transformer width
    depth: int = 4  # Transformer blocks
    heads: int = 4  # attention heads
    dropout: float = 0.1  # dropout in the blocks
    prompt_dim: int = 0  # PSM: size of the CLIP text embedding injected as a prefix token (0: no prompt token)

    def __post_init__(self) -> None:
        for name in ("num_codes", "code_dim", "n_latent", "n_edit", "d_model", "depth", "heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"CPMConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by heads={self.heads}")
        if not 0 <= self.dropout < 1 or self.prompt_dim < 0:
            raise ValueError(f"need 0 <= dropout < 1 and prompt_dim >= 0, got {self.dropout}, {self.prompt_dim}")

    @classmethod
    def from_dict(cls, values) -> "CPMConfig":
        return build_config(cls, values)


class CodePredictor(nn.Module):
    """p(codes on S | w̄ [, prompt]) as a masked-token Transformer; `codebook` (N, D) is the frozen CLM codebook."""

    def __init__(self, cfg: CPMConfig, codebook: Tensor):
        super().__init__()
        if tuple(codebook.shape) != (cfg.num_codes, cfg.code_dim):
            raise ValueError(f"codebook {tuple(codebook.shape)} != ({cfg.num_codes}, {cfg.code_dim})")
        self.config = cfg
        d = cfg.d_model
        self.register_buffer("codebook", codebook.detach().clone().float())  # (N, D), frozen
        self.cond_in = nn.Linear(cfg.code_dim, d)
        self.cond_pos = nn.Parameter(0.02 * torch.randn(cfg.n_latent, d))
        self.code_in = nn.Linear(cfg.code_dim, d)
        self.code_pos = nn.Parameter(0.02 * torch.randn(cfg.n_edit, d))
        self.mask_token = nn.Parameter(0.02 * torch.randn(d))
        if cfg.prompt_dim:
            self.prompt_in = nn.Linear(cfg.prompt_dim, d)
            self.null_prompt = nn.Parameter(0.02 * torch.randn(d))  # "no prompt" (and prompt dropout in training)
        block = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, cfg.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, cfg.depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.num_codes))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())

    def forward(self, cond: Tensor, codes: Tensor, masked: Tensor, prompt: Tensor | None = None,
                prompt_on: Tensor | None = None) -> Tensor:
        """Logits (B, |S|, N) for every code token.

        cond (B, L, D) conditioning code; codes (B, |S|) long (ignored where masked); masked (B, |S|) bool;
        prompt (B, prompt_dim) CLIP text embeddings or None; prompt_on (B,) bool: False uses the null prompt.
        """
        B = cond.shape[0]
        tokens = [self.cond_in(cond) + self.cond_pos]  # (B, L, d)
        if self.config.prompt_dim:
            null = self.null_prompt.expand(B, -1)
            if prompt is None:
                p = null
            else:
                on = torch.ones(B, dtype=torch.bool, device=cond.device) if prompt_on is None else prompt_on
                p = torch.where(on[:, None], self.prompt_in(prompt), null)
            tokens.append(p[:, None])  # (B, 1, d)
        elif prompt is not None:
            raise ValueError("this CPM has no prompt token (prompt_dim=0); train a PSM model to use prompts")
        x = self.code_in(self.codebook[codes.clamp(0, self.config.num_codes - 1)])  # (B, |S|, d)
        x = torch.where(masked[..., None], self.mask_token, x) + self.code_pos
        tokens.append(x)
        h = self.blocks(torch.cat(tokens, 1))  # (B, T, d)
        return self.head(h[:, -self.config.n_edit:])  # (B, |S|, N)

    def soft_codes(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        """Differentiable expected code vectors softmax(logits / t) · C: (B, |S|, N) -> (B, |S|, D)."""
        return torch.softmax(logits / temperature, -1) @ self.codebook


# ----------------------------------------------------------------------------- training objective


def mask_schedule(ratio: Tensor) -> Tensor:
    """MaskGIT's cosine schedule: the share of tokens still masked at progress `ratio` in [0, 1]."""
    return torch.cos(ratio * math.pi / 2)


def random_mask(batch: int, n_tokens: int, generator: torch.Generator | None = None) -> Tensor:
    """Training masks (B, n) bool: per row, ceil(cos(π/2 · u) · n) >= 1 random tokens masked, u ~ U(0, 1)."""
    u = torch.rand(batch, generator=generator)
    n_masked = torch.ceil(mask_schedule(u) * n_tokens).clamp(1, n_tokens)  # (B,)
    rank = torch.rand(batch, n_tokens, generator=generator).argsort(1).argsort(1)  # a random permutation per row
    return rank < n_masked[:, None]


def cpm_loss(logits: Tensor, target: Tensor, masked: Tensor, residual: Tensor, codebook: Tensor,
             lambda_ce: float = 1.0, lambda_l2: float = 1.0, normalizer: Tensor | float | None = None
             ) -> tuple[Tensor, dict[str, float]]:
    """λ_ce · CE(logits, CLM indices) + λ_l2 · ||softmax(logits)·C − a||², both averaged over masked tokens.

    logits (B, |S|, N); target (B, |S|) CLM indices of the residual a (B, |S|, D); masked (B, |S|) bool. The L2 is
    the mean squared error per vector element, so it is comparable across code sizes. `normalizer` replaces the
    number of masked tokens (data-parallel training divides by the global batch's count over the ranks).
    """
    m = masked.float()
    n = m.sum().clamp_min(1.0) if normalizer is None else normalizer
    ce = (F.cross_entropy(logits.transpose(1, 2), target, reduction="none") * m).sum() / n
    soft = torch.softmax(logits, -1) @ codebook  # (B, |S|, D)
    l2 = (((soft - residual) ** 2).mean(-1) * m).sum() / n
    loss = lambda_ce * ce + lambda_l2 * l2
    return loss, {"ce": ce.item(), "l2": l2.item()}


# ----------------------------------------------------------------------------- decoding


def sample_logits(logits: Tensor, temperature: float, top_k: int = 0, generator: torch.Generator | None = None
                  ) -> tuple[Tensor, Tensor]:
    """One index per row of logits (..., N): (indices (...), their probabilities (...)).

    temperature 0 is argmax; top_k > 0 samples among the k largest logits only. Probabilities are those of the
    tempered, truncated distribution (1 for argmax).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0 or top_k > logits.shape[-1]:
        raise ValueError(f"top_k must be in [0, {logits.shape[-1]}], got {top_k}")
    flat = logits.reshape(-1, logits.shape[-1]).float()  # (M, N)
    if temperature == 0:
        idx = flat.argmax(-1)
        return idx.view(logits.shape[:-1]), torch.ones(idx.shape, device=logits.device).view(logits.shape[:-1])
    if top_k:
        kth = flat.topk(top_k, -1).values[:, -1:]  # (M, 1)
        flat = flat.masked_fill(flat < kth, float("-inf"))
    probs = torch.softmax(flat / temperature, -1)
    idx = multinomial(probs, generator)[:, 0]
    return idx.view(logits.shape[:-1]), probs.gather(1, idx[:, None])[:, 0].view(logits.shape[:-1])


@torch.no_grad()
def sample(cpm: CodePredictor, cond: Tensor, temperature: float = 1.0, top_k: int = 0, steps: int = 4,
           prompt: Tensor | None = None, fixed: Tensor | None = None, fixed_codes: Tensor | None = None,
           order: str = "confidence", generator: torch.Generator | None = None, guidance: float = 1.0) -> Tensor:
    """MaskGIT decoding: codes (B, |S|) for conditioning codes cond (B, L, D).

    Each of `steps` passes samples every masked layer and keeps the most confident so that cos(π/2 · t/steps)·|S|
    stay masked after pass t (all fixed after the last). `order="random"` keeps a random subset instead of the most
    confident (with steps = |S|: any-order ancestral sampling, an exact sample of the model's chain of conditionals;
    confidence ordering favours the modes). `fixed` (B, |S|) bool with `fixed_codes` (B, |S|) holds those layers'
    codes and re-samples the others. Temperature 0 is greedy (argmax) decoding. `guidance` g (with a prompt):
    classifier-free guidance, logits = l_null + g · (l_prompt − l_null); 1 is the prompted model as trained.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if order not in ("confidence", "random"):
        raise ValueError(f"order must be 'confidence' or 'random', got {order!r}")
    was_training = cpm.training
    cpm.eval()
    B, n = cond.shape[0], cpm.config.n_edit
    codes = torch.zeros(B, n, dtype=torch.long, device=cond.device) if fixed_codes is None else fixed_codes.clone()
    masked = torch.ones(B, n, dtype=torch.bool, device=cond.device) if fixed is None else ~fixed
    n_free = masked.sum(1)  # (B,)
    for t in range(steps):
        logits = cpm(cond, codes, masked, prompt)  # (B, |S|, N)
        if prompt is not None and guidance != 1.0:
            null = cpm(cond, codes, masked, prompt, torch.zeros(B, dtype=torch.bool, device=cond.device))
            logits = null + guidance * (logits - null)
        drawn, conf = sample_logits(logits, temperature, top_k, generator)  # (B, |S|) each
        codes = torch.where(masked, drawn, codes)
        keep_masked = torch.floor(mask_schedule(torch.tensor((t + 1) / steps)) * n_free).long()  # (B,)
        if order == "random":
            conf = draw(torch.rand, conf.shape, generator=generator, device=conf.device)
        conf = conf.masked_fill(~masked, float("inf"))  # already decided: never re-masked
        rank = conf.argsort(1).argsort(1)  # 0 = least confident
        masked = rank < keep_masked[:, None]
    cpm.train(was_training)
    return codes


@torch.no_grad()
def edit_shots(cpm: CodePredictor, w_shots: Tensor, layers: list[int], n: int, resample: int, temperature: float = 1.0,
               top_k: int = 0, order: str = "random", prompt: Tensor | None = None,
               generator: torch.Generator | None = None, guidance: float = 1.0) -> Tensor:
    """TAGE's attribute editing of k shots: n W+ codes (n, L, D), shots cycled.

    Each sample starts from one shot, written around the k-shot class embedding w̄ as its nearest CLM codes on S plus
    the detail the codes miss (a − C[idx]); the CPM re-samples `resample` random layers' codes given w̄ [, prompt] and
    the shot's codes on the other layers (decoding one layer per pass; `guidance` as in `sample`). `resample` = 0
    gives the shots back exactly.
    w_shots (k, L, D); prompt (n, prompt_dim) or None.
    """
    n_edit = len(layers)
    if not 0 <= resample <= n_edit:
        raise ValueError(f"resample must be in [0, {n_edit}], got {resample}")
    w_bar = w_shots.mean(0)  # (L, D)
    a = w_shots[:, layers] - w_bar[layers]  # (k, |S|, D) residuals
    idx, _ = nearest_codes(a, cpm.codebook)  # (k, |S|)
    detail = a - cpm.codebook[idx]  # (k, |S|, D)
    shot = torch.arange(n) % len(w_shots)  # (n,) shots cycled
    rank = draw(torch.rand, n, n_edit, generator=generator, device=w_shots.device).argsort(1).argsort(1)
    fixed = rank >= resample  # (n, |S|): `resample` random layers free per sample
    cond = w_bar.expand(n, -1, -1)
    codes = idx[shot] if resample == 0 else sample(cpm, cond, temperature, top_k, max(1, resample), prompt, fixed,
                                                   idx[shot], order, generator, guidance)
    out = cond.clone()
    out[:, layers] = w_bar[layers] + cpm.codebook[codes] + detail[shot]
    return out
