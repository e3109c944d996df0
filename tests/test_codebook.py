"""Unit tests for tagelib.codebook (CLM vector quantizer)."""

from __future__ import annotations

import pytest
import torch

from tagelib.codebook import Codebook, CodebookConfig, nearest_codes, perplexity, usage


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clustered(n_clusters: int, per: int, dim: int, spread: float, seed: int) -> torch.Tensor:
    g = _gen(seed)
    centers = 10.0 * torch.randn(n_clusters, dim, generator=g)
    pts = centers.repeat_interleave(per, 0) + spread * torch.randn(n_clusters * per, dim, generator=g)
    return pts[torch.randperm(pts.shape[0], generator=g)]  # (n_clusters * per, dim)


def _quant_mse(cb: Codebook, x: torch.Tensor) -> float:
    _, d = nearest_codes(x, cb.embed.detach())
    return (d.sum() / x.numel()).item()


def test_forward_shapes_and_decode_roundtrip():
    torch.manual_seed(0)
    cb = Codebook(CodebookConfig(num_codes=64, dim=16, chunk_size=7))
    x = torch.randn(5, 6, 16)  # (B, |S|, D)
    q, idx, loss = cb(x)
    assert q.shape == (5, 6, 16) and idx.shape == (5, 6) and idx.dtype == torch.long
    assert loss.shape == () and loss.item() > 0
    assert torch.equal(cb.get_output_from_indices(idx), q)  # bit-identical
    assert torch.equal(idx, torch.cdist(x.reshape(-1, 16), cb.embed.detach()).argmin(1).reshape(5, 6))


@pytest.mark.parametrize("chunk", [1, 37, 100, 256, 1000])
def test_nearest_codes_matches_brute_force(chunk):
    g = _gen(1)
    x = torch.randn(300, 24, generator=g, dtype=torch.float64)
    c = torch.randn(97, 24, generator=g, dtype=torch.float64)
    idx, d = nearest_codes(x, c, chunk_size=chunk)
    full = torch.cdist(x, c)  # (300, 97)
    assert torch.equal(idx, full.argmin(1))
    torch.testing.assert_close(d, full.min(1).values.pow(2))
    # k nearest: sorted, and equal to the brute-force top-k
    kidx, kd = nearest_codes(x.reshape(3, 100, 24), c, chunk_size=chunk, k=5)
    assert kidx.shape == (3, 100, 5)
    ref = full.topk(5, dim=1, largest=False)
    assert torch.equal(kidx.reshape(300, 5), ref.indices)
    torch.testing.assert_close(kd.reshape(300, 5), ref.values.pow(2))
    assert torch.equal(kidx[..., 0], idx.reshape(3, 100))


def test_nearest_codes_float32_agrees_with_cdist():
    g = _gen(2)
    x, c = torch.randn(1000, 64, generator=g), torch.randn(500, 64, generator=g)
    idx, _ = nearest_codes(x, c, chunk_size=333)
    agree = (idx == torch.cdist(x, c).argmin(1)).float().mean().item()
    assert agree > 0.995  # float32 rounding may flip near-ties only


def test_beta_weights_the_commitment_term():
    """Gradient w.r.t. x = 2*beta*(x-q)/numel; w.r.t. the codebook = codebook term only."""
    beta = 0.3
    cb = Codebook(CodebookConfig(num_codes=3, dim=2, beta=beta))
    with torch.no_grad():
        cb.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    x = torch.tensor([[1.0, 2.0], [9.0, 1.0], [8.0, -1.0], [-1.0, 1.0]], requires_grad=True)
    _, idx, loss = cb(x)
    assert idx.tolist() == [0, 1, 1, 0]
    loss.backward()
    q = cb.embed.detach()[idx]
    numel = x.numel()
    torch.testing.assert_close(x.grad, 2 * beta * (x.detach() - q) / numel)
    expected = torch.zeros(3, 2)
    expected.index_add_(0, idx, 2 * (q - x.detach()) / numel)  # no beta here
    torch.testing.assert_close(cb.embed.grad, expected)
    # and the loss value itself
    mse = ((x.detach() - q) ** 2).mean()
    torch.testing.assert_close(loss.detach(), mse + beta * mse)


def test_straight_through_is_identity_and_stops_codebook_grad():
    torch.manual_seed(0)
    cb = Codebook(CodebookConfig(num_codes=8, dim=4))
    x = torch.randn(3, 4, requires_grad=True)
    q, _, _ = cb(x)
    w = torch.randn(3, 4)
    (q * w).sum().backward()
    torch.testing.assert_close(x.grad, w)  # d quantized / dx = I
    assert cb.embed.grad is None  # downstream gradient never reaches the codes


