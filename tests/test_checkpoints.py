"""Tests for tagelib.checkpoints: foreign imports (rosinality, pSp, AGE) and our safetensors format."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import pytest
import torch

from safetensors import safe_open
from safetensors.torch import save_file

from tagelib import atomic
from tagelib.checkpoint_io import content_hash
from tagelib.checkpoints import (
    CheckpointMismatchError,
    import_foreign_checkpoint,
    load_module,
    load_state_into,
    read_checkpoint_config,
    save_module,
)
from tagelib.psp import EncoderConfig, GradualStyleEncoder, PSPEncoder
from tagelib.stylegan2 import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

G_CFG = GeneratorConfig(size=16, style_dim=16, n_mlp=2, max_channels=16)
D_CFG = DiscriminatorConfig(size=16, max_channels=16)
E_CFG = EncoderConfig(input_size=32, in_channels=3, n_styles=6, style_dim=16, units=(1, 1, 1, 1), widths=(16, 16, 16, 16))


def random_like_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict with the module's keys and shapes, filled with random values (ints kept)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
            for k, v in module.state_dict().items()}


def assert_state_equal(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = module.state_dict()
    assert own.keys() == state.keys()
    for k in own:
        assert torch.equal(own[k], state[k]), k


# ----------------------------------------------------------------------------- rosinality


def test_rosinality_1024_round_trip(tmp_path):
    """The one full-size test: a synthetic official-format g_ema of the 1024 px model."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Generator(GeneratorConfig(size=1024)).state_dict().items()}
    g_ema = {k: torch.randn(s) for k, s in shapes.items()}  # names/shapes checked in test_stylegan2
    latent_avg = torch.randn(512)
    torch.save({"g_ema": g_ema, "latent_avg": latent_avg}, tmp_path / "stylegan2-ffhq-config-f.pt")

    g = Generator(GeneratorConfig(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2))
    got = import_foreign_checkpoint(tmp_path / "stylegan2-ffhq-config-f.pt", generator=g)
    assert got.kind == "rosinality" and got.loaded == ("generator",)
    assert torch.equal(got.latent_avg, latent_avg)
    assert_state_equal(g, g_ema)


def test_rosinality_training_checkpoint_with_args_and_discriminator(tmp_path):
    g_src, d_src = Generator(G_CFG), Discriminator(D_CFG)
    g_ema, g_state, d_state = random_like_state(g_src, 0), random_like_state(g_src, 1), random_like_state(d_src, 2)
    torch.save({"g": g_state, "d": d_state, "g_ema": g_ema, "g_optim": {"state": {}, "param_groups": []},
                "args": argparse.Namespace(size=16, batch=4), "ada_aug_p": 0.0}, tmp_path / "000100.pt")
    g, d = Generator(G_CFG), Discriminator(D_CFG)
    got = import_foreign_checkpoint(tmp_path / "000100.pt", generator=g, discriminator=d)
    assert got.loaded == ("generator", "discriminator") and got.latent_avg is None
    assert_state_equal(g, g_ema)  # g_ema is the default
    assert_state_equal(d, d_state)
    g2 = Generator(G_CFG)
    import_foreign_checkpoint(tmp_path / "000100.pt", generator=g2, generator_key="g")
    assert_state_equal(g2, g_state)


# ----------------------------------------------------------------------------- pSp and AGE


def _psp_dict(seed: int = 0, prefix: str = "") -> tuple[dict, dict, dict]:
    enc = random_like_state(GradualStyleEncoder(E_CFG), seed)
    dec = random_like_state(Generator(G_CFG), seed + 1)
    state = {f"{prefix}encoder.{k}": v for k, v in enc.items()} | {f"{prefix}decoder.{k}": v for k, v in dec.items()}
    return state, enc, dec


