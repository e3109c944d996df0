"""Optimisation-based refinement of encoder inversions (as in rosinality's projector, without noise search).

Starting from w0 = E(x), a few Adam steps on L1 + LPIPS between G(w) and x pull the code closer to the
image while G stays frozen. TAGE inverts only k shots per unseen category, so a few dozen steps per
shot are affordable even on a CPU.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from tagelib.latent import LatentSpace


def refine_codes(model: LatentSpace, images: torch.Tensor, perceptual, steps: int = 50, lr: float = 0.01,
                 lambda_lpips: float = 1.0, w_init: torch.Tensor | None = None, batch_size: int = 256,
                 progress: bool = False, record_at: tuple[int, ...] = ()) -> torch.Tensor | dict[int, torch.Tensor]:
    """Refined W+ codes (N, L, D) for images (N, C, S, S) in [-1, 1]; model weights are untouched. The refinement
    runs on the model's device; the codes come back on the images' device.

    With `record_at` (step counts, 0 = E's codes), returns {steps: codes (N, L, D)} along the one trajectory,
    the final `steps` included: a sweep over refinement lengths for the price of the longest."""
    out, recorded = [], {t: [] for t in sorted({*record_at, steps})}
    starts = range(0, len(images), batch_size)
    bar = tqdm(total=steps * len(starts), desc=f"refine {len(images)} codes", disable=not progress or len(images) < 64)
    for i in starts:
        x = images[i:i + batch_size].to(model.device)
        w0 = model.encode_batched(x) if w_init is None else w_init[i:i + batch_size].to(model.device)
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        if 0 in recorded:
            recorded[0].append(w0.detach().to(images.device, copy=True))
        with torch.enable_grad():  # callers may sit inside no_grad (evaluation code)
            for step in range(1, steps + 1):
                fake = model.decode(w)
                # summed over images: each code's gradient (and Adam step) is independent of its batch-mates
                loss = ((fake - x).abs().flatten(1).mean(1) + lambda_lpips * perceptual(fake.clamp(-1, 1), x)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update()
                if step in recorded and step < steps:
                    recorded[step].append(w.detach().to(images.device, copy=True))
        out.append(w.detach().to(images.device))
    bar.close()
    if record_at:
        recorded[steps] = out
        return {t: torch.cat(codes) for t, codes in recorded.items()}
    return torch.cat(out)


class ShotInverter:
    """The few-shot pipeline's inversion of shots: E alone (`steps = 0`, the paper's pure pSp inversion) or E
    followed by `steps` refinement steps. Refined codes are cached per image, so the shots that several
    methods and protocols share are refined once; `warm` refines a whole pool in large batches first.

    `inverter(x) -> w`: x (N, C, S, S) in [-1, 1] -> w (N, L, D). `seconds_per_shot` is the measured cost.
    """

    def __init__(self, model: LatentSpace, steps: int, perceptual=None, lr: float = 0.03, batch_size: int = 256):
        if steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {steps}")
        if steps > 0 and perceptual is None:
            raise ValueError("refinement needs a differentiable perceptual distance `perceptual(x, y) -> (B,)`")
        self.model, self.steps, self.perceptual, self.lr, self.batch_size = model, steps, perceptual, lr, batch_size
        self._cache: dict[bytes, torch.Tensor] = {}
        self.refined, self.seconds = 0, 0.0

    @property
    def seconds_per_shot(self) -> float:
        return self.seconds / self.refined if self.refined else 0.0

    def warm(self, images: torch.Tensor) -> "ShotInverter":
        """Refine (and cache) every image of a pool (N, C, S, S) ahead of the methods that will ask for them."""
        if self.steps > 0:
            self(images)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.steps == 0:
            return self.model.encode_batched(images)
        keys = [row.numpy().tobytes() for row in images.float().cpu().contiguous()]
        todo = sorted({i for i, k in enumerate(keys) if k not in self._cache}, key=lambda i: keys[i])
        todo = list({keys[i]: i for i in todo}.values())  # one refinement per distinct image
        if todo:
            t0 = time.perf_counter()
            codes = refine_codes(self.model, images[todo], self.perceptual, steps=self.steps, lr=self.lr,
                                 batch_size=self.batch_size, progress=True)
            self.seconds += time.perf_counter() - t0
            self.refined += len(todo)
            self._cache.update({keys[i]: w for i, w in zip(todo, codes)})
        return torch.stack([self._cache[k] for k in keys])
