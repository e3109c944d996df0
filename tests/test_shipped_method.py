"""The shipped method checkpoints (data/method/): they load, they are the `tiny` settings' modules, a notebook falls back
to them only when its upstream run output is missing, and only `make method` may write them."""

import pytest
import yaml

from tagelib import run, shipped_method
from tagelib.age import load_age
from tagelib.cpm_train import load_codebook, load_cpm
from tagelib.paths import PROFILES_DIR, checkpoint_file
from tagelib.shipped_method import PSM_STEM, SHIPPED, upstream

LAYERS = list(range(8))


def test_every_shipped_module_loads_and_was_trained_with_the_notebook_defaults():
    declared = {nb: run.declared_parameters(run.NOTEBOOKS_DIR / f"{nb}.ipynb") for nb in
                ("02_attribute_factorization", "03_codebook_learning", "04_code_prediction", "05_prompt_semantics")}
    default = lambda nb, key: run._default(declared[nb][key])
    _, info = load_age(SHIPPED["age_checkpoint"][0])
    assert info["age"]["dict_size"] == default("02_attribute_factorization", "dict_size")
    codebook = load_codebook(str(SHIPPED["codebook"][0]), LAYERS)
    assert codebook.config.num_codes == default("03_codebook_learning", "num_codes")
    _, info = load_cpm(str(SHIPPED["cpm"][0]))
    assert info["train"]["steps"] == default("04_code_prediction", "cpm_steps")
    _, info = load_cpm(str(PSM_STEM))
    assert info["train"]["steps"] == default("05_prompt_semantics", "psm_steps")
    method = yaml.safe_load((PROFILES_DIR / "method.yaml").read_text())
    shipped = [*(s for s, _ in SHIPPED.values()), PSM_STEM, shipped_method.SHOT_CODES]
    assert sorted(method["makes"]) == sorted(f"data/method/{p.name}" for p in shipped)


def test_upstream_reads_the_run_output_and_falls_back_to_the_shipped_file_aloud(tmp_path, monkeypatch, capsys):
    made = tmp_path / "03_codebook_learning" / "codebook"
    assert upstream("codebook", str(made)) == str(SHIPPED["codebook"][0])  # not made in this run: the shipped one
    assert "using the shipped data/method/codebook" in capsys.readouterr().out
    made.parent.mkdir()
    checkpoint_file(made).write_bytes(b"x")
    assert upstream("codebook", str(made)) == str(made)  # the run's own output wins
    monkeypatch.setitem(SHIPPED, "codebook", (tmp_path / "nothing", "03_codebook_learning"))
    with pytest.raises(FileNotFoundError, match="run notebook 03_codebook_learning first"):
        upstream("codebook", str(tmp_path / "missing"))


def test_the_runner_lets_a_notebook_run_alone_on_the_shipped_modules(tmp_path, monkeypatch):
    plan = run.build_plan("tiny", ["05_prompt_semantics"], [f"run_dir={tmp_path / 'alone'}"])
    assert any("shipped data/method/cpm" in note for note in plan.notes)
    monkeypatch.setitem(SHIPPED, "cpm", (tmp_path / "nothing", "04_code_prediction"))
    monkeypatch.setattr(run, "SHIPPED", SHIPPED)
    with pytest.raises(SystemExit, match="made by notebook 04_code_prediction"):
        run.build_plan("tiny", ["05_prompt_semantics"], [f"run_dir={tmp_path / 'alone2'}"])


@pytest.mark.parametrize("profile", ["tiny", "full"])
def test_only_make_method_writes_the_shipped_modules(profile):
    with pytest.raises(SystemExit, match="ship_as='data/method/age'.*would write into shipped data"):
        run.build_plan(profile, ["02_attribute_factorization"], ["02_attribute_factorization.ship_as=data/method/age"])
    with pytest.raises(SystemExit, match="--set changes this batch"):
        run.build_plan("method", None, ["seed=1"])
    assert shipped_method.METHOD_DIR.name == "method"
