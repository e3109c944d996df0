"""Small plotting helpers shared by the notebooks: image grids and atomic figure saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from tagelib.atomic import atomic_path


def to_display(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images for display as RGB (…, H, W, 3) in [0, 1]: glyphs as dark ink on white (float in [-1, 1]
    (…, 1, H, W) or uint8 ink (…, H, W)), photographs as they are (float (…, 3, H, W) or uint8 (…, H, W, 3))."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu()
        if images.dim() >= 3 and images.shape[-3] == 3:  # RGB in [-1, 1]
            return ((images.clamp(-1, 1) + 1.0) / 2.0).movedim(-3, -1).numpy()
        if images.dim() >= 3 and images.shape[-3] == 1:
            images = images.squeeze(-3)
        gray = 1.0 - (images.clamp(-1, 1).numpy() + 1.0) / 2.0
    elif images.ndim >= 3 and images.shape[-1] == 3:  # raw RGB
        return images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    else:
        gray = 1.0 - images.astype(np.float32) / 255.0
    return np.repeat(gray[..., None], 3, axis=-1)


def image_grid(images: torch.Tensor | np.ndarray, ax=None, row_labels=None, col_labels=None, title=None, pad: int = 1):
    """Show images laid out (rows, cols, …) — glyphs or photographs, see `to_display` — as one mosaic on `ax`."""
    arr = to_display(images)  # (R, C, H, W, 3) in [0, 1]
    rows, cols, h, w, _ = arr.shape
    mosaic = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), dtype=np.float32)
    view = mosaic[pad:, pad:].reshape(rows, h + pad, cols, w + pad, 3)[:, :h, :, :w]
    view[...] = arr.transpose(0, 2, 1, 3, 4)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3, cols * 0.45), max(2, rows * 0.45)))
    ax.imshow(mosaic, vmin=0, vmax=1, interpolation="nearest")
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


def verdict_grid(images: torch.Tensor, correct: torch.Tensor, ax, row_labels=None, title=None, border: int = 2):
    """Images (rows, cols, C, H, W) in [-1, 1], each framed green (judged correct) or red (wrong), on `ax`."""
    arr = to_display(images)  # (R, C, H, W, 3)
    rows, cols, h, w, _ = arr.shape
    ok = correct.cpu().numpy().astype(bool)[..., None]  # (R, C, 1)
    frame = np.where(ok, np.array([0.1, 0.65, 0.2]), np.array([0.85, 0.1, 0.1]))  # (R, C, 3)
    ch, cw = h + 2 * border, w + 2 * border  # one framed cell
    tiles = np.broadcast_to(frame[:, :, None, None, :], (rows, cols, ch, cw, 3)).copy()
    tiles[:, :, border:border + h, border:border + w] = arr
    mosaic = np.ones((rows * (ch + 1) + 1, cols * (cw + 1) + 1, 3), dtype=np.float32)  # 1 px white gutters
    mosaic[1:, 1:].reshape(rows, ch + 1, cols, cw + 1, 3)[:, :ch, :, :cw] = tiles.transpose(0, 2, 1, 3, 4)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([1 + (ch + 1) * i + ch / 2 for i in range(rows)] if row_labels else [])
    if row_labels:
        ax.set_yticklabels(row_labels, fontsize=7)
    ax.set_xticks([])
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def confusion_strip(confusions, ax, title: str = "most frequent misreadings"):
    """Horizontal bars of (intended, judged, count) pairs, e.g. 'p→D', most frequent on top."""
    labels = [f"{a}→{b}" for a, b, _ in confusions][::-1]
    counts = [n for _, _, n in confusions][::-1]
    ax.barh(range(len(counts)), counts, color="0.4")
    ax.set_yticks(range(len(counts)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_title(title, fontsize=7)
    if not counts:
        ax.text(0.5, 0.5, "no misreadings", ha="center", va="center", transform=ax.transAxes, fontsize=7)
    return ax


def verdict_figure(results: dict, category_names: list[str], n_show: int = 8):
    """One column per method: its generations per category framed by the judge's verdicts, with the judge's
    accuracy in the title, and a confusion strip of its most frequent misreadings below.

    results: method name -> `tagelib.evaluation.Evaluation`. Returns the figure.
    """
    names = list(results)
    first = results[names[0]]
    rows = first.images.shape[0]
    longest = 2 * max(len(n) for n in category_names) + 1  # a misreading's label, "a→b"
    label_in = 0.07 * longest if longest > 3 else 0.0  # long class names (photographs) need room left of each strip
    fig = plt.figure(figsize=((max(4.0, 0.32 * n_show + 0.6) + label_in) * len(names), 0.33 * rows + 2.4))
    grid = fig.add_gridspec(2, len(names), height_ratios=[0.33 * rows, 1.7], hspace=0.12,
                            wspace=0.2 if longest <= 3 else 0.6 + 0.02 * longest)
    for j, name in enumerate(names):
        ev = results[name]
        labels = [category_names[int(c)] for c in ev.intended[:, 0]]
        verdict_grid(ev.images[:, :n_show], ev.correct[:, :n_show], fig.add_subplot(grid[0, j]), row_labels=labels,
                     title=f"{name}\njudge: {ev.metrics['preservation']:.0%} recognised")
        confusion_strip(ev.metrics["confusions"][:6], fig.add_subplot(grid[1, j]))
    return fig
