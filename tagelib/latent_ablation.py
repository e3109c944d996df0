"""Recipe variants of the latent space, trained and judged side by side (notebook 01's `ablation_steps`).

Each variant trains with the same steps, batch, learning rate and seed, differing from the previous recipe
("base") in one setting, and is measured with `latent_eval.judge_targets` (the judge's recognition of unseen
characters). A variant starts from scratch, or from a trained checkpoint (`start`, e.g. the shipped
`data/latent/glyph32`) to see what a short budget of each change adds. From scratch, a few hundred steps
give blurs that no judge recognises (measured: 0 % after 250 steps of the base recipe, 2 CPU cores), so the
comparison that the shipped table rests on is the full-budget one in notebook 01; this is the tool for
longer runs (a GPU, or a night):

    .venv/bin/python -m tagelib.latent_ablation --start "" --steps 1600 --out results/ablation.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tagelib import evaluation, fewshot, latent_eval
from tagelib.atomic import write_text_atomic
from tagelib.factorize import residuals
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.inversion import ShotInverter
from tagelib.latent import LatentSpace, LatentSpaceConfig, glyph_latent_config
from tagelib.latent_train import LatentTrainConfig, train_latent_space, training_sampler
from tagelib.perceptual import load_lpips, lpips_distance

# name -> (what changes, LatentTrainConfig overrides); "augment+pseudo" is the shipped checkpoint's training
VARIANTS: dict[str, tuple[str, dict]] = {
    "base": ("reconstruction + cross-reconstruction (the previous recipe)", {}),
    "pseudo": ("+ pseudo-glyphs (splices, strokes), 1 per 2 pairs", {"pseudo_fraction": 0.5}),
    "augment": ("+ transformed fonts on a quarter of the pairs", {"augment": 0.25}),
    "augment+pseudo": ("+ both (the shipped recipe's training)", {"augment": 0.25, "pseudo_fraction": 0.5}),
    "no cross": ("reconstruction only (no cross-reconstruction)", {"lambda_cross": 0.0}),
}


def seen_residuals(model: LatentSpace, ds: GlyphDataset, residual_styles: int, seed: int) -> torch.Tensor:
    """Residuals E(x) − w̄_c of seen-category training glyphs, all layers: (N, L, D)."""
    w, labels, _, _ = fewshot.training_codes(model, ds, residual_styles, seed)
    idx, emb = fewshot.seen_class_embeddings(w, labels, ds)
    return residuals(w, emb[idx], list(range(model.n_latent)))


def run_variant(ds: GlyphDataset, ruler, overrides: dict, steps: int, batch_size: int, seed: int,
                lpips_alex, residual_styles: int = 64, config: LatentSpaceConfig | None = None,
                start: str | Path | None = None, lr: float = 2e-3, target_images: int = 32, progress: bool = True) -> dict:
    """Train one variant — from the checkpoint `start`, or from scratch with architecture `config` (default:
    `glyph_latent_config()`) — and measure it: {"targets": ..., "train_seconds": ..., "config": ...}."""
    torch.manual_seed(seed)
    model = LatentSpace.load(start, frozen=False) if start else LatentSpace(config or glyph_latent_config())
    sampler = training_sampler(ds, seed=seed)
    cfg = LatentTrainConfig.from_dict({"steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr,
                                       "cross_warmup": 0 if start else min(200, steps // 6), **overrides})
    history = train_latent_space(model, sampler, len(ds.categories), cfg,
                                 perceptual=lambda a, b: lpips_distance(lpips_alex, a, b), progress=progress)
    model.freeze()
    targets = latent_eval.judge_targets(model, ds, ruler, seen_residuals(model, ds, residual_styles, seed),
                                        n_per_category=target_images, draws=max(1, target_images // 4), seed=seed)
    return {"targets": targets, "train_seconds": history["seconds"][-1], "config": cfg.__dict__}


def run_ablation(ds: GlyphDataset, ruler, variants: list[str], steps: int, batch_size: int, seed: int, lpips_alex,
                 out: str | Path, residual_styles: int = 64, config: LatentSpaceConfig | None = None,
                 start: str | Path | None = None, lr: float = 2e-3, target_images: int = 32, progress: bool = True) -> dict:
    """Train and measure each variant; rows go to the JSON file `out` (atomically, after each variant; rows of
    other variants already in it are kept). Returns the whole table."""
    unknown = [n for n in variants if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; choose from {list(VARIANTS)}")
    out = Path(out)
    table = json.loads(out.read_text()) if out.exists() else {}
    for name in variants:
        t0 = time.perf_counter()
        row = run_variant(ds, ruler, VARIANTS[name][1], steps, batch_size, seed, lpips_alex, residual_styles, config,
                          start, lr, target_images, progress=progress)
        row.update(change=VARIANTS[name][0], steps=steps, batch_size=batch_size, seed=seed, lr=lr,
                   start=str(start) if start else "scratch",
                   machine=f"{platform.machine()}, {torch.get_num_threads()} CPU threads",
                   wall_seconds=time.perf_counter() - t0)
        table[name] = row
        write_text_atomic(out, json.dumps(table, indent=1))
        print(name, json.dumps(row["targets"]), f"{row['train_seconds']:.0f} s", flush=True)
    return table


def ablation_table(table: dict) -> str:
    """Markdown: one row per variant, the judge's recognition rates (training fonts / held-out families)."""
    pct = lambda row, key: f"{row['targets'][key]:.1%}".replace("%", " %")
    both = lambda row, what: f"{pct(row, what + ', training fonts')} / {pct(row, what + ', held-out families')}"
    lines = ["| variant | change | E→G | class embedding k=3 | continuous transfer k=3 | FD-domain E→G | start + steps | train time |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        lines.append(f"| {name} | {row['change']} | {both(row, 'E→G')} | {both(row, 'class embedding k=3')} | "
                     f"{both(row, 'continuous transfer k=3')} | {row['targets']['FD-domain E→G, training fonts']:.2f} | "
                     f"{Path(row.get('start', 'scratch')).name} + {row['steps']} × {row['batch_size']} pairs, lr {row.get('lr', 2e-3):g} | "
                     f"{row['train_seconds'] / 60:.1f} min |")
    machines = sorted({row["machine"] for row in table.values()})
    lines += ["", "Judge recognition of unseen characters, training fonts / held-out families (homoglyphs merged); "
              "E alone inverts the shots; FD-domain against other real glyphs of the reference halves. "
              f"Seed {sorted({row['seed'] for row in table.values()})}, machine: {'; '.join(machines)}."]
    return "\n".join(lines)


