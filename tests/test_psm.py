"""PSM: prompt token added to a trained CPM, the prompt bank, the CLIP loss's differentiable path to the codes."""

import pytest
import torch
import torch.nn.functional as F

from tagelib import psm
from tagelib.cpm import CodePredictor, CPMConfig
from tagelib.cpm_train import CPMData, CPMTrainConfig

N, D, L, S, E = 16, 8, 4, 4, 6


def base_cpm() -> CodePredictor:
    torch.manual_seed(0)
    cfg = CPMConfig(num_codes=N, code_dim=D, n_latent=L, n_edit=S, d_model=16, depth=2, heads=2, dropout=0.0)
    return CodePredictor(cfg, torch.randn(N, D)).eval()


def test_with_prompt_token_keeps_the_trained_weights():
    cpm = base_cpm()
    wrapped = psm.with_prompt_token(cpm, E)
    assert wrapped.config.prompt_dim == E and cpm.config.prompt_dim == 0
    for name, value in cpm.state_dict().items():
        torch.testing.assert_close(wrapped.state_dict()[name], value)
    assert wrapped.prompt_in.weight.shape == (16, E)


class FakeDecoder:
    """A differentiable stand-in for G: (B, L, D) -> (B, 1, 4, 4) images in [-1, 1]."""

    def __init__(self):
        self.proj = torch.randn(L * D, 16)

    def decode(self, w):
        return torch.tanh(w.flatten(1) @ self.proj).view(-1, 1, 4, 4)


def test_clip_loss_reaches_the_cpm_through_the_soft_codes():
    cpm = psm.with_prompt_token(base_cpm(), E).train()
    embed_proj = torch.randn(16, E)
    embed_images = lambda x: F.normalize(x.flatten(1) @ embed_proj, dim=-1)
    cfg = psm.PSMTrainConfig(clip_batch=3)
    loss_fn = psm.clip_loss(FakeDecoder(), list(range(S)), embed_images, torch.rand(10, 1, 4, 4) * 2 - 1, cfg)
    batch = {"cond": torch.randn(5, L, D), "prompt": F.normalize(torch.randn(5, E), dim=-1),
             "prompt_on": torch.tensor([True, False, True, True, True]), "shot": torch.tensor([0, 3, 5, 7, 9])}
    loss, logs = loss_fn(cpm, batch)
    loss.backward()
    assert 0 <= logs["clip_text"] <= 2 and 0 <= logs["clip_image"] <= 2
    assert cpm.head[1].weight.grad.abs().sum() > 0  # the logits' head learns from the CLIP loss
    assert cpm.prompt_in.weight.grad.abs().sum() > 0  # and so does the prompt token


def test_prompt_bank_embeds_each_font_once_and_drops_prompts_at_the_given_rate():
    styles = [{"name": f"font{i}"} for i in range(5)]
    seen_texts = []

    def embed_text(texts):
        seen_texts.extend(texts)
        return torch.stack([torch.full((E,), float(t.split("font")[1][0])) for t in texts])

    caption = lambda style, rng: f"{style['name']} #{rng.integers(100)}"
    cfg = psm.PSMTrainConfig(captions_per_style=3, prompt_dropout=0.25)
    bank = psm.prompt_bank(embed_text, styles, torch.tensor([4, 1, 1, 4, 2]), caption, cfg)
    assert bank.embeddings.shape == (3, 3, E) and len(seen_texts) == 9  # fonts 1, 2, 4, three captions each
    emb, on = bank(torch.tensor([0, 1, 4] * 2000), torch.Generator().manual_seed(0))
    assert emb[0::3, 0].eq(4).all() and emb[1::3, 0].eq(1).all() and emb[2::3, 0].eq(2).all()
    assert abs((~on).float().mean().item() - 0.25) < 0.02


def test_train_psm_refuses_a_cpm_without_prompt_token_or_mismatched_embeddings():
    cpm = base_cpm()
    data = CPMData(torch.randn(4, L, D), torch.tensor([0, 0, 1, 1]), torch.zeros(4, S, dtype=torch.long), torch.zeros(4, S, D))
    bank = psm.PromptBank(torch.randn(2, 1, E), torch.tensor([0, 1, 0, 1]), 0.0)
    with pytest.raises(ValueError, match="no prompt token"):
        psm.train_psm(cpm, data, bank, CPMTrainConfig(steps=1), psm.PSMTrainConfig())
    with pytest.raises(ValueError, match="expects 5"):
        psm.train_psm(psm.with_prompt_token(cpm, 5), data, bank, CPMTrainConfig(steps=1), psm.PSMTrainConfig())


def test_prompt_fine_tuning_makes_the_prompt_choose_the_code():
    """Two fonts with different codes and prompts, one category: after PSM training the prompt picks the code."""
    cpm = psm.with_prompt_token(base_cpm(), E)
    labels = torch.zeros(40, dtype=torch.long)
    font = torch.arange(40) % 2
    targets = torch.stack([torch.full((S,), 2), torch.full((S,), 13)])[font]
    data = CPMData(torch.randn(40, L, D) * 0.1, labels, targets, cpm.codebook[targets])
    prompt_vectors = torch.eye(E)[:2]
    bank = psm.PromptBank(prompt_vectors[:, None], font, dropout=0.0)
    psm.train_psm(cpm, data, bank, CPMTrainConfig(steps=150, batch_size=32, lr=3e-3, warmup=10),
                  psm.PSMTrainConfig(clip_batch=0), progress=False)
    from tagelib.cpm import sample
    cond = data.w[:2]
    for f, code in ((0, 2), (1, 13)):
        codes = sample(cpm, cond, temperature=0.0, prompt=prompt_vectors[f].expand(2, -1))
        assert (codes == code).all()


def test_the_runner_knows_the_probe_attributes_and_the_clip_prompts():
    from tagelib.attribute_probe import ATTRIBUTES
    from tagelib.clip_glyph import ATTRIBUTE_PROMPTS
    from tagelib.params import PROMPT_WORDS

    assert PROMPT_WORDS == ATTRIBUTES == tuple(ATTRIBUTE_PROMPTS)


def test_classifier_free_guidance_interpolates_between_null_and_prompt():
    from tagelib.cpm import sample

    cpm = psm.with_prompt_token(base_cpm(), E)
    torch.nn.init.normal_(cpm.prompt_in.weight, std=2.0)  # a prompt that matters
    cond, prompt = torch.randn(64, L, D), torch.randn(64, E)
    run = lambda **kw: sample(cpm, cond, temperature=0.0, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(run(prompt=prompt, guidance=1.0), run(prompt=prompt))
    assert torch.equal(run(prompt=prompt, guidance=0.0), run())  # g = 0: the null prompt
    assert not torch.equal(run(prompt=prompt, guidance=4.0), run(prompt=prompt))
