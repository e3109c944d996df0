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
# # 02 — Attribute factorization and the AGE baseline
#
# In this notebook we will split every W+ code into a **category-relevant** part — the class embedding
# `w̄_c`, the mean code of a category — and a **category-irrelevant** residual `a = w − w̄_c` on a set of
# edited layers S (AGE, Ding et al. 2022). We will look at the residuals (do they carry style?), move them
# across categories, and train **AGE**: a dictionary of attribute directions `A` with small MLPs that map
# a residual to sparse coefficients, so that `w̄_c + A·n` reconstructs the code. Sampling `n` from a Gaussian
# fitted on seen categories edits the attributes of an unseen category's shot. AGE is the baseline TAGE
# must beat. E and G stay frozen throughout.

# %%
import json
import time

import matplotlib.pyplot as plt
import torch

from tagelib import age as age_lib
from tagelib import evaluation, fewshot, generators, report
from tagelib.atomic import write_text_atomic
from tagelib.checkpoints import save_module
from tagelib.factorize import residuals
from tagelib.plotting import save_figure, smooth, verdict_figure
from tagelib.run_cache import RunCache
from tagelib.timing import Stopwatch
from tagelib.write_guard import output_path
from tagelib.stages import StageRunner

# %% tags=["parameters"]
run_dir: str = "results/tiny"  # every output of this run goes under this folder
figures_dir: str = "{run_dir}/papers_figures"  # tables and figures (papers_figures/: only the unmodified `make reproduce`)
dataset: str = "glyphs"  # glyphs, or a paper dataset: animal, flower, vggface, synthetic (LoFGAN .npy), folders (AGE)
data_dir: str = "data/glyphs"  # the glyph artefact's folder, or the paper dataset's .npy file / folder
checkpoint: str = "data/latent/glyph32"  # the frozen latent space from notebook 01
seed: int = 0  # seeds subsets, training and sampling
threads: int = 2  # torch CPU threads
device: str = "auto"  # auto (CUDA when present), cpu or cuda: chosen once, the networks run there
amp: bool = True  # bf16 autocast of the generator on a GPU (never on the CPU)
train_processes: int = 1  # processes for the training stage; more than 1 runs it under torchrun (DDP)
fd_extractors: str = "judge,vgg16"  # Fréchet-distance features: judge (FD-domain), vgg16, inception (FID)
inception_dir: str = ""  # folder holding clean-fid's Inception-v3 file, for the inception extractor
max_styles: int = 300  # training-family styles per seen category used to fit the editing modules
edit_layers: str = "0,1,2,3,4,5,6,7"  # S, the edited W+ layers
layer_sets: str = "0,1,2,3|0,1,2,3,4,5|0,1,2,3,4,5,6,7"  # candidate S compared by transfer error
age_groups: str = "0,1,2,3|4,5,6,7"  # AGE layer groups, one coefficient MLP each
dict_size: int = 100  # AGE dictionary length per layer
age_steps: int = 600  # AGE training steps
age_batch: int = 16  # AGE batch size
age_lr: float = 0.001  # AGE learning rate (Adam; AGE's Ranger at 1e-4 needs far more steps)
alpha: float = 1.0  # AGE edit strength
n_pairs: int = 512  # glyph pairs for transfer errors
judge: str = "data/judge/glyph32_judge"  # the judge (classifier of real glyphs) from 00_judge
eval_generated: int = 128  # generated images per unseen category (LoFGAN protocol)
eval_real: int = 128  # real reference images per unseen category
alpha_sweep: str = "0.25,0.5"  # smaller AGE edit strengths evaluated beside alpha, with 1 shot
sweep_generated: int = 32  # generated images per unseen category for each α sweep point (the `n / cat.` column)
episodes: int = 20  # few-shot classification episodes per shot count for AGE (0: skip)
episode_generated: int = 10  # generated images per class added to an episode's support set
collapse_quantile: float = 0.01  # collapse floor: this quantile of LPIPS between distinct real fonts
refine_steps: int = 50  # refinement steps after E when inverting the shots (0: E alone, pSp's pure inversion)
refine_lr: float = 0.03  # Adam learning rate of that refinement
shipped_codes: bool = True  # a run folder without shot codes starts from data/method/shot_codes when made for this E, G and refinement (content key)
ship_codes_as: str = ""  # also save the run's shot codes as this shipped file (`make method`: data/method/shot_codes)
ship_as: str = ""  # also save the trained AGE as this shipped checkpoint (`make method`: data/method/age; "": run folder only)

