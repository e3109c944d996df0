"""The glyph CLIP (open_clip local-dir round trip, differentiable image path, captions) and the attribute probe."""

import numpy as np
import pytest
import torch

from tagelib import attribute_probe as AP
from tagelib import clip_glyph as C

TINY = C.GlyphClipConfig(embed_dim=8, patch_size=8, vision_width=16, vision_layers=1, vision_head_width=16,
                         text_width=8, text_layers=1, text_heads=2, context_length=12)


def style(**kw):
    base = {"weight": 400, "italic": False, "slant_deg": 0.0, "width": 0.75, "width_class": "normal", "monospace": False,
            "stroke": 0.1, "classification": "sans-serif"}
    return base | kw


def test_local_dir_round_trip_gives_identical_embeddings(tmp_path):
    model, tokenizer = C.create_clip(TINY, seed=1)
    model.eval().requires_grad_(False)  # as loaded: frozen params take torch's fused attention path (1e-7 apart)
    x, texts = torch.rand(3, 1, 32, 32) * 2 - 1, ["a bold glyph", "an extended serif glyph"]
    with torch.no_grad():
        img, txt = C.encode_images(model, x), C.encode_text(model, tokenizer, texts)
    folder = C.save_clip(tmp_path / "clip", model, TINY, {"steps": 0})
    assert sorted(p.name for p in folder.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors",
                                                        "tage_manifest.json"]
    loaded, tok2 = C.load_clip(folder)  # through open_clip's local-dir loader only
    with torch.no_grad():
        assert torch.equal(C.encode_images(loaded, x), img)
        assert torch.equal(C.encode_text(loaded, tok2, texts), txt)
    assert tok2(texts).shape == (2, TINY.context_length) and loaded.training_info == {"steps": 0}
    assert torch.allclose(img.norm(dim=1), torch.ones(3)) and not any(p.requires_grad for p in loaded.parameters())


def test_overwrite_is_refused_unless_asked(tmp_path):
    model, _ = C.create_clip(TINY)
    folder = C.save_clip(tmp_path / "clip", model, TINY)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        C.save_clip(folder, model, TINY)
    C.save_clip(folder, model, TINY, {"again": True}, overwrite=True)
    assert C.load_clip(folder)[0].training_info == {"again": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # no temporary or old folder left


def test_missing_folder_names_what_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="00_clip.*make clip"):
        C.load_clip(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="00_clip.*make clip"):
        AP.load_probe(tmp_path / "none")


def test_encode_images_is_differentiable_wrt_the_images():
    model, tokenizer = C.create_clip(TINY)
    model.requires_grad_(False)
    x = torch.zeros(2, 1, 32, 32, requires_grad=True)
    with torch.no_grad():
        txt = C.encode_text(model, tokenizer, ["a bold glyph"])
    (C.encode_images(model, x) @ txt.T).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_captions_name_only_true_attributes():
    rng = np.random.default_rng(0)
    bold_wide = style(weight=800, italic=True, width_class="extended", classification="serif")
    assert C.full_caption(bold_wide) == "an extra-bold italic extended serif glyph"
    allowed = {"a", "an", "glyph", "letter", "character", "in", "font", "extra-bold", "extrabold", "heavy", "bold", "italic",
               "oblique", "slanted", "extended", "wide", "expanded", "serif"}
    plain = style()
    for _ in range(200):
        assert set(C.random_caption(bold_wide, rng).split()) <= allowed
        words = set(C.random_caption(plain, rng).split())
        assert words <= {"a", "glyph", "letter", "character", "in", "font", "regular", "normal", "sans-serif", "sans", "serif"}
        assert "serif" not in words or "sans" in words  # 'sans serif' only, never 'serif' alone
    texts = {C.random_caption(bold_wide, rng) for _ in range(2000)}
    assert {"a wide glyph", "a bold glyph"} <= texts  # short prompts are in distribution
    assert list(C.ATTRIBUTE_PROMPTS) == list(AP.ATTRIBUTES)


def test_retrieval_scores_and_chance():
    e = torch.eye(3)
    r = C.retrieval(e[[0, 1, 2, 2]], e, torch.tensor([0, 1, 2, 2]), k=2)
    assert r["image_to_caption_top1"] == 1 and r["caption_to_image_top1"] == 1
    assert r["image_to_caption_chance_top1"] == pytest.approx(1 / 3)
    assert r["caption_to_image_chance_top1"] == pytest.approx((0.25 + 0.25 + 0.5) / 3)
    # P(one of 2 draws without replacement hits): caption 0 or 1: 1 - (3/4)(2/3) = 1/2; caption 2: 1 - (2/4)(1/3) = 5/6
    assert r["caption_to_image_chance_top2"] == pytest.approx((0.5 + 0.5 + 5 / 6) / 3)
    wrong = C.retrieval(e[[1, 2, 0]], e, torch.tensor([0, 1, 2]), k=1)
    assert wrong["image_to_caption_top1"] == 0 and wrong["caption_to_image_top1"] == 0


def test_attribute_labels_on_hand_made_styles():
    styles = [style(stroke=0.15, slant_deg=-11.0, classification="serif", width=0.5),
              style(stroke=0.07, monospace=True, classification="monospace", width=0.95),
              style()]
    labels = AP.attribute_labels(styles)
    expected = [[1, 0, 1, 1, 0, 0, 1, 0], [0, 1, 0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 1, 0, 0, 0]]
    assert labels.dtype == bool and labels.tolist() == np.array(expected, dtype=bool).tolist()


def test_probe_shapes_training_and_round_trip(tmp_path):
    probe = AP.AttributeProbe(AP.ProbeConfig(widths=(4, 8, 8)))
    assert probe.predict(torch.zeros(5, 1, 32, 32)).shape == (5, len(AP.ATTRIBUTES))
    ink = (np.random.default_rng(0).random((16, 32, 32)) * 255).astype(np.uint8)
    labels = np.random.default_rng(1).random((16, len(AP.ATTRIBUTES))) > 0.5
    hist = AP.train_probe(probe, ink, labels, AP.ProbeTrainConfig(steps=2, batch_size=8), progress=False)
    assert len(hist["loss"]) == 2
    AP.save_probe(tmp_path / "probe", probe, {"note": 1})
    loaded = AP.load_probe(tmp_path / "probe")
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    assert torch.equal(loaded.predict(x), probe.predict(x)) and loaded.training_info == {"note": 1}
    acc = AP.probe_accuracy(torch.tensor([[0.9] * 8, [0.1] * 8]), np.array([[True] * 8, [True] * 8]))
    assert acc["bold"] == {"accuracy": 0.5, "balanced_accuracy": None, "positives": 2, "images": 2}  # no negatives
    acc = AP.probe_accuracy(torch.tensor([[0.9] * 8, [0.9] * 8, [0.1] * 8]), np.array([[True] * 8, [False] * 8, [False] * 8]))
    assert acc["wide"]["accuracy"] == pytest.approx(2 / 3) and acc["wide"]["balanced_accuracy"] == pytest.approx(0.75)


def test_train_clip_runs_and_records_history():
    model, tokenizer = C.create_clip(TINY)
    ink = (np.random.default_rng(0).random((4, 3, 32, 32)) * 255).astype(np.uint8)
    cov = np.ones((4, 3), dtype=bool)
    hist = C.train_clip(model, tokenizer, ink, cov, [style(), style(weight=700), style(italic=True), style(width_class="condensed")],
                        C.ClipTrainConfig(steps=2, batch_size=4), progress=False)
    assert len(hist["loss"]) == 2 and all(np.isfinite(hist["loss"])) and 0 < hist["logit_scale"][-1] <= 100
