"""The papermill batch: precedence, validation and output folders, all decided before anything runs."""

import json

import pytest

from tagelib import profiles, run

SMOKE_RUN_DIR = "results/smoke"


def plan_params(profile, *overrides, only=None):
    plan = run.build_plan(profile, only, list(overrides))
    return plan, dict(plan.notebooks)


def test_profiles_exist():
    assert {"smoke", "tiny", "pretrain"} <= set(run.available_profiles())


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(SystemExit, match="valid: .*smoke"):
        run.load_profile("nope")


PUBLIC_FILES = ("paper", "paper-flowers", "paper-vggface")  # need the paper's datasets (test_paper_synthetic)


@pytest.mark.parametrize("name", [p for p in run.available_profiles() if p not in PUBLIC_FILES])
def test_every_profile_builds_a_valid_plan(name):
    """Every profile's values are declared by their notebooks and pass validation (nothing runs but the
    rehearsal's input builder)."""
    plan = run.build_plan(name)
    skipped = run.load_profile(name)["skip"]
    assert [n for n, _ in plan.notebooks] == [n for n in run.available_notebooks() if n not in skipped] or name == "pretrain"


def test_precedence_notebook_defaults_profile_set_global_set_notebook():
    """notebook defaults < profile defaults < profile per-notebook < --set key < --set NB.key."""
    _, p = plan_params("full")
    assert p["03_codebook_learning"]["sweep_steps"] == 50  # profile per-notebook over the notebook default 30
    assert "sweep_steps" not in p["02_attribute_factorization"]
    assert p["00_data"]["seed"] == 0  # profile defaults
    _, p = plan_params("full", "sweep_steps=5", "seed=4")
    assert p["03_codebook_learning"]["sweep_steps"] == 5  # global --set over the profile's per-notebook value
    assert all(v["seed"] == 4 for v in p.values())
    _, p = plan_params("full", "seed=4", "02_attribute_factorization.seed=9")
    assert p["02_attribute_factorization"]["seed"] == 9 and p["03_codebook_learning"]["seed"] == 4


def test_profile_per_notebook_value_wins_over_profile_defaults(monkeypatch):
    profile = run.load_profile("smoke")
    profile["defaults"] = {**profile["defaults"], "seed": 1, "max_styles": 5}
    profile["notebooks"]["02_attribute_factorization"]["max_styles"] = 7
    monkeypatch.setattr(run, "load_profile", lambda name: profile)
    _, p = plan_params("smoke")
    assert p["02_attribute_factorization"]["max_styles"] == 7 and p["03_codebook_learning"]["max_styles"] == 12
    assert p["00_data"]["seed"] == 1


def test_set_values_take_the_declared_type():
    _, p = plan_params("tiny", "02_attribute_factorization.edit_layers=0,1,2,3", "02_attribute_factorization.age_groups=0,1|2,3",
                       "02_attribute_factorization.alpha=2", "01_latent_space.overwrite=true")
    assert p["02_attribute_factorization"]["edit_layers"] == "0,1,2,3"  # text, not YAML
    assert p["02_attribute_factorization"]["alpha"] == 2 and p["01_latent_space"]["overwrite"] is True


def test_run_dir_moves_every_output(tmp_path):
    """Figures, executed notebooks and the smoke checkpoints all follow --set run_dir."""
    plan, p = plan_params("smoke", f"run_dir={tmp_path}")
    assert plan.out_dir == tmp_path / "notebooks" and plan.figures_dir == f"{tmp_path}/papers_figures"
    for name, values in p.items():
        assert values["run_dir"] == str(tmp_path) and values["figures_dir"] == f"{tmp_path}/papers_figures"
        if "checkpoint" in values:
            assert values["checkpoint"] == f"{tmp_path}/latent/glyph32", name
        if "judge" in values:
            assert values["judge"] == f"{tmp_path}/judge/glyph32_judge", name


def test_papers_figures_only_from_the_unmodified_batch():
    plan, _ = plan_params("tiny")
    assert plan.figures_dir == "papers_figures" and not plan.notes
    for only, overrides in ((["00_data"], []), (None, ["seed=3"])):
        plan = run.build_plan("tiny", only, overrides)
        assert plan.figures_dir == "results/tiny/papers_figures"
        assert "not papers_figures/" in plan.notes[0]
    with pytest.raises(SystemExit, match="rewritten only by the unmodified batch"):
        run.build_plan("smoke", None, ["figures_dir=papers_figures"])


def test_overrides_parse_and_reject_unknown_notebook():
    parsed = run.parse_overrides(["seed=3", "00_data.grid_styles=2"], ["00_data"])
    assert parsed == {"*": {"seed": "3"}, "00_data": {"grid_styles": "2"}}
    with pytest.raises(SystemExit, match="unknown or unselected notebook"):
        run.parse_overrides(["99_x.seed=1"], ["00_data"])
    with pytest.raises(SystemExit, match="one per run"):
        run.parse_overrides(["00_data.run_dir=x"], ["00_data"])


