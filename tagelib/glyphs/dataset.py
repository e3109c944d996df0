"""Load the shipped glyph dataset as torch tensors, by split.

    ds = GlyphDataset.load()                 # data/glyphs/glyphs32.npz + styles.json + split.json
    train = ds.split("train")                # seen categories x training-family styles
    shots = ds.split("unseen_shots")         # unseen categories, their shot pools
    x, y, s = train.images, train.category, train.style   # (N, 1, 32, 32) in [-1, 1], (N,), (N,)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tagelib.paths import DATA_DIR

SPLITS = {
    "train": "seen categories x training-family styles",
    "heldout_seen": "seen categories x held-out font families",
    "heldout_unseen": "unseen categories x held-out font families",
    "unseen_shots": "unseen categories x their shot pools (k shots are drawn from here)",
    "unseen_eval": "unseen categories x their real-evaluation pools",
    "unseen_judge": "unseen categories x the first half of each evaluation pool (the judge may train on it)",
    "unseen_reference": "unseen categories x the second half of each evaluation pool (the metrics' real reference)",
    "unseen_all": "unseen categories x training-family styles (shot + eval pools)",
}


@dataclass
class GlyphSet:
    """One split: images (N, 1, H, W) float in [-1, 1] (ink = +1), category and style ids (N,) long."""

    images: torch.Tensor
    category: torch.Tensor
    style: torch.Tensor

    def __len__(self) -> int:
        return len(self.category)


class GlyphDataset:
    """The glyph artefact: ink images (S, K, H, W) uint8, coverage (S, K), category names, style metadata, split.

    This is also the interface every dataset shares (`tagelib.paper_data` for Animal Faces, Flowers, VGGFaces):
    `images[styles, categories]` indexes raw images, `tensor(styles, categories)` returns them as model input,
    `to_tensor` / `to_ink` convert between the two. A "style" is an image slot shared across categories: a font
    here, an image index in the paper datasets.
    """

    channels = 1  # image channels of `tensor` (glyphs: one, ink)

    def __init__(self, images: np.ndarray, coverage: np.ndarray, categories: list[str], styles: list[dict], split: dict):
        self.images, self.coverage, self.categories, self.styles, self.split_info = images, coverage, categories, styles, split
        self.category_index = {c: i for i, c in enumerate(categories)}

    @classmethod
    def load(cls, root: str | Path = DATA_DIR / "glyphs", size: int = 32) -> "GlyphDataset":
        root = Path(root)
        path = root / f"glyphs{size}.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; build it with `make dataset FONTS=...` (see data/README.md)")
        try:
            with np.load(path) as z:
                images, coverage, categories = z["images"], z["coverage"], [str(c) for c in z["categories"]]
        except Exception as exc:
            raise ValueError(f"{path} is not a readable glyph artefact: {exc}") from exc
        styles = json.loads((root / "styles.json").read_text())
        split = json.loads((root / "split.json").read_text())
        return cls(images, coverage, categories, styles, split)

    @property
    def seen(self) -> list[int]:
        return [self.category_index[c] for c in self.split_info["seen_categories"]]

    @property
    def unseen(self) -> list[int]:
        return [self.category_index[c] for c in self.split_info["unseen_categories"]]

    def pairs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(style ids, category ids) of every covered image in `split`, in a fixed order."""
        info = self.split_info
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
        if split.startswith("unseen_") and split != "unseen_all":
            pairs = [(s, self.category_index[c]) for c in info["unseen_categories"] for s in self.pool(c, split)]
        else:
            styles = info["train_styles"] if split in ("train", "unseen_all") else info["heldout_styles"]
            cats = self.seen if split in ("train", "heldout_seen") else self.unseen
            pairs = [(s, k) for k in cats for s in styles if self.coverage[s, k]]
        arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def pool(self, category: str, split: str) -> list[int]:
        """Style ids of an unseen category's pool: `split` = unseen_shots, unseen_eval, unseen_judge or unseen_reference.

        The evaluation pool is already a seeded shuffle, so its halves are its first and second half."""
        pools = self.split_info["unseen_pools"][category]
        if split == "unseen_shots":
            return list(pools["shot_pool"])
        ev = list(pools["eval_pool"])
        halves = {"unseen_eval": ev, "unseen_judge": ev[:len(ev) // 2], "unseen_reference": ev[len(ev) // 2:]}
        if split not in halves:
            raise ValueError(f"unknown pool {split!r}; valid: ['unseen_shots', *{list(halves)}]")
        return halves[split]

    def split(self, split: str, max_styles: int | None = None, categories: list[str] | None = None) -> GlyphSet:
        """Tensors of one split; `max_styles` keeps the first n styles of each category (a small slice)."""
        styles, cats = self.pairs(split)
        if categories is not None:
            unknown = [c for c in categories if c not in self.category_index]
            if unknown:
                raise ValueError(f"unknown categories {unknown}; valid: {self.categories}")
            mask = np.isin(cats, [self.category_index[c] for c in categories])
            styles, cats = styles[mask], cats[mask]
        if max_styles is not None:
            order = np.argsort(cats, kind="stable")
            rank = np.arange(len(cats)) - np.searchsorted(cats[order], cats[order])  # position within category
            keep = np.sort(order[rank < max_styles])
            styles, cats = styles[keep], cats[keep]
        return GlyphSet(self.to_tensor(self.images[styles, cats]), torch.from_numpy(cats), torch.from_numpy(styles))

    @property
    def size(self) -> int:
        """Side of the square images `tensor` returns."""
        return int(self.images.shape[-1])

    def tensor(self, styles, categories) -> torch.Tensor:
        """Model input for index arrays (or ints) of styles and categories: float (..., C, H, W) in [-1, 1]."""
        return self.to_tensor(self.images[styles, categories])

    def sample_attributes(self, styles: np.ndarray, categories: np.ndarray, images: torch.Tensor) -> dict[str, np.ndarray]:
        """Two numeric style attributes per image, for colouring plots: the font's measured stroke and slant."""
        return {key: np.array([self.styles[int(s)][key] for s in styles], dtype=np.float64)
                for key in ("stroke", "slant_deg")}

    def view(self, styles: np.ndarray, categories: np.ndarray) -> "ImageView":
        """Lazy images (style, category) pairs: `view[rows]` reads only those rows' raw images."""
        return ImageView(self, np.asarray(styles), np.asarray(categories))

    @staticmethod
    def to_tensor(ink: np.ndarray) -> torch.Tensor:
        """uint8 ink (..., H, W) -> float (..., 1, H, W) in [-1, 1], ink = +1, background = -1."""
        return torch.from_numpy(ink).float().div(127.5).sub(1.0).unsqueeze(-3)

    @staticmethod
    def to_ink(images: torch.Tensor) -> np.ndarray:
        """Inverse of `to_tensor`: float (..., 1, H, W) -> uint8 (..., H, W)."""
        return images.squeeze(-3).add(1.0).mul(127.5).round().clamp(0, 255).byte().cpu().numpy()


@dataclass
class ImageView:
    """Raw images of (style, category) pairs, read when indexed (memory-mapped datasets stay on disk)."""

    ds: GlyphDataset
    styles: np.ndarray
    categories: np.ndarray

    def __len__(self) -> int:
        return len(self.styles)

    def __getitem__(self, rows) -> np.ndarray:
        return self.ds.images[self.styles[rows], self.categories[rows]]
