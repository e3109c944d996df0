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
# # 04 — Code prediction (CPM): TAGE's Transformer over the codebook
#
# In this notebook we will train TAGE's **Code Prediction Module** on top of the frozen latent space (notebook 01)
# and the CLM codebook (notebook 03), and measure it against the baselines with the evaluation ruler.
#
# **What the CPM models.** NN matching (notebook 03) quantizes each shot's own residual: faithful, but one image
# per shot. A predictor conditioned on the shot's *own* code would only re-learn that. The CPM instead models the
# joint distribution of the |S| layer codes **given the category part of the code** — a k-shot class embedding w̄,
# the mean code of k glyphs of one character: p(c_1, …, c_|S| | w̄). It is trained on seen characters, where every
# training code's conditioning is the mean of k ∈ {1, 2, 3} *other* glyphs of the same character, so it must
# predict what another font of this character looks like. Sampling proposes combinations of codes (stroke
# weight on one layer, slant on another, serifs on a third) that seen characters actually use together.
#
# **Architecture (our choice; the paper gives none).** A bidirectional Transformer (`tagelib.cpm`): L conditioning
# tokens (w̄'s layers, projected) followed by |S| code tokens (the CLM code vector projected, or [MASK]); a linear
# head gives logits over the N codes per layer. Training is MaskGIT's: a cosine-scheduled random subset of the
# code tokens is masked and predicted, with cross-entropy against the CLM indices plus an L2 term between the soft
# code softmax(logits)·C and the true residual. **Decoding: MaskGIT's iterative parallel decoding** (`cpm.sample`):
# every pass samples all masked layers (temperature, top-k) and keeps some of them, the rest are re-masked and
# re-predicted. We chose it over left-to-right autoregression because the |S| = 8 layers have no natural order
# (coarse and fine layers constrain each other both ways) and because the same sampler re-samples any subset of
# layers with the others held fixed — attribute editing, which PSM and the explorer use. Which layers to keep each
# pass is a choice: MaskGIT keeps the most *confident*, which favours the modes; keeping a *random* one per pass
# (`decode_order = "random"`, 8 passes) is any-order ancestral sampling — an exact sample of the model's chain of
# conditionals. The decoding table below measures both; we use the random order, which gave more diversity at
# nearly the same preservation.

# %%
import json
import time

import matplotlib.pyplot as plt
import torch

