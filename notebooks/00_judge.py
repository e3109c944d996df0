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
# # 00 — The judge: a glyph classifier trained on real glyphs only
#
# In this notebook we will build the ruler every later notebook measures generations with. Perceptual
# distances at 32 px are lenient: a generated `p` that looks like a `D` can score a low LPIPS. So before any
# generation we train a **judge** — a category classifier of the glyph domain — and ask, for every generated
# image, whether the judge recognises the character it was meant to be (*category preservation*; DeltaGAN and
# SAGE call it category retention). Its penultimate features also give a Fréchet distance of the domain
# ("FD-domain").
#
# The judge trains **only on real glyphs**, never on generated ones, and never on the images the metrics
# compare against (`tagelib.judge.judge_split`):
# - all categories — seen and unseen — in the training font families, except the unseen categories' shot
#   pools and the second half of their evaluation pools (the **reference halves**, the real images of the
#   LoFGAN protocol), and except a seeded 10 % of the training styles, kept to validate on seen categories;
# - the held-out font families are never trained on: they say how the judge does on new type designs.
#
# The `tiny` profile loads the shipped judge (`data/judge/glyph32_judge`, made by this notebook with the
# `judge` profile: `make judge`); `smoke` trains a miniature for seconds.

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import torch

from tagelib import report
from tagelib.atomic import write_text_atomic
from tagelib.distributed import pick_device
from tagelib.paper_data import load_dataset
from tagelib.judge import (GlyphJudge, JudgeConfig, JudgeTrainConfig, homoglyph_groups, judge_split, load_judge,
                           real_accuracy, save_judge, train_judge)
from tagelib.paths import checkpoint_file, resolve
from tagelib.write_guard import output_dirs, output_path
from tagelib.plotting import confusion_strip, image_grid, save_figure, smooth
from tagelib.timing import Stopwatch

# %% tags=["parameters"]
run_dir: str = "results/tiny"  # every output of this run goes under this folder
figures_dir: str = "{run_dir}/papers_figures"  # tables and figures (papers_figures/: only the unmodified `make reproduce`)
dataset: str = "glyphs"  # glyphs, or a paper dataset: animal, flower, vggface, synthetic (LoFGAN .npy), folders (AGE)
data_dir: str = "data/glyphs"  # the glyph artefact's folder, or the paper dataset's .npy file / folder
judge: str = "data/judge/glyph32_judge"  # judge checkpoint to load, or to write when training
seed: int = 0  # seeds the split, training and sampling
threads: int = 2  # torch CPU threads
device: str = "auto"  # auto (CUDA when present), cpu or cuda: where the judge trains and runs
judge_steps: int = 0  # 0: load `judge`; otherwise train a judge from scratch for this many steps
overwrite: bool = False  # training may replace an existing `judge` only when this is True
judge_batch: int = 128  # real glyphs per step
judge_lr: float = 0.003  # AdamW peak learning rate (one-cycle schedule)
judge_widths: str = "16,32,64"  # conv widths of the three stages
judge_embed: int = 128  # penultimate (FD-domain) feature size
val_fraction: float = 0.1  # training styles held out to validate on seen categories
train_max_styles: int = 0  # train on this many random training styles only (0: all; smoke uses a slice)

# %%
torch.set_num_threads(threads)
torch.manual_seed(seed)
target = pick_device(device)
out_dir, fig_dir = output_dirs(run_dir, figures_dir, "00_judge")
clock = Stopwatch(out_dir)  # where this notebook's time goes: <run_dir>/<notebook>/stage_seconds.json
ds = load_dataset(dataset, data_dir)
parts = judge_split(ds, val_fraction=val_fraction, seed=seed)
for name, (s, c) in parts.items():
    print(f"{name:10s} {len(s):7d} glyphs, {len(set(s.tolist())):5d} styles, {len(set(c.tolist())):3d} categories")
clock.lap("set-up")

