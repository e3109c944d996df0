"""CLM training and NN / k-nearest generation, on a toy linear generator."""

import torch

from tagelib import clm
from tagelib.codebook import Codebook, CodebookConfig
from tagelib.factorize import residuals

L, D, S = 4, 8, [0, 1, 2]
PROJ = torch.randn(L * D, 64, generator=torch.Generator().manual_seed(0)) / (L * D) ** 0.5


def decode(w):  # a fixed linear "generator": W+ (B, L, D) -> image (B, 1, 8, 8)
    return torch.tanh(w.flatten(1) @ PROJ).view(-1, 1, 8, 8)


def toy_codes(n=256, clusters=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, len(S), D, generator=g)
    pick = torch.randint(clusters, (n,), generator=g)
    class_emb = torch.randn(1, L, D, generator=g).expand(n, L, D).clone()
    w = class_emb.clone()
    w[:, S] += centres[pick] + 0.05 * torch.randn(n, len(S), D, generator=g)
    return w, class_emb


def l1(a, b):
    return (a - b).abs().flatten(1).mean(1)


def test_training_uses_codes_and_reconstructs():
    w, ce = toy_codes()
    cb = Codebook(CodebookConfig(num_codes=32, dim=D, beta=0.25))  # 6 clusters x 3 layers = 18 modes
    hist = clm.train_clm(cb, w, ce, S, decode, l1, clm.CLMTrainConfig(steps=40, batch_size=32, revive_every=10), progress=False)
    assert hist["usage"][-1] > 0.3 and 6 <= hist["perplexity"][-1] <= 32
    q, idx = clm.quantize(cb, residuals(w, ce, S))
    assert idx.shape == (len(w), len(S)) and q.shape == (len(w), len(S), D)
    err = (q - residuals(w, ce, S)).pow(2).mean()
    assert err < 0.1 * residuals(w, ce, S).pow(2).mean()


def test_nn_generation_is_deterministic_and_close_to_the_shot():
    w, ce = toy_codes()
    cb = Codebook(CodebookConfig(num_codes=16, dim=D))
    cb.init_kmeans(residuals(w, ce, S))
    out1, out2 = clm.nn_generate(cb, w[:5], ce[0], S), clm.nn_generate(cb, w[:5], ce[0], S)
    assert torch.equal(out1, out2) and out1.shape == (5, L, D)
    assert torch.equal(out1[:, 3], w[:5, 3]), "layers outside S come from the shot"
    assert (out1 - w[:5]).norm() < 0.3 * w[:5, S].norm()


def test_knn_sampling_is_diverse_and_stays_near():
    w, ce = toy_codes()
    cb = Codebook(CodebookConfig(num_codes=32, dim=D))
    cb.init_kmeans(residuals(w, ce, S))
    gen = torch.Generator().manual_seed(0)
    out = clm.knn_generate(cb, w[:2], ce[0], S, n_samples=20, k=4, temperature=10.0, rng=gen)
    assert out.shape == (40, L, D)
    assert torch.unique(out[:20].flatten(1), dim=0).shape[0] > 1, "several distinct samples per shot"
    nearest = clm.knn_generate(cb, w[:2], ce[0], S, n_samples=3, k=1, rng=gen)
    assert torch.equal(nearest[:3], clm.nn_generate(cb, w[:1], ce[0], S).expand(3, L, D))
