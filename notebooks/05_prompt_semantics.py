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
# # 05 — Prompt-driven semantics (PSM): steering the CPM with CLIP prompts
#
# In this notebook we will give TAGE's code predictor (notebook 04) a **text prompt**: the CLIP text embedding of
# "a bold glyph", "an italic glyph", … becomes one prefix token of the CPM's Transformer, and fine-tuning teaches the
# CPM to propose codes of fonts that fit the prompt — while the shots still decide the character. We use the glyph
# CLIP of notebook 00_clip (an open_clip model trained on glyphs and captions from the fonts' metadata).
#
# **Injection: a prefix token** (`tagelib.psm`). The CPM's sequence is tiny (8 conditioning + 8 code tokens), so one
# more token costs nothing; every Transformer block attends to it, so the prompt reaches every layer without new
# cross-attention modules; a learned null token stands for "no prompt", so one model serves both.
#
# **Training.** (1) Supervised: each training code's prompt is a random caption of *its own font's* style, dropped
# to the null token 20 % of the time. (2) A CLIP loss through a differentiable path to the codes: soft codes
# softmax(logits)·C on every layer, decoded by the frozen G, embedded by the frozen CLIP image tower, pulled towards
# the prompt's text embedding and towards the conditioning shot's image embedding.
#
# **Generation.** Without a prompt, TAGE edits the shots as in notebook 04 (`resample` layers re-sampled per
# sample). With a prompt, every layer is sampled from w̄ and the prompt (`prompt_edit = False`): codes kept from a
# shot hold on to that shot's attributes, and the prompt cannot undo them (measured on a first 400-step PSM:
# probe agreement 33 % editing 5 layers vs 45 % sampling all, guidance 3). Prompts use **classifier-free guidance**: because training drops the prompt 20 % of the time, the same
# network also predicts without it, and logits = l_null + g · (l_prompt − l_null) with g > 1 sharpens what the prompt
# asks for (as text-to-image masked Transformers do). The guidance table measures g.
#
# **How we judge it.** For each attribute prompt, an **attribute probe** — a small CNN trained on real glyphs against
# their fonts' measured metadata (00_clip) — says whether the generated glyphs have the attribute; we report that
# rate beside the rate without a prompt, the CLIP score, and the judge's category preservation.

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import torch

from tagelib import evaluation, fewshot, generators, psm, report
from tagelib.atomic import write_text_atomic
from tagelib.checkpoints import save_module
from tagelib.cpm_train import CPMTrainConfig, load_codebook, load_cpm, seen_code_data
from tagelib.paths import resolve
from tagelib.prompts import embed_images, embed_texts, encode_images, load_clip_model, prompt_kit, word_list
from tagelib.plotting import save_figure, smooth, verdict_grid
from tagelib.run_cache import RunCache
from tagelib.shipped_method import upstream
from tagelib.timing import Stopwatch
from tagelib.write_guard import output_path

