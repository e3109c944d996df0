"""PSM prompts for photographs and glyphs: CLIP by name or folder, image preprocessing, the language-free prompt bank,
the zero-shot scorer, and the refusals."""

import pytest
import torch
import torch.nn.functional as F

from tagelib import clip_glyph, psm
from tagelib.paper_synthetic import REHEARSAL_CLIP
from tagelib.params import ParameterError, check_relations
from tagelib.prompts import (embed_images, embed_texts, encode_images, image_kit, is_open_clip_name, load_clip_model,
                             prompt_kit)


@pytest.fixture(scope="module")
def rehearsal_clip():
    torch.manual_seed(0)
    return load_clip_model(REHEARSAL_CLIP)


def test_clip_by_name_resizes_and_normalises_like_clip(rehearsal_clip):
    model, _ = rehearsal_clip
    assert "RANDOM" in model.source and not any(p.requires_grad for p in model.parameters())
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    mean = torch.tensor(model.visual.image_mean)[:, None, None]
    std = torch.tensor(model.visual.image_std)[:, None, None]
    manual = F.interpolate((x + 1) / 2, size=(32, 32), mode="bilinear", align_corners=False)
    expected = model.encode_image((manual - mean) / std, normalize=True)
    torch.testing.assert_close(encode_images(model, x), expected)
    grey = x[:, :1]  # one channel is read as the same image in RGB
    torch.testing.assert_close(encode_images(model, grey), encode_images(model, grey.expand(-1, 3, -1, -1)))


def test_glyph_clip_folder_reads_images_as_they_are():
    model, tokenizer = load_clip_model("data/clip/glyph32_clip")
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    assert torch.equal(encode_images(model, x), clip_glyph.encode_images(model, x))
    assert "local-dir" in model.source and embed_texts(model, tokenizer, ["a bold glyph"]).shape == (1, 64)
    assert not is_open_clip_name("data/clip/glyph32_clip") and is_open_clip_name("ViT-B-32")


def test_unknown_clip_and_missing_weights_file_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="00_clip"):
        load_clip_model(str(tmp_path / "no_such_clip"))
    with pytest.raises(FileNotFoundError, match="weights file"):
        load_clip_model("ViT-B-32", str(tmp_path / "open_clip_model.safetensors"))


def test_prompt_bank_noise_keeps_unit_norm_and_stays_near_the_embedding():
    emb = F.normalize(torch.randn(50, 1, 32), dim=-1)
    i = torch.arange(50)
    clean, _ = psm.PromptBank(emb, i, dropout=0.0)(i, torch.Generator().manual_seed(0))
    assert torch.equal(clean, emb[:, 0])
    noisy, on = psm.PromptBank(emb, i, dropout=0.0, noise=0.3)(i, torch.Generator().manual_seed(0))
    cos = (noisy * emb[:, 0]).sum(-1)
    torch.testing.assert_close(noisy.norm(dim=-1), torch.ones(50))
    assert on.all() and 0.85 < cos.mean() < 0.99 and (cos < 1 - 1e-4).all()
    with pytest.raises(ValueError, match="noise"):
        psm.PromptBank(emb, i, 0.0, noise=-1)


class _Photos:
    channels, subject = 3, "animal face"


def test_image_kit_prompts_with_the_images_own_embeddings_and_scores_zero_shot(rehearsal_clip):
    model, tokenizer = rehearsal_clip
    images = torch.rand(6, 3, 64, 64) * 2 - 1
    cfg = psm.PSMTrainConfig(prompt_dropout=0.0)
    kit = prompt_kit(_Photos(), ["black", "white"], model, tokenizer, "", torch.zeros(6), images, cfg, noise=0.0)
    assert kit.texts == ["a photo of a black animal face", "a photo of a white animal face"]
    torch.testing.assert_close(kit.bank.embeddings[:, 0], embed_images(model, images))
    text = embed_texts(model, tokenizer, kit.texts + ["a photo of a animal face"])
    sims = embed_images(model, images) @ text.T
    assert torch.equal(kit.score(images), sims[:, :2] > sims[:, 2:])
    assert "zero-shot" in kit.scorer


def test_glyph_prompts_need_the_probe_and_known_words():
    with pytest.raises(ParameterError, match="attribute probe"):
        check_relations("05_prompt_semantics", {"dataset": "glyphs", "prompts": "bold,fluffy", "attribute_probe": "p"})
    with pytest.raises(ParameterError, match="attribute_probe"):
        check_relations("05_prompt_semantics", {"dataset": "glyphs", "prompts": "bold", "attribute_probe": ""})
    check_relations("05_prompt_semantics", {"dataset": "animal", "prompts": "fluffy,striped", "attribute_probe": ""})


def test_image_kit_is_what_prompt_kit_picks_for_photographs(rehearsal_clip):
    model, tokenizer = rehearsal_clip
    kit = image_kit(_Photos(), ["red"], model, lambda t: embed_texts(model, tokenizer, t),
                    torch.rand(2, 3, 32, 32) * 2 - 1, psm.PSMTrainConfig(), noise=0.1)
    assert kit.bank.noise == 0.1 and kit.bank.embeddings.shape == (2, 1, 32)
