"""AGE baseline: Attribute Group Editing (Ding et al., CVPR 2022), on precomputed W+ codes.

Factorization (``tagelib.factorize``): ``w = w̄_c + a`` with the residual ``a`` on the edited
layers S. AGE learns a dictionary ``A`` of attribute directions, one (D, K) matrix per edited layer,
and one coefficient MLP per layer group; the edited code on S is ``w̄_c + A_l · n_{g(l)}`` with
``n_g = MLP_g(a_g)`` (K sparse coefficients per group). Encoder E and generator G stay frozen: we
train on precomputed codes ``w = E(x)``; only ``A`` and the MLPs learn.

Every constant below was checked against the public code UniBester/AGE (commit a9844fc):
``models/age.py`` (classes ``Ax`` and ``EqualLinear``), ``criteria/sparse_loss.py``,
``criteria/orthogonal_loss.py``, ``tools/train.py`` (``calc_loss``, optimizer),
``options/train_options.py`` / ``options/test_options.py`` (defaults), ``optimizer/ranger.py``,
``tools/inference.py`` (``get_n_distribution``, ``sampler``). Shapes: B batch, L = n_latent,
D = style_dim, S = edit_layers, G = number of groups, K = dict_size, C = categories.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from einops import einsum, repeat
from torch import Tensor, nn
from tqdm.auto import trange

from tagelib.checkpoint_io import build_stored_config, load_checked, load_module
from tagelib.config import build_config, check_choice
from tagelib.distributed import SINGLE, Distributed
from tagelib.factorize import compose, residuals, validate_layers
from tagelib.paths import checkpoint_file


@dataclass
class AGEConfig:
    n_latent: int  # L, W+ layers (paper: 18)
    style_dim: int  # D (paper: 512)
    edit_layers: tuple[int, ...] = (0, 1, 2, 3, 4, 5)  # S; AGE edits the coarse layers 0-5 (age.py: dw[:, :6])
    groups: tuple[tuple[int, ...], ...] = ((0, 1, 2), (3, 4, 5))  # layer groups sharing one MLP (Ax.encoder0/1)
    dict_size: int = 100  # K (train_options --A_length 100)
    mlp_hidden: tuple[int, ...] | None = None  # None = AGE's EqualLinear: (2D, 2D, D, K) then K outputs
    negative_slope: float = 0.2  # LeakyReLU slope in EqualLinear
    dict_init_std: float = 1.0  # A = torch.randn(6, 512, K): unit-variance init
    lambda_l2: float = 1.0  # --l2_lambda, F.mse_loss (mean over pixels)
    lambda_lpips: float = 1.0  # --lpips_lambda (LPIPS vgg, mean over batch)
    lambda_sparse: float = 0.005  # --sparse_lambda
    lambda_orth: float = 0.0005  # --orthogonal_lambda
    sparse_theta0: float = 0.5  # SparseLoss: sigmoid(theta0 * |n| + theta1)
    sparse_theta1: float = -1.0
    sparse_denominator: float = 32.0  # SparseLoss divides the batch SUM by 32 (not by the batch size)
    optimizer: str = "ranger"  # --optim_name default 'ranger' (alternative 'adam')
    lr: float = 1e-4  # --learning_rate

    def __post_init__(self) -> None:  # validate and normalise lists (from JSON) to tuples
        self.edit_layers = tuple(validate_layers(self.edit_layers, self.n_latent))
        self.groups = tuple(tuple(int(l) for l in g) for g in self.groups)
        if self.mlp_hidden is not None:
            self.mlp_hidden = tuple(int(h) for h in self.mlp_hidden)
            if any(h < 1 for h in self.mlp_hidden):
                raise ValueError(f"mlp_hidden widths must be >= 1, got {self.mlp_hidden}")
        for name in ("n_latent", "style_dim", "dict_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        flat = [l for g in self.groups for l in g]
        if not all(self.groups) or sorted(flat) != sorted(self.edit_layers):
            raise ValueError(
                f"groups {self.groups} must be non-empty and partition edit_layers {self.edit_layers} "
                "(every edited layer in exactly one group)"
            )
        for name in ("lambda_l2", "lambda_lpips", "lambda_sparse", "lambda_orth", "dict_init_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or not self.sparse_denominator > 0:
            raise ValueError("lr and sparse_denominator must be > 0")
        check_choice("optimizer", self.optimizer, ("ranger", "adam"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AGEConfig":
        """Build from a checkpoint's ``model_args``; unknown keys raise, listing the valid ones."""
        return build_config(cls, d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mlp(d_in: int, widths: tuple[int, ...], d_out: int, slope: float) -> nn.Sequential:
    # AGE EqualLinear (a plain MLP despite the name): fc1..fc5 with LeakyReLU(0.2) between, none after fc5.
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(d_in, w), nn.LeakyReLU(slope)]
        d_in = w
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