# %% tags=["parameters"]
run_dir: str = "results/tiny"  # every output of this run goes under this folder
figures_dir: str = "{run_dir}/papers_figures"  # tables and figures (papers_figures/: only the unmodified `make reproduce`)
dataset: str = "glyphs"  # glyphs, or a paper dataset: animal, flower, vggface, synthetic (LoFGAN .npy), folders (AGE)
data_dir: str = "data/glyphs"  # the glyph artefact's folder, or the paper dataset's .npy file / folder
checkpoint: str = "data/latent/glyph32"  # the frozen latent space from notebook 01
codebook: str = "results/tiny/03_codebook_learning/codebook"  # the CLM codebook from notebook 03
cpm: str = "results/tiny/04_code_prediction/cpm"  # the CPM from notebook 04
clip: str = "data/clip/glyph32_clip"  # an open_clip local-dir folder (the glyph CLIP of 00_clip) or a model name (ViT-B-32)
clip_pretrained: str = ""  # for a model name: open_clip's pretrained tag (openai) or a local weights file ("": random)
attribute_probe: str = "data/clip/glyph32_attributes"  # glyphs: the attribute probe from 00_clip ("" for photographs)
image_prompt_noise: float = 0.1  # photographs: noise on the image-embedding training prompts (LAFITE)
judge: str = "data/judge/glyph32_judge"  # the judge (classifier of real glyphs) from 00_judge
seed: int = 0  # seeds subsets, training and sampling
threads: int = 2  # torch CPU threads
device: str = "auto"  # auto (CUDA when present), cpu or cuda: chosen once, the networks run there
amp: bool = True  # bf16 autocast of the generator on a GPU (never on the CPU)
fd_extractors: str = "judge,vgg16"  # Fréchet-distance features: judge (FD-domain), vgg16, inception (FID)
inception_dir: str = ""  # folder holding clean-fid's Inception-v3 file, for the inception extractor
max_styles: int = 300  # training-family styles per seen category (as notebook 04)
edit_layers: str = "0,1,2,3,4,5,6,7"  # S, the edited layers (must be the codebook's)
psm_steps: int = 200  # PSM fine-tuning steps
psm_batch: int = 128  # codes per step (supervised prompts)
psm_lr: float = 0.0005  # AdamW peak learning rate
captions_per_style: int = 4  # random captions per font, embedded once
prompt_dropout: float = 0.2  # share of codes trained with the null prompt
psm_clip_batch: int = 8  # codes per step decoded through G for the CLIP loss (0: no CLIP loss)
lambda_text: float = 0.5  # CLIP loss: weight of 1 − cos(image, prompt)
lambda_image: float = 0.5  # CLIP loss: weight of 1 − cos(image, shot)
ablation_no_clip: bool = False  # also fine-tune without the CLIP loss (prompts only), for the ablation table
temperature: float = 1.0  # CPM sampling temperature (as notebook 04's main rows)
top_k: int = 0  # CPM top-k (0: the whole codebook)
resample: int = 5  # TAGE editing: layers of each shot the CPM re-samples (0 to 8), as notebook 04
prompt_edit: bool = False  # prompted samples edit the shots too (False: every layer sampled from w̄ and the prompt)
guidance: float = 3.0  # classifier-free guidance of a prompt (1: the prompted model as trained)
guidance_sweep: str = "1,3,5"  # guidance values compared on mean probe agreement and preservation
decode_steps: int = 8  # decoding passes (8, the number of edited layers, as notebook 04)
decode_order: str = "random"  # "random" (any-order ancestral sampling) or "confidence" (MaskGIT), as notebook 04
prompts: str = "bold,light,italic,serif,sans-serif,monospace,condensed,wide"  # attribute prompts evaluated
prompt_samples: int = 8  # generated images per unseen category and prompt (the prompt table and guidance sweep)
grid_samples: int = 8  # columns of the prompt grids
eval_generated: int = 128  # generated images per unseen category (LoFGAN protocol)
eval_real: int = 128  # real reference images per unseen category
episodes: int = 20  # few-shot classification episodes per shot count (0: skip)
episode_generated: int = 10  # generated images per class added to an episode's support set
collapse_quantile: float = 0.01  # collapse floor: this quantile of LPIPS between distinct real fonts
refine_steps: int = 50  # refinement steps after E when inverting the shots (0: E alone, pSp's pure inversion)
refine_lr: float = 0.03  # Adam learning rate of that refinement
shipped_codes: bool = True  # a run folder without shot codes starts from data/method/shot_codes when made for this E, G and refinement (content key)
ship_as: str = ""  # also save the trained PSM as this shipped checkpoint (`make method`: data/method/psm; "": run folder only)

# %%
ds, model, S, lpips_alex, lpips_vgg, out_dir, fig_dir, rng, dist = fewshot.editing_context(
    "05_prompt_semantics", run_dir, figures_dir, data_dir, checkpoint, edit_layers, seed, threads, dataset, device, amp)
clock = Stopwatch(out_dir)  # where this notebook's time goes: <run_dir>/<notebook>/stage_seconds.json
cache = RunCache.of_run(out_dir)  # work shared by the run's notebooks, keyed by content: <run_dir>/cache
cb = load_codebook(upstream("codebook", codebook), S)  # notebooks 03 and 04's, or the shipped ones when they have not run
base_cpm, cpm_info = load_cpm(upstream("cpm", cpm))
clip_model, tokenizer = load_clip_model(clip, clip_pretrained, dist.device)
prompt_words = word_list(prompts)
invert = fewshot.shot_inverter(model, ds, refine_steps, lpips_alex, refine_lr, cache, seed, shipped_codes)
print(invert.summary())
data, styles, images = seen_code_data(model, ds, cb, S, max_styles, seed)
print(f"CPM from notebook 04 ({cpm_info['train']['steps']} steps, {cpm_info['train_seconds']:.0f} s); CLIP: "
      f"{clip_model.source}, embedding size {clip_model.text_projection.shape[1]}")
clock.lap("set-up and inversion")