def test_psp_round_trip(tmp_path):
    state, enc, dec = _psp_dict()
    latent_avg = torch.randn(6, 16)  # pSp stores it repeated over the styles
    opts = {"encoder_type": "GradualStyleEncoder", "output_size": 16, "start_from_latent_avg": True}
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg}, tmp_path / "psp.pt")
    g, e = Generator(G_CFG), PSPEncoder(E_CFG)
    got = import_foreign_checkpoint(tmp_path / "psp.pt", generator=g, encoder=e)
    assert got.kind == "psp" and got.opts == opts and got.ax is None
    assert_state_equal(g, dec)
    assert_state_equal(e.encoder, enc)
    assert torch.equal(e.latent_avg, latent_avg)
    # a bare GradualStyleEncoder works too; the average code is returned
    e2 = GradualStyleEncoder(E_CFG)
    assert torch.equal(import_foreign_checkpoint(tmp_path / "psp.pt", encoder=e2).latent_avg, latent_avg)
    assert_state_equal(e2, enc)


def test_age_round_trip_with_ddp_prefix(tmp_path):
    state, enc, dec = _psp_dict(seed=3, prefix="module.")
    # AGE's Ax: A (6, 512, A_length) and two MLPs (models/age.py); kept small here
    ax = {"A": torch.randn(6, 16, 10), "encoder0.fc1.weight": torch.randn(32, 48), "encoder1.fc5.bias": torch.randn(10)}
    state |= {f"module.ax.{k}": v for k, v in ax.items()}
    latent_avg = torch.randn(16)
    torch.save({"state_dict": state, "opts": {"A_length": 10}, "latent_avg": latent_avg}, tmp_path / "age.pt")
    g, e = Generator(G_CFG), PSPEncoder(E_CFG)
    got = import_foreign_checkpoint(tmp_path / "age.pt", generator=g, encoder=e, kind="age")
    assert got.kind == "age" and set(got.ax) == set(ax)
    assert all(torch.equal(got.ax[k], ax[k]) for k in ax)
    assert_state_equal(g, dec)
    assert_state_equal(e.encoder, enc)
    assert torch.equal(e.latent_avg, latent_avg.expand(6, 16))  # (D,) broadcast over layers


def test_wrong_kind_and_unknown_format_raise(tmp_path):
    state, _, _ = _psp_dict()
    with pytest.raises(ValueError, match="looks like 'psp'"):
        import_foreign_checkpoint({"state_dict": state}, kind="rosinality")
    with pytest.raises(ValueError, match="unrecognised checkpoint"):
        import_foreign_checkpoint({"model": {}})
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        import_foreign_checkpoint(tmp_path / "nowhere.pt")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    g = Generator(G_CFG)
    g_ema = random_like_state(g, 0)
    del g_ema["conv1.noise.weight"]
    g_ema["to_rgb1.extra_weight"] = torch.zeros(3)
    g_ema["style.1.weight"] = torch.zeros(7, 7)
    torch.save({"g_ema": g_ema}, tmp_path / "bad.pt")
    before = {k: v.clone() for k, v in g.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        import_foreign_checkpoint(tmp_path / "bad.pt", generator=Generator(G_CFG))
    msg = str(err.value)
    assert "1 missing key(s): conv1.noise.weight" in msg
    assert "1 unexpected key(s): to_rgb1.extra_weight" in msg
    assert "style.1.weight: checkpoint (7, 7) vs model (16, 16)" in msg
    assert all(torch.equal(v, before[k]) for k, v in g.state_dict().items())  # nothing half-loaded


def test_mismatch_in_one_module_loads_none(tmp_path):
    state, _, _ = _psp_dict()
    state["encoder.styles.0.linear.weight"] = torch.zeros(3, 3)
    g, e = Generator(G_CFG), GradualStyleEncoder(E_CFG)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="encoder"):
        import_foreign_checkpoint({"state_dict": state}, generator=g, encoder=e)
    assert all(torch.equal(v, before[k]) for k, v in g.state_dict().items())


def test_long_key_lists_are_truncated_with_counts():
    e = GradualStyleEncoder(E_CFG)
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\): .*\(\+\d+ more\)") as err:
        import_foreign_checkpoint({"state_dict": {"encoder.nothing": torch.zeros(1)}}, encoder=e)
    assert f"{len(e.state_dict())} missing key(s)" in str(err.value)


# ----------------------------------------------------------------------------- our format


