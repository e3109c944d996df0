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
# # 03 — Codebook learning (CLM) and nearest-neighbour generation
#
# In this notebook we will replace AGE's continuous dictionary with TAGE's **discrete codebook**: every
# edited layer's residual `a_l = w_l − w̄_c` is mapped to its nearest vector of a learned codebook of N
# entries. Discretising constrains the attribute space to combinations of codes the seen categories
# actually use. We train the codebook (k-means start, reconstruction through the frozen G, VQ losses,
# dead-code revival), watch its usage and perplexity, then generate for unseen categories by
# **nearest-neighbour matching** — faithful but collapsed, one image per shot — and by **k-nearest
# sampling**, the fair diversity-seeking version the CPM will have to beat. A small sweep over N shows the
# reconstruction / usage trade-off behind our choice of N for glyphs (the paper uses N = 10,000 on
# 18×512 codes of 119 animal species).

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import torch

from tagelib import clm, evaluation, fewshot, generators, report
from tagelib.atomic import write_text_atomic
from tagelib.checkpoints import save_module
from tagelib.codebook import Codebook, CodebookConfig
from tagelib.factorize import compose, residuals
from tagelib.perceptual import lpips_distance
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
max_styles: int = 300  # training-family styles per seen category used to fit the codebook
edit_layers: str = "0,1,2,3,4,5,6,7"  # S, the edited layers (notebook 02 explains the choice)
num_codes: int = 1024  # N, codebook size for glyphs
beta: float = 0.25  # commitment weight
clm_steps: int = 200  # codebook training steps
clm_batch: int = 64  # codes per step
sweep_sizes: str = "64,256,1024"  # codebook sizes compared
sweep_steps: int = 20  # training steps per sweep point (the figure says how many)
knn_k: int = 8  # k-nearest sampling: candidates per layer
knn_temperature: float = 1.0  # relative to the mean squared distance to the nearest code
n_pairs: int = 512  # glyph pairs for transfer errors
judge: str = "data/judge/glyph32_judge"  # the judge (classifier of real glyphs) from 00_judge
eval_generated: int = 128  # generated images per unseen category (LoFGAN protocol)
eval_real: int = 128  # real reference images per unseen category
episodes: int = 20  # few-shot classification episodes per shot count for NN and k-nearest (0: skip)
episode_generated: int = 10  # generated images per class added to an episode's support set
collapse_quantile: float = 0.01  # collapse floor: this quantile of LPIPS between distinct real fonts
refine_steps: int = 50  # refinement steps after E when inverting the shots (0: E alone, pSp's pure inversion)
refine_lr: float = 0.03  # Adam learning rate of that refinement
shipped_codes: bool = True  # a run folder without shot codes starts from data/method/shot_codes when made for this E, G and refinement (content key)
ship_as: str = ""  # also save the trained codebook as this shipped checkpoint (`make method`: data/method/codebook; "": run folder only)

# %%
ds, model, S, lpips_alex, lpips_vgg, out_dir, fig_dir, rng, dist = fewshot.editing_context(
    "03_codebook_learning", run_dir, figures_dir, data_dir, checkpoint, edit_layers, seed, threads, dataset, device, amp)
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

w, labels, _, _ = fewshot.training_codes(model, ds, max_styles, seed)
seen_labels, seen_emb = fewshot.seen_class_embeddings(w, labels, ds)
class_emb = seen_emb[seen_labels]  # (N, L, D) per sample
print(f"{len(w)} training codes, {len(w) * len(S)} residual vectors of dimension {w.shape[-1]}")
clock.lap("inversion")

# %% [markdown]
# ## Training the codebook
#
# `Codebook` returns `(quantized, indices, loss)`; its loss is the VQ codebook term plus β × the
# commitment term (β on the commitment term, pinned by a test). k-means on the residuals initialises it;
# codes unused for ~100 steps are moved onto random current residuals.