# %% [markdown]
# ## Fine-tuning the CPM with prompts (PSM)
#
# The CPM of notebook 04 gets a prompt token (new weights) and is fine-tuned on the same seen-category codes with
# its fonts' captions and, every step, the CLIP loss on `psm_clip_batch` decoded soft-code images.

# %%
psm_cfg = psm.PSMTrainConfig(captions_per_style=captions_per_style, prompt_dropout=prompt_dropout,
                             clip_batch=psm_clip_batch, lambda_text=lambda_text, lambda_image=lambda_image, seed=seed)
train_cfg = CPMTrainConfig(**{**cpm_info["train"], "steps": psm_steps, "batch_size": psm_batch, "lr": psm_lr, "warmup": 20})
kit = prompt_kit(ds, prompt_words, clip_model, tokenizer, resolve(attribute_probe) if attribute_probe else "", styles,
                 images, psm_cfg, image_prompt_noise)
bank = kit.bank
clip_term = psm.clip_loss(model, S, lambda x: encode_images(clip_model, x), images, psm_cfg)
embed_dim = bank.embeddings.shape[-1]
tage_psm = psm.with_prompt_token(base_cpm, embed_dim)
hist = psm.train_psm(tage_psm, data, bank, train_cfg, psm_cfg, clip_term, dist=dist)
psm_seconds = hist["seconds"][-1]
psm_info = {"cpm": tage_psm.config.__dict__, "train": train_cfg.__dict__, "psm": psm_cfg.__dict__, "edit_layers": S,
            "train_seconds": psm_seconds}
save_module(out_dir / "cpm_psm", tage_psm, psm_info)
if ship_as:  # `make method`: also the shipped checkpoint the explorer reads
    save_module(output_path("ship_as", ship_as, run_dir), tage_psm, psm_info)
variants = {"TAGE (CPM + PSM)": tage_psm}
if ablation_no_clip:
    no_clip = psm.with_prompt_token(base_cpm, embed_dim)
    no_clip_hist = psm.train_psm(no_clip, data, bank, train_cfg, psm.PSMTrainConfig(**{**psm_cfg.__dict__, "clip_batch": 0}),
                                 dist=dist)
    variants["PSM w/o CLIP loss (prompts only)"] = no_clip
fig, axes = plt.subplots(1, 3, figsize=(14, 3))
for ax, key in zip(axes, ("ce", "clip_text", "clip_image")):
    ax.plot(smooth(hist[key], 20)); ax.set_title(key); ax.set_xlabel("step")
fig.suptitle(f"PSM fine-tuning: {psm_steps} steps, {psm_seconds:.0f} s", y=1.04)
save_figure(fig, out_dir / "psm_training.png")
plt.show()
train_seconds = {"clip": clip_model.training_info.get("train_seconds"), "cpm": cpm_info["train_seconds"], "psm": psm_seconds}
print("training wall time (s):", json.dumps(train_seconds))
clock.lap("training")

# %% [markdown]
# ## Prompt grids
#
# Rows = prompts, columns = samples, for three unseen characters from 3 shots each; a red border marks a glyph the
# judge reads as another character.

# %%
ruler = evaluation.glyph_ruler(ds, judge, lpips_vgg, seed=seed, collapse_quantile=collapse_quantile,
                               extractors=fd_extractors, inception_dir=inception_dir,
                               floor_cache=out_dir.parent / "collapse_floor.json", cache=cache)
prompt_emb = embed_texts(clip_model, tokenizer, kit.texts)  # (P, E), the prompts' CLIP text embeddings
prompt_protocol = evaluation.lofgan_protocol(ds, 3, prompt_samples, eval_real, seed)


def prompted(predictor, embedding: torch.Tensor | None, g: float = guidance, edit: bool = prompt_edit):
    """TAGE with a prompt (or none): editing `resample` layers of the shots, or (edit=False) sampling every layer."""
    return generators.tage(model, predictor, S, temperature, top_k, decode_steps, invert, decode_order,
                           prompts=None if embedding is None else embedding[None], resample=resample if edit else None,
                           guidance=g)


show = prompt_protocol.categories[:3]
fig, axes = plt.subplots(1, len(show), figsize=(4.2 * len(show), 0.55 * (len(prompt_words) + 1) + 0.6))
gen = torch.Generator().manual_seed(seed)
for ax, c in zip(axes, show):
    rows = [prompted(tage_psm, None)(c, prompt_protocol.shots(c), grid_samples, gen)]
    rows += [prompted(tage_psm, e)(c, prompt_protocol.shots(c), grid_samples, gen) for e in prompt_emb]
    grid = torch.stack(rows)  # (P + 1, n, 1, H, W)
    verdict = ruler.recognised(grid.flatten(0, 1), torch.full((grid.shape[0] * grid.shape[1],), c)).view(grid.shape[:2])
    verdict_grid(grid, verdict, ax, row_labels=["(none)"] + prompt_words, title=f"'{ds.categories[c]}'")