def test_save_load_single_module_exact(tmp_path):
    torch.manual_seed(0)
    g = Generator(G_CFG)
    path = save_module(tmp_path / "run" / "generator", g, G_CFG)
    assert path.name == "generator.safetensors" and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    state, cfg = load_module(tmp_path / "run" / "generator")
    assert GeneratorConfig.from_dict(cfg) == G_CFG
    g2 = Generator(GeneratorConfig.from_dict(cfg))
    g2.load_state_dict(state, strict=True)
    assert_state_equal(g2, g.state_dict())
    assert read_checkpoint_config(path) == json.loads(json.dumps(asdict(G_CFG)))  # header only


def test_config_and_hash_live_in_the_safetensors_header(tmp_path):
    path = save_module(tmp_path / "m", {"w": torch.arange(6.0)}, {"v": 1})
    meta = safe_open(str(path), "pt").metadata()
    assert meta["format"] == "tagelib-checkpoint-v2" and json.loads(meta["config"]) == {"v": 1}
    assert meta["sha256"] == content_hash({"w": torch.arange(6.0)}, meta["config"], meta["groups"])


def test_save_load_several_modules(tmp_path):
    torch.manual_seed(0)
    g, e = Generator(G_CFG), PSPEncoder(E_CFG)
    e.set_latent_avg(torch.randn(16))
    cfg = {"generator": asdict(G_CFG), "encoder": asdict(E_CFG), "seed": 0}
    save_module(tmp_path / "latent_space", {"generator": g, "encoder": e.state_dict()}, cfg)
    states, cfg2 = load_module(tmp_path / "latent_space.safetensors")  # suffix is ignored
    assert set(states) == {"generator", "encoder"}
    assert_state_equal(g, states["generator"])
    assert_state_equal(e, states["encoder"])
    assert EncoderConfig.from_dict(cfg2["encoder"]) == E_CFG


def test_load_state_into_names_the_file_on_mismatch(tmp_path):
    save_module(tmp_path / "enc", GradualStyleEncoder(E_CFG), {})
    g = Generator(G_CFG)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"enc\.safetensors: checkpoint does not fit") as err:
        load_state_into(g, tmp_path / "enc")
    assert len(str(err.value).splitlines()) <= 6
    assert all(torch.equal(v, before[k]) for k, v in g.state_dict().items())


def test_legacy_two_file_format_still_loads(tmp_path):
    """Checkpoints written before v2 (tensors + <stem>.json) load; saving over them removes the old JSON."""
    tensors = {"w": torch.randn(3, 2)}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"format": "tagelib-checkpoint-v1"})
    (tmp_path / "old.json").write_text(json.dumps({"format": "tagelib-checkpoint-v1", "groups": None, "config": {"v": 1}}))
    state, cfg = load_module(tmp_path / "old")
    assert torch.equal(state["w"], tensors["w"]) and cfg == {"v": 1}
    assert read_checkpoint_config(tmp_path / "old") == {"v": 1}
    save_module(tmp_path / "old", {"w": torch.zeros(1)}, {"v": 2})
    assert not (tmp_path / "old.json").exists()
    assert load_module(tmp_path / "old")[1] == {"v": 2}


def test_missing_file_names_file_and_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"latent_space\.safetensors -- run notebooks/01_latent_space\.ipynb first"):
        load_module(tmp_path / "latent_space", hint="run notebooks/01_latent_space.ipynb first")


def test_write_is_atomic(tmp_path, monkeypatch):
    save_module(tmp_path / "m", {"w": torch.ones(3)}, {"v": 1})
    old_bytes = (tmp_path / "m.safetensors").read_bytes()

    def broken_write(path, data):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(atomic.Path, "write_bytes", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_module(tmp_path / "m", {"w": torch.zeros(3)}, {"v": 2})
    with pytest.raises(OSError):
        save_module(tmp_path / "new", {"w": torch.zeros(3)}, {"v": 2})
    monkeypatch.undo()
    assert (tmp_path / "m.safetensors").read_bytes() == old_bytes  # old checkpoint untouched
    assert load_module(tmp_path / "m")[1] == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp files, no "new"


def test_unserialisable_config_fails_before_writing(tmp_path):
    with pytest.raises(TypeError):
        save_module(tmp_path / "m", {"w": torch.ones(1)}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []
