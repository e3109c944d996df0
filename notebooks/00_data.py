# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 — The data: glyphs as a few-shot generation benchmark
#
# In this notebook we will look at the embedded dataset that lets the whole TAGE pipeline run on a
# laptop CPU: **glyphs rendered from real fonts**. A *category* is a character (`A`, `g`, `7`, `Ж`, …);
# everything else about an image — weight, slant, width, serifs, monospacing, handwriting — is the font's
# *style*, shared across all categories. That is exactly the structure few-shot image generation relies on:
# AGE and TAGE factor a latent code into a category-relevant part (the class embedding) and
# category-irrelevant attributes, learn the attributes on seen categories, and transfer them to an unseen
# category from a few shots — as pose and fur transfer across animal species in Animal Faces.
#
# Glyphs add something the paper's datasets lack: **ground truth for transfer**. The real `Q` in the font
# of a given `R` exists, so "did the edit keep the style and change only the category?" becomes measurable.
#
# We will see the counts, grids across styles and categories, the style attributes, and the fixed split
# (seen / unseen categories, shot and evaluation pools, held-out font families).

# %%
import json

import matplotlib.pyplot as plt
import numpy as np

from tagelib.atomic import write_text_atomic
from tagelib.config import check_choice
from tagelib.glyphs import summary
from tagelib.glyphs.dataset import SPLITS, GlyphDataset
from tagelib.paths import resolve
from tagelib.write_guard import output_dirs
from tagelib.plotting import image_grid, save_figure
from tagelib.timing import Stopwatch

# %% tags=["parameters"]
run_dir: str = "results/tiny"  # every output of this run goes under this folder
figures_dir: str = "{run_dir}/papers_figures"  # tables and figures (papers_figures/: only the unmodified `make reproduce`)
data_dir: str = "data/glyphs"  # the shipped glyph artefact
image_size: int = 32  # 32 (shipped) or 64 (rebuild with --size 64)
seed: int = 0  # drives which styles appear in the grids
grid_styles: int = 12  # rows (styles) in the style x category grid
grid_categories: int = 62  # columns (categories) in that grid


# %%
check_choice("image_size", image_size, [32, 64])
out_dir, fig_dir = output_dirs(run_dir, figures_dir, "00_data")
clock = Stopwatch(out_dir)  # where this notebook's time goes: <run_dir>/<notebook>/stage_seconds.json
rng = np.random.default_rng(seed)

# %% [markdown]
# ## What is in the artefact
#
# `GlyphDataset.load` reads `data/glyphs/glyphs32.npz` (ink images `(styles, categories, 32, 32)` as
# uint8, plus a coverage mask: Greek and Cyrillic letters exist only in the fonts that cover them),
# `styles.json` (per-style metadata) and `split.json` (the fixed split). The data card `data/README.md`
# says where every font came from and how to rebuild it.

# %%
ds = GlyphDataset.load(resolve(data_dir), image_size)
stats = summary.counts(ds)
print(json.dumps(stats, indent=1))
clock.lap("set-up")

# %% [markdown]
# ## Styles x categories
#
# Each row is one font style, each column one category. Reading along a row shows the
# category-irrelevant attributes staying fixed while the category changes; reading down a column shows
# the attributes varying while the category stays fixed.

# %%
rows = np.sort(rng.choice(len(ds.styles), size=min(grid_styles, len(ds.styles)), replace=False))
cols = list(range(min(grid_categories, len(ds.categories))))
fig, ax = plt.subplots(figsize=(0.3 * len(cols) + 2, 0.3 * len(rows) + 1))
image_grid(ds.images[np.ix_(rows, cols)], ax=ax, row_labels=[ds.styles[r]["full_name"][:28] for r in rows],
           col_labels=[ds.categories[c] for c in cols], title="glyph styles (rows) x categories (columns)")
save_figure(fig, fig_dir / "fig_glyph_grid.png")
plt.show()

# %% [markdown]
# The extra scripts: a few Greek and Cyrillic categories, from the styles that cover them. More categories
# with the same styles help the latent space generalise to characters it has never seen.

