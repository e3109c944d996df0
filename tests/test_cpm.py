"""CPM: shapes and masking, the CE + L2 loss by hand, decoding (argmax limit, top-k), k-shot conditioning."""

import math

import pytest
import torch
import torch.nn.functional as F

from tagelib.cpm import CodePredictor, CPMConfig, cpm_loss, random_mask, sample, sample_logits
from tagelib.cpm_train import CPMData, CPMTrainConfig, ShotSampler, conditioning, train_cpm

N, D, L, S = 16, 8, 4, 3


def tiny_cpm(prompt_dim: int = 0, seed: int = 0) -> CodePredictor:
    torch.manual_seed(seed)
    cfg = CPMConfig(num_codes=N, code_dim=D, n_latent=L, n_edit=S, d_model=16, depth=2, heads=2, dropout=0.0,
                    prompt_dim=prompt_dim)
    return CodePredictor(cfg, torch.randn(N, D)).eval()


def test_forward_shapes_and_mask_hides_the_code():
    cpm = tiny_cpm()
    cond, codes = torch.randn(5, L, D), torch.randint(N, (5, S))
    masked = torch.zeros(5, S, dtype=torch.bool)
    masked[:, 1] = True
    logits = cpm(cond, codes, masked)
    assert logits.shape == (5, S, N)
    other = codes.clone()
    other[:, 1] = (codes[:, 1] + 1) % N  # a different code under the mask: nothing may change
    torch.testing.assert_close(cpm(cond, other, masked), logits)
    other[:, 0] = (codes[:, 0] + 1) % N  # a visible code changed: the prediction must change
    assert not torch.allclose(cpm(cond, other, masked), logits)


def test_random_mask_masks_at_least_one_token_per_row_and_varies():
    m = random_mask(1000, 8, torch.Generator().manual_seed(0))
    counts = m.sum(1)
    assert counts.min() >= 1 and counts.max() == 8
    assert len(counts.unique()) == 8  # the cosine schedule reaches every count


