"""The papermill batch: profiles and parameters are validated before anything runs."""

import json

import pytest

from tagelib import run

def test_profiles_exist():
    assert {"smoke", "tiny"} <= set(run.available_profiles())


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(SystemExit, match="valid: .*smoke"):
        run.load_profile("nope")


@pytest.mark.parametrize("name", run.available_profiles())
def test_every_profile_parameter_is_declared(name):
    """Each per-notebook value in a profile is a parameter that notebook declares."""
    profile = run.load_profile(name)
    for nb in run.available_notebooks():
        declared = run.declared_parameters(run.NOTEBOOKS_DIR / f"{nb}.ipynb")
        specific = set(profile["notebooks"].get(nb, {}))
        assert specific <= set(declared), f"{name}.{nb} sets undeclared {specific - set(declared)}"
        run.notebook_parameters(profile, nb, declared, {})


def test_unknown_parameter_lists_valid_ones():
    profile = run.load_profile("smoke")
    declared = {"seed": {}, "run_dir": {}, "grid_styles": {}, "grid_categories": {}}
    with pytest.raises(SystemExit, match=r"unknown parameter\(s\) \['bogus'\]; valid: \['grid_categories', 'grid_styles', 'run_dir', 'seed'\]"):
        run.notebook_parameters(profile, "00_data", declared, {"00_data": {"bogus": 1}})


def test_overrides_parse_and_reject_unknown_notebook():
    parsed = run.parse_overrides(["seed=3", "00_data.grid_styles=2"], ["00_data"])
    assert parsed == {"*": {"seed": 3}, "00_data": {"grid_styles": 2}}
    with pytest.raises(SystemExit, match="unknown notebook"):
        run.parse_overrides(["99_x.seed=1"], ["00_data"])


def test_prepare_only_injects_parameters(tmp_path, monkeypatch):
    profile = run.load_profile("smoke")
    profile["run_dir"] = str(tmp_path)
    monkeypatch.setattr(run, "load_profile", lambda name: profile)
    out = run.run("smoke", only=["00_data"], prepare_only=True)
    nb = json.loads((out / "00_data.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "grid_styles = 6" in "".join(injected[0]["source"])


def test_notebook_value_wins_over_global_set():
    profile = run.load_profile("smoke")
    declared = {"seed": {}, "grid_styles": {}, "grid_categories": {}}
    params = run.notebook_parameters(profile, "00_data", declared, {"*": {"seed": 1}, "00_data": {"seed": 2}})
    assert params["seed"] == 2


def test_global_typo_stops_the_batch():
    profile = run.load_profile("smoke")
    with pytest.raises(SystemExit, match=r"no notebook declares \['sed'\]"):
        run.check_global_keys(profile, {"*": {"sed": 3}}, {"00_data": {"seed", "run_dir"}})