from tagelib import age as age_lib
from tagelib import cpm as cpm_lib, evaluation, fewshot, generators, report
from tagelib.atomic import write_text_atomic
from tagelib.checkpoints import save_module
from tagelib.cpm_train import CPMTrainConfig, code_statistics, load_codebook, seen_code_data
from tagelib.factorize import class_embeddings, compose
from tagelib.shipped_method import upstream
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
codebook: str = "results/tiny/03_codebook_learning/codebook"  # the CLM codebook from notebook 03
age_checkpoint: str = "results/tiny/02_attribute_factorization/age"  # AGE from notebook 02 (its α sweep on the plot)
judge: str = "data/judge/glyph32_judge"  # the judge (classifier of real glyphs) from 00_judge
seed: int = 0  # seeds subsets, training and sampling
threads: int = 2  # torch CPU threads
device: str = "auto"  # auto (CUDA when present), cpu or cuda: chosen once, the networks run there
amp: bool = True  # bf16 autocast of the generator on a GPU (never on the CPU)
train_processes: int = 1  # processes for the training stage; more than 1 runs it under torchrun (DDP)
fd_extractors: str = "judge,vgg16"  # Fréchet-distance features: judge (FD-domain), vgg16, inception (FID)
inception_dir: str = ""  # folder holding clean-fid's Inception-v3 file, for the inception extractor
max_styles: int = 300  # training-family styles per seen category (the codes the CPM learns from)
edit_layers: str = "0,1,2,3,4,5,6,7"  # S, the edited layers (must be the codebook's)
d_model: int = 64  # Transformer width
depth: int = 4  # Transformer blocks
heads: int = 4  # attention heads
dropout: float = 0.1  # dropout inside the blocks
cpm_steps: int = 800  # CPM training steps
cpm_batch: int = 128  # codes per step
cpm_lr: float = 0.001  # AdamW peak learning rate
lambda_ce: float = 1.0  # weight of the cross-entropy against the CLM indices
lambda_l2: float = 1.0  # weight of the L2 between soft code and true residual
max_shots: int = 3  # the conditioning class embedding averages 1 to max_shots other glyphs
control_steps: int = 0  # steps of the own-code control (p(codes | the sample's own code)); 0: skip (`full` profile: 800)
full_studies: bool = False  # also the row sampling every layer from w̄ alone at the full protocol (`full` profile; the decoding sweep has it)
temperature: float = 1.0  # CPM sampling temperature for the main rows
top_k: int = 0  # CPM top-k (0: the whole codebook)
resample: int = 5  # TAGE editing: layers of each shot the CPM re-samples (0 to 8); the others keep the shot's codes
decode_steps: int = 8  # decoding passes (8, the number of edited layers: one layer decided per pass)
decode_order: str = "random"  # "random" (any-order ancestral sampling) or "confidence" (MaskGIT: most confident first)
temperature_sweep: str = "0.5,1,2"  # CPM temperatures on the preservation-diversity plot
resample_sweep: str = "2,5,8"  # re-sampled layer counts on the same plot
knn_candidates: str = "2,8,128"  # k-nearest sampling on the same plot: candidates per layer, drawn uniformly
alpha_sweep: str = "0.25,0.5,1"  # AGE edit strengths on the same plot
sweep_generated: int = 16  # generated images per category for each sweep point (stated on the figure)
knn_k: int = 8  # k-nearest sampling: candidates per layer
knn_temperature: float = 1.0  # k-nearest sampling temperature of notebook 03's row
eval_generated: int = 128  # generated images per unseen category (LoFGAN protocol)
eval_real: int = 128  # real reference images per unseen category
episodes: int = 20  # few-shot classification episodes per shot count (0: skip)
episode_generated: int = 10  # generated images per class added to an episode's support set
collapse_quantile: float = 0.01  # collapse floor: this quantile of LPIPS between distinct real fonts
refine_steps: int = 50  # refinement steps after E when inverting the shots (0: E alone, pSp's pure inversion)
refine_lr: float = 0.03  # Adam learning rate of that refinement
shipped_codes: bool = True  # a run folder without shot codes starts from data/method/shot_codes when made for this E, G and refinement (content key)
ship_as: str = ""  # also save the trained CPM as this shipped checkpoint (`make method`: data/method/cpm; "": run folder only)
throughput_batch: int = 256  # batch of the sampling-throughput measurement

# %%
ds, model, S, lpips_alex, lpips_vgg, out_dir, fig_dir, rng, dist = fewshot.editing_context(
    "04_code_prediction", run_dir, figures_dir, data_dir, checkpoint, edit_layers, seed, threads, dataset, device, amp)
clock = Stopwatch(out_dir)  # where this notebook's time goes: <run_dir>/<notebook>/stage_seconds.json
cache = RunCache.of_run(out_dir)  # work shared by the run's notebooks, keyed by content: <run_dir>/cache
cb = load_codebook(upstream("codebook", codebook), S)  # notebook 03's, or the shipped one when it has not run
invert = fewshot.shot_inverter(model, ds, refine_steps, lpips_alex, refine_lr, cache, seed, shipped_codes)
print(invert.summary())
data, styles, images = seen_code_data(model, ds, cb, S, max_styles, seed)
w = data.w
print(f"{len(w)} training codes of {len(ds.seen)} seen characters; codebook N = {cb.config.num_codes}, |S| = {len(S)}; "
      f"shots: E + {refine_steps} refinement steps")
clock.lap("set-up and inversion")

# %% [markdown]
# ## Training the CPM
#
# Each step draws `cpm_batch` training codes, builds each one's conditioning from 1–3 other glyphs of its
# character, masks a cosine-scheduled share of its |S| code tokens and predicts them. The curves: cross-entropy
# and L2 on the masked tokens, and the share of masked tokens whose argmax is the CLM index.

# %%
cpm_cfg = cpm_lib.CPMConfig(num_codes=cb.config.num_codes, code_dim=w.shape[-1], n_latent=model.n_latent,
                            n_edit=len(S), d_model=d_model, depth=depth, heads=heads, dropout=dropout)
train_cfg = CPMTrainConfig(steps=cpm_steps, batch_size=cpm_batch, lr=cpm_lr, lambda_ce=lambda_ce, lambda_l2=lambda_l2,
                           max_shots=max_shots, seed=seed)