class AGE(nn.Module):
    """Dictionary ``A`` (|S|, D, K) plus one coefficient MLP per layer group."""

    def __init__(self, cfg: AGEConfig):
        super().__init__()
        self.cfg = cfg
        S, D, K = len(cfg.edit_layers), cfg.style_dim, cfg.dict_size
        self.A = nn.Parameter(torch.randn(S, D, K) * cfg.dict_init_std)  # (|S|, D, K)
        pos = {l: i for i, l in enumerate(cfg.edit_layers)}
        self.group_pos = [[pos[l] for l in g] for g in cfg.groups]  # positions of each group in S
        widths = cfg.mlp_hidden if cfg.mlp_hidden is not None else (2 * D, 2 * D, D, K)
        self.mlps = nn.ModuleList(_mlp(len(g) * D, widths, K, cfg.negative_slope) for g in self.group_pos)
        layer_group = torch.empty(S, dtype=torch.long)
        for gi, ps in enumerate(self.group_pos):
            layer_group[ps] = gi
        self.register_buffer("layer_group", layer_group, persistent=False)  # (|S|,) group of each layer

    def coefficients(self, residual: Tensor) -> Tensor:
        """Residual (B, |S|, D) -> coefficients n (B, G, K); group g sees its layers flattened."""
        return torch.stack([m(residual[:, ps].flatten(1)) for m, ps in zip(self.mlps, self.group_pos)], 1)

    def directions(self, n: Tensor) -> Tensor:
        """Coefficients (B, G, K) -> edit A_l · n_{g(l)} on each edited layer: (B, |S|, D)."""
        n_layer = n[:, self.layer_group]  # (B, |S|, K)
        return einsum(self.A, n_layer, "s d k, b s k -> b s d")

    def forward(self, w: Tensor, class_emb_per_sample: Tensor) -> dict[str, Tensor]:
        """w, class_emb_per_sample (B, L, D) -> dict: edited W+ ``w`` (B, L, D) (layers off S from the
        input, as age.py keeps ``ocodes[:, 6:]``), coefficients ``n`` (B, G, K), ``delta`` = A·n
        (B, |S|, D) and the input ``residual`` (B, |S|, D)."""
        S = self.cfg.edit_layers
        a = residuals(w, class_emb_per_sample, S)
        n = self.coefficients(a)
        delta = self.directions(n)
        return {"w": compose(class_emb_per_sample, delta, S, base=w), "n": n, "delta": delta, "residual": a}


MADE_BY = "notebooks/02_attribute_factorization.ipynb"


def load_age(stem: str | Path) -> tuple[AGE, dict]:
    """The AGE model of notebook 02 (`<stem>.safetensors`, saved as ``save_module(stem, age, {"age": cfg.to_dict(),
    ...})``) in eval mode, and its stored info. Every error names the file: missing, corrupted, an invalid stored
    config (checked before the model is built), or other weights."""
    path = checkpoint_file(stem)
    state, info = load_module(path, hint=f"it is made by {MADE_BY}")
    model = AGE(build_stored_config(path, AGEConfig, info, "AGE", key="age"))
    load_checked(model, state, name="AGE", source=path)
    return model.eval(), info


# ----------------------------------------------------------------------------- losses (pure)