# %%
codebook = Codebook(CodebookConfig(num_codes=num_codes, dim=w.shape[-1], beta=beta))
train_cfg = clm.CLMTrainConfig(steps=clm_steps, batch_size=clm_batch, seed=seed)
runner = StageRunner(checkpoint, model, lpips_alex, dist, train_processes, out_dir, amp, threads)
hist = runner.clm(codebook, w, class_emb, S, train_cfg)
clm_seconds = hist["seconds"][-1]
codebook_info = {"codebook": codebook.config.__dict__, "edit_layers": S, "train": train_cfg.__dict__, "train_seconds": clm_seconds}
save_module(out_dir / "codebook", codebook, codebook_info)
if ship_as:  # `make method`: also the shipped checkpoint that notebooks 04 and 05 fall back to
    save_module(output_path("ship_as", ship_as, run_dir), codebook, codebook_info)
_, idx_all = clm.quantize(codebook, residuals(w, class_emb, S))
counts = torch.bincount(idx_all.flatten(), minlength=num_codes)
fig, axes = plt.subplots(1, 3, figsize=(15, 3))
axes[0].plot(smooth(hist["l1"], 20), label="L1")
axes[0].plot(smooth(hist["lpips"], 20), label="LPIPS")
axes[0].legend(); axes[0].set_title(f"CLM training ({clm_seconds:.0f} s)")
axes[1].bar(np.arange(num_codes), counts.sort(descending=True).values.numpy(), width=1.0)
axes[1].set_yscale("log"); axes[1].set_title(f"code usage (sorted): {hist['usage'][-1]:.1%} used, perplexity {hist['perplexity'][-1]:.0f}")
per_layer = [torch.unique(idx_all[:, i]).numel() for i in range(len(S))]
axes[2].bar([str(l) for l in S], per_layer); axes[2].set_title("distinct codes per edited layer")
save_figure(fig, fig_dir / "fig_codebook_usage.png")
plt.show()
clock.lap("training")

# %% [markdown]
# ## Codebook size sweep
#
# Reconstruction of training codes through the quantized residuals (LPIPS to G(w)), usage and perplexity
# for several N, each trained for `sweep_steps` steps.

# %%
sweep = {}
probe = torch.randperm(len(w), generator=torch.Generator().manual_seed(seed))[:512]
target = model.decode_batched(w[probe])
for n in [int(v) for v in sweep_sizes.split(",")]:
    cb = Codebook(CodebookConfig(num_codes=n, dim=w.shape[-1], beta=beta))
    h = runner.clm(cb, w, class_emb, S, clm.CLMTrainConfig(steps=sweep_steps, batch_size=clm_batch, seed=seed),
                   progress=False)
    q, _ = clm.quantize(cb, residuals(w[probe], class_emb[probe], S))
    rec = model.decode_batched(compose(class_emb[probe], q, S, base=w[probe]))
    sweep[n] = {"recon_lpips": lpips_distance(lpips_alex, rec, target).mean().item(), "usage": h["usage"][-1],
                "perplexity": h["perplexity"][-1], "seconds": h["seconds"][-1]}
    print(n, sweep[n])
fig, ax = plt.subplots(1, 2, figsize=(10, 3))
ns = list(sweep)
ax[0].plot(ns, [sweep[n]["recon_lpips"] for n in ns], "o-"); ax[0].set_xscale("log"); ax[0].set_title("reconstruction LPIPS vs N")
ax[1].plot(ns, [sweep[n]["perplexity"] for n in ns], "o-"); ax[1].set_xscale("log"); ax[1].set_yscale("log"); ax[1].set_title("perplexity vs N")
fig.suptitle(f"each N trained {sweep_steps} steps × {clm_batch} codes (the main codebook: {clm_steps} steps)", y=1.03)
save_figure(fig, out_dir / "codebook_sweep.png")
plt.show()
clock.lap("sweeps")

# %% [markdown]
# ## Generation for unseen categories: transfer, NN matching and k-nearest sampling
#
# Transfer error with CLM-quantized residuals (k-shot class embeddings; source glyphs and fonts from the
# evaluation pools), then generation for the unseen categories with k = 3 shots, judged by the evaluation ruler
# (`tagelib.evaluation`, LoFGAN protocol: 24 categories × `eval_generated` images): NN matching quantizes each
# shot's own residual around the 3-shot class embedding (so 3 shots give at most 3 distinct images, repeated),
# k-nearest sampling draws each layer's code among its `knn_k` nearest. With k = 1 the shot *is* its class
# embedding, its residual is zero, and both would only add the codes nearest zero to every shot — so CLM
# generation is reported for k = 3 only; AGE (notebook 02) edits the shot's own code and has a 1-shot row.

