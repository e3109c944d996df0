"""Nothing lost by a mistyped path: the write rule, run-folder locks, folder artefacts verified and swapped safely.

Each test is one probe of issue 20, re-run: a clear refusal before anything runs, or the correct result with
nothing lost. Runner probes run in-process with kernels forbidden (`no_kernel`), so a regression fails here
without executing anything that could write.
"""

import ast
import re
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from tagelib import clip_glyph as C
from tagelib import folder_artefact as F
from tagelib import run
from tagelib import write_guard as W
from tagelib.paths import NOTEBOOKS_DIR, REPO_ROOT
from tagelib.run_lock import HELD_ENV, LOCK_NAME, RunFolderBusy, RunLock, refuse_if_busy

TINY_CLIP = C.GlyphClipConfig(embed_dim=8, vision_width=16, vision_layers=1, vision_head_width=8, text_width=8,
                              text_layers=1, text_heads=2, context_length=12)


@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if the runner ever gets as far as starting a notebook."""
    import papermill

    def forbidden(*args, **kwargs):
        raise AssertionError("a notebook was started")

    monkeypatch.setattr(papermill, "execute_notebook", forbidden)


def _tree_hash(folder: Path) -> str:
    """Names and bytes of every tracked-looking file under `folder` (.git excluded: git itself may touch it)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- the write rule, at the runner


WRITTEN_PROBES = [  # the probes: a written path parameter pointing among the sources, the figures or anywhere
    (["--only", "00_clip", "--set", "00_clip.clip=."], "00_clip: clip='.'"),
    (["--only", "00_clip", "--set", "00_clip.clip=benchmarks"], "clip='benchmarks'"),
    (["--only", "00_clip", "--set", f"00_clip.clip={Path.home()}"], "clip="),
    (["--only", "00_clip", "--set", "00_clip.attribute_probe=papers_figures/evil_probe"], "attribute_probe='papers_figures/evil_probe'"),
    (["--only", "00_judge", "--set", "00_judge.judge=tagelib/evil"], "judge='tagelib/evil'"),
    (["--only", "01_latent_space", "--set", "01_latent_space.checkpoint=papers_figures/x"], "checkpoint='papers_figures/x'"),
    (["--only", "01_latent_space", "--set", "01_latent_space.checkpoint=/tmp/elsewhere/x"], "checkpoint=./tmp/elsewhere/x."),
]