# %%
extra = [k for k, c in enumerate(ds.categories) if not (c.isascii() and c.isalnum())]
if extra:
    covering = np.nonzero(ds.coverage[:, extra].all(1))[0]
    pick = np.sort(rng.choice(covering, size=min(6, len(covering)), replace=False)) if len(covering) else []
    if len(pick):
        fig, ax = plt.subplots(figsize=(0.3 * len(extra) + 2, 0.3 * len(pick) + 1))
        image_grid(ds.images[np.ix_(pick, extra)], ax=ax, row_labels=[ds.styles[r]["full_name"][:28] for r in pick],
                   col_labels=[ds.categories[c] for c in extra], title="Greek and Cyrillic categories")
        plt.show()
print(f"{len(extra)} extra-script categories; styles per category: min {ds.coverage.sum(0).min()}")

# %% [markdown]
# ## Style attributes
#
# Slant, width and monospacing are *measured* from the renders and advance widths (fonts often carry
# wrong OS/2 fields); the weight is the font's declared weight (the file name's for @fontsource files) and
# the stroke thickness is measured. Each style's caption, built from these, is what the CLIP model of the
# PSM will read later.

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 2.8))
for ax, (key, label) in zip(axes, [("weight", "declared weight"), ("stroke", "stroke / cap height"),
                                   ("slant_deg", "slant (degrees)"), ("width", "lowercase advance / cap height")]):
    ax.hist(summary.attribute_array(ds, key), bins=30, color="0.3")
    ax.set_title(label, fontsize=9)
save_figure(fig, fig_dir / "fig_glyph_attributes.png")
plt.show()
for key in ("classification", "width_class", "italic", "monospace", "license"):
    print(key, summary.attribute_counts(ds, key))
print("example captions:", [ds.styles[r]["caption"] for r in rows[:4]])

# %% [markdown]
# ## The split
#
# Categories: within each script group about 20 % are *unseen* — never used to train the latent space,
# the dictionaries or the code predictor. For every unseen category its styles were shuffled once:
# the first ten form the **shot pool** (k = 1 or 3 shots are drawn from it), the rest the
# **real-evaluation pool** (LoFGAN protocol). About 10 % of font *families* are held out entirely.

# %%
info = ds.split_info
print("unseen categories:", " ".join(info["unseen_categories"]))
print("held-out families:", ", ".join(info["heldout_families"][:12]), "...")
for name, what in SPLITS.items():
    print(f"{name:>15}: {len(ds.pairs(name)[0]):6d} images — {what}")
unseen = [ds.category_index[c] for c in info["unseen_categories"]]
shots = [info["unseen_pools"][ds.categories[k]]["shot_pool"][:3] for k in unseen]
fig, ax = plt.subplots(figsize=(3, 0.3 * len(unseen) + 1))
image_grid(np.stack([ds.images[s, k] for s, k in zip(shots, unseen)]), ax=ax,
           row_labels=[ds.categories[k] for k in unseen], title="first 3 styles of each shot pool")
plt.show()

# %%
table = summary.markdown_table({
    "styles (font faces)": stats["styles"], "font families": stats["families"],
    "categories": stats["categories"], "seen / unseen categories": f"{stats['seen_categories']} / {stats['unseen_categories']}",
    "images": stats["images"], "min styles per category": stats["min_styles_per_category"],
    "held-out families (styles)": f"{stats['heldout_families']} ({stats['heldout_styles']})",
    "image size": f"{image_size} px, grayscale",
})
write_text_atomic(fig_dir / "table_dataset.md", "# Glyph dataset (data/glyphs, embedded default)\n\n" + table)
write_text_atomic(out_dir / "summary.json", json.dumps(stats, indent=1))
print(table)
clock.lap("figures")

# %% [markdown]
# ## Recap
#
# - The embedded dataset is a real multi-category image set: characters are categories, font styles
#   are the category-irrelevant attributes shared across them.
# - The split follows the few-shot protocol: seen categories to learn from, unseen categories with shot and
#   evaluation pools, and held-out font families for new styles.
# - Next, `01_latent_space` trains the StyleGAN2 generator and pSp encoder whose W+ space TAGE edits.
