"""The evaluation ruler: category preservation, Fréchet distance and KID, LPIPS diversity and collapse.

Each function names its protocol; `tagelib.evaluation.evaluate` runs them all over the LoFGAN protocol.

- **Category preservation** (`category_preservation`): top-1 accuracy of the judge (`tagelib.judge`, a
  classifier trained on real glyphs only) on generated images for their intended category, and where the
  misses go — the share recognised as a *seen* category and the most frequent (intended → judged) pairs.
- **Fréchet distance / KID** (`frechet_distance`, `kernel_distance`): clean-fid's own `fid_from_feats` and
  `kernel_distance` on features of a named extractor (`feature_extractor`): ``judge`` (penultimate judge
  features: "FD-domain"), ``vgg16`` (ImageNet VGG16 relu5_3, averaged over space, images at 32 px, offline
  weights — the very trunk pass of LPIPS-vgg: "FD-VGG16"), ``inception``
  (clean-fid's Inception-v3 from a local file: only this one is "FID").
- **Diversity** (`lpips_diversity`): LoFGAN's LPIPS — `lpips` VGG, images resized to 32 px, mean over all
  pairs within a category, averaged over categories.
- **Collapse rate** (`collapse_rate`): share of the pairs within a category closer (same LPIPS) than a floor
  calibrated on real data (`calibrate_collapse_floor`: a low quantile of LPIPS between distinct real fonts of
  one character).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from tagelib.perceptual import lpips_distance_matrix, lpips_trunk, pairwise_lpips

EXTRACTORS = ("judge", "vgg16", "inception")
FD_NAMES = {"judge": "FD-domain", "vgg16": "FD-VGG16", "inception": "FID"}
KID_NAMES = {"judge": "KID-domain", "vgg16": "KID-VGG16", "inception": "KID"}
INCEPTION_FILE = "inception-2015-12-05.pt"


# ----------------------------------------------------------------------------- category preservation


def category_preservation(predicted: torch.Tensor, intended: torch.Tensor, categories: Sequence[str],
                          seen: Sequence[int], canonical: torch.Tensor | None = None, top: int = 8) -> dict:
    """Judge top-1 accuracy on generated images for their intended category, and the confusions.

    predicted, intended: (N,) category ids. `canonical` (K,) maps each category to the one its homoglyph
    group is scored as (`tagelib.judge.canonical_ids`: Greek Γ and Cyrillic Г have the same outline in most
    fonts, so judging one as the other is no miss); None scores strictly.
    Returns `accuracy` (homoglyphs merged), `strict` (exact category), `per_category` (name -> accuracy),
    `wrong_onto_seen` (share of the misses judged as a seen category) and `confusions`: the `top` most
    frequent (intended, judged, count) pairs among the misses.
    """
    if predicted.shape != intended.shape or predicted.ndim != 1:
        raise ValueError(f"predicted and intended must be (N,) alike, got {tuple(predicted.shape)}, {tuple(intended.shape)}")
    canon = torch.arange(len(categories)) if canonical is None else canonical
    hit = canon[predicted] == canon[intended]
    per_category = {categories[int(c)]: hit[intended == c].float().mean().item() for c in torch.unique(intended)}
    wrong = ~hit
    seen_mask = torch.zeros(len(categories), dtype=torch.bool)
    seen_mask[list(seen)] = True
    pairs = Counter(zip(intended[wrong].tolist(), predicted[wrong].tolist()))
    mean = lambda t: t.float().mean().item() if len(t) else float("nan")
    return {"accuracy": mean(hit), "strict": mean(predicted == intended), "per_category": per_category,
            "wrong_onto_seen": seen_mask[predicted[wrong]].float().mean().item() if wrong.any() else 0.0,
            "confusions": [(categories[a], categories[b], n) for (a, b), n in pairs.most_common(top)]}


# ----------------------------------------------------------------------------- Fréchet distance and KID


def frechet_distance(feats1: np.ndarray | torch.Tensor, feats2: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, D), (N2, D): clean-fid's `fid_from_feats`."""
    from cleanfid.fid import fid_from_feats

    return float(fid_from_feats(_np64(feats1), _np64(feats2)))


def kernel_distance(feats1: np.ndarray | torch.Tensor, feats2: np.ndarray | torch.Tensor, seed: int = 0,
                    num_subsets: int = 100, max_subset_size: int = 1000) -> float:
    """KID: clean-fid's unbiased polynomial-kernel MMD² (`kernel_distance`), averaged over random subsets.

    clean-fid draws the subsets from NumPy's global generator; here it is seeded with `seed` for the call and
    restored afterwards, so a KID is reproducible and the caller's random state is untouched.
    """
    from cleanfid.fid import kernel_distance as cleanfid_kid

    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return float(cleanfid_kid(_np64(feats1), _np64(feats2), num_subsets=num_subsets, max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)


def _np64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {x.shape}")
    return x.astype(np.float64)


# ----------------------------------------------------------------------------- feature extractors


@dataclass
class FeatureExtractor:
    """A named feature map for Fréchet distances: images (B, C, H, W) in [-1, 1] -> features (B, D)."""

    name: str  # judge / vgg16 / inception
    fn: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int = 512
    weights: torch.nn.Module | None = field(default=None, repr=False)  # the network whose weights make the features

    @property
    def fd_name(self) -> str:
        return FD_NAMES[self.name]

    @property
    def kid_name(self) -> str:
        return KID_NAMES[self.name]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.fn(images[i:i + self.batch_size]).float().cpu()
                          for i in range(0, len(images), self.batch_size)])


