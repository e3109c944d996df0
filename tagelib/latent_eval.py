"""Measuring a latent space on glyphs: reconstruction, cross-category transfer, throughput.

Transfer is measurable on glyphs because the ground truth exists: for a glyph of character c in font f
and another character c' in the same font, G(w̄_c' + (E(x_{c,f}) − w̄_c)) should look like the real
x_{c',f}. Two trivial baselines bound it: decoding w̄_c' alone (the category's average style), and the
real c' in a random other font (right character, wrong style).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tagelib.glyphs.dataset import GlyphDataset
from tagelib.latent import LatentSpace
from tagelib.perceptual import lpips_distance


def psnr(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1]: (B,)."""
    mse = ((fake.clamp(-1, 1) - real) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def reconstruction(model: LatentSpace, images: torch.Tensor, lpips_model, lpips_vgg=None, refine=None) -> dict:
    """LPIPS (and LPIPS-vgg when `lpips_vgg` is given) and PSNR of G(E(x)) — or of a refined inversion
    `refine(model, x) -> w` — against x."""
    w = model.encode_batched(images) if refine is None else refine(model, images)
    fake = model.decode_batched(w)
    out = {"lpips": lpips_distance(lpips_model, fake, images).mean().item(), "psnr": psnr(fake, images).mean().item(),
           "n": len(images)}
    if lpips_vgg is not None:
        out["lpips_vgg"] = lpips_distance(lpips_vgg, fake, images).mean().item()
    return out


@torch.no_grad()
def category_means(model: LatentSpace, ds: GlyphDataset, categories: list[int], styles: list[int],
                   max_styles: int | None = None, seed: int = 0) -> torch.Tensor:
    """w̄_c for each category: mean code over its covered images among `styles` (a random `max_styles` of
    them): (len(categories), L, D)."""
    rng = np.random.default_rng(seed)
    means = []
    for k in categories:
        s = rng.permutation([x for x in styles if ds.coverage[x, k]])[:max_styles]
        means.append(model.encode_batched(ds.tensor(s, k)).mean(0))
    return torch.stack(means)


def transfer_pairs(ds: GlyphDataset, styles: list[int], sources: list[int], targets: list[int], n: int,
                   rng: np.random.Generator) -> np.ndarray:
    """n random (font, source category, target category, other font) rows with all three glyphs present."""
    rows = []
    for _ in range(100 * n):
        if len(rows) == n:
            break
        f, c, t = rng.choice(styles), rng.choice(sources), rng.choice(targets)
        other = rng.choice(styles)
        if c != t and other != f and ds.coverage[f, c] and ds.coverage[f, t] and ds.coverage[other, t]:
            rows.append((f, c, t, other))
    if len(rows) < n:
        raise ValueError(f"found only {len(rows)} of {n} transfer pairs among {len(styles)} styles")
    return np.array(rows)


@torch.no_grad()
def transfer(model: LatentSpace, ds: GlyphDataset, pairs: np.ndarray, class_means: dict[int, torch.Tensor],
             lpips_model) -> dict:
    """LPIPS to the real x_{c',f} of: the transfer, the w̄_c' baseline, and the random-other-font baseline."""
    f, c, t, other = pairs.T
    src = ds.tensor(f, c)
    truth = ds.tensor(f, t)
    mean_c = torch.stack([class_means[k] for k in c])
    mean_t = torch.stack([class_means[k] for k in t])
    moved = model.decode_batched(mean_t + model.encode_batched(src) - mean_c)
    avg = model.decode_batched(mean_t)
    wrong_font = ds.tensor(other, t)
    return {
        "transfer": lpips_distance(lpips_model, moved, truth).mean().item(),
        "class_mean_only": lpips_distance(lpips_model, avg, truth).mean().item(),
        "random_other_font": lpips_distance(lpips_model, wrong_font, truth).mean().item(),
        "n": len(pairs),
    }


@torch.no_grad()
def throughput(model: LatentSpace, images: torch.Tensor, batch_size: int = 256, repeats: int = 3) -> dict:
    """Encode and decode images per second (best of `repeats`, batch `batch_size`), on the model's device (the
    batch is moved there first; GPU work is synchronised before each clock reading)."""
    x = images[:batch_size].to(model.device)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    model.encode(x[:8])  # warm-up
    enc, dec = [], []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        w = model.encode(x)
        sync()
        t1 = time.perf_counter()
        model.decode(w)
        sync()
        t2 = time.perf_counter()
        enc.append(len(x) / (t1 - t0))
        dec.append(len(x) / (t2 - t1))
    return {"encode_img_per_s": max(enc), "decode_img_per_s": max(dec), "batch_size": len(x),
            "threads": torch.get_num_threads(), "device": str(model.device), "amp": model.amp}


# ----------------------------------------------------------------------------- the judge's targets, quickly


def _judge_rate(ruler, images: torch.Tensor, categories: torch.Tensor) -> float:
    return ruler.recognised(images, categories).float().mean().item()


@torch.no_grad()
def judge_targets(model: LatentSpace, ds: GlyphDataset, ruler, seen_residuals: torch.Tensor, invert=None,
                  n_per_category: int = 32, draws: int = 8, seed: int = 0) -> dict:
    """How often the judge recognises the intended unseen character in what the latent space gives every
    few-shot method, on the training fonts (images from the reference halves, shots from the shot pools) and
    on the held-out families (images and shots from their fonts):

    - E→G reconstruction of `n_per_category` real glyphs per category;
    - the decoded 3-shot class embedding, for `draws` random 3-shot sets per category;
    - 3-shot continuous transfer: that class embedding + one random seen residual (all layers) per draw.

    `invert(x) -> w` replaces E for the shots (refined inversion). "FD-domain E→G" compares the training-font
    reconstructions with other real glyphs of the reference halves (judge features)."""
    from tagelib.metrics import frechet_distance

    invert = model.encode_batched if invert is None else invert
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    heldout = np.array(ds.split_info["heldout_styles"])
    load = lambda styles, c: ds.tensor(styles, c)
    out = {}
    for fonts in ("training fonts", "held-out families"):
        images, truth, shots = [], [], []
        for c in ds.unseen:
            name = ds.categories[c]
            if fonts == "training fonts":
                pool, shot_pool = rng.permutation(ds.pool(name, "unseen_reference")), ds.pool(name, "unseen_shots")
            else:
                pool = shot_pool = rng.permutation(heldout[ds.coverage[heldout, c]])
            images.append(load(pool[:n_per_category], c))
            truth.append(load(pool[n_per_category: 2 * n_per_category], c))
            shots.append(load(np.concatenate([rng.choice(shot_pool, 3, replace=False) for _ in range(draws)]), c))
        cats = torch.cat([torch.full((len(x),), c) for x, c in zip(images, ds.unseen)])
        recon = model.decode_batched(model.encode_batched(torch.cat(images)))
        out[f"E→G, {fonts}"] = _judge_rate(ruler, recon, cats)
        if fonts == "training fonts":
            judge = ruler.extractors[0]
            out["FD-domain E→G, training fonts"] = frechet_distance(judge(recon), judge(torch.cat(truth)))
        w_bar = invert(torch.cat(shots)).view(len(ds.unseen) * draws, 3, *seen_residuals.shape[1:]).mean(1)
        draw_cats = torch.tensor(ds.unseen).repeat_interleave(draws)
        out[f"class embedding k=3, {fonts}"] = _judge_rate(ruler, model.decode_batched(w_bar), draw_cats)
        pick = torch.randint(len(seen_residuals), (len(w_bar),), generator=gen)
        moved = model.decode_batched(w_bar + seen_residuals[pick])
        out[f"continuous transfer k=3, {fonts}"] = _judge_rate(ruler, moved, draw_cats)
    return out


@torch.no_grad()
def refinement_sweep(model: LatentSpace, ds: GlyphDataset, ruler, seen_residuals: torch.Tensor, invert,
                     draws: int = 8, seed: int = 0) -> dict:
    """What refining the shots buys, step by step: every shot-pool image (training fonts) along its one refinement
    trajectory (`invert`, a `tagelib.inversion.ShotInverter`, read at 0 = E alone, each of its `record_at` and its
    `steps`); at each length, the judge's recognition of the decoded 3-shot class embedding and of 3-shot continuous
    transfer (`draws` random 3-shot sets per category, one seen residual each).
    Returns {"rows": {steps: {...}}, "ms_per_shot_step": cost of one refinement step per shot}."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    pools = [ds.pool(ds.categories[c], "unseen_shots") for c in ds.unseen]
    images = torch.cat([ds.tensor(p, c) for p, c in zip(pools, ds.unseen)])
    offsets = np.cumsum([0] + [len(p) for p in pools])
    pick = torch.from_numpy(np.concatenate([o + np.stack([rng.choice(len(p), 3, replace=False) for _ in range(draws)])
                                            for o, p in zip(offsets, pools)]))  # (C * draws, 3) rows of `images`
    cats = torch.tensor(ds.unseen).repeat_interleave(draws)
    residual = seen_residuals[torch.randint(len(seen_residuals), (len(cats),), generator=gen)]
    rows = {}
    for s in (*invert.record_at, invert.steps):
        w_bar = invert.codes_at(images, s)[pick].mean(1)  # (C * draws, L, D)
        rows[s] = {"class embedding k=3": _judge_rate(ruler, model.decode_batched(w_bar), cats),
                   "continuous transfer k=3": _judge_rate(ruler, model.decode_batched(w_bar + residual), cats)}
    return {"rows": rows, "ms_per_shot_step": 1000 * invert.seconds_per_shot / max(invert.steps, 1), "shots": len(images)}


def recipe_table(recipes: dict) -> str:
    """Markdown rows (recipe x refinement length) from {name: (model, judge_targets(...), refinement_sweep(...))}."""
    lines = ["| latent space | G widths | training | E→G (training / held-out fonts) | FD-domain E→G | shots refined | "
             "class embedding k=3 | continuous transfer k=3 |", "|---|---|---|---|---|---|---|---|"]
    for name, (model, t, sweep) in recipes.items():
        for length, row in sweep["rows"].items():
            lines.append(
                f"| {name} | {'/'.join(map(str, model.cfg.generator.widths))} | {model.provenance()} | "
                f"{t['E→G, training fonts']:.1%} / "
                f"{t['E→G, held-out families']:.1%} | {t['FD-domain E→G, training fonts']:.2f} | {length} steps "
                f"({int(length) * sweep['ms_per_shot_step']:.0f} ms/shot) | {row['class embedding k=3']:.1%} | "
                f"{row['continuous transfer k=3']:.1%} |")
    return "\n".join(lines)
