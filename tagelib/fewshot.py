"""The few-shot protocol on glyphs: drawing shots, k-shot class embeddings, transfer error, training codes.

LoFGAN protocol: for every unseen category, k shots (k = 1 or 3) come from its shot pool (a fixed shuffle of
its first styles), real evaluation images from its evaluation pool. The metrics of generated sets live in
`tagelib.metrics` and `tagelib.evaluation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from tagelib.distributed import Distributed, pick_device
from tagelib.factorize import class_embeddings, compose, residuals, validate_layers
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.inversion import ShotInverter
from tagelib.latent import LatentSpace
from tagelib.paper_data import load_dataset
from tagelib.paths import resolve
from tagelib.run_cache import RunCache, content_key
from tagelib.shipped_method import SHOT_CODES
from tagelib.write_guard import output_dirs
from tagelib.perceptual import load_lpips, lpips_distance


def draw_shots(ds: GlyphDataset, k: int, seed: int = 0) -> dict[int, list[int]]:
    """k style ids per unseen category (global category id -> styles), drawn from its shot pool."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in ds.split_info["unseen_categories"]:
        pool = ds.split_info["unseen_pools"][c]["shot_pool"]
        out[ds.category_index[c]] = [int(s) for s in rng.choice(pool, size=k, replace=False)]
    return out


