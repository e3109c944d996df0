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
# # 00 — A CLIP model of the glyph domain, and an attribute probe
#
# In this notebook we will build the two pieces the PSM (prompt-driven semantic module) needs beside the
# generator. TAGE steers generation with CLIP: text embeddings of prompts such as *"a bold glyph"* enter the
# CPM, and a CLIP loss pulls the CLIP image embedding of the generated image towards the prompt. No pretrained
# CLIP knows 32 px glyphs, so we train a small one **with open_clip's own pieces** — a registered model config
# (a ViT over 8×8 patches, the standard tokenizer with a short context), `ClipLoss` with its learnable
# temperature, and open_clip's `local-dir` format, so the shipped model loads with nothing but
# `open_clip.create_model_and_transforms("local-dir:...")`.
#
# The captions come from each font style's metadata (`tagelib.clip_glyph`): weight, italic, width class,
# monospace and classification, each by a random synonym, in random subsets and orders — so that short prompts
# like *"a wide glyph"* are in distribution. CLIP trains on the **training font families and seen categories
# only**: nothing about the unseen categories or the held-out families reaches it. We measure it on the
# held-out families by retrieval (image → caption and caption → image).
#
# Then we train an **attribute probe**, a small CNN with one logit per prompt attribute, on real glyphs against
# *measured* labels (stroke thickness, slant, advance width): the ruler that later says whether a glyph generated
# for "a bold glyph" does look bold — independent of the CLIP model it was steered with.
#
# The `tiny` profile loads the shipped models (`data/clip/glyph32_clip`, `data/clip/glyph32_attributes`, made by
# this notebook with the `clip` profile: `make clip`); `smoke` trains miniatures for seconds.

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import torch

from tagelib.atomic import write_text_atomic
from tagelib.attribute_probe import (AttributeProbe, ProbeConfig, ProbeTrainConfig, attribute_labels,
                                     load_probe, probe_accuracy, save_probe, train_probe)
from tagelib.clip_glyph import (ATTRIBUTE_PROMPTS, ClipTrainConfig, GlyphClipConfig, clip_size_bytes, create_clip,
                                embed_images, encode_text, full_caption, load_clip, prompt_auc, random_caption,
                                retrieval, save_clip, train_clip)
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.paths import checkpoint_file, resolve
from tagelib.write_guard import output_dirs, output_path
from tagelib.plotting import image_grid, save_figure, smooth
from tagelib.timing import Stopwatch

# %% tags=["parameters"]
run_dir: str = "results/tiny"  # every output of this run goes under this folder
figures_dir: str = "{run_dir}/papers_figures"  # tables and figures (papers_figures/: only the unmodified `make reproduce`)
data_dir: str = "data/glyphs"  # the glyph artefact
clip: str = "data/clip/glyph32_clip"  # CLIP model folder (open_clip local-dir) to load, or to write when training
attribute_probe: str = "data/clip/glyph32_attributes"  # attribute probe checkpoint to load, or to write
seed: int = 0  # seeds training, captions and the figure
threads: int = 2  # torch CPU threads
clip_steps: int = 0  # 0: load `clip`; otherwise train a CLIP model from scratch for this many steps
probe_steps: int = 0  # 0: load `attribute_probe`; otherwise train a probe for this many steps
overwrite: bool = False  # training may replace an existing `clip` / `attribute_probe` only when this is True
clip_batch: int = 128  # (glyph, caption) pairs per step, distinct styles
clip_lr: float = 0.001  # AdamW peak learning rate (one-cycle schedule)
clip_patch: int = 8  # ViT patch size (32 / patch)^2 tokens
clip_width: int = 128  # ViT width
clip_layers: int = 4  # ViT layers
clip_text_width: int = 48  # text transformer width (the 49408-token table dominates the file size)
clip_embed: int = 64  # joint embedding size
probe_batch: int = 128  # real glyphs per probe step
probe_lr: float = 0.003  # probe AdamW peak learning rate
probe_widths: str = "16,32,64"  # probe conv widths of the three stages
train_max_styles: int = 0  # train on this many random training styles only (0: all; smoke uses a slice)
eval_max_styles: int = 0  # evaluate on this many random held-out styles only (0: all)