def sparsity_loss(n: Tensor, theta0: float = 0.5, theta1: float = -1.0, denominator: float = 32.0) -> Tensor:
    """AGE SparseLoss: ``sum(sigmoid(theta0 * |n| + theta1)) / denominator`` over the batch, all
    groups and coefficients (criteria/sparse_loss.py sums each group's tensor and divides by 32)."""
    return torch.sigmoid(theta0 * n.abs() + theta1).sum() / denominator


def orthogonality_loss(A: Tensor, class_embeddings: Tensor) -> Tensor:
    """AGE OrthogonalLoss: mean over (layer, direction, category) of ``|A_l^T w̄_{c,l}|``.

    A (|S|, D, K); class_embeddings (C, |S|, D) restricted to the edited layers. AGE stacks ALL
    categories' embeddings into B (6, 512, C) and returns sum|A^T B| / (K * C * 6).
    """
    if A.shape[0] != class_embeddings.shape[1] or A.shape[1] != class_embeddings.shape[2]:
        raise ValueError(f"A {tuple(A.shape)} and class_embeddings {tuple(class_embeddings.shape)} disagree")
    return einsum(A, class_embeddings, "s d k, c s d -> s k c").abs().mean()


def age_loss(
    model: AGE, w: Tensor, class_emb_per_sample: Tensor, target: Tensor, generator: Callable,
    perceptual: Callable | None, class_emb_S: Tensor, forward: Callable | None = None, world: int = 1,
) -> tuple[Tensor, dict[str, float]]:
    """tools/train.py ``calc_loss``: l2 * MSE + lpips * LPIPS + orth * orthogonality + sparse * sparsity.

    Data-parallel training passes the DDP wrapper as `forward` and the number of ranks as `world`: the sparsity
    is a SUM over the batch, so each rank's share is scaled by `world` to make the averaged gradients the
    one-process gradients of the global batch."""
    cfg = model.cfg
    out = (forward or model)(w, class_emb_per_sample)
    x_hat = generator(out["w"])  # (B, C_img, H, W)
    if x_hat.shape != target.shape:
        raise ValueError(f"generator output {tuple(x_hat.shape)} != target {tuple(target.shape)}")
    parts = {"l2": F.mse_loss(x_hat, target)}
    if cfg.lambda_lpips > 0:
        if perceptual is None:
            raise ValueError("lambda_lpips > 0 needs a perceptual loss callable (x, y) -> (B,)")
        parts["lpips"] = perceptual(x_hat, target).mean()
    parts["sparse"] = world * sparsity_loss(out["n"], cfg.sparse_theta0, cfg.sparse_theta1, cfg.sparse_denominator)
    parts["orth"] = orthogonality_loss(model.A, class_emb_S)
    lam = {"l2": cfg.lambda_l2, "lpips": cfg.lambda_lpips, "sparse": cfg.lambda_sparse, "orth": cfg.lambda_orth}
    total = sum(lam[k] * v for k, v in parts.items())
    return total, {"loss": total.item(), **{k: v.item() for k, v in parts.items()}}


# ----------------------------------------------------------------------------- training


class Ranger:
    """AGE's optimizer/ranger.py (defaults): RAdam(betas=(0.95, 0.999), eps=1e-5) + gradient
    centralization on every parameter with dim > 1 (gc_conv_only=False) + Lookahead(k=6, alpha=0.5).
    Built on torch.optim.RAdam, whose eps sits on the bias-corrected second moment (a negligible
    difference from the original)."""

    def __init__(self, params, lr: float, betas=(0.95, 0.999), eps: float = 1e-5, k: int = 6, alpha: float = 0.5):
        self.params = [p for p in params if p.requires_grad]
        self.inner = torch.optim.RAdam(self.params, lr=lr, betas=betas, eps=eps)
        self.slow = [p.detach().clone() for p in self.params]
        self.k, self.alpha, self.n_steps = k, alpha, 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None and p.grad.dim() > 1:
                p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.dim())), keepdim=True))
        self.inner.step()
        self.n_steps += 1
        if self.n_steps % self.k == 0:  # Lookahead: slow += alpha * (fast - slow); fast = slow
            for p, s in zip(self.params, self.slow):
                s.add_(p - s, alpha=self.alpha)
                p.copy_(s)