save_figure(fig, fig_dir / "fig_psm_prompt_grid.png")
plt.show()
clock.lap("evaluation")

# %% [markdown]
# ## Does the prompt work? Attribute probe, CLIP score and category preservation
#
# For each prompt: `prompt_samples` images per unseen character (k = 3). **probe agrees** = share of them the
# attribute probe calls, e.g., bold; **unprompted** = the same share for the same model without a prompt (what the
# attribute's base rate is); **CLIP score** = 100 × mean cosine between the glyph CLIP's image and prompt embeddings;
# **judge top-1** = category preservation. The CPM of notebook 04 (no PSM) is measured on the same protocol.

# %%
def prompt_metrics(predictor, embedding: torch.Tensor | None, g: float = guidance) -> dict:
    """Probe rates (A,), CLIP-image embeddings' mean cosine with every prompt (P,), judge top-1 for one prompt (or none)."""
    imgs = evaluation.generate_all(prompted(predictor, embedding, g), prompt_protocol, seed, progress=False).flatten(0, 1)
    intended = torch.tensor(prompt_protocol.categories).repeat_interleave(prompt_samples)
    emb = embed_images(clip_model, imgs)
    return {"probe": kit.score(imgs).float().mean(0), "clip": 100 * (emb @ prompt_emb.T).mean(0),
            "judge": ruler.recognised(imgs, intended).float().mean().item()}


without = {"CPM (notebook 04, no PSM)": prompt_metrics(base_cpm, None)}
table, lines, tage_at_guidance = {}, [], []  # TAGE's per-prompt metrics at `guidance`, reused by the sweep below
for name, predictor in variants.items():
    without[name] = none = prompt_metrics(predictor, None)
    for p, (word, e) in enumerate(zip(prompt_words, prompt_emb)):
        m = prompt_metrics(predictor, e)
        if predictor is tage_psm:
            tage_at_guidance.append(m)
        table[(name, word)] = {"probe_agrees": m["probe"][p].item(), "unprompted": none["probe"][p].item(),
                               "cpm_rate": without["CPM (notebook 04, no PSM)"]["probe"][p].item(),
                               "clip_score": m["clip"][p].item(), "clip_score_unprompted": none["clip"][p].item(),
                               "judge": m["judge"]}
base_judge = without["CPM (notebook 04, no PSM)"]["judge"]
lines = [f"# PSM: attribute prompts on unseen classes ({dataset}, k = 3, {prompt_samples} images per class and prompt)", "",
         f"probe agrees = share of the prompted images that {kit.scorer} gives the prompted attribute; unprompted = the "
         f"same share without a prompt (same model); CPM = the share for notebook 04's CPM; CLIP ({clip_model.source}) "
         f"score = 100 × mean cosine of CLIP image and "
         f"prompt embeddings; judge top-1 = category preservation (the CPM without PSM: {base_judge:.1%} on this protocol). "
         f"{f'TAGE editing, {resample} of {len(S)} layers re-sampled per sample' if prompt_edit else 'every layer sampled from w̄ and the prompt'}, "
         f"T = {temperature:g}, top-k {top_k or 'off'}, "
         f"classifier-free guidance {guidance:g}, "
         f"{decode_order}-ordered decoding. Profile "
         f"parameters: psm_steps {psm_steps}, seed {seed}; {report.machine()}.", "",
         "| model | prompt | probe agrees ↑ | unprompted | CPM | CLIP score (prompted / unprompted) | judge top-1 ↑ |",
         "|---|---|---|---|---|---|---|"]
for (name, word), r in table.items():
    lines.append(f"| {name} | {kit.texts[prompt_words.index(word)]} | {r['probe_agrees']:.1%} | {r['unprompted']:.1%} | "
                 f"{r['cpm_rate']:.1%} | {r['clip_score']:.1f} / {r['clip_score_unprompted']:.1f} | {r['judge']:.1%} |")
summary = {name: {"probe_agrees": float(np.mean([table[(name, p)]["probe_agrees"] for p in prompt_words])),
                  "unprompted": float(np.mean([table[(name, p)]["unprompted"] for p in prompt_words])),
                  "judge_prompted": float(np.mean([table[(name, p)]["judge"] for p in prompt_words])),
                  "judge_unprompted": without[name]["judge"]} for name in variants}