# %%
ds, model, S, lpips_alex, lpips_vgg, out_dir, fig_dir, rng, dist = fewshot.editing_context(
    "02_attribute_factorization", run_dir, figures_dir, data_dir, checkpoint, edit_layers, seed, threads, dataset, device, amp)
clock = Stopwatch(out_dir)  # where this notebook's time goes: <run_dir>/<notebook>/stage_seconds.json
cache = RunCache.of_run(out_dir)  # work shared by the run's notebooks, keyed by content: <run_dir>/cache

# %% [markdown]
# ## Inverting the shots
#
# Every few-shot method starts from the codes of the k shots of an unseen category. E alone (pSp's inversion,
# `refine_steps = 0`, what the paper does) lands near the seen characters it was trained on; `refine_steps`
# Adam steps on L1 + LPIPS-alex between G(w) and the shot (G frozen) pull each code onto its image. Notebook 01
# measures what that buys; here we pay it once for every image of the shot pools, and the methods below reuse it.

# %%
invert = fewshot.shot_inverter(model, ds, refine_steps, lpips_alex, refine_lr, cache, seed, shipped_codes)
print(invert.summary())
if ship_codes_as:  # `make method`: the codes a notebook opened on a fresh clone starts from
    invert.save_as(output_path("ship_codes_as", ship_codes_as, run_dir))
clock.lap("inversion")

# %% [markdown]
# ## Class embeddings and residuals
#
# We encode up to `max_styles` training-family styles of every seen category. `class_embeddings` averages
# the codes per category; the residuals are what remains.

# %%
w, labels, style_ids, images = fewshot.training_codes(model, ds, max_styles, seed)
seen_labels, class_emb = fewshot.seen_class_embeddings(w, labels, ds)  # (N,), (C_seen, L, D)
a = residuals(w, class_emb[seen_labels], S)  # (N, |S|, D)
print(f"{len(w)} codes of {len(ds.seen)} seen categories; residual norm / code norm: "
      f"{a.norm(dim=-1).mean() / w[:, S].norm(dim=-1).mean():.3f}")
clock.lap("set-up")

# %% [markdown]
# Do the residuals carry the font's style rather than the category? A 2-D projection (PCA) of the
# flattened residuals, coloured by two measured style attributes (glyphs: the font's stroke and slant; photographs:
# brightness and saturation of the image), and by category.

# %%
flat = a.flatten(1)
flat = flat - flat.mean(0)
_, _, v = torch.pca_lowrank(flat, q=2, center=False)
xy = (flat @ v).numpy()
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for ax, (key, values) in zip(axes[:2], ds.sample_attributes(style_ids.numpy(), labels.numpy(), images).items()):
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=2, cmap="viridis")
    plt.colorbar(sc, ax=ax); ax.set_title(f"residual PCA, colour = {key}")
axes[2].scatter(xy[:, 0], xy[:, 1], c=seen_labels.numpy(), s=2, cmap="tab20"); axes[2].set_title("colour = category")
save_figure(fig, out_dir / "residual_pca.png")
plt.show()
clock.lap("figures")

# %% [markdown]
# ## Which layers to edit?
#
# AGE edits layers 0–5 of 18 (4–16 px of a 1024 px generator), leaving the fine layers to the image's own
# code. Our glyph latent space was trained with the cross-reconstruction loss on **all 8 layers**
# (notebook 01): the class embedding + residual factorisation holds on every layer by construction, so we
# edit S = all layers. As an ablation (not used to choose S: it runs on the evaluation pairs) we compare
# candidate sets by the **cross-category transfer error** on unseen categories with 3 shots — the real glyph
# of the target character in the source's font is the ground truth; layers outside S come from the target's
# class embedding. Fonts here are training families: the latent space saw them, on seen categories only.

