"""Fault injection: corrupted, truncated and half-written checkpoints, bad runner input, shipped data untouched.

Every corrupted load either raises a clear error naming the file or returns exactly what was saved; a write
killed at any step leaves the previous checkpoint loadable; every bad runner input stops the batch before a
kernel starts, with a message that names the problem.
"""

import hashlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tagelib import atomic, run
from tagelib.checkpoint_io import CheckpointCorruptError, CheckpointError, CheckpointMismatchError, load_module, save_module
from tagelib.checkpoints import import_foreign_checkpoint
from tagelib.latent import LatentSpace
from tagelib.paths import DATA_DIR, REPO_ROOT
from tagelib.psp import EncoderConfig, PSPEncoder
from tagelib.stylegan2 import Generator, GeneratorConfig
from tagelib.write_guard import make_run_folder

SHIPPED_LATENT = DATA_DIR / "latent" / "glyph32.safetensors"


def small_checkpoint(path):
    """A grouped checkpoint with a nested config: two modules, a few hundred bytes of tensors."""
    torch.manual_seed(0)
    modules = {"a": torch.nn.Linear(4, 3), "b": torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))}
    config = {"sizes": [4, 3], "train": {"steps": 10, "lr": 0.01}, "note": "fault injection"}
    save_module(path, modules, config)
    return {g: {k: v.clone() for k, v in m.state_dict().items()} for g, m in modules.items()}, config


def assert_same(loaded, expected):
    states, config = loaded
    assert config == expected[1]
    assert states.keys() == expected[0].keys()
    for g in states:
        assert states[g].keys() == expected[0][g].keys()
        for k in states[g]:
            assert states[g][k].dtype == expected[0][g][k].dtype and torch.equal(states[g][k], expected[0][g][k])


def load_or_clear_error(path, expected):
    """Load `path`: a clear error naming the file, or exactly the saved content. Returns 'error' / 'same'."""
    try:
        loaded = load_module(path)
    except CheckpointError as e:
        assert str(path) in str(e) and len(str(e)) < 600, str(e)
        return "error"
    assert_same(loaded, expected)
    return "same"


@pytest.mark.parametrize("mask", ["random", 0x01, 0x03, 0x80])  # 0x03 turns "v2" into "v1" in the format field
def test_every_single_byte_corruption_is_caught_or_harmless(tmp_path, mask):
    path = tmp_path / "m.safetensors"
    expected = small_checkpoint(path)
    clean = path.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = []
    for offset in range(len(clean)):  # every byte: header length, JSON header, config, hash, tensor data
        bad = bytearray(clean)
        bad[offset] ^= int(rng.integers(1, 256)) if mask == "random" else mask
        path.write_bytes(bytes(bad))
        outcomes.append(load_or_clear_error(path, expected))
    assert outcomes.count("error") > 0.95 * len(clean)  # only JSON whitespace changes may load (identically)


def test_random_4kb_blocks_in_the_shipped_latent_space_are_caught(tmp_path):
    """The issue's probe: 4 KB of the shipped file's tensor data overwritten -> an error, never wrong weights."""
    copy = tmp_path / "glyph32.safetensors"
    shutil.copyfile(SHIPPED_LATENT, copy)
    clean = copy.read_bytes()
    header_end = 8 + int.from_bytes(clean[:8], "little")
    rng = np.random.default_rng(1)
    for offset in rng.integers(header_end, len(clean) - 4096, size=3):
        bad = bytearray(clean)
        bad[offset:offset + 4096] = rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes()
        copy.write_bytes(bytes(bad))
        with pytest.raises(CheckpointCorruptError, match="does not match its stored hash"):
            LatentSpace.load(copy)


def test_every_truncation_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    small_checkpoint(path)
    clean = path.read_bytes()
    for length in list(range(0, 64)) + list(range(64, len(clean), 7)):
        path.write_bytes(clean[:length])
        with pytest.raises(CheckpointCorruptError, match="m.safetensors"):
            load_module(path)


def _killed_writer(stem, step):
    """A child process that starts overwriting `stem` and is SIGKILLed at `step` of the write."""
    return textwrap.dedent(f"""
        import os, signal, pathlib, torch
        from tagelib import atomic
        from tagelib.checkpoint_io import save_module
        die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        if {step!r} == "mid-write":
            def half(self, data):
                with open(self, "wb") as f:
                    f.write(data[: len(data) // 2]); f.flush()
                die()
            pathlib.Path.write_bytes = half
        elif {step!r} == "before-fsync":
            atomic._fsync = die
        else:
            atomic.os.replace = die
        save_module({str(stem)!r}, {{"w": torch.full((1000,), 2.0)}}, {{"version": 2}})
    """)