def make_optimizer(model: AGE):
    """Only A and the MLPs are optimised (train.py: ``params = list(net.ax.parameters())``)."""
    if model.cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=model.cfg.lr)
    return Ranger(model.parameters(), lr=model.cfg.lr)


def _freeze(m: Any) -> None:
    if isinstance(m, nn.Module):
        m.requires_grad_(False)
        m.eval()


def train_age(
    model: AGE, w: Tensor, labels: Tensor, class_emb: Tensor, generator: Callable,
    perceptual: Callable | None = None, images: Tensor | None = None, steps: int = 1000,
    batch_size: int = 8, seed: int = 0, progress: bool = True, optimizer: Any = None, dist: Distributed = SINGLE,
) -> dict[str, list[float]]:
    """Train A and the MLPs on precomputed codes w (N, L, D) with labels (N,) and class_emb (C, L, D).

    The reconstruction target is ``images`` (N, ...) when given (AGE: the real image), else the frozen
    generator's image of the original code ``G(w)``. ``generator`` and ``perceptual`` are frozen in place
    (requires_grad False, eval). ``seed`` fixes the batch order (shuffled epochs, last partial batch
    dropped as AGE's loader does); seed the model's initialisation yourself. Returns the per-step
    history {"loss", "l2", ["lpips"], "sparse", "orth"}. `dist` (torchrun): every rank draws the same global
    batch of `batch_size` and trains on its rows; the history holds the global batch's losses. Training runs on
    `dist.device` (data may stay on the CPU, batches move); the model ends on the device it started on.
    """
    cfg = model.cfg
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (AGE training steps), got {steps}")
    if w.dim() != 3 or w.shape[1:] != (cfg.n_latent, cfg.style_dim):
        raise ValueError(f"w must be (N, {cfg.n_latent}, {cfg.style_dim}), got {tuple(w.shape)}")
    N = w.shape[0]
    if labels.shape != (N,) or (images is not None and images.shape[0] != N):
        raise ValueError("labels (and images, if given) need one row per code in w")
    if not 1 <= batch_size <= N:
        raise ValueError(f"batch_size must be in 1..{N} (number of codes), got {batch_size}")
    _freeze(generator)
    _freeze(perceptual)
    device, home = dist.device, model.A.device  # train on this rank's device, give the model back where it was
    model.to(device)
    class_emb = class_emb.detach().to(device)
    class_emb_S = class_emb[:, list(cfg.edit_layers)]  # (C, |S|, D): the orthogonality matrix B
    opt = optimizer if optimizer is not None else make_optimizer(model)
    rng = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(N, generator=rng), 0
    history: dict[str, list[float]] = {}
    net = dist.wrap(model)
    model.train()
    bar = trange(steps, desc="AGE", disable=not progress or not dist.is_main)
    for _ in bar:
        if cursor + batch_size > N:
            order, cursor = torch.randperm(N, generator=rng), 0
        idx = order[cursor : cursor + batch_size][dist.rows(batch_size)]  # this rank's rows (CPU indices)
        cursor += batch_size
        wb = w[idx.to(w.device)].to(device)  # (b, L, D)
        ce = class_emb[labels[idx.to(labels.device)].to(device)]  # (b, L, D)
        if images is not None:
            target = images[idx.to(images.device)].to(device)
        else:
            with torch.no_grad():
                target = generator(wb)
        total, parts = age_loss(model, wb, ce, target, generator, perceptual, class_emb_S, net, dist.world)
        opt.zero_grad()
        total.backward()
        opt.step()
        parts = {k: dist.mean(v) for k, v in parts.items()}
        for k, v in parts.items():
            history.setdefault(k, []).append(v)
        bar.set_postfix(loss=f"{parts['loss']:.4f}")
    model.to(home)
    return history


# ----------------------------------------------------------------------------- generation