@pytest.mark.parametrize("argv, message", WRITTEN_PROBES, ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_a_written_path_outside_the_run_folder_is_refused_before_any_kernel(argv, message, no_kernel):
    with pytest.raises(SystemExit, match=rf"(?s){message}.*(outside the run folder|not a glyph CLIP \(open_clip local-dir\) artefact|is not a)"):
        run.main(["--profile", "smoke", *argv])


@pytest.mark.parametrize("run_dir, message", [
    ("benchmarks", "among the repository's sources"), (".git/x", "among the repository's sources"),
    (".venv/lib", "among the repository's sources"), ("results", "among the repository's sources"),
    ("data/../tagelib/run", "among the repository's sources"), ("..", "the repository or a folder above it"),
    (str(Path.home()) if REPO_ROOT.resolve().is_relative_to(Path.home().resolve()) else "/", "the repository or a folder above it"),
])
def test_run_dir_among_the_sources_or_above_the_repository_is_refused(run_dir, message, no_kernel):
    with pytest.raises(SystemExit, match=message):
        run.main(["--profile", "smoke", "--only", "00_data", "--set", f"run_dir={run_dir}"])


def test_run_dir_that_is_someone_elses_folder_is_refused(tmp_path, no_kernel):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit, match="is a folder with other content"):
        run.main(["--profile", "smoke", "--only", "00_data", "--set", f"run_dir={tmp_path}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_a_symlink_inside_the_run_folder_cannot_lead_out_of_it(tmp_path, no_kernel):
    run_dir = W.make_run_folder(tmp_path / "run")
    (run_dir / "judge").symlink_to(REPO_ROOT / "tagelib")
    with pytest.raises(SystemExit, match="outside the run folder"):
        run.main(["--profile", "smoke", "--only", "00_judge", "--set", f"run_dir={run_dir}"])


def test_the_clip_probe_leaves_the_clone_intact(no_kernel):
    """The probe that deleted the clone: `--set 00_clip.clip=.` with the smoke profile (overwrite on)."""
    before = _tree_hash(REPO_ROOT / "tagelib")
    with pytest.raises(SystemExit):
        run.main(["--profile", "smoke", "--only", "00_clip", "--set", "00_clip.clip=."])
    assert (REPO_ROOT / ".git").is_dir() and _tree_hash(REPO_ROOT / "tagelib") == before


def test_every_path_parameter_of_every_notebook_is_covered_by_the_rule():
    """A notebook parameter that names a path is either written (and checked by the rule at the runner and in the
    notebook) or read; a new path parameter in neither set fails here."""
    covered = set(W.WRITTEN_PATHS) | W.READ_PATHS
    not_paths = {"architecture"}  # mentions "checkpoint" in its help, names a network layout
    for nb in sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py")):
        source = nb.read_text()
        declared = run.declared_parameters(nb.with_suffix(".ipynb"))
        for key, spec in declared.items():
            default, help_text = str(spec.get("default")), str(spec.get("help", ""))
            looks_like_path = spec.get("inferred_type_name") == "str" and (
                "/" in default or re.search(r"\b(checkpoint|folder|file|path|weights)\b", help_text.lower()))
            if looks_like_path and key not in not_paths:
                assert key in covered, f"{nb.name}: path parameter {key!r} is neither in WRITTEN_PATHS nor READ_PATHS"
        for key in set(declared) & set(W.WRITTEN_PATHS):
            steps = W.WRITTEN_PATHS[key]
            if key in ("run_dir", "figures_dir"):
                assert "output_dirs(run_dir, figures_dir" in source or "editing_context(" in source, nb.name
            elif steps in declared:  # the notebook writes it: through the rule
                assert f'output_path("{key}", {key}, run_dir)' in source, f"{nb.name} writes {key} without output_path"


@pytest.mark.parametrize("notebook, key, steps", [
    ("00_clip", "clip", "clip_steps"), ("00_clip", "attribute_probe", "probe_steps"),
    ("00_judge", "judge", "judge_steps"), ("01_latent_space", "checkpoint", "train_steps")])
def test_every_written_parameter_is_refused_among_the_sources(notebook, key, steps, no_kernel):
    for target in ("tagelib/x", "papers_figures/x", "notebooks/x", "README.md"):
        with pytest.raises(SystemExit, match=f"{notebook}: {key}='{target}'"):
            run.main(["--profile", "smoke", "--only", notebook, "--set", f"{notebook}.{key}={target}",
                      "--set", f"{notebook}.{steps}=1"])


# ----------------------------------------------------------------------------- the same rule inside a notebook


def test_notebook_defaults_write_figures_under_the_run_folder():
    for nb in sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")):
        default = ast.literal_eval(run.declared_parameters(nb)["figures_dir"]["default"])
        assert default == W.DEFAULT_FIGURES, nb.name


def test_outside_the_runner_papers_figures_is_refused_and_the_run_folder_used(tmp_path, monkeypatch):
    monkeypatch.delenv(W.PUBLISH_ENV, raising=False)
    with pytest.raises(W.WriteRefused, match="rewritten only by the unmodified `make reproduce`"):
        W.output_dirs(str(tmp_path / "run"), "papers_figures", "00_data")
    out_dir, fig_dir = W.output_dirs(str(tmp_path / "run"), W.DEFAULT_FIGURES, "00_data")
    assert fig_dir == (tmp_path / "run" / "papers_figures").resolve() and out_dir.parent == fig_dir.parent
    monkeypatch.setenv(W.PUBLISH_ENV, "1")  # the unmodified make reproduce
    assert W.output_dirs(str(tmp_path / "run"), "papers_figures", "00_data")[1] == W.PUBLISHED_FIGURES.resolve()


def test_outside_the_runner_shipped_data_is_not_writable(tmp_path, monkeypatch):
    monkeypatch.delenv(W.MAKES_ENV, raising=False)
    with pytest.raises(W.WriteRefused, match="checkpoint='data/latent/glyph32' would write"):
        W.output_path("checkpoint", "data/latent/glyph32", str(tmp_path))
    monkeypatch.setenv(W.MAKES_ENV, f'["{(REPO_ROOT / "data/latent/glyph32").resolve()}"]')  # make pretrain's kernel
    assert W.output_path("checkpoint", "data/latent/glyph32", str(tmp_path)).name == "glyph32"


def test_kernels_import_this_tree(tmp_path):
    """The runner puts its own tree first on the kernels' import path (a second checkout imports its own code)."""
    plan = run.Plan("smoke", str(tmp_path / "run"), str(tmp_path / "run" / "papers_figures"))
    with run._kernel_environment(plan, "smoke"):
        env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", "import tagelib; print(tagelib.__file__)"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve().is_relative_to(REPO_ROOT.resolve())
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT) and env[W.PUBLISH_ENV] == "0"
    assert HELD_ENV not in os.environ or os.environ[HELD_ENV] != env[HELD_ENV]  # restored after the batch


# ----------------------------------------------------------------------------- one run per run folder


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from tagelib.run_lock import RunLock; "
        f"RunLock({str(run_dir)!r}, 'tagelib.run --profile smoke').acquire(); print('held', flush=True); time.sleep(60)")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_run_into_a_busy_run_folder_is_refused_with_the_first_ones_pid(tmp_path, no_kernel):
    run_dir = tmp_path / "run"
    child = _hold_lock(run_dir)
    try:
        with pytest.raises(SystemExit, match=rf"(?s)run_dir .* is busy.*PID {child.pid} on .*started 20\d\d-"):
            run.main(["--profile", "smoke", "--only", "00_data", "--set", f"run_dir={run_dir}"])
        with pytest.raises(RunFolderBusy, match=f"PID {child.pid}"):  # a notebook opened in JupyterLab
            W.output_dirs(str(run_dir), W.DEFAULT_FIGURES, "00_data")
    finally:
        child.kill()
        child.wait()
    W.output_dirs(str(run_dir), W.DEFAULT_FIGURES, "00_data")  # the holder is gone: the folder is free