# %%
shots3 = fewshot.draw_shots(ds, 3, seed)
_, emb3 = fewshot.shot_codes(model, ds, shots3)
emb3 = dict(zip(shots3, emb3))
pairs = fewshot.eval_pairs(ds, ds.unseen, n_pairs, rng)
layer_choice = {}
for cand in layer_sets.split("|"):
    layer_choice[cand] = fewshot.transfer_error(model, ds, pairs, emb3, [int(i) for i in cand.split(",")], lpips_alex)
    print(f"S = {cand:18s} transfer LPIPS-alex {layer_choice[cand]:.4f}")
clock.lap("metrics")

# %% [markdown]
# ## AGE: dictionary, coefficients, training
#
# `A` has shape `(|S|, D, dict_size)`; one MLP per layer group maps the group's residual to `dict_size`
# coefficients; the edited code is `w̄_c + A·n` on S. Losses with AGE's weights: L2 + LPIPS reconstruction
# (here against the real glyph, as AGE does; LPIPS alex for CPU speed), sparsity of `n` (0.005) and
# orthogonality of `A` to the class embeddings (0.0005). Only `A` and the MLPs train.

# %%
groups = tuple(tuple(int(i) for i in g.split(",")) for g in age_groups.split("|"))
age_cfg = age_lib.AGEConfig(n_latent=model.n_latent, style_dim=w.shape[-1], edit_layers=tuple(S), groups=groups,
                            dict_size=dict_size, lr=age_lr, optimizer="adam")
age_model = age_lib.AGE(age_cfg)
runner = StageRunner(checkpoint, model, lpips_alex, dist, train_processes, out_dir, amp, threads)
t0 = time.perf_counter()
age_hist = runner.age(age_model, w, seen_labels, class_emb, images, steps=age_steps, batch_size=age_batch, seed=seed)
age_seconds = time.perf_counter() - t0
gaussian = age_lib.fit_coefficient_gaussian(age_model, w, class_emb[seen_labels])
age_info = {"age": age_cfg.to_dict(), "train_seconds": age_seconds}
save_module(out_dir / "age", age_model, age_info)
if ship_as:  # `make method`: also the shipped checkpoint that notebook 04 falls back to
    save_module(output_path("ship_as", ship_as, run_dir), age_model, age_info)
fig, ax = plt.subplots(figsize=(6, 3))
for k in ("l2", "lpips", "sparse"):
    ax.plot(smooth(age_hist[k], 20), label=k)
ax.set_yscale("log"); ax.legend(); ax.set_xlabel("step"); ax.set_title(f"AGE training ({age_seconds:.0f} s)")
save_figure(fig, out_dir / "age_loss.png")
plt.show()
clock.lap("training")

# %% [markdown]
# ## Transfer with continuous residuals vs AGE reconstructions, k = 1 and 3 shots

# %%
age_reconstruct = lambda r: age_model.directions(age_model.coefficients(r))
metrics = {"edit_layers": S, "age_train_seconds": age_seconds, "transfer": {}}
for k in (1, 3):
    shots = fewshot.draw_shots(ds, k, seed)
    _, emb = fewshot.shot_codes(model, ds, shots)
    emb_k = dict(zip(shots, emb))
    with torch.no_grad():
        metrics["transfer"][f"k={k}"] = {
            "continuous": fewshot.transfer_error(model, ds, pairs, emb_k, S, lpips_alex),
            "AGE": fewshot.transfer_error(model, ds, pairs, emb_k, S, lpips_alex, edit=age_reconstruct),
        }
print(json.dumps(metrics["transfer"], indent=1))
clock.lap("metrics")