# %% [markdown]
# ## Train or load
#
# A small VGG-style CNN (three stages of two 3×3 convolutions, max-pooling, a 128-d embedding, a linear
# head), trained with AdamW and label smoothing. It must judge the *character*, not how cleanly it is drawn:
# every image is standardised first (ink and paper levels do not matter), and the real glyphs are augmented
# to look like a generator's drawings — small affine changes, thicker or thinner strokes, blur and pixel noise.
# (A first judge trained without blur and noise misread 88 % of the E→G reconstructions, most often as `Q`,
# though most of them looked right by eye: a ruler has to be checked on the kind of images it will measure.) Size and position are barely augmented:
# they are what tells `I` from `l` and `O` from `0`.

# %%
if judge_steps < 0:
    raise ValueError(f"judge_steps={judge_steps}: use 0 to load `judge`, or a positive number of steps to train")
if judge_steps > 0:
    judge_path = output_path("judge", judge, run_dir)  # a written path, checked by the write rule
    if checkpoint_file(judge_path).exists() and not overwrite:
        raise FileExistsError(f"{judge} exists; set overwrite=True to retrain over it, or choose another path")
    s, c = parts["train"]
    if train_max_styles:
        keep = np.isin(s, np.random.default_rng(seed).choice(np.unique(s), size=train_max_styles, replace=False))
        s, c = s[keep], c[keep]
    cfg = JudgeConfig(num_classes=len(ds.categories), image_size=ds.size, in_channels=ds.channels,
                      widths=tuple(int(w) for w in judge_widths.split(",")), embed_dim=judge_embed)
    model = GlyphJudge(cfg).to(target)
    model.categories, model.homoglyphs = list(ds.categories), homoglyph_groups(ds)
    train_cfg = JudgeTrainConfig(steps=judge_steps, batch_size=judge_batch, lr=judge_lr, seed=seed)
    history = train_judge(model, ds.view(s, c), c, train_cfg, to_tensor=ds.to_tensor)
    model.cpu()
    save_judge(judge_path, model, {"train": train_cfg.__dict__, "val_fraction": val_fraction,
                                       "train_glyphs": int(len(s)), "train_seconds": history["seconds"][-1],
                                       "history": history})
model = load_judge(resolve(judge), categories=ds.categories).to(target)
info = model.training_info
n_params = sum(p.numel() for p in model.parameters())
print(f"judge: {n_params / 1e6:.2f} M parameters, {checkpoint_file(resolve(judge)).stat().st_size / 1e6:.2f} MB; "
      f"trained {info['train']['steps']} steps on {info['train_glyphs']} real glyphs in {info['train_seconds'] / 60:.1f} min")
clock.lap("training")

# %%
fig, ax = plt.subplots(1, 2, figsize=(10, 2.8))
ax[0].plot(smooth(info["history"]["loss"], 50)); ax[0].set_title("training loss (label-smoothed CE)"); ax[0].set_xlabel("step")
ax[1].plot(smooth(info["history"]["accuracy"], 50)); ax[1].set_title("training-batch accuracy (augmented)"); ax[1].set_xlabel("step")
save_figure(fig, out_dir / "judge_training.png")
plt.show()
clock.lap("figures")

# %% [markdown]
# ## How good is the ruler?
#
# Top-1 accuracy on real glyphs it never trained on: seen categories in the validation styles, the unseen
# categories' reference halves (the very images the metrics compare generations with), and every category in
# the held-out font families. This is the **real-glyph ceiling** of category preservation: no generator can be
# expected to score above it.

# %%
accuracy = {name: real_accuracy(model, ds, *parts[name]) for name in ("val_seen", "reference", "heldout")}
n_tf = accuracy["val_seen"]["n"] + accuracy["reference"]["n"]
overall = {key: (accuracy["val_seen"][key] * accuracy["val_seen"]["n"] + accuracy["reference"][key] * accuracy["reference"]["n"]) / n_tf
           for key in ("all", "all_strict")}
print(f"homoglyph groups (scored as one category): {model.homoglyphs}")
for name, a in accuracy.items():
    unseen = "" if a["unseen"] is None else f", unseen {a['unseen']:.1%} (strict {a['unseen_strict']:.1%})"
    print(f"{name:10s} {a['n']:6d} glyphs: all {a['all']:.1%} (strict {a['all_strict']:.1%}){unseen}")
print(f"held-out glyphs of the training families, overall: {overall['all']:.1%} (strict {overall['all_strict']:.1%})")
clock.lap("metrics")

