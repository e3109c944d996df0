"""CLM: the discrete attribute codebook of TAGE (a vector quantizer).

Each edited layer's category-irrelevant residual ``a_l = w_l - w̄_c`` (a vector of size ``dim``)
is replaced by its nearest entry of a learned codebook ``C`` of ``num_codes`` vectors.

Conventions (checked in ``tests/test_codebook.py``):

* ``Codebook.forward(x) -> (quantized, indices, loss)``, as in lucidrains/vector-quantize-pytorch;
  ``get_output_from_indices(indices)`` decodes indices to exactly the forward's ``quantized``.
* ``loss = ||sg[x] - q||² + beta * ||x - sg[q]||²`` (means over elements): ``beta`` weights the
  COMMITMENT term (the encoder side), as in VQ-VAE. taming-transformers'
  ``VectorQuantizer2(legacy=True)`` puts beta on the other term; a test pins ours.
* Straight-through estimator: the value of ``quantized`` is ``q``, its gradient w.r.t. ``x`` is
  the identity; no gradient flows from ``quantized`` into the codebook (only the loss trains it).
* Codebook collapse is countered by k-means initialisation (``init_kmeans``) and by reviving
  dead codes (``revive_dead_codes``) from EMA usage counts kept during training forwards.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagelib.distributed import draw, multinomial


@dataclass
class CodebookConfig:
    num_codes: int = 10000  # N, codebook size (paper: 10,000)
    dim: int = 512  # D, size of one code = one W+ layer
    beta: float = 0.25  # weight on the COMMITMENT term ||x - sg[q]||²
    kmeans_iters: int = 10  # Lloyd iterations in init_kmeans
    dead_threshold: float = 1.0  # a code whose EMA usage count is below this is dead
    usage_decay: float = 0.99  # usage_count <- decay * usage_count + hits in this batch
    chunk_size: int = 1024  # queries per distance block (chunk x N floats); see benchmarks/bench_nearest.py

    def __post_init__(self) -> None:
        if self.num_codes < 1 or self.dim < 1 or self.chunk_size < 1 or self.kmeans_iters < 0:
            raise ValueError(f"need num_codes, dim, chunk_size >= 1 and kmeans_iters >= 0; got {self}")
        if self.beta < 0 or self.dead_threshold < 0 or not 0 <= self.usage_decay <= 1:
            raise ValueError(f"need beta, dead_threshold >= 0 and usage_decay in [0, 1]; got {self}")


# ----------------------------------------------------------------------------- nearest codes


@torch.no_grad()
def nearest_codes(
    x: Tensor, codebook: Tensor, chunk_size: int = 1024, k: int | None = None
) -> tuple[Tensor, Tensor]:
    """Nearest codebook entries of each query, by squared Euclidean distance.

    x: (..., D) queries; codebook: (N, D). Distances use ``||x||² - 2 x·c + ||c||²`` with one
    ``addmm`` per block of ``chunk_size`` queries, so the peak extra memory is chunk_size x N floats
    (never M x N). Returns detached ``(indices, sq_distances)``: shapes (...) for ``k=None``,
    (..., k) sorted nearest-first for an integer ``k``.
    """
    if x.shape[-1] != codebook.shape[-1]:
        raise ValueError(f"query dim {x.shape[-1]} != codebook dim {codebook.shape[-1]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n_codes = codebook.shape[0]
    kk = 1 if k is None else k
    if not 1 <= kk <= n_codes:
        raise ValueError(f"k must be in [1, {n_codes}], got {k}")
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1]).to(codebook)  # (M, D), codebook's dtype and device
    c_sq = codebook.pow(2).sum(-1).unsqueeze(0)  # (1, N)
    idx_out = torch.empty(flat.shape[0], kk, dtype=torch.long, device=codebook.device)  # (M, k)
    dist_out = torch.empty(flat.shape[0], kk, dtype=codebook.dtype, device=codebook.device)  # (M, k)
    for start in range(0, flat.shape[0], chunk_size):
        xc = flat[start : start + chunk_size]  # (m, D)
        d = torch.addmm(c_sq, xc, codebook.t(), beta=1.0, alpha=-2.0)  # (m, N) = ||c||² - 2 x·c
        if k is None:
            dmin, imin = d.min(dim=1, keepdim=True)  # (m, 1)
        else:
            dmin, imin = d.topk(kk, dim=1, largest=False, sorted=True)  # (m, k)
        # ||x||² is constant per row: add it only to the kept entries; clamp rounding below 0.
        dist_out[start : start + xc.shape[0]] = (dmin + xc.pow(2).sum(-1, keepdim=True)).clamp_min_(0)
        idx_out[start : start + xc.shape[0]] = imin
        del d  # free this block before the next addmm allocates one: peak is one block, not two
    if k is None:
        return idx_out.reshape(lead), dist_out.reshape(lead)
    return idx_out.reshape(*lead, kk), dist_out.reshape(*lead, kk)


# ----------------------------------------------------------------------------- statistics


def usage(indices: Tensor, num_codes: int) -> float:
    """Fraction of the ``num_codes`` codes that occur at least once in ``indices``."""
    return torch.unique(indices).numel() / num_codes


def perplexity(indices: Tensor, num_codes: int) -> float:
    """exp(entropy) of the index histogram: N for uniform use of N codes, 1 for a single code."""
    hist = torch.bincount(indices.reshape(-1), minlength=num_codes).double()  # (num_codes,)
    p = hist / hist.sum().clamp_min(1.0)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()  # 0 log 0 = 0
    return math.exp(entropy.item())


# ----------------------------------------------------------------------------- the module


class Codebook(nn.Module):
    """Vector quantizer with a gradient-trained codebook, k-means init and dead-code revival.

    ``usage_count`` (N,) is an exponentially discounted hit count, updated in training forwards:
    ``usage_count <- usage_decay * usage_count + hits``; it is roughly the number of hits over the
    last ``1 / (1 - usage_decay)`` batches (100 by default). Codes below ``dead_threshold`` are dead.
    """

    def __init__(self, config: CodebookConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Parameter(torch.randn(config.num_codes, config.dim))  # (N, D)
        self.register_buffer("usage_count", torch.zeros(config.num_codes))  # (N,)
        self.hits_reducer = None  # data-parallel training: sums a batch's hits (N,) over the ranks

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())

    # --- quantization -----------------------------------------------------------------------

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (..., D) -> quantized (..., D), indices (...) long, loss () scalar."""
        if x.shape[-1] != self.config.dim:
            raise ValueError(f"expected last dim {self.config.dim}, got shape {tuple(x.shape)}")
        indices, _ = nearest_codes(x, self.embed.detach(), self.config.chunk_size)  # (...)
        q = F.embedding(indices, self.embed)  # (..., D), carries grad to the codebook
        codebook_loss = F.mse_loss(q, x.detach())  # moves codes towards inputs
        commitment_loss = F.mse_loss(x, q.detach())  # keeps inputs near their codes
        loss = codebook_loss + self.config.beta * commitment_loss
        # Straight-through: value exactly q (bit-identical to get_output_from_indices),
        # gradient identity w.r.t. x; same gradients as x + (q - x).detach().
        quantized = q.detach() + (x - x.detach())
        if self.training:
            self._update_usage(indices)
        return quantized, indices, loss

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """indices (...) long -> code vectors (..., D)."""
        return F.embedding(indices, self.embed)

    @torch.no_grad()
    def _update_usage(self, indices: Tensor) -> None:
        hits = torch.bincount(indices.reshape(-1), minlength=self.config.num_codes)  # (N,)
        if self.hits_reducer is not None:
            hits = self.hits_reducer(hits)
        self.usage_count.mul_(self.config.usage_decay).add_(hits.to(self.usage_count.dtype))

    @torch.no_grad()
    def sample_k_nearest(
        self, x: Tensor, k: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """"k-nearest sampling" baseline: draw one of the k nearest codes per query.

        Probabilities are softmax(-d / temperature) over the k nearest squared distances d, so
        ``temperature`` is in squared-distance units; temperature -> 0 or k = 1 is plain NN matching.
        x: (..., D) -> (codes (..., D), indices (...)).
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        idx, d = nearest_codes(x, self.embed, self.config.chunk_size, k=k)  # (..., k) each
        logits = -(d - d[..., :1]) / temperature  # shift by the nearest: same softmax, no overflow
        probs = torch.softmax(logits.reshape(-1, k).double(), dim=-1)  # (M, k)
        pick = multinomial(probs, generator)  # (M, 1)
        indices = idx.reshape(-1, k).gather(1, pick).reshape(idx.shape[:-1])  # (...)
        return self.get_output_from_indices(indices), indices

    # --- initialisation and collapse cures -----------------------------------------------------

    @torch.no_grad()
    def init_kmeans(
        self,
        data: Tensor,
        iters: int | None = None,
        max_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """Set the codebook to k-means centroids of ``data`` (..., D); returns the final MSE.

        Centroids start at random data points (with replacement, plus tiny noise, when there are
        fewer points than codes); empty clusters are re-seeded with random data points. Usage counts
        are reset. ``max_samples`` caps the points used (random subset).
        """
        n, dim = self.config.num_codes, self.config.dim
        pts = data.reshape(-1, dim).to(self.embed)  # (M, D)
        m = pts.shape[0]
        if m == 0:
            raise ValueError("init_kmeans needs at least one data point")
        if max_samples is not None and m > max_samples:
            pts = pts[draw(torch.randperm, m, generator=generator, device=pts.device)[:max_samples]]
            m = max_samples
        if m >= n:
            centroids = pts[draw(torch.randperm, m, generator=generator, device=pts.device)[:n]].clone()
        else:
            pick = draw(torch.randint, m, (n,), generator=generator, device=pts.device)
            centroids = pts[pick] + 1e-3 * pts.std() * _randn_like(pts[pick], generator)
        for _ in range(self.config.kmeans_iters if iters is None else iters):
            assign, _ = nearest_codes(pts, centroids, self.config.chunk_size)  # (M,)
            counts = torch.bincount(assign, minlength=n)  # (N,)
            sums = torch.zeros_like(centroids).index_add_(0, assign, pts)  # (N, D)
            full = counts > 0
            centroids[full] = sums[full] / counts[full].unsqueeze(1).to(pts.dtype)
            n_empty = int((~full).sum())
            if n_empty:
                centroids[~full] = pts[draw(torch.randint, m, (n_empty,), generator=generator, device=pts.device)]
        self.embed.copy_(centroids)
        self.usage_count.zero_()
        _, d = nearest_codes(pts, centroids, self.config.chunk_size)
        return (d.sum() / pts.numel()).item()

    def dead_codes(self) -> Tensor:
        """Boolean mask (N,) of codes whose EMA usage count is below ``dead_threshold``."""
        return self.usage_count < self.config.dead_threshold

    @torch.no_grad()
    def revive_dead_codes(
        self, batch: Tensor, noise: float = 0.01, generator: torch.Generator | None = None
    ) -> int:
        """Move every dead code onto a random vector of ``batch`` (..., D), plus small noise.

        The noise is ``noise`` x the batch's std, so codes revived on the same input separate.
        Revived codes get usage count ``dead_threshold`` plus one batch's worth of decay headroom
        (alive now, dead again if still unused at a later call). Call it every few hundred steps,
        not every step. Returns the number of codes revived. Note: optimizer state (e.g. Adam
        moments) of the replaced rows is left as is.
        """
        dead = self.dead_codes()  # (N,)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        pts = batch.detach().reshape(-1, self.config.dim).to(self.embed)  # (M, D)
        if pts.shape[0] == 0:
            raise ValueError("revive_dead_codes needs a non-empty batch")
        pick = draw(torch.randint, pts.shape[0], (n_dead,), generator=generator, device=pts.device)
        scale = noise * (pts.std() if pts.numel() > 1 else pts.new_tensor(1.0))
        self.embed[dead] = pts[pick] + scale * _randn_like(pts[pick], generator)
        self.usage_count[dead] = self.config.dead_threshold / self.config.usage_decay
        return n_dead


def _randn_like(t: Tensor, generator: torch.Generator | None) -> Tensor:
    return draw(torch.randn, t.shape, generator=generator, dtype=t.dtype, device=t.device)
