"""Small plotting helpers shared by the notebooks: image grids and atomic figure saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from tagelib.atomic import atomic_path


def to_display(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Glyph images as dark ink on white for display: float in [-1, 1] (…, 1, H, W) or uint8 ink (…, H, W)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu()
        if images.dim() >= 3 and images.shape[-3] == 1:
            images = images.squeeze(-3)
        return 1.0 - (images.clamp(-1, 1).numpy() + 1.0) / 2.0
    return 1.0 - images.astype(np.float32) / 255.0


def image_grid(images: torch.Tensor | np.ndarray, ax=None, row_labels=None, col_labels=None, title=None, pad: int = 1):
    """Show images laid out (rows, cols, H, W) [or (rows, cols, 1, H, W)] as one mosaic on `ax`."""
    arr = to_display(images)  # (R, C, H, W) in [0, 1], 1 = paper
    rows, cols, h, w = arr.shape
    mosaic = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    view = mosaic[pad:, pad:].reshape(rows, h + pad, cols, w + pad)[:, :h, :, :w]
    view[...] = arr.transpose(0, 2, 1, 3)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3, cols * 0.45), max(2, rows * 0.45)))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([pad + (w + pad) * i + w / 2 for i in range(cols)] if col_labels else [])
    ax.set_yticks([pad + (h + pad) * i + h / 2 for i in range(rows)] if row_labels else [])
    if col_labels:
        ax.set_xticklabels(col_labels, fontsize=7)
    if row_labels:
        ax.set_yticklabels(row_labels, fontsize=7)
    ax.tick_params(length=0)
    if title:
        ax.set_title(title)
    return ax


def save_figure(fig, path: str | Path, dpi: int = 130) -> Path:
    """Save `fig` atomically (PNG by the path's suffix) and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def smooth(values, window: int = 25) -> np.ndarray:
    """Moving average for loss curves; the window shrinks for short runs, NaN entries are dropped."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    window = max(1, min(window, len(v)))
    return np.convolve(v, np.ones(window) / window, mode="valid") if len(v) else v
