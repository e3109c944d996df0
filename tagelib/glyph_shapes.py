"""Extra shapes and styles for training the latent space, made from seen-category glyphs only.

An encoder trained on the 99 seen characters learns to *recognise* them: shown an unseen character, it snaps
to the nearest seen one (`p`→`D`, `5`→`Б`). Two ways to widen what E and G see, without any image of an unseen
category or held-out family:

- `augment_pairs`: new *fonts*. One random geometric and stroke transform per pair, applied to both glyphs
  of the pair (they share a font, so they must share its transform): small rotation, anisotropic scale
  (condensed / wide), shear (oblique), shift, a smooth elastic warp, and stroke weight (dilate / erode).
- `pseudo_glyphs`: new *shapes*. Half of them splice two glyphs of one font along a random straight cut
  (the top of one character, the bottom of another: the font's strokes, a character that does not exist);
  the other half are 2–4 random quadratic Bézier strokes of one random width. They enter the
  reconstruction loss only — they have no category, so no class embedding and no cross-reconstruction.

All images are (B, 1, H, W) in [-1, 1] with ink = +1; everything is batched, no loop over pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def warp_grid(n: int, size: int, generator: torch.Generator, rotate_deg: float = 6.0, scale: float = 0.1,
              shear: float = 0.15, shift_px: float = 1.5, elastic_px: float = 0.5) -> torch.Tensor:
    """n random sampling grids (n, size, size, 2) for `F.grid_sample`: affine and a smooth elastic field."""
    angle = _uniform(n, -rotate_deg, rotate_deg, generator) * math.pi / 180
    sx, sy = 1 + _uniform(n, -scale, scale, generator), 1 + _uniform(n, -scale, scale, generator)
    sh = _uniform(n, -shear, shear, generator)
    tx, ty = (_uniform(n, -shift_px, shift_px, generator) * 2 / size for _ in range(2))
    cos, sin = angle.cos(), angle.sin()
    # output -> input coordinates: rotation · shear · scale (inverse scale widens the glyph when s > 1)
    a = torch.stack([torch.stack([cos / sx, (cos * sh - sin) / sy, tx], 1),
                     torch.stack([sin / sx, (sin * sh + cos) / sy, ty], 1)], 1)  # (n, 2, 3)
    grid = F.affine_grid(a, (n, 1, size, size), align_corners=False)
    if elastic_px > 0:  # a 4x4 random displacement field, upsampled bicubically: smooth, at most ~elastic_px
        field = torch.randn(n, 2, 4, 4, generator=generator) * (elastic_px * 2 / size)
        grid = grid + F.interpolate(field, size=(size, size), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return grid


def stroke_weight(x: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    """Per-image stroke weight change: -1 erode (lighter), 0 keep, +1 dilate (bolder), by a 3x3 max/min filter
    blended at half strength so strokes change by about one pixel in total. x (B, 1, H, W), change (B,)."""
    bolder = F.max_pool2d(x, 3, stride=1, padding=1)
    lighter = -F.max_pool2d(-x, 3, stride=1, padding=1)
    c = change.view(-1, 1, 1, 1).to(x)
    return torch.where(c > 0, 0.5 * (x + bolder), torch.where(c < 0, 0.5 * (x + lighter), x))


def augment_pairs(xa: torch.Tensor, xb: torch.Tensor, probability: float, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random transform per pair to both members, to a `probability` share of the pairs."""
    n, _, size, _ = xa.shape
    if probability <= 0:
        return xa, xb
    grid = warp_grid(n, size, generator)
    change = torch.randint(-1, 2, (n,), generator=generator)
    keep = torch.rand(n, generator=generator) >= probability

    def apply(x):
        y = F.grid_sample((x + 1) / 2, grid, mode="bicubic", padding_mode="zeros", align_corners=False) * 2 - 1
        y = stroke_weight(y, change).clamp(-1, 1)
        return torch.where(keep.view(-1, 1, 1, 1), x, y)

    return apply(xa), apply(xb)


def splice(xa: torch.Tensor, xb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """xa on one side of a random line through the middle region, xb on the other: (B, 1, H, W)."""
    n, _, h, w = xa.shape
    theta = _uniform(n, 0, math.pi, generator)
    offset = _uniform(n, -0.3, 0.3, generator)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    side = xs * theta.cos().view(-1, 1, 1) + ys * theta.sin().view(-1, 1, 1) > offset.view(-1, 1, 1)
    return torch.where(side.unsqueeze(1), xa, xb)


def random_strokes(n: int, size: int, generator: torch.Generator, max_strokes: int = 4, samples: int = 24
                   ) -> torch.Tensor:
    """n images of 2..max_strokes quadratic Bézier strokes, one width per image: (n, 1, size, size) in [-1, 1]."""
    ctrl = _uniform(n * max_strokes * 3 * 2, 0.15, 0.85, generator).view(n, max_strokes, 3, 2) * size
    t = torch.linspace(0, 1, samples).view(1, 1, -1, 1)
    p0, p1, p2 = ctrl[:, :, 0:1], ctrl[:, :, 1:2], ctrl[:, :, 2:3]
    points = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2)  # (n, S, samples, 2)
    used = torch.arange(max_strokes).view(1, -1) < torch.randint(2, max_strokes + 1, (n, 1), generator=generator)
    points = torch.where(used.view(n, max_strokes, 1, 1), points, torch.full_like(points, -1e3)).flatten(1, 2)
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="xy"), -1).float() + 0.5
    dist = torch.cdist(coords.view(1, -1, 2).expand(n, -1, -1), points).amin(2)  # (n, size*size) px to the nearest stroke
    half_width = _uniform(n, 0.7, 2.2, generator).view(-1, 1)
    ink = torch.sigmoid((half_width - dist) * 3.0)
    return (ink * 2 - 1).view(n, 1, size, size)


def pseudo_glyphs(xa: torch.Tensor, xb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """len(xa) shapes of no category: splices of the pairs (xa[i], xb[i]) (same font) and random strokes."""
    n = len(xa)
    half = n // 2
    spliced = splice(xa[:half], xb[:half], generator)
    strokes = random_strokes(n - half, xa.shape[-1], generator)
    return torch.cat([spliced, strokes])