@pytest.mark.parametrize("step", ["mid-write", "before-fsync", "before-rename"])
def test_a_write_killed_at_any_step_leaves_the_previous_checkpoint(tmp_path, step):
    stem = tmp_path / "ckpt"
    save_module(stem, {"w": torch.ones(1000)}, {"version": 1})
    child = subprocess.run([sys.executable, "-c", _killed_writer(stem, step)], cwd=REPO_ROOT, capture_output=True)
    assert child.returncode == -9, child.stderr.decode()
    state, config = load_module(stem)
    assert config == {"version": 1} and torch.equal(state["w"], torch.ones(1000))
    leftovers = [p for p in tmp_path.iterdir() if p.name != "ckpt.safetensors"]
    assert leftovers and all(p.name.startswith(".ckpt.safetensors.tmp-") for p in leftovers)
    save_module(stem, {"w": torch.zeros(3)}, {"version": 3})  # the next write cleans the dead process's temporary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]
    assert load_module(stem)[1] == {"version": 3}


def test_temporaries_of_a_live_writer_are_kept(tmp_path):
    live = tmp_path / ".x.json.tmp-1-abcd"  # pid 1 is always running
    live.write_text("in progress")
    atomic.write_text_atomic(tmp_path / "x.json", "{}")
    assert live.exists()


# ----------------------------------------------------------------------------- module loaders


def test_latent_space_load_errors_name_the_file(tmp_path):
    save_module(tmp_path / "no_generator", {"w": torch.ones(1)}, {"encoder": {}})
    with pytest.raises(CheckpointMismatchError, match=r"no_generator\.safetensors: not a latent-space checkpoint.*'generator'"):
        LatentSpace.load(tmp_path / "no_generator")
    g_cfg = GeneratorConfig(size=32, style_dim=16, n_mlp=1, img_channels=1, widths=(16, 16, 16, 16))
    save_module(tmp_path / "generator_only", Generator(g_cfg), {"generator": g_cfg.__dict__, "encoder": {}})
    with pytest.raises(CheckpointMismatchError, match="invalid latent-space config"):
        LatentSpace.load(tmp_path / "generator_only")


def test_latent_space_from_another_architecture_is_a_short_mismatch_error(tmp_path):
    """The shipped config with other weights: CheckpointMismatchError in a few lines, not a 27,000-character dump."""
    from tagelib.checkpoint_io import read_checkpoint_config

    config = read_checkpoint_config(SHIPPED_LATENT)
    g = Generator(GeneratorConfig.from_dict({**config["generator"], "style_dim": 64}))
    save_module(tmp_path / "other", {f"decoder.{k}": v for k, v in g.state_dict().items()}, config)
    with pytest.raises(CheckpointMismatchError) as err:
        LatentSpace.load(tmp_path / "other")
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "other.safetensors")) and "missing key(s)" in msg
    assert len(msg.splitlines()) <= 6 and len(msg) < 2500


def test_foreign_import_refuses_empty_and_non_checkpoint_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for name, message in (("empty.pt", "empty file"), ("notes.pt", "not a readable PyTorch checkpoint"),
                          ("tensor.pt", "holds a Tensor, not a checkpoint dict")):
        with pytest.raises(CheckpointCorruptError, match=message) as err:
            import_foreign_checkpoint(tmp_path / name)
        assert name in str(err.value) and len(str(err.value)) < 600


def test_foreign_import_checks_latent_avg_before_touching_any_module(tmp_path):
    g_cfg = GeneratorConfig(size=16, style_dim=16, n_mlp=2, max_channels=16)
    e_cfg = EncoderConfig(input_size=32, in_channels=3, n_styles=6, style_dim=16, units=(1, 1, 1, 1), widths=(16, 16, 16, 16))
    src_g, src_e = Generator(g_cfg), PSPEncoder(e_cfg)
    state = {f"decoder.{k}": v + 1 for k, v in src_g.state_dict().items()}
    state |= {f"encoder.{k}": v + 1 for k, v in src_e.encoder.state_dict().items()}
    torch.save({"state_dict": state, "opts": {}, "latent_avg": torch.randn(5, 16)}, tmp_path / "psp.pt")
    g, e = Generator(g_cfg), PSPEncoder(e_cfg)
    before = {k: v.clone() for k, v in [*g.state_dict().items(), *(("e." + k, v) for k, v in e.state_dict().items())]}
    with pytest.raises(CheckpointMismatchError, match=r"psp\.pt: latent_avg has shape \(5, 16\)"):
        import_foreign_checkpoint(tmp_path / "psp.pt", generator=g, encoder=e)
    after = {**g.state_dict(), **{"e." + k: v for k, v in e.state_dict().items()}}
    assert all(torch.equal(after[k], before[k]) for k in before)


# ----------------------------------------------------------------------------- runner input


