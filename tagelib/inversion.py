"""Optimisation-based refinement of encoder inversions (as in rosinality's projector, without noise search).

Starting from w0 = E(x), a few Adam steps on L1 + LPIPS between G(w) and x pull the code closer to the
image while G stays frozen. TAGE inverts only k shots per unseen category, so a few dozen steps per
shot are affordable even on a CPU.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tagelib.latent import LatentSpace
from tagelib.paths import checkpoint_file
from tagelib.run_cache import read_entry, write_entry


def refine_codes(model: LatentSpace, images: torch.Tensor, perceptual, steps: int = 50, lr: float = 0.01,
                 lambda_lpips: float = 1.0, w_init: torch.Tensor | None = None, batch_size: int | None = None,
                 progress: bool = False, record_at: tuple[int, ...] = ()) -> torch.Tensor | dict[int, torch.Tensor]:
    """Refined W+ codes (N, L, D) for images (N, C, S, S) in [-1, 1]; model weights are untouched. The refinement
    runs on the model's device; the codes come back on the images' device.

    With `record_at` (step counts, 0 = E's codes), returns {steps: codes (N, L, D)} along the one trajectory,
    the final `steps` included: a sweep over refinement lengths for the price of the longest."""
    batch_size = batch_size or model.batch_size("refine")  # per-code results do not depend on it (summed losses)
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
    followed by `steps` refinement steps. Refined codes are remembered per image (by the sha256 of its pixels), so
    the shots that several methods and protocols share are refined once; `warm` refines a whole pool in one pass
    first (in chunks of `batch_size`: 32 on a CPU, where that is twice as fast as 256). With a run cache (`tagelib.run_cache`), the codes are kept on disk under a key of everything they
    depend on (E and G's weights, the perceptual network's weights, steps, lr, batch size, device), so the notebooks
    of one run refine each shot once.

    `inverter(x) -> w`: x (N, C, S, S) in [-1, 1] -> w (N, L, D). `seconds_per_shot` is the measured cost (here, or
    when the cached codes were computed). With `record_at` (step counts below `steps`; 0 = E's codes), every image's
    trajectory is kept at those lengths too, for `codes_at`: a sweep over refinement lengths costs nothing more.
    """

    CACHE_KIND = "shot-codes"

    def __init__(self, model: LatentSpace, steps: int, perceptual=None, lr: float = 0.03, batch_size: int | None = None,
                 cache=None, cache_key: str = "", record_at: tuple[int, ...] = (), shipped: Path | None = None):
        if steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {steps}")
        if steps > 0 and perceptual is None:
            raise ValueError("refinement needs a differentiable perceptual distance `perceptual(x, y) -> (B,)`")
        if cache is not None and not cache_key:
            raise ValueError("a cached ShotInverter needs the cache_key of its model and settings (fewshot.shot_inverter)")
        if any(not 0 <= t < steps for t in record_at):
            raise ValueError(f"record_at={record_at}: each must lie in [0, steps={steps})")
        self.model, self.steps, self.perceptual, self.lr = model, steps, perceptual, lr
        self.batch_size = batch_size or model.batch_size("refine")
        self.record_at = tuple(sorted(set(record_at)))
        self.cache, self.cache_key = (cache, cache_key) if steps > 0 else (None, "")
        found = self.cache.load(self.CACHE_KIND, cache_key) if self.cache else None
        self.shipped_used = None
        if found is None and shipped is not None and self.cache is not None:  # a fresh run folder: the shipped codes
            found = read_entry(checkpoint_file(shipped), cache_key)  # None when made for another model or setting
            self.shipped_used = shipped if found else None
        self._codes, note = found or ({}, {})  # image sha256 -> final code (L, D); "<step>/<sha256>" -> code at step
        self.cached_seconds = float(note.get("seconds", 0.0))  # what the codes read from the cache cost to compute
        self.from_cache = sum("/" not in k for k in self._codes)
        self.refined, self.seconds = 0, 0.0

    @property
    def seconds_per_shot(self) -> float:
        total = self.seconds + self.cached_seconds
        return total / (self.refined + self.from_cache) if self.refined + self.from_cache else 0.0

    def summary(self) -> str:
        """One line for people: how many codes were refined here, how many came from the run cache, at what cost."""
        if self.steps == 0:
            return "shot inversion: E alone (refine_steps = 0)"
        source = f"the shipped {self.shipped_used.name} (`make method`)" if self.shipped_used else "the run cache"
        return (f"shot inversion: E + {self.steps} refinement steps; {self.refined} images refined here in "
                f"{self.seconds:.0f} s, {self.from_cache} read from {source}; "
                f"{1000 * self.seconds_per_shot:.0f} ms per shot (batch {self.batch_size}, {torch.get_num_threads()} threads)")

    def save_as(self, path: str | Path) -> Path:
        """Write every code this inverter holds as one file (`<path>.safetensors`, the cache's format and key): what
        `make method` ships for notebooks opened on a fresh clone (`shipped`)."""
        if self.cache is None:
            raise ValueError("only a cached ShotInverter (fewshot.shot_inverter with a run cache) has a key to ship")
        return write_entry(checkpoint_file(path), self.CACHE_KIND, self.cache_key, self._codes,
                           note={"seconds": self.seconds + self.cached_seconds, "steps": self.steps, "lr": self.lr})

    def warm(self, images: torch.Tensor) -> "ShotInverter":
        """Refine (and cache) every image of a pool (N, C, S, S) ahead of the methods that will ask for them."""
        if self.steps > 0:
            self(images)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Refined codes (N, L, D) of images (N, C, S, S): each distinct image refined once, then remembered."""
        if self.steps == 0:
            return self.model.encode_batched(images)
        return self.codes_at(images, self.steps)

    def codes_at(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """The codes (N, L, D) after `step` refinement steps (`steps`, or one of `record_at`) along each image's one
        trajectory; images not seen before are refined now (the whole trajectory, recorded)."""
        if step != self.steps and step not in self.record_at:
            raise ValueError(f"step {step}: this inverter keeps {self.steps} and record_at={self.record_at}")
        keys = [hashlib.sha256(row.numpy().tobytes()).hexdigest()[:32] for row in images.float().cpu().contiguous()]
        name = lambda t, k: k if t == self.steps else f"{t}/{k}"
        missing = lambda k: any(name(t, k) not in self._codes for t in (self.steps, *self.record_at))
        todo = list({k: i for i, k in enumerate(keys) if missing(k)}.values())  # one trajectory per distinct image
        if todo:
            t0 = time.perf_counter()
            codes = refine_codes(self.model, images[todo], self.perceptual, steps=self.steps, lr=self.lr,
                                 batch_size=self.batch_size, progress=True, record_at=self.record_at)
            self.seconds += time.perf_counter() - t0
            self.refined += len(todo)
            trajectory = codes if self.record_at else {self.steps: codes}
            for t, at_t in trajectory.items():
                self._codes.update({name(t, keys[i]): w for i, w in zip(todo, at_t)})
            if self.cache is not None:
                self.cache.save(self.CACHE_KIND, self.cache_key, self._codes,
                                note={"seconds": self.seconds + self.cached_seconds, "steps": self.steps, "lr": self.lr})
        return torch.stack([self._codes[name(step, k)] for k in keys]).to(images.device)