def test_prepare_only_injects_parameters_and_leaves_executed_notebooks_alone(tmp_path):
    out = run.run("smoke", only=["00_data"], prepare_only=True, overrides=[f"run_dir={tmp_path}"])
    assert out == tmp_path / "prepared" and sorted(p.name for p in out.iterdir()) == ["00_data.ipynb"]
    assert not (tmp_path / "notebooks").exists()
    nb = json.loads((out / "00_data.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "grid_styles = 6" in "".join(injected[0]["source"])


def test_yaml_error_names_file_and_line(tmp_path, monkeypatch):
    (tmp_path / "broken.yaml").write_text("run_dir: results/x\ndefaults:\n  seed: [0\n  other: 1\n")
    monkeypatch.setattr(profiles, "PROFILES_DIR", tmp_path)
    with pytest.raises(SystemExit, match=r"broken\.yaml:\d+:\d+: invalid YAML"):
        profiles.load_profile("broken")


@pytest.mark.parametrize("text, message", [
    ("- a list\n", "a profile is a mapping"),
    ("runs: 3\n", r"unknown key\(s\) \['runs'\]"),
    ("defaults:\n  run_dir: x\n", "one per run"),
    ("makes: [results/x]\n", "makes names 'results/x', which is not a shipped artefact under data/"),
    ("makes: [data/../tagelib/run]\n", "makes names 'data/../tagelib/run', which is not a shipped artefact under data/"),
    ("makes: data/x\n", "makes must be a list of paths under data/"),
    ("notebooks:\n  99_none: {}\n", r"unknown notebook\(s\) \['99_none'\]"),
])
def test_bad_profiles_name_the_file(tmp_path, monkeypatch, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    monkeypatch.setattr(profiles, "PROFILES_DIR", tmp_path)
    with pytest.raises(SystemExit, match=message) as err:
        profiles.load_profile("bad")
    assert "bad.yaml" in str(err.value)


def test_executed_notebook_is_published_only_on_success(tmp_path):
    """A real kernel: outputs follow run_dir; a failed run keeps NN.failed.ipynb beside the untouched good copy."""
    out = run.run("smoke", only=["00_data"], overrides=[f"run_dir={tmp_path}"])
    good = out / "00_data.ipynb"
    good_bytes = good.read_bytes()
    for made in ("papers_figures/table_dataset.md", "papers_figures/fig_glyph_grid.png", "00_data/summary.json",
                 "run_summary_00_data.json"):
        assert (tmp_path / made).is_file(), made
    empty = tmp_path / "broken_data"
    empty.mkdir()
    (empty / "glyphs32.npz").write_bytes(b"passes the checks before the start, fails when the notebook loads it")
    with pytest.raises(SystemExit, match=r"(?s)00_data failed in cell \[\d+\]: \w+.*00_data\.failed\.ipynb.*unchanged"):
        run.run("smoke", only=["00_data"], overrides=[f"run_dir={tmp_path}", f"data_dir={empty}"])
    assert good.read_bytes() == good_bytes
    assert sorted(p.name for p in out.iterdir()) == ["00_data.failed.ipynb", "00_data.ipynb"]
    run.run("smoke", only=["00_data"], overrides=[f"run_dir={tmp_path}"])  # success again: the stale failure goes
    assert sorted(p.name for p in out.iterdir()) == ["00_data.ipynb"]


def test_kernels_listen_on_private_ipc_sockets_outside_the_repository():
    from jupyter_core.paths import jupyter_runtime_dir

    km = run._ipc_kernel_manager()(kernel_name="python3")
    assert km.transport == "ipc"
    assert km.ip.startswith(jupyter_runtime_dir()) and not km.ip.startswith(str(run.REPO_ROOT))


def test_judge_paths_are_checked_like_checkpoints(tmp_path):
    """Training a judge into data/ from a non-judge profile is refused; a missing judge to read names 00_judge."""
    with pytest.raises(SystemExit, match="make judge"):
        run.build_plan("smoke", overrides=["00_judge.judge=data/judge/glyph32_judge"])
    with pytest.raises(SystemExit, match="00_judge.*judge_steps > 0"):
        run.build_plan("tiny", only=["02_attribute_factorization"], overrides=[f"judge={tmp_path}/none"])


def test_clip_folder_and_probe_paths_are_checked(tmp_path):
    """The CLIP model is a folder (open_clip local-dir): one without its manifest counts as missing."""
    with pytest.raises(SystemExit, match="make clip"):
        run.build_plan("smoke", overrides=["00_clip.clip=data/clip/glyph32_clip"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "open_clip_config.json").write_text("{}")  # the config alone is not a CLIP folder
    for key in ("clip", "attribute_probe"):
        target = tmp_path / ("empty" if key == "clip" else "none")
        with pytest.raises(SystemExit, match=f"{key}=.*00_clip .*_steps > 0"):
            run.build_plan("tiny", only=["00_clip"], overrides=[f"{key}={target}"])
    _, p = plan_params("smoke", f"run_dir={tmp_path}/run")
    assert p["00_clip"]["clip"] == f"{tmp_path}/run/clip/glyph32_clip"
    assert p["00_clip"]["attribute_probe"] == f"{tmp_path}/run/clip/glyph32_attributes"


@pytest.mark.parametrize("override, message", [
    ("05_prompt_semantics.clip_pretrained=checkpoints/no_such_vit.bin", "clip_pretrained='checkpoints/no_such_vit.bin' is not a file"),
    ("fd_extractors=judge,vgg16,inception", "asks for FID"),
])
def test_missing_clip_or_inception_weights_stop_the_batch_before_it_starts(override, message):
    with pytest.raises(SystemExit, match=message):
        run.build_plan("paper-synthetic", None, [override])