lines += ["", "| model | mean probe agreement ↑ | mean unprompted rate | judge top-1, prompted (mean) | judge top-1, no prompt |",
          "|---|---|---|---|---|"]
lines += [f"| {n} | {s['probe_agrees']:.1%} | {s['unprompted']:.1%} | {s['judge_prompted']:.1%} | {s['judge_unprompted']:.1%} |"
          for n, s in summary.items()]
lines.append(f"| CPM (notebook 04, no PSM) | – | – | – | {base_judge:.1%} |")
guidance_table = {}
for g in [float(v) for v in guidance_sweep.split(",")]:  # g = guidance: the table's own images, measured above
    per_prompt = tage_at_guidance if g == guidance else [prompt_metrics(tage_psm, e, g) for e in prompt_emb]
    guidance_table[g] = {"probe_agrees": float(np.mean([m["probe"][p].item() for p, m in enumerate(per_prompt)])),
                         "clip_score": float(np.mean([m["clip"][p].item() for p, m in enumerate(per_prompt)])),
                         "judge": float(np.mean([m["judge"] for m in per_prompt]))}
lines += ["", "Classifier-free guidance g (TAGE (CPM + PSM), means over the prompts):", "",
          "| guidance | mean probe agreement ↑ | mean CLIP score | judge top-1 ↑ |", "|---|---|---|---|"]
lines += [f"| {g:g} | {r['probe_agrees']:.1%} | {r['clip_score']:.1f} | {r['judge']:.1%} |" for g, r in guidance_table.items()]
report.write_table(fig_dir / "table_psm_prompts.md", "\n".join(lines) + "\n", data_dir)
print("\n".join(lines))
clock.lap("sweeps")

# %% [markdown]
# ## TAGE with PSM in the main table
#
# The full protocol (k = 1 and 3, `eval_generated` images per character): without a prompt, and with the attribute
# prompts cycled over the samples (sample i gets prompt i mod P).

# %%
protocols = {k: evaluation.lofgan_protocol(ds, k, eval_generated, eval_real, seed) for k in (1, 3)}
methods = {}
for k in (1, 3):
    methods[f"TAGE (CPM + PSM, edits {resample} of {len(S)} layers), no prompt, k={k}"] = (prompted(tage_psm, None, edit=True), k)
    methods[f"TAGE (CPM + PSM), attribute prompts (g={guidance:g}), k={k}"] = (generators.tage(
        model, tage_psm, S, temperature, top_k, decode_steps, invert, decode_order, prompts=prompt_emb,
        resample=resample if prompt_edit else None, guidance=guidance), k)
evals = {name: evaluation.evaluate(fn, protocols[k], ruler, seed=seed, desc=name) for name, (fn, k) in methods.items()}
main = f"TAGE (CPM + PSM), attribute prompts (g={guidance:g}), k=3"
gains = {main: evaluation.few_shot_gain(methods[main][0], ds, episodes=episodes, n_generated=episode_generated,
                                        seed=seed)} if episodes else {}
heldout = {name: evaluation.heldout_recognition(fn, ds, ruler, k, seed=seed) for name, (fn, k) in methods.items()}
rows = [report.table_row(name, ev.metrics, gains.get(name), heldout=heldout[name]) for name, ev in evals.items()]
report.save_rows(out_dir, rows, report.provenance(data_dir, seed, ruler))
print(report.write_baseline_table(run_dir, fig_dir))
write_text_atomic(out_dir / "metrics.json", json.dumps({
    "train_seconds": train_seconds, "guidance": guidance_table, "prompt_table": {f"{n} | {p}": r for (n, p), r in table.items()}, "summary": summary,
    "judge_cpm_no_psm": base_judge, "evaluation": {n: {k: v for k, v in ev.metrics.items() if k != "per_category"}
                                                   for n, ev in evals.items()},
    "few_shot_gain": gains, "heldout_recognition": heldout}, indent=1))
clock.lap("evaluation")

# %% [markdown]
# ## Recap
#
# - PSM injects a CLIP prompt as one prefix token of the CPM; fine-tuning with the fonts' own captions and a CLIP
#   loss through soft codes makes the prompt steer which codes are sampled.
# - The prompt table says, per attribute, how often the probe agrees with the prompt, against the base rate
#   without a prompt, and what the prompt costs in category preservation.
