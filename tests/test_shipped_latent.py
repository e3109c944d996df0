"""The shipped latent space (data/latent/glyph32) loads, fits its size budget and still inverts unseen glyphs."""

import numpy as np
import pytest
import torch
import yaml

from tagelib import latent_eval
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.latent import LatentSpace
from tagelib.paths import DATA_DIR, NOTEBOOKS_DIR, PROFILES_DIR
from tagelib.perceptual import load_lpips

CHECKPOINT = DATA_DIR / "latent" / "glyph32"
RECOGNISED_AT_LEAST = 0.40  # measured 2026-11-30: 49.6 % (held-out families, 32 per category); the target is 85 %


@pytest.fixture(scope="module")
def model():
    return LatentSpace.load(CHECKPOINT)


def test_checkpoint_fits_the_budget():
    assert CHECKPOINT.with_suffix(".safetensors").stat().st_size <= 25 * 10**6


def test_recorded_training_matches_the_pretrain_profile(model):
    """Its recorded steps, batch size and seed are the pretrain profile's, and it trained within the hour."""
    from tagelib.run import declared_parameters

    profile = yaml.safe_load((PROFILES_DIR / "pretrain.yaml").read_text())
    defaults = {k: v["default"] for k, v in declared_parameters(NOTEBOOKS_DIR / "01_latent_space.ipynb").items()}
    params = {**{k: yaml.safe_load(v) if isinstance(v, str) and k != "gen_widths" else v for k, v in defaults.items()},
              **profile["defaults"], **profile["notebooks"]["01_latent_space"]}
    info = model.training_info
    assert (info["train"]["steps"], info["train"]["batch_size"], info["train"]["seed"]) == (
        params["train_steps"], params["batch_size"], params["seed"])
    assert len(info["history"]["loss"]) == params["train_steps"]
    assert info["train_seconds"] <= 60 * 60
    recorded = {k: info["train"].get(k, 0.0) for k in ("augment", "pseudo_fraction")}  # absent: trained before they existed
    assert recorded == {k: float(params[k]) for k in recorded}
    assert ",".join(map(str, model.cfg.generator.widths)) == params["gen_widths"].strip("'\"")


def test_the_judge_recognises_its_reconstructions_of_unseen_characters(model):
    """E→G of unseen characters in held-out-family fonts: how often the judge still reads the intended character.
    A regression guard at the measured level (about 50 %), far below the 85 % the project aims at."""
    from tagelib.evaluation import Ruler
    from tagelib.judge import load_judge

    ds = GlyphDataset.load()
    judge = load_judge(DATA_DIR / "judge" / "glyph32_judge", categories=ds.categories)
    ruler = Ruler.build(judge, lpips_vgg=None, ds=ds, collapse_floor=0.0, extractors=("judge",))
    heldout = ds.split("heldout_unseen")
    pick = torch.from_numpy(np.random.default_rng(0).choice(len(heldout), size=256, replace=False))
    recon = model.decode_batched(model.encode_batched(heldout.images[pick]))
    rate = ruler.recognised(recon, heldout.category[pick]).float().mean().item()
    assert rate >= RECOGNISED_AT_LEAST, rate


def test_reconstructs_unseen_categories(model):
    """64 unseen-category glyphs: E→G must beat the random-other-font level (LPIPS-alex ≈ 0.07) by far."""
    torch.manual_seed(0)
    unseen = GlyphDataset.load().split("unseen_eval")
    pick = torch.from_numpy(np.random.default_rng(0).choice(len(unseen), size=64, replace=False))
    rec = latent_eval.reconstruction(model, unseen.images[pick], load_lpips("alex"))
    assert rec["lpips"] < 0.035 and rec["psnr"] > 19.5, rec