@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if the runner ever gets as far as starting a notebook."""
    import papermill

    def forbidden(*args, **kwargs):
        raise AssertionError("a notebook was started")

    monkeypatch.setattr(papermill, "execute_notebook", forbidden)


BAD_INPUTS = [
    (["--profile", "smoke", "--only", "01_latent_space", "--set", "01_latent_space.checkpoint=data/latent/glyph32"],
     "(?s)would write into shipped data under data/.*make pretrain"),
    (["--profile", "pretrain", "--set", "01_latent_space.checkpoint=data/latent/other"], "may not write; it makes only"),
    (["--profile", "pretrain", "--set", "01_latent_space.train_steps=1"], "but --set changes this batch"),
    (["--profile", "smoke", "--set", "run_dir=data/scratch"], "among the repository's sources, shipped data"),
    (["--profile", "smoke", "--set", "run_dir=."], "is the repository or a folder above it"),
    (["--profile", "smoke", "--set", "run_dir=papers_figures"], "among the repository's sources, shipped data"),
    (["--profile", "smoke", "--set", "figures_dir=papers_figures/x"], "rewritten only by the unmodified `make reproduce`"),
    (["--profile", "smoke", "--set", "figures_dir=tagelib/x"], "outside the run folder"),
    (["--profile", "smoke", "--set", "run_dir="], "run_dir must be a non-empty path"),
    (["--profile", "tiny", "--set", "image_size=64"], "glyphs64.npz, which does not exist"),
    (["--profile", "tiny", "--set", "01_latent_space.lr=.inf"], "lr must be a float finite and > 0"),
    (["--profile", "tiny", "--set", ".seed=1"], "empty notebook name"),
    (["--profile", "tiny", "--set", "grid_styles=-3"], "00_data: grid_styles=-3 is not valid; grid_styles must be an int >= 1"),
    (["--profile", "tiny", "--set", "seed=abc"], "seed='abc' is a str; seed must be an int >= 0"),
    (["--profile", "tiny", "--set", "02_attribute_factorization.age_steps=-5"], "age_steps=-5 is not valid"),
    (["--profile", "smoke", "--set", "01_latent_space.train_steps=-5"], "train_steps=-5 is not valid"),
    (["--profile", "tiny", "--set", "sed=3"], r"no selected notebook declares \['sed'\]"),
    (["--profile", "tiny", "--only", "00_data", "--set", "clm_steps=5"], r"no selected notebook declares \['clm_steps'\]"),
    (["--profile", "tiny", "--only", "00_data", "--set", "03_codebook_learning.clm_steps=5"], "unknown or unselected notebook"),
    (["--profile", "tiny", "--set", "00_data.bogus=1"], r"00_data: unknown parameter\(s\) \['bogus'\]"),
    (["--profile", "tiny", "--set", "figures_dir=papers_figures"], "rewritten only by the unmodified batch"),
    (["--profile", "tiny", "--set", "00_data.run_dir=x"], "one per run"),
    (["--profile", "tiny", "--set", "02_attribute_factorization.edit_layers=0,9",
      "--set", "02_attribute_factorization.age_groups=0|9"], r"names layer\(s\) \[9\].*8 W\+ layers"),
    (["--profile", "tiny", "--set", "02_attribute_factorization.age_groups=0,1|2"], "exactly one group"),
    (["--profile", "tiny", "--set", "checkpoint=results/nowhere/x"], "does not exist.*01_latent_space"),
    (["--profile", "tiny", "--set", "data_dir=results/nowhere"], "data_dir='results/nowhere' does not exist"),
    (["--profile", "tiny", "--set", "01_latent_space.train_steps=5"], "which profile 'tiny' may not write"),
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--profile", "tiny", "--only", "99_none"], "unknown notebook"),
    (["--profile", "tiny", "--set", "seed"], "--set expects key=value"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_bad_runner_input_stops_before_any_kernel(argv, message, no_kernel, tmp_path):
    with pytest.raises(SystemExit, match=message):
        run.main(argv)


def test_training_over_an_existing_checkpoint_needs_overwrite(tmp_path, no_kernel):
    make_run_folder(tmp_path)  # an earlier run's folder
    save_module(tmp_path / "latent" / "glyph32", {"w": torch.ones(1)}, {})
    with pytest.raises(SystemExit, match="exists and overwrite is False"):
        run.main(["--profile", "smoke", "--set", f"run_dir={tmp_path}", "--set", "01_latent_space.overwrite=false"])


def test_the_cli_exits_non_zero_with_the_message_only():
    """As a user sees it: exit status 1, the reason on stderr, no traceback."""
    out = subprocess.run([sys.executable, "-m", "tagelib.run", "--profile", "tiny", "--set", "seed=abc"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "00_clip: seed='abc' is a str; seed must be an int >= 0 (seeds training, captions and the figure)"


def _data_hashes():
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(DATA_DIR.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["data/latent/glyph32", "data/latent/glyph32.safetensors", "data/latent/new"])
def test_shipped_data_unchanged_after_a_smoke_batch_that_tries_to_write_into_it(target, no_kernel):
    """In-process with kernels forbidden: a regression fails here without running anything that could write."""
    before = _data_hashes()
    with pytest.raises(SystemExit, match="would write into shipped data"):
        run.main(["--profile", "smoke", "--set", f"01_latent_space.checkpoint={target}"])
    assert _data_hashes() == before
