"""The fixed split: seen/unseen categories, held-out font families, shot and evaluation pools.

- Categories: within every script group (capitals, lowercase, digits, Greek, Cyrillic) a seeded ~20 %
  is unseen, so the unseen set is a cross-section of the alphabet rather than "all the digits".
- Held-out families: a seeded ~10 % of font families (all their styles) never appear in training;
  they test generalisation to new styles.
- LoFGAN protocol for each unseen category: its training-family styles are shuffled once (seeded); the
  first `n_shot_pool` form the shot pool (k shots are drawn from it), the rest the real-evaluation pool.
"""

from __future__ import annotations

import numpy as np

from tagelib.glyphs.charset import group_of


def split_categories(categories: list[str], unseen_fraction: float = 0.2, seed: int = 0) -> list[str]:
    """The unseen categories: round(fraction·n) per script group, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    unseen = []
    for group in dict.fromkeys(group_of(c) for c in categories):
        members = [c for c in categories if group_of(c) == group]
        n = max(1, round(unseen_fraction * len(members)))
        unseen += list(rng.choice(members, size=n, replace=False))
    return sorted(unseen, key=categories.index)


def split_families(family_keys: list[str], heldout_fraction: float = 0.1, seed: int = 0) -> list[str]:
    """The held-out family keys (a seeded fraction of the distinct families)."""
    families = sorted(set(family_keys))
    rng = np.random.default_rng(seed + 1)
    n = max(1, round(heldout_fraction * len(families)))
    return sorted(rng.choice(families, size=n, replace=False).tolist())


def make_split(categories: list[str], family_keys: list[str], coverage: np.ndarray, unseen_fraction: float = 0.2,
               heldout_fraction: float = 0.1, n_shot_pool: int = 10, seed: int = 0) -> dict:
    """The whole split as JSON-ready lists of indices (categories by index, styles by index)."""
    unseen = split_categories(categories, unseen_fraction, seed)
    heldout_fams = split_families(family_keys, heldout_fraction, seed)
    heldout = [i for i, f in enumerate(family_keys) if f in heldout_fams]
    train_styles = [i for i in range(len(family_keys)) if family_keys[i] not in heldout_fams]
    rng = np.random.default_rng(seed + 2)
    pools = {}
    for c in unseen:
        k = categories.index(c)
        styles = [s for s in train_styles if coverage[s, k]]
        order = rng.permutation(styles).tolist()
        pools[c] = {"shot_pool": order[:n_shot_pool], "eval_pool": order[n_shot_pool:]}
    return {
        "seed": seed,
        "seen_categories": [c for c in categories if c not in unseen],
        "unseen_categories": unseen,
        "heldout_families": heldout_fams,
        "train_styles": train_styles,
        "heldout_styles": heldout,
        "unseen_pools": pools,
    }
