"""Wall time of one method's full evaluation (LoFGAN protocol, all metrics but the episodes) on this machine.

    .venv/bin/python benchmarks/bench_evaluate.py --threads 2            # 24 unseen categories x 128 images
    .venv/bin/python benchmarks/bench_evaluate.py --episodes 20          # also time the few-shot episodes

Times, with the shipped latent space and judge: building the ruler (judge, VGG16, LPIPS-vgg, collapse floor),
then for two methods (continuous transfer: encoder + generator; real glyphs: no generation) the generation
time and the metric time of `tagelib.evaluation.evaluate`, the first call including the reference features
(cached for later calls).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tagelib import evaluation, fewshot, generators
from tagelib.factorize import residuals
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.latent import LatentSpace
from tagelib.paths import DATA_DIR
from tagelib.perceptual import load_lpips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=128, help="generated and real images per category")
    parser.add_argument("--episodes", type=int, default=0, help="also time few_shot_gain with this many episodes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = GlyphDataset.load()
    model = LatentSpace.load(DATA_DIR / "latent" / "glyph32")
    t = time.perf_counter()
    ruler = evaluation.glyph_ruler(ds, str(DATA_DIR / "judge" / "glyph32_judge"), load_lpips("vgg"))
    out = {"threads": args.threads, "categories": len(ds.unseen), "n_per_category": args.n,
           "ruler_build_s": round(time.perf_counter() - t, 2)}
    protocol = evaluation.lofgan_protocol(ds, 3, args.n, args.n)
    w, labels, _, _ = fewshot.training_codes(model, ds, 64)
    idx, emb = fewshot.seen_class_embeddings(w, labels, ds)
    layers = list(range(model.n_latent))
    methods = {"continuous transfer": generators.continuous_transfer(model, residuals(w, emb[idx], layers), layers),
               "real glyphs": generators.real_glyphs(protocol)}
    for name, fn in methods.items():
        t = time.perf_counter()
        ev = evaluation.evaluate(fn, protocol, ruler, progress=False)
        out[name] = {"total_s": round(time.perf_counter() - t, 2),
                     **{f"{k}_s": round(v, 2) for k, v in ev.metrics["seconds"].items()},
                     "preservation": round(ev.metrics["preservation"], 4)}
    if args.episodes:
        t = time.perf_counter()
        evaluation.few_shot_gain(methods["continuous transfer"], ds, episodes=args.episodes, progress=False)
        out["few_shot_gain_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