# %%
torch.set_num_threads(threads)
torch.manual_seed(seed)
out_dir, fig_dir = output_dirs(run_dir, figures_dir, "00_clip")
clock = Stopwatch(out_dir)  # where this notebook's time goes: <run_dir>/<notebook>/stage_seconds.json
ds = GlyphDataset.load(resolve(data_dir))
rng = np.random.default_rng(seed)
train_styles, heldout_styles = np.array(ds.split_info["train_styles"]), np.array(ds.split_info["heldout_styles"])
if train_max_styles:
    train_styles = np.sort(rng.choice(train_styles, size=min(train_max_styles, len(train_styles)), replace=False))
if eval_max_styles:
    heldout_styles = np.sort(rng.choice(heldout_styles, size=min(eval_max_styles, len(heldout_styles)), replace=False))
seen = np.asarray(ds.seen)
train_cov = ds.coverage[train_styles][:, seen]  # (S_train, K_seen): training families x seen categories only
train_styles = train_styles[train_cov.any(1)]
train_cov = ds.coverage[train_styles][:, seen]
print(f"training: {len(train_styles)} styles of the training families x {len(seen)} seen categories = {train_cov.sum()} glyphs")
print(f"held out: {len(heldout_styles)} styles of {len({ds.styles[i]['family_key'] for i in heldout_styles})} families never trained on")
clock.lap("set-up")

# %% [markdown]
# ## Captions from the style metadata
#
# Each style has a full, deterministic caption (`full_caption`, the dataset's `caption`), and training draws
# random captions naming a subset of its true attributes, by synonyms ('extended' / 'wide' / 'expanded';
# weights 100–300 may also be called 'light' and 600–900 'bold'), in random orders and templates. A third of the
# training captions are the full ones. The attribute prompts the PSM uses are plain "a <word> glyph" ("an italic glyph").

# %%
for i in rng.choice(train_styles, size=3, replace=False):
    st = ds.styles[i]
    print(f"{st['full_name']:32s} full: {full_caption(st)!r}\n{'':32s} random: {[random_caption(st, rng) for _ in range(3)]}")
print("attribute prompts:", list(ATTRIBUTE_PROMPTS.values()))

# %% [markdown]
# ## Train or load the CLIP model
#
# A ViT over 8×8 patches (16 tokens and a class token) and a small text transformer over open_clip's BPE tokens,
# trained with `ClipLoss` (symmetric InfoNCE, learnable logit scale clamped at 100 as open_clip does) and AdamW.
# Each step draws distinct styles, one random seen glyph each, lightly augmented (±1 px shifts, blur, noise;
# no rotation or stroke change — slant and weight are what the captions say). A 8×8-patch ViT rather than 4×4:
# on two CPU cores the 65-token ViT costs 5× more per step, and in a five-minute budget more steps win.

# %%
if clip_steps < 0 or probe_steps < 0:
    raise ValueError("clip_steps and probe_steps: use 0 to load, or a positive number of steps to train")
clip_dir = output_path("clip", clip, run_dir) if clip_steps > 0 else resolve(clip)  # written: by the write rule
if clip_steps > 0:
    if clip_dir.exists() and not overwrite:
        raise FileExistsError(f"{clip} exists; set overwrite=True to retrain over it, or choose another path")
    cfg = GlyphClipConfig(embed_dim=clip_embed, patch_size=clip_patch, vision_width=clip_width, vision_layers=clip_layers,
                          text_width=clip_text_width)
    model, tokenizer = create_clip(cfg, seed=seed)
    train_cfg = ClipTrainConfig(steps=clip_steps, batch_size=clip_batch, lr=clip_lr, seed=seed)
    history = train_clip(model, tokenizer, ds.images[train_styles][:, seen], train_cov,
                         [ds.styles[i] for i in train_styles], train_cfg)
    save_clip(clip_dir, model, cfg, {"train": train_cfg.__dict__, "train_styles": int(len(train_styles)),
                                     "train_glyphs": int(train_cov.sum()), "train_seconds": history["seconds"][-1],
                                     "history": history}, overwrite=overwrite)