# %%
quantize_edit = lambda r: clm.quantize(codebook, r)[0]
pairs = fewshot.eval_pairs(ds, ds.unseen, n_pairs, rng)
metrics = {"num_codes": num_codes, "clm_train_seconds": clm_seconds, "usage": hist["usage"][-1],
           "perplexity": hist["perplexity"][-1], "sweep": sweep, "transfer": {}}
for k in (1, 3):
    shots = fewshot.draw_shots(ds, k, seed)
    _, emb = fewshot.shot_codes(model, ds, shots)
    emb_k = dict(zip(shots, emb))
    metrics["transfer"][f"k={k}"] = {
        "continuous": fewshot.transfer_error(model, ds, pairs, emb_k, S, lpips_alex),
        "CLM": fewshot.transfer_error(model, ds, pairs, emb_k, S, lpips_alex, edit=quantize_edit)}
print(json.dumps({k: metrics[k] for k in ("transfer", "usage", "perplexity")}, indent=1))
clock.lap("metrics")

# %%
ruler = evaluation.glyph_ruler(ds, judge, lpips_vgg, seed=seed, collapse_quantile=collapse_quantile,
                               extractors=fd_extractors, inception_dir=inception_dir,
                               floor_cache=out_dir.parent / "collapse_floor.json", cache=cache)
protocol = evaluation.lofgan_protocol(ds, 3, eval_generated, eval_real, seed)
methods = {"NN matching, k=3": generators.nn_matching(model, codebook, S, invert),
           f"k-nearest sampling ({knn_k}), k=3": generators.knn_sampling(model, codebook, S, knn_k, knn_temperature, invert)}
evals = {name: evaluation.evaluate(fn, protocol, ruler, seed=seed, desc=name) for name, fn in methods.items()}
gains = {name: evaluation.few_shot_gain(fn, ds, episodes=episodes, n_generated=episode_generated, seed=seed)
         for name, fn in methods.items()} if episodes else {}
for name, ev in evals.items():
    m = ev.metrics
    print(f"{name:28s} judge {m['preservation']:6.1%}  FD-domain {m['FD-domain']:7.2f}  FD-VGG16 {m['FD-VGG16']:6.2f}  "
          f"div {m['lpips_diversity']:.3f}  collapse {m['collapse_rate']:6.1%}  ({m['seconds']['generate'] + m['seconds']['metrics']:.0f} s)")
print("few-shot classification gain:", json.dumps(gains, indent=1))
clock.lap("evaluation")

# %%
fig = verdict_figure(evals, ds.categories, n_show=8)
save_figure(fig, fig_dir / "fig_clm_generation.png")
plt.show()
heldout = {name: evaluation.heldout_recognition(fn, ds, ruler, 3, seed=seed) for name, fn in methods.items()}
print("judge top-1 with shots from held-out families:", {k: f"{v:.1%}" for k, v in heldout.items()})
rows = [report.table_row(name, ev.metrics, gains.get(name), heldout=heldout[name]) for name, ev in evals.items()]
report.save_rows(out_dir, rows, report.provenance(data_dir, seed, ruler))
print(report.write_baseline_table(run_dir, fig_dir))
metrics["evaluation"] = {name: {k: v for k, v in ev.metrics.items() if k != "per_category"} for name, ev in evals.items()}
metrics["few_shot_gain"] = gains
metrics["heldout_recognition"] = heldout
metrics["shot_inversion_ms_per_shot"] = 1000 * invert.seconds_per_shot
write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1))
clock.lap("figures")

# %% [markdown]
# ## Recap
#
# - The codebook quantizes residuals with a reconstruction cost the sweep makes visible; usage and
#   perplexity say how much of it is alive.
# - NN matching reproduces the shots' attributes (their residuals around the 3-shot class embedding) but
#   collapses: its diversity is bounded by the number of shots. k-nearest sampling buys diversity at random — TAGE's CPM will predict coherent code combinations.