def test_kmeans_init_beats_random_init():
    # an over-complete codebook (32 codes, 8 clusters), as in practice
    data = _clustered(n_clusters=8, per=60, dim=8, spread=0.3, seed=3)
    cfg = CodebookConfig(num_codes=32, dim=8, kmeans_iters=10)
    torch.manual_seed(0)
    rand_cb = Codebook(cfg)  # baseline 1: the default random-normal init
    pts_cb = Codebook(cfg)  # baseline 2: codes at random data points (k-means' starting point)
    with torch.no_grad():
        pts_cb.embed.copy_(data[torch.randperm(len(data), generator=_gen(4))[:32]])
    km_cb = Codebook(cfg)
    mse = km_cb.init_kmeans(data, generator=_gen(4))
    assert mse == pytest.approx(_quant_mse(km_cb, data), rel=1e-4)
    assert mse < 0.8 * _quant_mse(pts_cb, data)
    assert mse < 0.01 * _quant_mse(rand_cb, data)
    assert mse < 0.3**2  # below the within-cluster variance: every cluster got codes
    assert usage(km_cb(data)[1], 32) > 0.9


def test_kmeans_reseeds_empty_clusters():
    data = _clustered(n_clusters=4, per=50, dim=3, spread=0.1, seed=5)
    cb = Codebook(CodebookConfig(num_codes=10, dim=3, kmeans_iters=5))
    cb.init_kmeans(data, generator=_gen(6))
    assert torch.isfinite(cb.embed).all()
    # duplicates seeded from fewer points than codes stay finite too
    cb.init_kmeans(data[:4], generator=_gen(6))
    assert torch.isfinite(cb.embed).all()


def test_dead_code_revival():
    g = _gen(7)
    data = torch.randn(256, 8, generator=g)
    cfg = CodebookConfig(num_codes=32, dim=8, dead_threshold=1.0, usage_decay=0.9)
    cb = Codebook(cfg)
    with torch.no_grad():
        cb.embed.copy_(torch.randn(32, 8, generator=g))
        cb.embed[4:] += 100.0  # 28 codes far away: never chosen
    cb.train()
    for i in range(5):
        cb(data[i * 50 : (i + 1) * 50])
    assert cb.dead_codes().sum().item() == 28
    before = torch.unique(cb(data)[1]).numel()
    assert before <= 4
    n = cb.revive_dead_codes(data, generator=_gen(8))
    assert n == 28 and not cb.dead_codes().any()
    after = torch.unique(cb(data)[1]).numel()
    assert after > before + 10
    # revived codes lie near data points (noise is 1 % of the data std)
    _, d = nearest_codes(cb.embed.detach()[4:], data)
    assert d.max().sqrt().item() < 0.1
    assert cb.revive_dead_codes(data) == 0  # nothing left to revive


def test_eval_forward_does_not_touch_usage():
    cb = Codebook(CodebookConfig(num_codes=8, dim=4)).eval()
    cb(torch.randn(10, 4))
    assert cb.usage_count.sum().item() == 0
    cb.train()
    cb(torch.randn(10, 4))
    assert cb.usage_count.sum().item() == 10


def test_perplexity_and_usage():
    assert perplexity(torch.arange(50).repeat(3), 64) == pytest.approx(50.0)
    assert perplexity(torch.full((100,), 7), 64) == pytest.approx(1.0)
    assert usage(torch.arange(16), 64) == 0.25
    two = torch.tensor([0] * 90 + [1] * 10)
    assert 1.0 < perplexity(two, 4) < 2.0


def test_sample_k_nearest():
    torch.manual_seed(0)
    cb = Codebook(CodebookConfig(num_codes=50, dim=6))
    x = torch.randn(200, 6)
    nn_idx = cb(x)[1]
    codes, idx = cb.sample_k_nearest(x, k=5, temperature=1e-6, generator=_gen(9))
    assert torch.equal(idx, nn_idx)  # tiny temperature = NN matching
    assert torch.equal(codes, cb.get_output_from_indices(idx))
    _, idx_hot = cb.sample_k_nearest(x.reshape(10, 20, 6), k=5, temperature=1e6, generator=_gen(9))
    assert idx_hot.shape == (10, 20)
    top5, _ = nearest_codes(x, cb.embed.detach(), k=5)
    assert (top5 == idx_hot.reshape(200, 1)).any(1).all()  # always one of the 5 nearest
    assert (idx_hot.reshape(200) != nn_idx).float().mean() > 0.5  # ~uniform over 5: diverse
    again = cb.sample_k_nearest(x.reshape(10, 20, 6), k=5, temperature=1e6, generator=_gen(9))[1]
    assert torch.equal(again, idx_hot)  # seeded generator -> reproducible


def test_input_validation():
    cb = Codebook(CodebookConfig(num_codes=4, dim=3))
    with pytest.raises(ValueError, match="last dim"):
        cb(torch.randn(2, 5))
    with pytest.raises(ValueError, match="k must be"):
        nearest_codes(torch.randn(2, 3), cb.embed.detach(), k=5)