model, tokenizer = load_clip(clip_dir)
info = model.training_info
n_params = sum(p.numel() for p in model.parameters())
print(f"CLIP: {n_params / 1e6:.2f} M parameters, {clip_size_bytes(clip_dir) / 1e6:.1f} MB; trained {info['train']['steps']} "
      f"steps on {info['train_glyphs']} glyphs in {info['train_seconds'] / 60:.1f} min")
clock.lap("training")

# %%
fig, ax = plt.subplots(1, 3, figsize=(12, 2.8))
ax[0].plot(smooth(info["history"]["loss"], 50)); ax[0].set_title("CLIP loss (symmetric InfoNCE)")
ax[1].plot(smooth(info["history"]["accuracy"], 50)); ax[1].set_title("in-batch image→caption top-1")
ax[2].plot(info["history"]["logit_scale"]); ax[2].set_title("logit scale (1 / temperature)")
for a in ax:
    a.set_xlabel("step")
save_figure(fig, out_dir / "clip_training.png")
plt.show()
clock.lap("figures")

# %% [markdown]
# ## Retrieval on the held-out font families
#
# Every glyph of the held-out families is embedded, and so is every distinct full caption of those families.
# *Image → caption*: an image is right when its own style's full caption is retrieved (top-1, top-5).
# *Caption → image*: a retrieved image is right when its style has that caption. Chance levels beside. The seen
# and unseen categories are scored apart: CLIP never saw an unseen character, so its row says whether the style
# reading carries over to new shapes.

# %%
hs, hc = np.nonzero(ds.coverage[heldout_styles])
hs = heldout_styles[hs]
captions = sorted({full_caption(ds.styles[i]) for i in hs})
truth = torch.tensor([captions.index(full_caption(ds.styles[i])) for i in hs])
images = ds.tensor(hs, hc)
image_emb = embed_images(model, images)
with torch.no_grad():
    caption_emb, prompt_emb = encode_text(model, tokenizer, captions), encode_text(model, tokenizer, list(ATTRIBUTE_PROMPTS.values()))
is_seen = np.isin(hc, seen)
scores = {name: retrieval(image_emb[m], caption_emb, truth[m]) for name, m in
          (("seen categories", is_seen), ("unseen categories", ~is_seen), ("all categories", np.ones_like(is_seen)))}
labels = torch.from_numpy(attribute_labels(ds.styles)[hs])  # (N, A) measured attribute labels
auc = prompt_auc(image_emb, prompt_emb, labels)
for name, r in scores.items():
    print(f"{name:18s} {r['images']:5d} images, {r['captions']} captions: image→caption top-1 {r['image_to_caption_top1']:.1%} "
          f"top-5 {r['image_to_caption_top5']:.1%}; caption→image top-1 {r['caption_to_image_top1']:.1%} top-5 {r['caption_to_image_top5']:.1%}")
print("prompt AUC vs measured labels:", {w: round(float(a), 3) for w, a in zip(ATTRIBUTE_PROMPTS, auc)})
clock.lap("metrics")

# %% [markdown]
# Do the attribute prompts mean what they say? For each prompt, the ROC AUC of its similarity to the held-out
# glyphs against the *measured* label (`attribute_labels`: stroke thickness for bold / light, slant for italic,
# advance width for condensed / wide): 0.5 is no better than chance. Note that the captions name the *declared*
# weight while the labels measure the stroke, so bold / light also count the fonts whose declared weight lies.

