"""The shipped latent space (data/latent/glyph32) loads, fits its size budget and still inverts unseen glyphs."""

import numpy as np
import pytest
import torch
import yaml

from tagelib import latent_eval
from tagelib.glyphs.dataset import GlyphDataset
from tagelib.latent import LatentSpace
from tagelib.paths import DATA_DIR, PROFILES_DIR
from tagelib.perceptual import load_lpips

CHECKPOINT = DATA_DIR / "latent" / "glyph32"


@pytest.fixture(scope="module")
def model():
    return LatentSpace.load(CHECKPOINT)


def test_checkpoint_fits_the_budget():
    assert CHECKPOINT.with_suffix(".safetensors").stat().st_size <= 25 * 10**6


def test_recorded_training_matches_the_pretrain_profile(model):
    """Its recorded steps, batch size and seed are the pretrain profile's, and it trained within the hour."""
    profile = yaml.safe_load((PROFILES_DIR / "pretrain.yaml").read_text())
    params = {**profile["defaults"], **profile["notebooks"]["01_latent_space"]}
    info = model.training_info
    assert (info["train"]["steps"], info["train"]["batch_size"], info["train"]["seed"]) == (
        params["train_steps"], params["batch_size"], params["seed"])
    assert len(info["history"]["loss"]) == params["train_steps"]
    assert info["train_seconds"] <= 60 * 60


def test_reconstructs_unseen_categories(model):
    """64 unseen-category glyphs: E→G must beat the random-other-font level (LPIPS-alex ≈ 0.07) by far."""
    torch.manual_seed(0)
    unseen = GlyphDataset.load().split("unseen_eval")
    pick = torch.from_numpy(np.random.default_rng(0).choice(len(unseen), size=64, replace=False))
    rec = latent_eval.reconstruction(model, unseen.images[pick], load_lpips("alex"))
    assert rec["lpips"] < 0.035 and rec["psnr"] > 19.5, rec