@torch.no_grad()
def shot_codes(model: LatentSpace, ds: GlyphDataset, shots: dict[int, list[int]], invert=None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes of the shots (C, k, L, D) and the k-shot class embeddings w̄ (C, L, D), in `shots` order.
    `invert(x) -> w` is the pipeline's inversion (default: E alone)."""
    imgs = torch.stack([ds.tensor(styles, c) for c, styles in shots.items()])  # (C, k, 1, H, W)
    w = (invert or model.encode_batched)(imgs.flatten(0, 1)).unflatten(0, imgs.shape[:2])
    return w, w.mean(1)


def shot_pool_images(ds: GlyphDataset) -> torch.Tensor:
    """Every image of the unseen categories' shot pools (N, 1, H, W): what `ShotInverter.warm` refines up front."""
    return torch.cat([ds.tensor(ds.pool(ds.categories[c], "unseen_shots"), c) for c in ds.unseen])


def heldout_shot_images(ds: GlyphDataset, seed: int = 0, ks: Sequence[int] = (1, 3)) -> torch.Tensor:
    """The shots `evaluation.heldout_recognition` draws from held-out-family fonts for each k, (N, 1, H, W)."""
    from tagelib.evaluation import heldout_protocol

    protocols = [heldout_protocol(ds, k, seed=seed) for k in ks]
    return torch.cat([p.shots(c) for p in protocols for c in p.categories])


SWEEP_LENGTHS = (0, 10, 25)  # refinement lengths every shot's trajectory is kept at (notebook 01's sweep)


def shot_inverter(model: LatentSpace, ds: GlyphDataset, refine_steps: int, lpips_alex, lr: float = 0.03,
                  cache: RunCache | None = None, seed: int = 0, shipped: bool = False) -> ShotInverter:
    """The pipeline's inversion of shots (E, then `refine_steps` Adam steps at `lr` on L1 + LPIPS-alex; 0: E alone),
    with every shot-pool image, and the held-out-family shots of `heldout_recognition` (k = 1, 3, `seed`), refined up
    front in one pass, so the methods' calls are cache hits. With the run's `cache`, the codes are computed once
    per run: the key holds E and G's weights, LPIPS-alex's weights and every setting of the refinement. Each
    trajectory is also kept at `SWEEP_LENGTHS` (`latent_eval.refinement_sweep`). With `shipped`, a run folder that has
    no codes yet starts from the codes `make method` ships (`tagelib.shipped_method.SHOT_CODES`), when they were made
    for this very key (`make method` computes the codes it ships)."""
    perceptual = lambda a, b: lpips_distance(lpips_alex, a, b)
    key = content_key(what="ShotInverter codes", model=model, perceptual=lpips_alex, steps=refine_steps, lr=lr,
                      lambda_lpips=1.0, batch_size=model.batch_size("refine"), device=model.device.type, amp=model.amp,
                      torch=torch.__version__) if cache is not None and refine_steps > 0 else ""
    inverter = ShotInverter(model, refine_steps, perceptual, lr=lr, cache=cache if key else None, cache_key=key,
                            record_at=tuple(t for t in SWEEP_LENGTHS if t < refine_steps),
                            shipped=SHOT_CODES if shipped else None)
    if refine_steps > 0 and ds.split_info.get("heldout_styles"):
        return inverter.warm(torch.cat([shot_pool_images(ds), heldout_shot_images(ds, seed)]))
    return inverter.warm(shot_pool_images(ds))


def eval_pairs(ds: GlyphDataset, categories: list[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """n rows (font, source category, target category) with both glyphs in the evaluation pools."""
    pools = {c: set(ds.split_info["unseen_pools"][ds.categories[c]]["eval_pool"]) for c in categories}
    if len(categories) < 2:
        raise ValueError("eval_pairs needs at least two categories")
    rows = []
    for _ in range(100 * n):
        if len(rows) == n:
            break
        c, t = rng.choice(categories, size=2, replace=False)
        common = sorted(pools[c] & pools[t])
        if common:
            rows.append((rng.choice(common), c, t))
    if len(rows) < n:
        raise ValueError(f"found only {len(rows)} of {n} pairs: the evaluation pools barely share fonts")
    return np.array(rows)


@torch.no_grad()
def transfer_error(model: LatentSpace, ds: GlyphDataset, pairs: np.ndarray, class_emb: dict[int, torch.Tensor],
                   layers: Sequence[int], lpips_model, edit: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
    """Mean LPIPS between G(w̄_t + edit(E(x_{c,f}) − w̄_c) on S) and the real x_{t,f}.

    `edit` maps residuals (B, |S|, D) to what the method keeps of them (identity: continuous residuals;
    AGE's dictionary reconstruction; CLM's quantization). Layers outside S come from w̄_t.
    """
    f, c, t = pairs.T
    src = ds.tensor(f, c)
    truth = ds.tensor(f, t)
    w_src = model.encode_batched(src)
    ce_c = torch.stack([class_emb[int(k)] for k in c])
    ce_t = torch.stack([class_emb[int(k)] for k in t])
    a = residuals(w_src, ce_c, layers)
    a = a if edit is None else edit(a)
    moved = model.decode_batched(compose(ce_t, a, layers, base=ce_t))
    return lpips_distance(lpips_model, moved, truth).mean().item()


@torch.no_grad()
def training_codes(model: LatentSpace, ds: GlyphDataset, max_styles: int, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes of seen-category training glyphs: w (N, L, D), labels (N,), style ids (N,), images (N, 1, H, W).

    At most `max_styles` random training-family styles per category, so the editing stages train on a
    budget; the same seed gives the same subset.
    """
    rng = np.random.default_rng(seed)
    styles = np.array(ds.split_info["train_styles"])
    pick = np.sort(rng.choice(styles, size=min(max_styles, len(styles)), replace=False))
    cats = np.array(ds.seen)
    s_idx, c_idx = np.meshgrid(pick, cats, indexing="ij")
    keep = ds.coverage[s_idx, c_idx]
    s_idx, c_idx = s_idx[keep], c_idx[keep]
    images = ds.tensor(s_idx, c_idx)
    return model.encode_batched(images), torch.from_numpy(c_idx), torch.from_numpy(s_idx), images


def seen_class_embeddings(w: torch.Tensor, labels: torch.Tensor, ds: GlyphDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Index among the seen categories (N,) and their class embeddings (C_seen, L, D), for global `labels`."""
    position = torch.full((len(ds.categories),), -1, dtype=torch.long)
    position[ds.seen] = torch.arange(len(ds.seen))
    seen_labels = position[labels]
    if (seen_labels < 0).any():
        raise ValueError("labels contain unseen categories; class embeddings here are fitted on seen ones only")
    return seen_labels, class_embeddings(w, seen_labels, num_classes=len(ds.seen))


class EditingContext(NamedTuple):
    """What notebooks 02–05 start from: data, the frozen latent space, the edited layers, metrics, folders, and the
    device the networks sit on (`dist`: one process on it; trainers take it)."""

    ds: GlyphDataset
    model: LatentSpace
    layers: list[int]
    lpips_alex: torch.nn.Module
    lpips_vgg: torch.nn.Module
    out_dir: Path
    fig_dir: Path
    rng: np.random.Generator
    dist: Distributed


def editing_context(notebook: str, run_dir: str, figures_dir: str, data_dir: str, checkpoint: str, edit_layers: str,
                    seed: int, threads: int, dataset: str = "glyphs", device: str = "auto", amp: bool = True
                    ) -> EditingContext:
    """Seed torch, set its threads, create the output folders and load data, latent space and LPIPS nets.

    `edit_layers` is a comma-separated list ("0,1,2,3"); a missing checkpoint names notebook 01; `dataset` and
    `data_dir` as in `tagelib.paper_data.load_dataset`. `device` ("auto": CUDA when present) is chosen once: E, G
    and LPIPS move there (G in bf16 autocast with `amp` on a GPU); the data stays on the CPU.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    target = pick_device(device)
    out_dir, fig_dir = output_dirs(run_dir, figures_dir, notebook)
    model = LatentSpace.load(resolve(checkpoint)).to_device(target, amp)
    layers = validate_layers([int(i) for i in edit_layers.split(",")], model.n_latent)
    return EditingContext(load_dataset(dataset, data_dir, model.cfg.generator.size), model, layers,
                          load_lpips("alex", device=target), load_lpips("vgg", device=target), out_dir, fig_dir,
                          np.random.default_rng(seed), Distributed(device=target))
