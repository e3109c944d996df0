"""Attribute factorization of W+ codes (AGE, Ding et al. CVPR 2022; method item 1 of design.md).

A W+ code ``w`` of shape (L, D) splits into

* a category-relevant part, the class embedding ``w̄_c`` = mean W+ code of the images of category ``c``
  (for an unseen category: the mean over its k shots), and
* a category-irrelevant part, the residual ``a = w - w̄_c`` on the edited layers ``S``
  (AGE edits the coarse layers 0-5 of 18; here ``S`` is always a parameter).

All functions are pure and batched; ``layers`` is a sequence of distinct layer indices, kept in
the given order (the residual's layer axis follows it).

AGE computes class embeddings in ``tools/get_class_embedding.py`` as the plain per-category mean of
the pSp codes, and residuals in ``models/age.py`` (``odw = ocodes[:, :6] - av_codes[:, :6]``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def validate_layers(layers: Sequence[int], n_latent: int) -> list[int]:
    """Check that ``layers`` are distinct ints in ``0..n_latent-1``; return them as a list."""
    try:
        out = [int(l) for l in layers]
    except TypeError as exc:
        raise TypeError(f"layers must be a sequence of ints in 0..{n_latent - 1}, got {layers!r}") from exc
    if any(isinstance(l, bool) or int(l) != l for l in layers):
        raise TypeError(f"layers must be ints in 0..{n_latent - 1}, got {list(layers)!r}")
    if not out:
        raise ValueError(f"layers must not be empty; valid layer indices are 0..{n_latent - 1}")
    bad = [l for l in out if not 0 <= l < n_latent]
    if bad:
        raise ValueError(
            f"layer index(es) {bad} out of range: W+ has {n_latent} layers, valid indices are 0..{n_latent - 1}"
        )
    if len(set(out)) != len(out):
        raise ValueError(f"layers must be distinct, got {out}")
    return out


def _layer_index(layers: Sequence[int], n_latent: int, device: torch.device) -> Tensor:
    return torch.tensor(validate_layers(layers, n_latent), dtype=torch.long, device=device)


def _per_sample(x: Tensor, batch: int, name: str) -> Tensor:
    """Accept (B, L, D) or a single (L, D) code broadcast over the batch; return (B, L, D)."""
    if x.dim() == 2:
        return x.unsqueeze(0).expand(batch, *x.shape)
    if x.dim() != 3 or x.shape[0] != batch:
        raise ValueError(f"{name} must be ({batch}, L, D) or (L, D), got {tuple(x.shape)}")
    return x


def class_embeddings(w: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Mean W+ code per category: w (N, L, D), labels (N,) ints -> (C, L, D).

    ``C = num_classes`` or ``labels.max() + 1``. Vectorised with ``index_add_`` + ``bincount``.
    A category with no sample has no mean: that raises, naming the empty categories.
    """
    if w.dim() != 3:
        raise ValueError(f"w must be (N, L, D), got {tuple(w.shape)}")
    labels = torch.as_tensor(labels, device=w.device)
    if labels.dim() != 1 or labels.shape[0] != w.shape[0]:
        raise ValueError(f"labels must be ({w.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    labels = labels.long()
    if labels.numel() and labels.min() < 0:
        raise ValueError("labels must be >= 0")
    C = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.numel() and int(labels.max()) >= C:
        raise ValueError(f"label {int(labels.max())} >= num_classes={C}")
    sums = torch.zeros(C, *w.shape[1:], dtype=w.dtype, device=w.device)  # (C, L, D)
    sums.index_add_(0, labels, w)
    counts = torch.bincount(labels, minlength=C)  # (C,)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"categories {empty} have no samples; their class embedding is undefined")
    return sums / counts.to(w.dtype)[:, None, None]


def few_shot_embeddings(shots: Tensor) -> Tensor:
    """Class embeddings of unseen categories from their k shots: (C, k, L, D) -> (C, L, D)."""
    if shots.dim() != 4:
        raise ValueError(f"shots must be (C, k, L, D), got {tuple(shots.shape)}")
    return shots.mean(dim=1)


def residuals(w: Tensor, class_emb_per_sample: Tensor, layers: Sequence[int]) -> Tensor:
    """Category-irrelevant residual ``a = w - w̄_c`` on the layers S: (B, L, D) -> (B, |S|, D).

    ``class_emb_per_sample`` is (B, L, D) (row b = embedding of sample b's category) or (L, D).
    """
    if w.dim() != 3:
        raise ValueError(f"w must be (B, L, D), got {tuple(w.shape)}")
    ce = _per_sample(class_emb_per_sample, w.shape[0], "class_emb_per_sample")
    idx = _layer_index(layers, w.shape[1], w.device)
    return (w - ce).index_select(1, idx)  # (B, |S|, D)


def compose(
    class_emb: Tensor, residual: Tensor, layers: Sequence[int], base: Tensor | None = None
) -> Tensor:
    """Inverse of :func:`residuals`: W+ codes whose layers in S are ``w̄ + a``, others from ``base``.

    class_emb (B, L, D) or (L, D); residual (B, |S|, D); base (B, L, D) or (L, D), default the
    class embedding. ``compose(ce, residuals(w, ce, S), S, base=w)`` gives back ``w`` (layers off S
    are copied exactly; on S up to float rounding of ``(w - ce) + ce``). Differentiable.
    """
    if residual.dim() != 3:
        raise ValueError(f"residual must be (B, |S|, D), got {tuple(residual.shape)}")
    B = residual.shape[0]
    ce = _per_sample(class_emb, B, "class_emb")
    out = _per_sample(ce if base is None else base, B, "base")
    idx = _layer_index(layers, ce.shape[1], residual.device)
    if residual.shape[1:] != (idx.numel(), ce.shape[2]):
        raise ValueError(f"residual must be ({B}, {idx.numel()}, {ce.shape[2]}), got {tuple(residual.shape)}")
    edited = ce.index_select(1, idx) + residual  # (B, |S|, D)
    return out.index_copy(1, idx, edited.to(out.dtype))  # out-of-place: (B, L, D)


def transfer(
    w_src: Tensor,
    class_src: Tensor,
    class_tgt: Tensor,
    layers: Sequence[int],
    base: Tensor | None = None,
) -> Tensor:
    """Cross-category attribute transfer: ``w̄_tgt + (w_src - w̄_src)`` on S.

    w_src (B, L, D); class_src / class_tgt (B, L, D) or (L, D). Layers off S come from ``base``,
    by default ``w_src`` itself (as AGE keeps the shot's own fine layers), so that
    ``transfer(w, c, c, S) == w``; pass ``base=class_tgt`` to take them from the target category.
    """
    a = residuals(w_src, class_src, layers)  # (B, |S|, D)
    return compose(class_tgt, a, layers, base=w_src if base is None else base)