def test_loss_matches_a_hand_computation():
    torch.manual_seed(1)
    logits, codebook = torch.randn(2, 3, 4), torch.randn(4, 5)
    target, residual = torch.tensor([[0, 3, 1], [2, 2, 0]]), torch.randn(2, 3, 5)
    masked = torch.tensor([[True, False, True], [False, False, True]])
    loss, logs = cpm_loss(logits, target, masked, residual, codebook, lambda_ce=0.7, lambda_l2=2.0)
    ce, l2 = [], []
    for b in range(2):
        for s in range(3):
            if masked[b, s]:
                p = [math.exp(v) for v in logits[b, s].tolist()]
                ce.append(-math.log(p[target[b, s]] / sum(p)))
                soft = sum(p[j] / sum(p) * codebook[j] for j in range(4))
                l2.append(((soft - residual[b, s]) ** 2).mean().item())
    expected = 0.7 * sum(ce) / len(ce) + 2.0 * sum(l2) / len(l2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["ce"] == pytest.approx(sum(ce) / len(ce), rel=1e-5)


def test_sampling_at_temperature_to_zero_is_argmax():
    logits = torch.randn(64, 10) * 3
    gen = torch.Generator().manual_seed(0)
    cold, _ = sample_logits(logits, 1e-4, generator=gen)
    greedy, p = sample_logits(logits, 0.0)
    assert torch.equal(cold, logits.argmax(-1)) and torch.equal(greedy, logits.argmax(-1)) and (p == 1).all()
    cpm, cond = tiny_cpm(), torch.randn(6, L, D)
    assert torch.equal(sample(cpm, cond, temperature=1e-5, generator=gen), sample(cpm, cond, temperature=0.0))


def test_top_k_never_leaves_the_top_k():
    logits = torch.randn(200, 12)
    idx, _ = sample_logits(logits.expand(50, -1, -1), 5.0, top_k=3, generator=torch.Generator().manual_seed(0))
    allowed = logits.topk(3, -1).indices  # (200, 3)
    assert (idx[..., None] == allowed).any(-1).all()
    distinct = torch.tensor([len(idx[:, r].unique()) for r in range(200)])
    assert (distinct == 3).float().mean() > 0.9  # high temperature: it samples all three, not the argmax
    # one decoding pass: every layer drawn from the first forward's top-k
    cpm, cond = tiny_cpm(), torch.randn(300, L, D)
    codes = sample(cpm, cond, temperature=10.0, top_k=2, steps=1, generator=torch.Generator().manual_seed(1))
    first = cpm(cond, torch.zeros(300, S, dtype=torch.long), torch.ones(300, S, dtype=torch.bool)).topk(2, -1).indices
    assert (codes[..., None] == first).any(-1).all()


def test_fixed_layers_are_kept_and_others_resampled():
    cpm, cond = tiny_cpm(), torch.randn(40, L, D)
    fixed = torch.tensor([True, False, True]).expand(40, -1)
    given = torch.randint(N, (40, S))
    codes = sample(cpm, cond, 5.0, fixed=fixed, fixed_codes=given, generator=torch.Generator().manual_seed(0))
    assert torch.equal(codes[:, [0, 2]], given[:, [0, 2]])
    assert not torch.equal(codes[:, 1], given[:, 1])


def test_soft_codes_carry_gradients_to_the_logits_and_the_prompt():
    cpm = tiny_cpm(prompt_dim=6)
    prompt = torch.randn(3, 6, requires_grad=True)
    logits = cpm(torch.randn(3, L, D), torch.zeros(3, S, dtype=torch.long), torch.ones(3, S, dtype=torch.bool), prompt)
    cpm.soft_codes(logits).square().sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert cpm.prompt_in.weight.grad.abs().sum() > 0


def test_prompt_changes_the_output_distribution_and_null_prompt_ignores_it():
    cpm = tiny_cpm(prompt_dim=6)
    cond, codes, masked = torch.randn(4, L, D), torch.zeros(4, S, dtype=torch.long), torch.ones(4, S, dtype=torch.bool)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    assert not torch.allclose(F.softmax(cpm(cond, codes, masked, a), -1), F.softmax(cpm(cond, codes, masked, b), -1))
    off = torch.zeros(4, dtype=torch.bool)
    torch.testing.assert_close(cpm(cond, codes, masked, a, off), cpm(cond, codes, masked, b, off))
    torch.testing.assert_close(cpm(cond, codes, masked, a, off), cpm(cond, codes, masked))
    with pytest.raises(ValueError, match="prompt_dim=0"):
        tiny_cpm()(cond, codes, masked, a)


def test_shot_sampler_draws_other_members_of_the_same_category():
    labels = torch.tensor([3, 1, 3, 3, 1, 7, 7, 3])
    sampler = ShotSampler(labels)
    i = torch.arange(8).repeat(50)
    j = sampler.others(i, 3, torch.Generator().manual_seed(0))
    assert (labels[j] == labels[i][:, None]).all() and (j != i[:, None]).all()
    assert set(j[i == 0].flatten().tolist()) == {2, 3, 7}  # every other member is reachable
    with pytest.raises(ValueError, match="at least 2"):
        ShotSampler(torch.tensor([0, 0, 1]))


def test_conditioning_is_a_k_shot_mean_of_other_glyphs():
    w = torch.randn(6, L, D)
    data = CPMData(w, torch.tensor([0, 0, 0, 1, 1, 1]), torch.zeros(6, S, dtype=torch.long), torch.zeros(6, S, D))
    cfg = CPMTrainConfig(max_shots=1)
    cond, first = conditioning(data, torch.tensor([0, 4]), ShotSampler(data.labels), cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(cond, w[first])
    assert first[0] in (1, 2) and first[1] in (3, 5)
    own, _ = conditioning(data, torch.tensor([0, 4]), ShotSampler(data.labels), CPMTrainConfig(condition="own_code"))
    torch.testing.assert_close(own, w[[0, 4]])
    with pytest.raises(ValueError, match="condition"):
        CPMTrainConfig(condition="label")


def test_training_learns_a_category_dependent_code():
    """Two categories whose codes differ: after training, the CPM predicts each category's code from its w̄."""
    torch.manual_seed(0)
    cpm = tiny_cpm()
    labels = torch.arange(2).repeat_interleave(20)
    w = torch.randn(40, L, D) * 0.1 + labels[:, None, None].float() * 2.0
    targets = torch.stack([torch.full((S,), 3), torch.full((S,), 11)])[labels]
    data = CPMData(w, labels, targets, cpm.codebook[targets])
    hist = train_cpm(cpm, data, CPMTrainConfig(steps=150, batch_size=32, lr=3e-3, warmup=10), progress=False)
    assert hist["loss"][-1] < hist["loss"][0] / 3
    codes = sample(cpm, w[[0, 39]], temperature=0.0)
    assert codes[0].tolist() == [3] * S and codes[1].tolist() == [11] * S


def test_edit_shots_keeps_the_shots_at_zero_and_only_the_resampled_layers_change():
    from tagelib.cpm import edit_shots

    cpm = tiny_cpm()
    layers = [0, 2, 3]  # S inside L = 4 layers: layer 1 is never edited
    shots = torch.randn(2, L, D)
    gen = torch.Generator().manual_seed(0)
    same = edit_shots(cpm, shots, layers, 4, resample=0, generator=gen)
    torch.testing.assert_close(same[:, layers], shots[torch.arange(4) % 2][:, layers])
    torch.testing.assert_close(same[:, 1], shots.mean(0)[1].expand(4, -1))
    edited = edit_shots(cpm, shots, layers, 200, resample=1, temperature=3.0, generator=gen)
    changed = (edited[:, layers] - shots[torch.arange(200) % 2][:, layers]).abs().sum(-1) > 1e-5  # (200, |S|)
    assert changed.sum(1).le(1).all() and changed.any()  # at most the one re-sampled layer moves
    with pytest.raises(ValueError, match="resample"):
        edit_shots(cpm, shots, layers, 4, resample=4)


def test_code_statistics_sees_a_deterministic_cpm_that_copies_or_avoids_nn_matching():
    """A CPM whose head always picks one code: top-1 probability ≈ 1, one distinct combination, and agreement
    with NN matching 1 when that code is the shots' nearest code, 0 when it is not."""
    from tagelib.codebook import Codebook, CodebookConfig
    from tagelib.cpm_train import code_statistics

    codebook = Codebook(CodebookConfig(num_codes=N, dim=D))
    with torch.no_grad():
        codebook.embed.copy_(torch.randn(N, D) * 100)
        codebook.embed[5] = 0.0  # the shots' small residuals are all nearest to code 5
    shots = [torch.randn(3, L, D) * 0.01 for _ in range(2)]
    history = {"accuracy": [0.5] * 60, "ce": [1.0] * 60}
    for favoured, expected_agreement in ((5, 1.0), (9, 0.0)):
        cpm = tiny_cpm()
        with torch.no_grad():
            cpm.head[-1].weight.zero_()
            cpm.head[-1].bias.copy_(F.one_hot(torch.tensor(favoured), N).float() * 50)
        stats = code_statistics(cpm, shots, codebook, layers=[0, 1, 3], history=history, n=16)
        assert stats["first_pass_top1_probability"] > 0.99
        assert stats["distinct_combinations"] == 1.0
        assert stats["agreement_with_NN"] == expected_agreement
        assert stats["train_masked_accuracy"] == 0.5
    with pytest.raises(ValueError, match="condition"):
        code_statistics(cpm, shots, codebook, [0, 1, 3], history, condition="label")
