"""Counts and tables that describe the glyph dataset (used by notebook 00 and the data card)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tagelib.glyphs.charset import group_of
from tagelib.glyphs.dataset import SPLITS, GlyphDataset


def counts(ds: GlyphDataset) -> dict:
    """Styles, families, categories per script group, images, and images per split."""
    groups = Counter(group_of(c) for c in ds.categories)
    return {
        "styles": len(ds.styles),
        "families": len({s["family_key"] for s in ds.styles}),
        "categories": len(ds.categories),
        "categories_per_group": dict(groups),
        "images": int(ds.coverage.sum()),
        "min_styles_per_category": int(ds.coverage.sum(0).min()),
        "seen_categories": len(ds.split_info["seen_categories"]),
        "unseen_categories": len(ds.split_info["unseen_categories"]),
        "heldout_families": len(ds.split_info["heldout_families"]),
        "heldout_styles": len(ds.split_info["heldout_styles"]),
        "images_per_split": {name: int(len(ds.pairs(name)[0])) for name in SPLITS},
    }


def attribute_counts(ds: GlyphDataset, key: str) -> dict:
    """How many styles take each value of a categorical attribute (classification, source, licence ...)."""
    return dict(Counter(str(s[key]) for s in ds.styles).most_common())


def markdown_table(rows: dict, header: tuple[str, str] = ("quantity", "value")) -> str:
    """A two-column markdown table from a flat mapping."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines) + "\n"


def attribute_array(ds: GlyphDataset, key: str) -> np.ndarray:
    """A numeric attribute of every style as an array (weight, slant_deg, width, stroke)."""
    return np.array([s[key] for s in ds.styles], dtype=np.float64)
