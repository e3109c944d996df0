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
        """The artefact in `root` (glyphs<size>.npz, styles.json, split.json), checked as it loads: a missing file
        raises FileNotFoundError, a broken or inconsistent one ValueError, each naming the file and the reason."""
        root = Path(root)
        images, coverage, categories = read_glyph_arrays(root / f"glyphs{size}.npz")
        styles = read_json(root / "styles.json")
        check_styles(styles, len(coverage), root / "styles.json")
        split = read_json(root / "split.json")
        check_split(split, categories, len(coverage), root / "split.json")
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


SPLIT_KEYS = ("seen_categories", "unseen_categories", "train_styles", "heldout_styles", "heldout_families",
              "unseen_pools")  # what split.json must hold (the loader, the notebooks and the summaries read them)


def read_glyph_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """images (S, K, H, W) uint8, coverage (S, K) bool and the K category names of a `glyphs<size>.npz`, checked
    against each other; FileNotFoundError / ValueError "<path>: <reason>"."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; build it with `make dataset FONTS=...` (see data/README.md)")
    try:
        with np.load(path) as z:  # allow_pickle=False: an object array is refused, not unpickled
            images, coverage, categories = z["images"], z["coverage"], [str(c) for c in z["categories"]]
    except Exception as exc:
        raise ValueError(f"{path} is not a readable glyph artefact: {exc}") from exc
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"{path}: images are {images.dtype} {images.shape}, expected uint8 (styles, categories, H, W)")
    if coverage.shape != images.shape[:2] or coverage.dtype != bool:
        raise ValueError(f"{path}: coverage is {coverage.dtype} {coverage.shape}, expected bool (S, K) = "
                         f"{images.shape[:2]} like the images")
    if len(categories) != images.shape[1]:
        raise ValueError(f"{path}: {len(categories)} category names for {images.shape[1]} image columns")
    return images, coverage, categories


def read_json(path: Path):
    """The JSON document in `path`; FileNotFoundError / ValueError "<path>: <reason>"."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; the glyph artefact ships it beside glyphs<size>.npz")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def check_styles(styles, n_styles: int, path: Path) -> None:
    """Refuse style metadata that is not one JSON object per style (image row) of the artefact."""
    if not isinstance(styles, list) or not all(isinstance(s, dict) for s in styles):
        raise ValueError(f"{path}: expected a list of one object per style")
    if len(styles) != n_styles:
        raise ValueError(f"{path}: {len(styles)} styles, the images have {n_styles}")


def check_split(split, categories: list[str], n_styles: int, path: Path) -> None:
    """Refuse a split that lacks a key of SPLIT_KEYS, names categories the artefact lacks (or one both seen and
    unseen), gives pools for other categories than the unseen ones, or holds style ids outside 0..n_styles-1."""
    if not isinstance(split, dict):
        raise ValueError(f"{path}: expected a JSON object with keys {list(SPLIT_KEYS)}")
    missing = [k for k in SPLIT_KEYS if k not in split]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    not_lists = [k for k in SPLIT_KEYS[:5] if not isinstance(split[k], list)]
    if not_lists:
        raise ValueError(f"{path}: {not_lists} must be lists")
    seen, unseen = split["seen_categories"], split["unseen_categories"]
    unknown = [c for c in [*seen, *unseen] if c not in set(categories)]
    if unknown:
        raise ValueError(f"{path}: unknown categories {unknown[:5]} (not among the artefact's {len(categories)})")
    if set(seen) & set(unseen):
        raise ValueError(f"{path}: categories both seen and unseen: {sorted(set(seen) & set(unseen))[:5]}")
    pools = split["unseen_pools"]
    if not isinstance(pools, dict) or set(pools) != set(unseen):
        raise ValueError(f"{path}: unseen_pools must hold one entry per unseen category")
    style_lists = {"train_styles": split["train_styles"], "heldout_styles": split["heldout_styles"]}
    for c, pool in pools.items():
        if not isinstance(pool, dict) or not {"shot_pool", "eval_pool"} <= set(pool):
            raise ValueError(f"{path}: unseen_pools[{c!r}] needs shot_pool and eval_pool")
        style_lists.update({f"unseen_pools[{c!r}].{k}": pool[k] for k in ("shot_pool", "eval_pool")})
    for key, ids in style_lists.items():
        if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i < n_styles for i in ids):
            raise ValueError(f"{path}: {key} must be a list of style ids in 0..{n_styles - 1}")


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