# %%
ref = accuracy["reference"]["per_category"]
fig, axes = plt.subplots(1, 2, figsize=(12, 3), gridspec_kw={"width_ratios": [3, 1]})
axes[0].bar(list(ref), list(ref.values()), color="0.4"); axes[0].set_ylim(0.5, 1.0)
axes[0].set_title("judge accuracy per unseen category (reference halves, real glyphs)")
confusion_strip(accuracy["reference"]["confusions"], axes[1], title="most frequent misreadings (reference)")
save_figure(fig, fig_dir / "fig_judge_accuracy.png")
plt.show()

# %% [markdown]
# Which real glyphs does it get wrong? Mostly true look-alikes (`O`/`0`, `I`/`l`, `θ`/`Θ`) and display fonts
# with unusual shapes. Some characters are drawn with the *same outline* by most fonts — Greek `Γ` and Cyrillic
# `Г`, `Π` and `П`, `Φ` and `Ф` — and no judge can tell them apart: `tagelib.judge.homoglyph_groups` finds them in
# the data (identical in more than half of the fonts covering both) and the scores count them as one category.
# Both numbers are reported: with homoglyphs merged, and strict.

# %%
s, c = parts["reference"]
x, pred = ds.tensor(s, c), accuracy["reference"]["predicted"]
canon = model.canonical
wrong = torch.nonzero(canon[pred] != canon[torch.from_numpy(c)]).flatten()[:24]
if len(wrong):
    fig, ax = plt.subplots(figsize=(8, 1.2))
    image_grid(x[wrong][None], ax=ax, col_labels=[f"{ds.categories[c[i]]}→{ds.categories[pred[i]]}" for i in wrong.tolist()],
               title="misread real glyphs (intended→judged)")
    save_figure(fig, out_dir / "judge_misreadings.png")
    plt.show()

# %%
lines = ["# The judge (glyph classifier trained on real glyphs only; top-1 accuracy on real glyphs it never saw)", "",
         f"checkpoint `{judge}`, {n_params / 1e6:.2f} M parameters, {info['train']['steps']} steps × {info['train']['batch_size']}, "
         f"seed {info['train']['seed']}, trained in {info['train_seconds'] / 60:.1f} min; data `{data_dir}`. Homoglyphs scored as one "
         f"category: {', '.join('/'.join(g) for g in model.homoglyphs) or 'none'}; strict top-1 in brackets.", "",
         "| real glyphs | images | all categories | unseen categories |", "|---|---|---|---|"]
fmt = lambda a, key: "–" if a[key] is None else f"{a[key]:.1%} ({a[key + '_strict']:.1%})"
for name, label in [("val_seen", "seen categories, validation styles (training families)"),
                    ("reference", "unseen categories, reference halves (training families)"),
                    ("heldout", "held-out font families, every category")]:
    lines.append(f"| {label} | {accuracy[name]['n']} | {fmt(accuracy[name], 'all')} | {fmt(accuracy[name], 'unseen')} |")
lines.append(f"| held-out glyphs of the training families, overall | {n_tf} | {fmt(overall, 'all')} | {fmt(accuracy['reference'], 'unseen')} |")
report.write_table(fig_dir / "table_judge.md", "\n".join(lines) + "\n", data_dir)
write_text_atomic(out_dir / "metrics.json", json.dumps(
    {"accuracy": {k: {f: v for f, v in a.items() if f != "predicted"} for k, a in accuracy.items()},
     "overall_training_families": overall, "homoglyphs": model.homoglyphs, "parameters": n_params, "seed": seed}, indent=1))
print("\n".join(lines))
clock.lap("figures")

# %% [markdown]
# ## Recap
#
# - The judge is a small CNN trained on real glyphs only, never on the shots or on the reference halves the
#   metrics compare with; the table above is its accuracy on real glyphs it never saw — the ceiling of
#   category preservation.
# - Its mistakes on real glyphs are true look-alikes; a generator's misses beyond this ceiling are its own.
# - Every generation figure and table from now on (`tagelib.evaluation.evaluate`) reports it beside FD, LPIPS
#   diversity and collapse.