def feature_extractor(name: str, judge: torch.nn.Module | None = None, lpips_vgg: torch.nn.Module | None = None,
                      device: str | torch.device = "cpu", inception_dir: str | Path | None = None,
                      lpips_size: int = 32) -> FeatureExtractor:
    """Build a named extractor. ``judge`` needs the judge; ``vgg16`` is `vgg_descriptor` on `lpips_vgg` (loaded when
    not given); ``inception`` needs clean-fid's Inception-v3 file in `inception_dir` (never downloaded here; images
    are resized to 299 px with clean-fid's "clean" PIL-bicubic resizer)."""
    if name == "judge":
        if judge is None:
            raise ValueError("the 'judge' extractor needs a judge (tagelib.judge.load_judge)")
        return FeatureExtractor("judge", lambda x: judge.features(x.to(device)), weights=judge)
    if name == "vgg16":
        from tagelib.perceptual import load_lpips

        net = lpips_vgg if lpips_vgg is not None else load_lpips("vgg", device=device)
        return FeatureExtractor("vgg16", lambda x: vgg_descriptor(lpips_trunk(net, x, resize_to=lpips_size)),
                                batch_size=256, weights=net)
    if name == "inception":
        fn = _inception_fn(inception_dir, device)
        return FeatureExtractor("inception", fn, batch_size=64, weights=fn.net)
    raise ValueError(f"unknown feature extractor {name!r}; valid: {list(EXTRACTORS)}")


def vgg_descriptor(trunk: list[torch.Tensor]) -> torch.Tensor:
    """FD-VGG16 features from `lpips_trunk` activations of LPIPS-vgg: relu5_3 averaged over space, (N, 512)."""
    return trunk[-1].mean(dim=(2, 3)).float().cpu()


def _inception_fn(inception_dir: str | Path | None, device: str | torch.device) -> Callable:
    path = Path(inception_dir or ".").expanduser() / INCEPTION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"FID needs clean-fid's Inception-v3 weights, {path} is missing. With the internet, clean-fid fetches the "
            f"file on first use (python -c \"from cleanfid.inception_torchscript import InceptionV3W; "
            f"InceptionV3W('DIR', download=True)\"); copy {INCEPTION_FILE} into a folder and pass it as inception_dir. "
            f"Without it, report FD-VGG16 or FD-domain, never 'FID'.")
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import make_resizer

    net = InceptionV3W(str(path.parent), download=False).to(device)
    resize = make_resizer("PIL", False, "bicubic", (299, 299))  # clean-fid's "clean" mode

    def fn(x: torch.Tensor) -> torch.Tensor:
        rgb = x.expand(-1, 3, -1, -1).add(1).mul(127.5).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3) in [0, 255]
        batch = torch.from_numpy(np.stack([resize(im) for im in rgb])).permute(0, 3, 1, 2)
        return net(batch.to(device))

    fn.net = net
    return fn


# ----------------------------------------------------------------------------- diversity and collapse


def per_category_pairwise(lpips_vgg, images_per_category: Sequence[torch.Tensor], size: int = 32) -> list[torch.Tensor]:
    """All within-category pairwise LPIPS (VGG, images at `size` px: the glyphs' 32, a photo dataset's own size), one
    (P_c,) tensor per category."""
    return [pairwise_lpips(lpips_vgg, imgs, resize_to=size) for imgs in images_per_category]


def pairs_and_vgg_features(lpips_vgg, images_per_category: Sequence[torch.Tensor], size: int = 32
                           ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One LPIPS-vgg trunk pass per category at `size` px gives both its within-category pairwise LPIPS (`per_category_pairwise`)
    and the images' FD-VGG16 features (`vgg_descriptor`): ([(P_c,)], (sum N_c, 512)).

    Identical images share one pass (a deterministic method repeats its few images up to n): features and
    distances of the distinct images are computed once and expanded."""
    pairs, feats = [], []
    for imgs in images_per_category:
        if len(imgs) < 2:
            raise ValueError(f"need at least 2 images per category for pairwise LPIPS, got {len(imgs)}")
        distinct, inverse = torch.unique(imgs.flatten(1), dim=0, return_inverse=True)  # (U, P), (N,)
        trunk = lpips_trunk(lpips_vgg, distinct.view(-1, *imgs.shape[1:]), resize_to=size)
        dist = lpips_distance_matrix(lpips_vgg, trunk)[inverse][:, inverse]  # (N, N)
        i_idx, j_idx = torch.triu_indices(len(imgs), len(imgs), offset=1)
        pairs.append(dist[i_idx, j_idx].float())
        feats.append(vgg_descriptor(trunk)[inverse])
    return pairs, torch.cat(feats)


def lpips_diversity(pair_distances: Sequence[torch.Tensor]) -> float:
    """LoFGAN diversity: mean over categories of the mean pairwise LPIPS within the category."""
    return float(np.mean([d.double().mean().item() for d in pair_distances]))


def collapse_rate(pair_distances: Sequence[torch.Tensor], floor: float) -> float:
    """Share of within-category pairs closer than `floor` (LPIPS), mean over categories: 1 = all duplicates."""
    return float(np.mean([(d < floor).double().mean().item() for d in pair_distances]))


def calibrate_collapse_floor(lpips_vgg, images_per_category: Sequence[torch.Tensor], quantile: float = 0.01,
                             size: int = 32) -> float:
    """The collapse floor: the `quantile` of LPIPS (VGG, 32 px) between distinct real fonts of one character,
    pooled over the given categories' pairs. Call it on real glyphs outside the evaluation reference (the
    notebooks use seen categories of the training fonts)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    d = torch.cat(per_category_pairwise(lpips_vgg, images_per_category, size))
    return torch.quantile(d.double(), quantile).item()