def test_a_stale_lock_is_taken_over_and_says_so(tmp_path):
    run_dir = tmp_path / "run"
    child = _hold_lock(run_dir)
    child.kill()  # dies holding it: the kernel drops the flock, the file still names the dead holder
    child.wait()
    with RunLock(run_dir, "second") as lock:
        assert f"taking over the stale lock of PID {child.pid}" in lock.note
    with RunLock(run_dir, "third") as lock:  # released cleanly: nothing to take over
        assert lock.note == ""


def test_the_lock_is_released_when_a_batch_stops_on_bad_input(tmp_path, no_kernel):
    run_dir = W.make_run_folder(tmp_path / "run")
    with pytest.raises(SystemExit, match="unknown parameter"):
        run.main(["--profile", "smoke", "--only", "00_data", "--set", f"run_dir={run_dir}", "--set", "00_data.nope=1"])
    refuse_if_busy(run_dir)
    assert (run_dir / LOCK_NAME).is_file()


# ----------------------------------------------------------------------------- folder artefacts (the glyph CLIP)


@pytest.fixture(scope="module")
def tiny_clip():
    return C.create_clip(TINY_CLIP, seed=0)[0]


def test_replacing_a_folder_that_is_not_a_clip_artefact_is_refused(tmp_path, tiny_clip):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "open_clip_config.json").write_text("{}")  # the one file the old check looked for
    (tmp_path / "notes" / "thesis.tex").write_text("years of work")
    for folder in (tmp_path / "notes", tmp_path):
        with pytest.raises(F.FolderArtefactError, match=r"is not a glyph CLIP \(open_clip local-dir\) artefact"):
            C.save_clip(folder, tiny_clip, TINY_CLIP, overwrite=True)
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "years of work"