torch.manual_seed(seed)
cpm = cpm_lib.CodePredictor(cpm_cfg, cb.embed.detach())
runner = StageRunner(checkpoint, model, lpips_alex, dist, train_processes, out_dir, amp, threads)
hist = runner.cpm(cpm, data, train_cfg)
cpm_seconds = hist["seconds"][-1]
n_params = sum(p.numel() for p in cpm.parameters())
cpm_info = {"cpm": cpm_cfg.__dict__, "train": train_cfg.__dict__, "edit_layers": S, "train_seconds": cpm_seconds}
save_module(out_dir / "cpm", cpm, cpm_info)
if ship_as:  # `make method`: also the shipped checkpoint that notebook 05 falls back to
    save_module(output_path("ship_as", ship_as, run_dir), cpm, cpm_info)
fig, axes = plt.subplots(1, 3, figsize=(14, 3))
for ax, key in zip(axes, ("ce", "l2", "accuracy")):
    ax.plot(smooth(hist[key], 25)); ax.set_title(key); ax.set_xlabel("step")
fig.suptitle(f"CPM training: {n_params / 1e6:.2f} M parameters, {cpm_steps} steps × {cpm_batch}, {cpm_seconds:.0f} s", y=1.04)
save_figure(fig, fig_dir / "fig_cpm_training.png")
plt.show()
clock.lap("training")

# %% [markdown]
# ## Why it is not NN matching in disguise
#
# The control trains the same network on p(codes | the sample's own code): same targets (the CLM codes of the
# sample's residual around its character's mean), but conditioned on the sample's own code instead of other glyphs
# of its character (`control_steps`: 0 in the default batch, 800 in the `full` profile; without it only TAGE's row
# below). On seen characters that makes the codes a function of the input — the network learns to
# quantize, as NN matching does — while TAGE's conditioning leaves a genuine distribution to learn. We report, for
# both: the masked-token accuracy on the training codes (end of training), and for the unseen characters' shots
# the mean probability of the most likely code per layer in the first decoding pass (1 = deterministic), the share
# of sampled layer codes that equal one of NN matching's codes for the shots (around the 3-shot class embedding),
# and the distinct code combinations among 128 samples.

# %%
protocols = {k: evaluation.lofgan_protocol(ds, k, eval_generated, eval_real, seed) for k in (1, 3)}


shot_codes = [invert(protocols[3].shots(c)) for c in protocols[3].categories]  # each (3, L, D)
code_stats = dict(codebook=cb, layers=S, temperature=temperature, top_k=top_k, steps=decode_steps, order=decode_order,
                  seed=seed)
codes_table = {"CPM, p(codes | class embedding) [TAGE]": code_statistics(cpm, shot_codes, history=hist, **code_stats)}
if control_steps:
    control = cpm_lib.CodePredictor(cpm_cfg, cb.embed.detach())
    control_hist = runner.cpm(control, data, CPMTrainConfig(**{**train_cfg.__dict__, "steps": control_steps,
                                                                "condition": "own_code"}), desc="own-code control")
    codes_table["control, p(codes | own code)"] = code_statistics(control, shot_codes, history=control_hist,
                                                                   condition="own_code", **code_stats)
print(json.dumps(codes_table, indent=1))
clock.lap("metrics")

# %% [markdown]
# ## Generation for unseen characters, k = 1 and 3, judged
#
# **How TAGE generates** (`cpm.edit_shots`): it *edits the shots*. Each sample starts from one shot, written around
# the k-shot class embedding w̄ as its nearest codes on S plus the detail the codes miss; the CPM re-samples
# `resample` random layers' codes given w̄ and the shot's codes on the other layers — MaskGIT's conditional
# sampling, the same call that decodes from scratch. So each sample keeps part of a real shot's look and changes
# the rest into combinations seen characters use. The ablation row "from w̄ alone" samples all |S| codes from the
# class embedding without any shot's codes or detail — what the CPM gives as a pure generator.
#
# 24 unseen characters × `eval_generated` images from k shots, against the real reference halves: judge top-1
# (category preservation), FD-domain, FD-VGG16, LPIPS-vgg diversity at 32 px and the collapse rate. NN matching
# and k-nearest sampling use the same codebook and shots (notebook 03's rows are re-measured here so the
# comparison is on identical protocols); the control shows what conditioning on the shot's own code gives.

# %%
ruler = evaluation.glyph_ruler(ds, judge, lpips_vgg, seed=seed, collapse_quantile=collapse_quantile,
                               extractors=fd_extractors, inception_dir=inception_dir,
                               floor_cache=out_dir.parent / "collapse_floor.json", cache=cache)