@dataclass
class CoefficientGaussian:
    mean: Tensor  # (G, K)
    cov: Tensor  # (G, K, K) full covariance, unbiased (np.cov in get_n_distribution)
    mean_abs: Tensor  # (G, K) mean |n|, used to mask directions at generation time


def gaussian_from_samples(n: Tensor) -> CoefficientGaussian:
    """Per-group mean, full covariance (divisor N-1, as np.cov) and mean |n| of n (N, G, K)."""
    if n.dim() != 3 or n.shape[0] < 2:
        raise ValueError(f"need coefficients (N >= 2, G, K), got {tuple(n.shape)}")
    n = n.double()
    mean = n.mean(0)
    c = n - mean
    cov = einsum(c, c, "n g k, n g j -> g k j") / (n.shape[0] - 1)
    return CoefficientGaussian(mean, cov, n.abs().mean(0))


@torch.no_grad()
def fit_coefficient_gaussian(
    model: AGE, w: Tensor, class_emb_per_sample: Tensor, batch_size: int = 256
) -> CoefficientGaussian:
    """tools/inference.py ``get_n_distribution``: Gaussian of the coefficients of the training codes."""
    S = model.cfg.edit_layers
    n = [model.coefficients(residuals(w[i : i + batch_size], class_emb_per_sample[i : i + batch_size], S))
         for i in range(0, w.shape[0], batch_size)]
    return gaussian_from_samples(torch.cat(n))


@torch.no_grad()
def generate(
    model: AGE, w_shot: Tensor, n_samples: int, alpha: float, gaussian: CoefficientGaussian,
    rng: torch.Generator | None = None, beta: float = 0.0,
) -> Tensor:
    """tools/inference.py ``sampler`` (1-shot editing): w_shot (B, L, D) -> W+ (B * n_samples, L, D),
    rows ordered shot-major. Each sample draws one n_g ~ N(mean_g, cov_g) per group (shared by the
    group's layers), zeroes directions with ``mean_abs <= beta`` (--beta, default 0; README uses
    0.005), and sets ``w_shot + alpha * A_l n_g(l)`` on S (--alpha, default 1); other layers = w_shot.
    """
    if w_shot.dim() != 3:
        raise ValueError(f"w_shot must be (B, L, D), got {tuple(w_shot.shape)}")
    M = w_shot.shape[0] * n_samples
    G, K = gaussian.mean.shape
    evals, evecs = torch.linalg.eigh(gaussian.cov.double().cpu())  # PSD-tolerant, like numpy's SVD sampler
    factor = evecs * evals.clamp(min=0).sqrt()[:, None, :]  # (G, K, K): cov = factor factor^T
    z = torch.randn(M, G, K, generator=rng, dtype=torch.float64)
    n = gaussian.mean.double().cpu() + einsum(factor, z, "g k j, m g j -> m g k")  # (M, G, K)
    n = n * (gaussian.mean_abs.cpu() > beta)
    delta = model.directions(n.to(device=w_shot.device, dtype=model.A.dtype))  # (M, |S|, D)
    w_rep = repeat(w_shot, "b l d -> (b m) l d", m=n_samples)
    return compose(w_rep, alpha * delta, model.cfg.edit_layers, base=w_rep)


def load_official_ax(model: AGE, ckpt: Mapping[str, Tensor]) -> None:
    """Import the ``ax.*`` weights of an official AGE checkpoint (``torch.load(...)['state_dict']``
    or the whole dict): ``ax.A`` (6, 512, 100) -> A; ``ax.encoder{g}.fc{i}`` -> ``mlps[g]`` linear i."""
    sd = ckpt.get("state_dict", ckpt)
    sd = {k.replace("module.", ""): v for k, v in sd.items() if k.replace("module.", "").startswith("ax.")}
    ours = {"A": sd.pop("ax.A")}
    for k, v in sd.items():  # ax.encoder0.fc3.weight -> mlps.0.4.weight (Sequential: Linear, LReLU, ...)
        _, enc, fc, kind = k.split(".")
        ours[f"mlps.{enc[len('encoder'):]}.{2 * (int(fc[2:]) - 1)}.{kind}"] = v
    model.load_state_dict(ours, strict=True)