# %% [markdown]
# ## AGE generation, judged
#
# AGE edits each shot's own code: `w + α·A·n` with coefficients `n` drawn from the Gaussian fitted on seen
# categories (1-shot editing; with k = 3 the samples cycle over the shots). We evaluate it with the ruler of
# `tagelib.evaluation` (LoFGAN protocol, 24 unseen categories × `eval_generated` images): does the judge still
# recognise the character, how far is the set from real glyphs (FD), how diverse is it and how often does it
# collapse? `α` sets how far an edit moves off the shot: a small sweep (`sweep_generated` images per category, the
# table's `n / cat.`; Fréchet distances of smaller sets run higher, so compare its FD only within the sweep) shows the
# trade-off between diversity and staying the intended character.

# %%
ruler = evaluation.glyph_ruler(ds, judge, lpips_vgg, seed=seed, collapse_quantile=collapse_quantile,
                               extractors=fd_extractors, inception_dir=inception_dir,
                               floor_cache=out_dir.parent / "collapse_floor.json", cache=cache)
protocols = {k: evaluation.lofgan_protocol(ds, k, eval_generated, eval_real, seed) for k in (1, 3)}
protocols["sweep"] = evaluation.lofgan_protocol(ds, 1, sweep_generated, eval_real, seed)  # the α sweep: fewer images
runs = [(alpha, 1, 1), (alpha, 3, 3)] + [(float(a), 1, "sweep") for a in alpha_sweep.split(",") if float(a) != alpha]
evals = {f"AGE α={a:g}, k={k}": evaluation.evaluate(generators.age(model, age_model, gaussian, a, invert), protocols[p], ruler,
                                                     seed=seed, desc=f"AGE α={a:g}, k={k}") for a, k, p in runs}
gain = evaluation.few_shot_gain(generators.age(model, age_model, gaussian, alpha, invert), ds, episodes=episodes,
                                n_generated=episode_generated, seed=seed) if episodes else None
for name, ev in evals.items():
    m = ev.metrics
    print(f"{name:18s} judge {m['preservation']:6.1%}  FD-domain {m['FD-domain']:7.2f}  FD-VGG16 {m['FD-VGG16']:6.2f}  "
          f"div {m['lpips_diversity']:.3f}  collapse {m['collapse_rate']:6.1%}  ({m['seconds']['generate'] + m['seconds']['metrics']:.0f} s)")
print(f"few-shot classification gain, AGE α={alpha:g}:", json.dumps(gain, indent=1))
clock.lap("evaluation")

# %%
fig = verdict_figure(evals, ds.categories, n_show=8)
save_figure(fig, fig_dir / "fig_age_samples.png")
plt.show()
main_row = f"AGE α={alpha:g}, k=1"
age_fns = {f"AGE α={a:g}, k={k}": (generators.age(model, age_model, gaussian, a, invert), k) for a, k, _ in runs}
heldout = {name: evaluation.heldout_recognition(fn, ds, ruler, k, seed=seed) for name, (fn, k) in age_fns.items()}
print("judge top-1 with shots from held-out families:", {k: f"{v:.1%}" for k, v in heldout.items()})
rows = [report.table_row(name, ev.metrics, gain if name == main_row else None, heldout=heldout[name])
        for name, ev in evals.items()]
report.save_rows(out_dir, rows, report.provenance(data_dir, seed, ruler))
print(report.write_baseline_table(run_dir, fig_dir))
metrics["evaluation"] = {name: {k: v for k, v in ev.metrics.items() if k != "per_category"} for name, ev in evals.items()}
metrics["few_shot_gain"] = gain
write_text_atomic(out_dir / "metrics.json", json.dumps({**metrics, "layer_choice": layer_choice, "heldout_recognition": heldout,
                                                    "shot_inversion_ms_per_shot": 1000 * invert.seconds_per_shot}, indent=1))
clock.lap("figures")

# %% [markdown]
# ## Recap
#
# - Class embedding + residual: the residual of a glyph's code carries its font's style (the PCA follows
#   stroke and slant), and moving it to another category's embedding redraws the font on the new character.
# - AGE compresses residuals into a sparse dictionary; its samples edit an unseen shot's attributes — and the
#   judge says how often the edited glyph is still the intended character (`papers_figures/table_baselines.md`).
# - Next, `03_codebook_learning` replaces the continuous dictionary by TAGE's discrete codebook.