tage_name = f"TAGE w/o PSM (CPM edits {resample} of {len(S)} layers, T={temperature:g})"
methods = {f"{tage_name}, k={k}": (generators.tage(model, cpm, S, temperature, top_k, decode_steps, invert, decode_order,
                                                   resample=resample), k) for k in (1, 3)}
if full_studies:
    methods[f"CPM from w̄ alone (all {len(S)} layers sampled), k=3"] = (
        generators.tage(model, cpm, S, temperature, top_k, decode_steps, invert, decode_order), 3)
if control_steps:
    methods["CPM own-code control, k=3"] = (generators.tage(model, control, S, temperature, top_k, decode_steps, invert,
                                                             decode_order, condition="own_code"), 3)
methods["NN matching, k=3"] = (generators.nn_matching(model, cb, S, invert), 3)
methods[f"k-nearest sampling ({knn_k}), k=3"] = (generators.knn_sampling(model, cb, S, knn_k, knn_temperature, invert), 3)
evals = {name: evaluation.evaluate(fn, protocols[k], ruler, seed=seed, desc=name) for name, (fn, k) in methods.items()}
for name, ev in evals.items():
    m = ev.metrics
    print(f"{name:52s} judge {m['preservation']:6.1%}  FD-domain {m['FD-domain']:6.2f}  FD-VGG16 {m['FD-VGG16']:6.2f}  "
          f"div {m['lpips_diversity']:.4f}  collapse {m['collapse_rate']:6.1%}")
clock.lap("evaluation")

# %%
fig = verdict_figure({n: evals[n] for n in list(evals)[:2] + ["NN matching, k=3"]}, ds.categories, n_show=8)
save_figure(fig, fig_dir / "fig_cpm_generation.png")
plt.show()
clock.lap("figures")

# %% [markdown]
# ## Temperature: the preservation–diversity trade-off
#
# Each point: `sweep_generated` images per unseen character (k = 3). The CPM's temperature, the number of
# candidates k-nearest sampling draws from (uniformly; its temperature barely moves it, as its codes stay near
# the shots'), and AGE's edit strength α each trade category preservation for diversity; a method whose curve
# lies above and to the right of another's gives more diversity at the same preservation. Sweep points use
# fewer images than the table, so their FDs are not comparable with the table's; preservation and diversity are.

# %%
sweep_protocol = evaluation.lofgan_protocol(ds, 3, sweep_generated, eval_real, seed)
age_model, _ = age_lib.load_age(upstream("age_checkpoint", age_checkpoint))  # notebook 02's, or the shipped one
gaussian = age_lib.fit_coefficient_gaussian(age_model, w, class_embeddings(w, data.labels)[data.labels])
curves = {f"TAGE (temperature; {resample} layers)": [
              (float(t), generators.tage(model, cpm, S, float(t), top_k, decode_steps, invert, decode_order, resample=resample))
              for t in temperature_sweep.split(",")],
          f"TAGE (re-sampled layers; T={temperature:g})": [
              (int(r), generators.tage(model, cpm, S, temperature, top_k, decode_steps, invert, decode_order, resample=int(r)))
              for r in resample_sweep.split(",")],
          "k-nearest sampling (candidates, uniform)": [(int(c), generators.knn_sampling(model, cb, S, int(c), 1e3, invert))
                                                       for c in knn_candidates.split(",")],
          "AGE (α)": [(float(a), generators.age(model, age_model, gaussian, float(a), invert)) for a in alpha_sweep.split(",")]}
sweep = {name: [(v, evaluation.evaluate(fn, sweep_protocol, ruler, seed=seed, progress=False).metrics) for v, fn in pts]
         for name, pts in curves.items()}
