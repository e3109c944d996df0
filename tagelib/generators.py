"""The few-shot methods of notebooks 01–03 as `GenerateFn`s for `tagelib.evaluation.evaluate`.

Each factory returns ``generate(category, shots, n, generator) -> images``: shots (k, 1, H, W) and images
(n, 1, H, W) in [-1, 1]. Methods use only the shots — except the two reference rows, which say so: the real
ceiling (other real glyphs of the category) and the latent-space reconstruction of those same glyphs.
Deterministic methods (a decoded class embedding, NN matching) return their few distinct images repeated up
to n, as the protocol asks for n images: their diversity and collapse rate say what that means.

Every method that starts from the shots takes `invert(shots) -> w`, the pipeline's inversion step: E alone
(None, pSp's inversion) or E followed by refinement (`tagelib.inversion.ShotInverter`).
"""

from __future__ import annotations

from typing import Callable

import torch

Invert = Callable[[torch.Tensor], torch.Tensor]  # shots (k, 1, H, W) -> codes (k, L, D)

from tagelib import age as age_lib
from tagelib import clm
from tagelib import cpm as cpm_lib
from tagelib.codebook import Codebook
from tagelib.evaluation import GenerateFn, Protocol, other_real_styles
from tagelib.factorize import compose
from tagelib.latent import LatentSpace


def _cycle(codes: torch.Tensor, n: int) -> torch.Tensor:
    """Repeat codes (m, ...) row-wise to n rows: 0, 1, ..., m-1, 0, 1, ..."""
    return codes[torch.arange(n) % len(codes)]


def _interleave(codes: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Shot-major codes (k * m, ...) -> the first n of shot 0, shot 1, ..., shot k-1, shot 0, ... (every shot used)."""
    return codes.view(k, -1, *codes.shape[1:]).transpose(0, 1).flatten(0, 1)[:n]


def real_glyphs(protocol: Protocol, seed: int = 0) -> GenerateFn:
    """The real ceiling: n other real glyphs of the category (its reference half, outside the reference sample)."""
    ds = protocol.ds

    def generate(category, shots, n, generator):
        return ds.tensor(other_real_styles(protocol, category, n, seed), category)

    return generate


def reconstruction(model: LatentSpace, protocol: Protocol, seed: int = 0,
                   refine: Callable[[LatentSpace, torch.Tensor], torch.Tensor] | None = None) -> GenerateFn:
    """E→G (or a refined inversion `refine(model, x) -> w`) of the real ceiling's glyphs: the latent space's ceiling."""
    real = real_glyphs(protocol, seed)

    def generate(category, shots, n, generator):
        x = real(category, shots, n, generator)
        w = model.encode_batched(x) if refine is None else refine(model, x)
        return model.decode_batched(w)

    return generate


def class_embedding(model: LatentSpace, invert: Invert | None = None) -> GenerateFn:
    """Decode the k-shot class embedding w̄ = mean of the shots' codes: one image, repeated n times."""
    invert = invert or model.encode_batched

    def generate(category, shots, n, generator):
        return model.decode_batched(invert(shots).mean(0, keepdim=True)).expand(n, -1, -1, -1).clone()

    return generate


def continuous_transfer(model: LatentSpace, seen_residuals: torch.Tensor, layers: list[int],
                        invert: Invert | None = None) -> GenerateFn:
    """w̄ (k-shot class embedding) + a random residual of a seen-category training code (N, |S|, D) on S."""
    invert = invert or model.encode_batched

    def generate(category, shots, n, generator):
        w_bar = invert(shots).mean(0)  # (L, D)
        pick = torch.randint(len(seen_residuals), (n,), generator=generator)
        base = w_bar.expand(n, -1, -1)
        return model.decode_batched(compose(base, seen_residuals[pick], layers, base=base))

    return generate


def age(model: LatentSpace, age_model: age_lib.AGE, gaussian: age_lib.CoefficientGaussian, alpha: float,
        invert: Invert | None = None) -> GenerateFn:
    """AGE 1-shot editing of each shot's own code (w + α·A·n, n from the seen coefficients' Gaussian), cycling shots."""
    invert = invert or model.encode_batched

    def generate(category, shots, n, generator):
        w = invert(shots)  # (k, L, D)
        codes = age_lib.generate(age_model, w, -(-n // len(w)), alpha, gaussian, rng=generator)  # shot-major
        return model.decode_batched(_interleave(codes, len(w), n))

    return generate


def nn_matching(model: LatentSpace, codebook: Codebook, layers: list[int], invert: Invert | None = None) -> GenerateFn:
    """CLM NN matching: each shot's residual around w̄, quantized to its nearest codes; k images, cycled to n."""
    invert = invert or model.encode_batched

    def generate(category, shots, n, generator):
        w = invert(shots)
        return model.decode_batched(_cycle(clm.nn_generate(codebook, w, w.mean(0), layers), n))

    return generate


def knn_sampling(model: LatentSpace, codebook: Codebook, layers: list[int], knn_k: int, temperature: float,
                 invert: Invert | None = None) -> GenerateFn:
    """CLM k-nearest sampling: per layer, one of the `knn_k` codes nearest the shot's residual, shots cycled."""
    invert = invert or model.encode_batched

    def generate(category, shots, n, generator):
        w = invert(shots)
        codes = clm.knn_generate(codebook, w, w.mean(0), layers, -(-n // len(w)), knn_k, temperature, rng=generator)
        return model.decode_batched(_interleave(codes, len(w), n))

    return generate


def tage(model: LatentSpace, cpm, layers: list[int], temperature: float = 1.0, top_k: int = 0, steps: int = 8,
         invert: Invert | None = None, order: str = "random", prompts: torch.Tensor | None = None,
         resample: int | None = None, condition: str = "class_embedding", guidance: float = 1.0) -> GenerateFn:
    """TAGE: CLM codes predicted by the CPM around the k-shot class embedding w̄, decoded.

    `resample` = r: attribute editing of the shots (`tagelib.cpm.edit_shots`: r random layers of each shot re-sampled,
    the shot's other codes and its detail kept); None: all |S| codes sampled from w̄ alone (`steps` passes, `order`).
    `prompts` (P, E) CLIP text embeddings (PSM): sample i gets prompt i mod P, with classifier-free `guidance`
    (`tagelib.cpm.sample`). `condition="own_code"` conditions on
    each shot's own code instead of w̄ (the control trained with that condition; sampling from it alone).
    """
    invert = invert or model.encode_batched

    def generate(category, shots, n, generator):
        w = invert(shots)  # (k, L, D)
        prompt = None if prompts is None else _cycle(prompts, n)
        if resample is not None:
            return model.decode_batched(cpm_lib.edit_shots(cpm, w, layers, n, resample, temperature, top_k, order,
                                                           prompt, generator, guidance))
        w_bar = w.mean(0).expand(n, -1, -1)  # (n, L, D)
        cond = w_bar if condition == "class_embedding" else _cycle(w, n)
        codes = cpm_lib.sample(cpm, cond, temperature, top_k, steps, prompt=prompt, order=order, generator=generator,
                               guidance=guidance)
        return model.decode_batched(compose(w_bar, cpm.codebook[codes], layers, base=w_bar))

    return generate
