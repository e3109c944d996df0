"""Curation rules: legibility, all-caps faces and near-duplicate (clone) removal.

All rules work on the rendered required set, images (S, K, H, W) uint8 ink, K = 62 categories.
"""

from __future__ import annotations

import numpy as np
import torch

CLONE_THRESHOLD = 0.05  # ink-normalised pixel difference below which two faces are clones (see `clone_distance`)
LEGIBILITY_TOP = 5  # a glyph counts as legible when its own category ranks in the 5 nearest
CASE_PAIRS = "abdeghnqrt"  # lowercase letters whose shape differs from their capital


def _unit(images: np.ndarray) -> torch.Tensor:
    """Flatten each glyph and normalise it to zero mean, unit norm: (..., H, W) -> (..., H·W)."""
    x = torch.from_numpy(images).float().flatten(-2)
    x = x - x.mean(-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def consensus_ranks(images: np.ndarray) -> np.ndarray:
    """Rank of every glyph's own category among all categories, by correlation with their consensus: (S, K).

    The consensus of a category is the median glyph over all faces; rank 0 means the glyph is closest to
    its own category's consensus. Symbol fonts that map letters to pictograms rank their glyphs anywhere.
    """
    consensus = _unit(np.median(images, axis=0).astype(np.float32))  # (K, H·W)
    sims = _unit(images) @ consensus.T  # (S, K glyphs, K consensus)
    own = torch.diagonal(sims, dim1=1, dim2=2)  # (S, K)
    return (sims > own.unsqueeze(-1)).sum(-1).numpy()


def legibility(images: np.ndarray, top: int = LEGIBILITY_TOP) -> np.ndarray:
    """Fraction of a face's glyphs whose own category is among the `top` nearest consensus glyphs: (S,).

    Top-5 rather than top-1 because l/I/1/|, o/O/0 and c/C, s/S ... are legitimately confusable at 32 px.
    """
    return (consensus_ranks(images) < top).mean(1)


def caps_score(images: np.ndarray, chars: str) -> np.ndarray:
    """How capital-like a face's lowercase is: (S,) mean correlation of lowercase and capital shapes.

    Each glyph is cropped to its ink box and resized to 16×16, so small caps count as capitals too.
    """
    import torch.nn.functional as F

    idx_lo = [chars.index(c) for c in CASE_PAIRS]
    idx_up = [chars.index(c.upper()) for c in CASE_PAIRS]

    def boxed(sub: np.ndarray) -> np.ndarray:  # (S, n, H, W) -> (S, n, 16, 16)
        out = np.zeros(sub.shape[:2] + (16, 16), dtype=np.float32)
        for s, n in np.ndindex(*sub.shape[:2]):
            rows, cols = np.nonzero(sub[s, n] > 32)
            if len(rows):
                crop = torch.from_numpy(sub[s, n, rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]).float()
                out[s, n] = F.interpolate(crop[None, None], size=(16, 16), mode="area")[0, 0].numpy()
        return out

    lo, up = _unit(boxed(images[:, idx_lo])), _unit(boxed(images[:, idx_up]))
    return (lo * up).sum(-1).mean(1).numpy()


def clone_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise Σ|a−b| / (Σa + Σb) between faces: a (n, P), b (m, P) float ink -> (n, m).

    Dividing by the two faces' total ink keeps thin faces apart: a plain pixel difference would call
    two hairline fonts equal because both have little ink. Clones score ~0.005–0.02, distinct designs > 0.1.
    """
    diff = torch.cdist(a, b, p=1)
    return diff / (a.sum(1)[:, None] + b.sum(1)[None, :]).clamp_min(1e-6)


def find_clones(images: np.ndarray, threshold: float = CLONE_THRESHOLD, chunk: int = 256) -> list[list[int]]:
    """Groups of faces within `threshold` of each other (connected components), singletons omitted.

    Exact distances are computed only for candidate pairs found on 4×4-pooled glyphs: pooling sums can
    only shrink an L1 difference, so the pooled distance is a lower bound and prunes no true clone.
    """
    s = images.shape[0]
    full = torch.from_numpy(images.reshape(s, -1)).float()  # (S, K·H·W)
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(images).float(), 4).flatten(1) * 16  # (S, K·H/4·W/4)
    parent = list(range(s))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, s, chunk):
        lower = clone_distance(pooled[start:start + chunk], pooled)  # (c, S)
        for i, j in torch.nonzero(lower < threshold).tolist():
            i += start
            if i < j and clone_distance(full[i:i + 1], full[j:j + 1]).item() < threshold:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(s):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]