decoding = {f"{order}, {steps} passes": evaluation.evaluate(
    generators.tage(model, cpm, S, temperature, top_k, steps, invert, order), sweep_protocol, ruler, seed=seed,
    progress=False).metrics for order, steps in (("confidence", max(1, len(S) // 2)), ("confidence", len(S)), ("random", len(S)))}
print(f"decoding all layers from w̄ alone at T = {temperature:g} ({sweep_generated} images per character, k = 3):")
for name, m in decoding.items():
    print(f"  {name:22s} judge {m['preservation']:6.1%}  div {m['lpips_diversity']:.4f}  collapse {m['collapse_rate']:5.1%}  "
          f"FD-domain {m['FD-domain']:6.2f}")
fig, ax = plt.subplots(figsize=(6.5, 4.5))
for (name, pts), marker in zip(sweep.items(), "o^sd"):
    ax.plot([m["lpips_diversity"] for _, m in pts], [m["preservation"] for _, m in pts], marker + "-", label=name)
    for v, m in pts:
        ax.annotate(f"{v:g}", (m["lpips_diversity"], m["preservation"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
nn_m = evals["NN matching, k=3"].metrics
ax.plot(nn_m["lpips_diversity"], nn_m["preservation"], "k*", ms=12, label=f"NN matching ({eval_generated}/cat.)")
ax.set_xlabel("LPIPS-vgg diversity (32 px) →"); ax.set_ylabel("judge top-1 (category preservation) →")
ax.set_title(f"k = 3, {sweep_generated} images per unseen character"); ax.legend(fontsize=8)
save_figure(fig, fig_dir / "fig_cpm_temperature.png")
plt.show()
clock.lap("sweeps")

# %% [markdown]
# ## Few-shot classification gain, held-out fonts and sampling throughput

# %%
tage_k3 = f"{tage_name}, k=3"
gains = {tage_k3: evaluation.few_shot_gain(methods[tage_k3][0], ds, episodes=episodes, n_generated=episode_generated,
                                           seed=seed)} if episodes else {}
heldout = {name: evaluation.heldout_recognition(fn, ds, ruler, k, seed=seed) for name, (fn, k) in methods.items()
           if not name.startswith(("NN matching", "k-nearest"))}  # notebook 03 measures its own rows
cond = invert(protocols[3].shots(protocols[3].categories[0])).mean(0).expand(throughput_batch, -1, -1)
gen = torch.Generator().manual_seed(seed)
t0 = time.perf_counter()
codes = cpm_lib.sample(cpm, cond, temperature, top_k, decode_steps, order=decode_order, generator=gen)
t1 = time.perf_counter()
model.decode_batched(compose(cond, cb.embed[codes], S, base=cond))
t2 = time.perf_counter()
throughput = {"cpm_images_per_s": throughput_batch / (t1 - t0), "cpm_and_decode_images_per_s": throughput_batch / (t2 - t0),
              "batch": throughput_batch, "threads": threads}
print("few-shot classification gain:", json.dumps(gains, indent=1))
print("judge top-1 with shots from held-out families:", {k: f"{v:.1%}" for k, v in heldout.items()})
print(f"sampling throughput, batch {throughput_batch}: CPM {throughput['cpm_images_per_s']:.0f} codes/s, "
      f"CPM + G {throughput['cpm_and_decode_images_per_s']:.0f} images/s ({threads} threads)")
clock.lap("metrics")

# %%
prov = report.provenance(data_dir, seed, ruler)
rows = [report.table_row(name, evals[name].metrics, gains.get(name), heldout=heldout[name]) for name in methods
        if not name.startswith(("NN matching", "k-nearest"))]  # notebook 03 owns those rows
report.save_rows(out_dir, rows, prov)
print(report.write_baseline_table(run_dir, fig_dir))
metrics = {"cpm_parameters": n_params, "cpm_train_seconds": cpm_seconds, "codes": codes_table, "throughput": throughput,
           "evaluation": {n: {k: v for k, v in ev.metrics.items() if k != "per_category"} for n, ev in evals.items()},
           "decoding": {n: {k: m[k] for k in ("preservation", "lpips_diversity", "collapse_rate", "FD-domain")}
                        for n, m in decoding.items()},
           "sweep": {name: [(v, {k: m[k] for k in ("preservation", "lpips_diversity", "collapse_rate", "FD-domain")})
                            for v, m in pts] for name, pts in sweep.items()},
           "few_shot_gain": gains, "heldout_recognition": heldout}
write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1))
clock.lap("figures")

# %% [markdown]
# ## Recap
#
# - The CPM is a masked-token Transformer over the |S| layer codes, conditioned on a k-shot class embedding; it is
#   trained on seen characters with CE + L2 and decoded with MaskGIT's iterative sampler.
# - Conditioned on the shot's own code, the same network re-predicts NN matching's codes (the agreement table);
#   conditioned on w̄ it proposes many distinct combinations.
# - The judged table and the temperature plot say where TAGE's CPM wins over NN matching, k-nearest sampling and
#   AGE on this latent space, and where it does not; notebook 05 adds prompts (PSM).