def compare_checkpoints(ds: GlyphDataset, ruler, checkpoints: list[str], lpips_alex, lengths=(0, 10, 25, 50),
                        residual_styles: int = 64, seed: int = 0) -> str:
    """The recipe table of notebook 01 for trained checkpoints: E alone, and shots refined for each of `lengths`."""
    perceptual = lambda a, b: lpips_distance(lpips_alex, a, b)
    rows = {}
    for path in checkpoints:
        model = LatentSpace.load(path)
        res = seen_residuals(model, ds, residual_styles, seed)
        invert = ShotInverter(model, max(lengths), perceptual, record_at=tuple(t for t in lengths if t < max(lengths)))
        rows[str(path)] = (model, latent_eval.judge_targets(model, ds, ruler, res, draws=4, seed=seed),
                           latent_eval.refinement_sweep(model, ds, ruler, res, invert, seed=seed))
    return latent_eval.recipe_table(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--start", default="", help='checkpoint to start from ("": from scratch)')
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--data", default="data/glyphs")
    parser.add_argument("--judge", default="data/judge/glyph32_judge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="JSON file (markdown with --compare); rows of other variants in it are kept")
    parser.add_argument("--compare", nargs="+", help="instead of training: judge these trained checkpoints (markdown to --out)")
    parser.add_argument("--overwrite", action="store_true", help="replace rows of these variants already in --out")
    args = parser.parse_args(argv)
    if args.compare:
        torch.set_num_threads(args.threads)
        ds = GlyphDataset.load(args.data)
        ruler = evaluation.glyph_ruler(ds, args.judge, load_lpips("vgg"), seed=args.seed)
        text = compare_checkpoints(ds, ruler, args.compare, load_lpips("alex"), seed=args.seed)
        write_text_atomic(args.out, text + "\n")
        print(text)
        return
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if args.steps < 1 or args.batch_size < 1 or not args.lr > 0:
        parser.error("--steps and --batch-size must be >= 1, --lr > 0")
    recorded = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    if set(recorded) & set(names) and not args.overwrite:
        parser.error(f"{args.out} already has rows {sorted(set(recorded) & set(names))}; pass --overwrite to replace them")
    torch.set_num_threads(args.threads)
    ds = GlyphDataset.load(args.data)
    lpips_alex, lpips_vgg = load_lpips("alex"), load_lpips("vgg")
    ruler = evaluation.glyph_ruler(ds, args.judge, lpips_vgg, seed=args.seed)
    table = run_ablation(ds, ruler, names, args.steps, args.batch_size, args.seed, lpips_alex, args.out,
                         start=args.start or None, lr=args.lr)
    print(ablation_table(table))


if __name__ == "__main__":
    main()