def test_replacing_a_clip_artefact_swaps_it_by_rename(tmp_path, tiny_clip):
    folder = C.save_clip(tmp_path / "clip", tiny_clip, TINY_CLIP, {"run": 1})
    C.save_clip(folder, tiny_clip, TINY_CLIP, {"run": 2}, overwrite=True)
    assert C.load_clip(folder)[0].training_info == {"run": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # no temporary or old folder left beside it


@pytest.mark.parametrize("damage, message", [
    ("flip", "does not match the sha256"), ("truncate", "bytes, the manifest says"),
    ("remove_weights", "open_clip_model.safetensors is missing"), ("remove_manifest", "tage_manifest.json not found"),
])
def test_a_damaged_clip_folder_is_an_error_never_a_random_model(tmp_path, tiny_clip, damage, message):
    folder = C.save_clip(tmp_path / "clip", tiny_clip, TINY_CLIP)
    weights = folder / "open_clip_model.safetensors"
    raw = bytearray(weights.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x01
        weights.write_bytes(bytes(raw))
    elif damage == "truncate":
        weights.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "remove_weights":
        weights.unlink()
    else:
        (folder / F.MANIFEST).unlink()
    with pytest.raises(F.FolderArtefactError, match=message):
        C.load_clip(folder)


def test_the_shipped_clip_folder_verifies():
    F.verify(REPO_ROOT / "data/clip/glyph32_clip", C.CLIP_KIND, needed=C.CLIP_FILES)


def test_registering_a_clip_config_leaves_no_temporary_folder():
    before = set(Path(tempfile.gettempdir()).glob("open_clip_cfg_*"))
    cfg = C.GlyphClipConfig(embed_dim=8, vision_width=16, vision_layers=1, vision_head_width=8, text_width=8,
                            text_layers=1, text_heads=2, context_length=13 + int(time.time()) % 7)  # a new name
    C.register_config(cfg)
    assert set(Path(tempfile.gettempdir()).glob("open_clip_cfg_*")) == before
    assert C.create_clip(cfg)[0] is not None  # and the registered config still builds


def test_training_into_a_non_clip_folder_stops_the_batch(tmp_path, no_kernel):
    run_dir = W.make_run_folder(tmp_path / "run")
    (run_dir / "mine").mkdir()
    (run_dir / "mine" / "data.csv").write_text("1,2\n")
    with pytest.raises(SystemExit, match=r"is not a glyph CLIP \(open_clip local-dir\) artefact folder"):
        run.main(["--profile", "smoke", "--only", "00_clip", "--set", f"run_dir={run_dir}",
                  "--set", f"00_clip.clip={run_dir}/mine"])
    assert (run_dir / "mine" / "data.csv").read_text() == "1,2\n"


def test_save_refuses_a_non_artefact_even_when_called_directly(tmp_path):
    """The library function itself, as a notebook in JupyterLab calls it: never removes a folder it did not make."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("k")
    with pytest.raises(F.FolderArtefactError):
        F.publish(tmp_path / "x", "some kind", lambda d: (d / "f").write_text("new"), overwrite=True)
    assert (tmp_path / "x" / "keep").read_text() == "k" and sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_a_checkpoint_never_overwrites_a_file_that_is_not_a_checkpoint(tmp_path):
    from tagelib.checkpoint_io import CheckpointError, load_module, save_module

    (tmp_path / "notes.safetensors").write_text("my notes")
    with pytest.raises(CheckpointError, match="notes.safetensors exists and is not a tagelib checkpoint"):
        save_module(tmp_path / "notes", {"w": torch.ones(2)}, {})
    assert (tmp_path / "notes.safetensors").read_text() == "my notes"
    save_module(tmp_path / "ours", {"w": torch.ones(2)}, {"v": 1})
    raw = bytearray((tmp_path / "ours.safetensors").read_bytes())
    raw[-1] ^= 0xFF  # our own checkpoint, its tensors corrupted: retraining over it is allowed
    (tmp_path / "ours.safetensors").write_bytes(bytes(raw))
    save_module(tmp_path / "ours", {"w": torch.zeros(2)}, {"v": 2})
    assert load_module(tmp_path / "ours")[1] == {"v": 2}


def test_a_corrupted_clip_folder_stops_the_batch_before_it_starts(tmp_path, tiny_clip, no_kernel):
    folder = C.save_clip(tmp_path / "clip", tiny_clip, TINY_CLIP)
    weights = folder / "open_clip_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[100] ^= 0x04
    weights.write_bytes(bytes(raw))
    with pytest.raises(SystemExit, match="00_clip: clip=.*open_clip_model.safetensors: content does not match"):
        run.main(["--profile", "tiny", "--only", "00_clip", "--set", f"00_clip.clip={folder}"])


def test_a_truncated_paper_dataset_stops_the_batch_before_it_starts(tmp_path, no_kernel):
    run_dir = tmp_path / "run"
    run.build_plan("paper-synthetic", ["00_judge"], [f"run_dir={run_dir}"])  # builds the rehearsal's inputs
    good = (run_dir / "inputs" / "paper_synthetic.npy").read_bytes()
    (tmp_path / "download.npy").write_bytes(good[: len(good) // 2])  # an interrupted download
    with pytest.raises(SystemExit, match=r"(?s)00_judge: data_dir=.*download.npy: truncated.*prepare_paper_datasets"):
        run.main(["--profile", "paper-synthetic", "--only", "00_judge", "--set", f"run_dir={run_dir}",
                  "--set", f"data_dir={tmp_path / 'download.npy'}"])


def test_a_batch_refused_before_it_writes_leaves_no_run_folder(tmp_path, no_kernel):
    with pytest.raises(SystemExit, match="unknown parameter"):
        run.main(["--profile", "smoke", "--only", "00_data", "--set", f"run_dir={tmp_path / 'new'}",
                  "--set", "00_data.nope=1"])
    assert not (tmp_path / "new").exists()