# %%
pick = rng.choice(len(hs), size=min(8, len(hs)), replace=False)
top = (image_emb[pick] @ caption_emb.T).topk(min(2, len(captions)), dim=1).indices  # (8, 2)
fig, axes = plt.subplots(2, 4, figsize=(11, 5.6))
for ax in axes.ravel()[len(pick):]:
    ax.axis("off")
for ax, i, t in zip(axes.ravel(), pick, top):
    image_grid(images[i][None, None], ax=ax)
    guesses = "\n".join(("✓ " if j == truth[i] else "✗ ") + captions[j].removeprefix("a ").removeprefix("an ").removesuffix(" glyph")
                        for j in t.tolist())
    ax.set_title(f"{full_caption(ds.styles[hs[i]]).removeprefix('a ').removeprefix('an ').removesuffix(' glyph')}\n{guesses}",
                 fontsize=8)
fig.suptitle("held-out families: true caption (top), CLIP's two best captions", fontsize=9)
save_figure(fig, fig_dir / "fig_clip_retrieval.png")
plt.show()
clock.lap("figures")

# %% [markdown]
# ## The attribute probe
#
# One logit per prompt attribute, trained with BCE (positives weighted by their rarity, so 0.5 is the balanced
# threshold) on the real glyphs of the training families and seen categories, against measured labels. It is
# scored on every glyph of the held-out families; with rare attributes (few held-out wide or condensed fonts) the
# balanced accuracy (mean of the recalls of both classes; "–" where a class is absent) is the number to read.

# %%
probe_path = output_path("attribute_probe", attribute_probe, run_dir) if probe_steps > 0 else resolve(attribute_probe)
train_labels = attribute_labels([ds.styles[i] for i in train_styles])  # (S_train, A)
if probe_steps > 0:
    if checkpoint_file(probe_path).exists() and not overwrite:
        raise FileExistsError(f"{attribute_probe} exists; set overwrite=True to retrain over it, or choose another path")
    ts, tc = np.nonzero(train_cov)
    probe = AttributeProbe(ProbeConfig(widths=tuple(int(w) for w in probe_widths.split(","))))
    probe_cfg = ProbeTrainConfig(steps=probe_steps, batch_size=probe_batch, lr=probe_lr, seed=seed)
    probe_hist = train_probe(probe, ds.images[train_styles[ts], seen[tc]], train_labels[ts], probe_cfg)
    save_probe(probe_path, probe, {"train": probe_cfg.__dict__, "train_glyphs": int(len(ts)),
                                   "train_seconds": probe_hist["seconds"][-1], "history": probe_hist})
probe = load_probe(probe_path)
pinfo = probe.training_info
accuracy = probe_accuracy(probe.predict(images), labels.numpy())
print(f"probe: {sum(p.numel() for p in probe.parameters()) / 1e3:.0f} k parameters, trained {pinfo['train']['steps']} steps "
      f"in {pinfo['train_seconds']:.0f} s")
for name, a in accuracy.items():
    balanced = "–" if a["balanced_accuracy"] is None else f"{a['balanced_accuracy']:.1%}"
    print(f"{name:11s} accuracy {a['accuracy']:.1%}  balanced {balanced}  ({a['positives']}/{a['images']} positive)")
clock.lap("training")

# %%
fig, ax = plt.subplots(1, 2, figsize=(11, 2.8))
ax[0].plot(smooth(pinfo["history"]["loss"], 50)); ax[0].set_title("probe training loss (weighted BCE)"); ax[0].set_xlabel("step")
ax[1].bar(list(accuracy), [a["balanced_accuracy"] or 0 for a in accuracy.values()], color="0.4")
ax[1].axhline(0.5, color="r", lw=0.8); ax[1].set_ylim(0, 1); ax[1].set_title("held-out balanced accuracy")
save_figure(fig, out_dir / "attribute_probe.png")
plt.show()
clock.lap("figures")

# %%
head = (f"data `{data_dir}`, seed {seed}; evaluated on {len(hs)} glyphs of {len(heldout_styles)} styles of held-out font "
        "families (never trained on)")
