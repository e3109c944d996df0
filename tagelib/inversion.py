"""Optimisation-based refinement of encoder inversions (as in rosinality's projector, without noise search).

Starting from w0 = E(x), a few Adam steps on L1 + LPIPS between G(w) and x pull the code closer to the
image while G stays frozen. TAGE inverts only k shots per unseen category, so a few dozen steps per
shot are affordable even on a CPU.
"""

from __future__ import annotations

import torch

from tagelib.latent import LatentSpace


def refine_codes(model: LatentSpace, images: torch.Tensor, perceptual, steps: int = 50, lr: float = 0.01,
                 lambda_lpips: float = 1.0, w_init: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
    """Refined W+ codes (N, L, D) for images (N, C, S, S) in [-1, 1]; model weights are untouched."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        w0 = model.encode_batched(x) if w_init is None else w_init[i:i + batch_size]
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        with torch.enable_grad():  # callers may sit inside no_grad (evaluation code)
            for _ in range(steps):
                fake = model.decode(w)
                loss = (fake - x).abs().mean() + lambda_lpips * perceptual(fake.clamp(-1, 1), x).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        out.append(w.detach())
    return torch.cat(out)