lines = ["# CLIP of the glyph domain: retrieval on held-out font families", "",
         f"model `{clip}` (open_clip local-dir), {n_params / 1e6:.2f} M parameters, {clip_size_bytes(clip_dir) / 1e6:.1f} MB, "
         f"{info['train']['steps']} steps × {info['train']['batch_size']}, seed {info['train']['seed']}, trained in "
         f"{info['train_seconds'] / 60:.1f} min on training families × seen categories; {head}. Chance in brackets.", "",
         "| held-out glyphs | images | captions | image→caption top-1 | top-5 | caption→image top-1 | top-5 |",
         "|---|---|---|---|---|---|---|"]
for name, r in scores.items():
    lines.append(f"| {name} | {r['images']} | {r['captions']} | {r['image_to_caption_top1']:.1%} ({r['image_to_caption_chance_top1']:.1%}) "
                 f"| {r['image_to_caption_top5']:.1%} ({r['image_to_caption_chance_top5']:.1%}) | {r['caption_to_image_top1']:.1%} "
                 f"({r['caption_to_image_chance_top1']:.1%}) | {r['caption_to_image_top5']:.1%} ({r['caption_to_image_chance_top5']:.1%}) |")
lines += ["", "Attribute prompts: ROC AUC of the prompt's similarity against the measured label (0.5 = chance).", "",
          "| " + " | ".join(ATTRIBUTE_PROMPTS.values()) + " |", "|" + "---|" * len(ATTRIBUTE_PROMPTS),
          "| " + " | ".join("–" if a.isnan() else f"{float(a):.3f}" for a in auc) + " |"]
write_text_atomic(fig_dir / "table_clip.md", "\n".join(lines) + "\n")
plines = ["# Attribute probe: accuracy on held-out font families (measured labels, threshold 0.5)", "",
          f"checkpoint `{attribute_probe}`, {pinfo['train']['steps']} steps × {pinfo['train']['batch_size']}, seed "
          f"{pinfo['train']['seed']}, trained on training families × seen categories; {head}.", "",
          "| attribute | label | positives | accuracy | balanced accuracy |", "|---|---|---|---|---|"]
rule = {"bold": "stroke > 0.130 cap", "light": "stroke < 0.084 cap", "italic": "abs(slant) > 5°", "serif": "classification",
        "sans-serif": "classification", "monospace": "equal advances", "condensed": "width < 0.62", "wide": "width > 0.90"}
for name, a in accuracy.items():
    balanced = "–" if a["balanced_accuracy"] is None else f"{a['balanced_accuracy']:.1%}"
    plines.append(f"| {name} | {rule[name]} | {a['positives']}/{a['images']} | {a['accuracy']:.1%} | {balanced} |")
write_text_atomic(fig_dir / "table_attribute_probe.md", "\n".join(plines) + "\n")
write_text_atomic(out_dir / "metrics.json", json.dumps(
    {"retrieval": scores, "prompt_auc": {w: None if a.isnan() else float(a) for w, a in zip(ATTRIBUTE_PROMPTS, auc)}, "probe": accuracy,
     "clip_parameters": n_params, "clip_bytes": clip_size_bytes(clip_dir), "seed": seed}, indent=1))
print("\n".join(lines + [""] + plines))
clock.lap("figures")

# %% [markdown]
# ## Recap
#
# - `tagelib.clip_glyph` builds a small CLIP with open_clip (registered config, `ClipLoss`, local-dir format) and
#   trains it on captions drawn from the style metadata — training families and seen categories only.
# - The table above is its retrieval on font families it never saw, with chance levels; the prompt AUCs say
#   whether "a bold glyph", "a wide glyph", … point at glyphs that measure bold, wide, ….
# - `tagelib.attribute_probe` is the independent ruler of those attributes for generated glyphs, trained on real
#   glyphs against measured labels.
# - Later notebooks load both: `load_clip(clip)` for the PSM's prompt embeddings and CLIP loss
#   (`encode_images` is differentiable), `load_probe(attribute_probe)` to score prompted generations.
