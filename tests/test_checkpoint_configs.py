"""Stored configs are validated on load: a checkpoint whose hash is valid but whose config has wrong types, missing
or unknown keys, bad sizes, or is not a dict at all raises a short CheckpointMismatchError that starts with the file,
for every loader of our own checkpoints (judge, attribute probe, codebook, CPM, AGE, latent space)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from tagelib import attribute_probe as AP
from tagelib.age import AGE, AGEConfig, load_age
from tagelib.checkpoint_io import CheckpointMismatchError, build_stored_config, save_module, stored_value
from tagelib.codebook import Codebook, CodebookConfig
from tagelib.cpm import CodePredictor, CPMConfig
from tagelib.cpm_train import load_codebook, load_cpm
from tagelib.judge import GlyphJudge, JudgeConfig, load_judge
from tagelib.latent import LatentSpace, LatentSpaceConfig
from tagelib.psp import EncoderConfig
from tagelib.stylegan2 import GeneratorConfig


@dataclass
class Case:
    """One loader: a tiny module, its valid stored config, and which section / fields the corruptions hit."""

    module: Callable[[], nn.Module]
    config: Callable[[nn.Module], dict]  # the valid stored config of that module
    load: Callable[[Path], Any]  # stem -> loaded module (or (module, info))
    key: str  # the config section the module's dataclass is stored in
    what: str  # how the message names the config: "<path>: invalid <what> config (...)"
    int_field: str  # an int field of that section
    required: str  # a field to delete (every field is stored, defaults or not)


def tiny_judge() -> GlyphJudge:
    judge = GlyphJudge(JudgeConfig(num_classes=3, image_size=8, widths=(4,), embed_dim=4))
    judge.categories = ["A", "B", "C"]
    return judge


def tiny_latent() -> LatentSpace:
    return LatentSpace(LatentSpaceConfig(
        GeneratorConfig(size=16, style_dim=16, n_mlp=1, img_channels=1, widths=(16, 16, 8)),
        EncoderConfig(input_size=16, in_channels=1, n_styles=6, style_dim=16, units=(1, 1, 1, 1), widths=(8, 8, 8, 16),
                      mode="ir")))


CPM_CFG = CPMConfig(num_codes=4, code_dim=3, n_latent=2, n_edit=2, d_model=8, depth=1, heads=2)
AGE_CFG = AGEConfig(n_latent=3, style_dim=4, edit_layers=(0, 1), groups=((0, 1),), dict_size=3, mlp_hidden=(4,))

CASES = {
    "judge": Case(tiny_judge,
                  lambda m: {"judge": dataclasses.asdict(m.cfg), "categories": m.categories,
                             "homoglyphs": [["A", "B"]]},
                  load_judge, "judge", "judge", "image_size", "num_classes"),
    "probe": Case(lambda: AP.AttributeProbe(AP.ProbeConfig(widths=(4,))),
                  lambda m: {"probe": dataclasses.asdict(m.cfg), "attributes": list(AP.ATTRIBUTES)},
                  AP.load_probe, "probe", "attribute-probe", "num_attributes", "widths"),
    "codebook": Case(lambda: Codebook(CodebookConfig(num_codes=4, dim=3)),
                     lambda m: {"codebook": dataclasses.asdict(m.config), "edit_layers": [0, 1]},
                     lambda stem: load_codebook(str(stem), [0, 1]), "codebook", "codebook", "num_codes", "num_codes"),
    "CPM": Case(lambda: CodePredictor(CPM_CFG, torch.randn(4, 3)),
                lambda m: {"cpm": dataclasses.asdict(m.config), "edit_layers": [0, 1], "train_seconds": 1.0},
                lambda stem: load_cpm(str(stem))[0], "cpm", "CPM", "d_model", "n_edit"),
    "AGE": Case(lambda: AGE(AGE_CFG), lambda m: {"age": m.cfg.to_dict(), "train_seconds": 1.0},
                lambda stem: load_age(stem)[0], "age", "AGE", "dict_size", "n_latent"),
    "latent space": Case(tiny_latent, lambda m: {"generator": dataclasses.asdict(m.cfg.generator),
                                                 "encoder": dataclasses.asdict(m.cfg.encoder), "train_seconds": 1.0},
                         LatentSpace.load, "generator", "latent-space", "size", "size"),
}


def with_field(config: dict, key: str, field: str, value: Any) -> dict:
    config[key][field] = value
    return config


def without_field(config: dict, key: str, field: str) -> dict:
    del config[key][field]
    return config


CORRUPTIONS = {  # name -> (valid config, section key, case) -> corrupted config
    "config not a dict": lambda c, key, case: ["not", "a", "dict"],
    "config a string": lambda c, key, case: "judge",
    "section missing": lambda c, key, case: {k: v for k, v in c.items() if k != key},
    "section a list": lambda c, key, case: {**c, key: list(c[key].values())},
    "string for an int": lambda c, key, case: with_field(c, key, case.int_field, "16"),
    "bool for an int": lambda c, key, case: with_field(c, key, case.int_field, True),
    "float for an int": lambda c, key, case: with_field(c, key, case.int_field, 8.5),
    "dict for an int": lambda c, key, case: with_field(c, key, case.int_field, {"n": 8}),
    "negative size": lambda c, key, case: with_field(c, key, case.int_field, -8),
    "missing key": lambda c, key, case: without_field(c, key, case.required),
    "unknown key": lambda c, key, case: with_field(c, key, "bogus", 1),
}


def saved(tmp_path: Path, name: str, config_of: Callable[[dict], Any] | None = None) -> tuple[Path, nn.Module]:
    """Save the loader's tiny module with its valid config, or `config_of(valid config)`; the hash is valid."""
    case = CASES[name]
    torch.manual_seed(0)
    module = case.module()
    config = case.config(module)
    if config_of is not None:
        config = config_of(copy.deepcopy(config))
    stem = tmp_path / name.replace(" ", "_")
    return save_module(stem, module, config), module


def assert_names_the_file(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    assert len(msg) < 600 and "Traceback" not in msg, msg
    return msg


@pytest.mark.parametrize("name", list(CASES))
def test_valid_checkpoints_round_trip(tmp_path, name):
    path, module = saved(tmp_path, name)
    loaded = CASES[name].load(path.with_suffix(""))
    assert type(loaded) is type(module)
    expected = module.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, expected[k])


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("name", list(CASES))
def test_invalid_stored_configs_are_mismatch_errors_naming_the_file(tmp_path, name, corruption):
    case = CASES[name]
    path, _ = saved(tmp_path, name, lambda c: CORRUPTIONS[corruption](c, case.key, case))
    with pytest.raises(CheckpointMismatchError) as err:
        case.load(path.with_suffix(""))
    msg = assert_names_the_file(err, path)
    if corruption in ("config not a dict", "config a string", "section missing", "section a list"):  # or "not a judge"
        assert f"invalid {case.what} config" in msg or ": not a" in msg, msg
    else:
        assert f"invalid {case.what} config" in msg, msg
    if corruption in ("string for an int", "bool for an int", "float for an int", "dict for an int"):
        assert f"{case.int_field} must be int" in msg, msg
    if corruption == "missing key":
        assert "missing field(s) [" in msg and f"{case.required}']" in msg, msg


def test_wrong_types_are_named_by_field_and_nested_section(tmp_path):
    """The reason says which field, with the stored value, e.g. `generator.size must be int, got str '16'`."""
    case = CASES["latent space"]
    path, _ = saved(tmp_path, "latent space", lambda c: with_field(c, "generator", "size", "16"))
    with pytest.raises(CheckpointMismatchError) as err:
        case.load(path.with_suffix(""))
    msg = assert_names_the_file(err, path)
    assert "invalid latent-space config (TypeError: generator.size must be int, got str '16')" in msg
    path, _ = saved(tmp_path, "AGE", lambda c: with_field(c, "age", "groups", [[0, "1"]]))
    with pytest.raises(CheckpointMismatchError, match=r"invalid AGE config \(TypeError: groups\[0\]\[1\] must be int"):
        load_age(path)


def test_other_stored_entries_are_checked(tmp_path):
    """Entries beside the dataclass: the judge's category names, the codebook's edited layers."""
    path, _ = saved(tmp_path, "judge", lambda c: {**c, "categories": "ABC"})
    with pytest.raises(CheckpointMismatchError, match=r"invalid judge config \(TypeError: categories must be a list"):
        load_judge(path)
    path, _ = saved(tmp_path, "judge", lambda c: {**c, "categories": ["A", "B"]})
    with pytest.raises(CheckpointMismatchError, match="2 category names for 3 classes"):
        load_judge(path)
    path, _ = saved(tmp_path, "codebook", lambda c: {**c, "edit_layers": "0,1"})
    with pytest.raises(CheckpointMismatchError, match=r"invalid codebook config \(TypeError: edit_layers must be a"):
        load_codebook(str(path.with_suffix("")), [0, 1])
    path, _ = saved(tmp_path, "codebook")
    with pytest.raises(CheckpointMismatchError, match=r"codebook\.safetensors: the codebook was trained on layers"):
        load_codebook(str(path.with_suffix("")), [0, 1, 2])


def test_a_checkpoint_of_another_kind_is_a_mismatch_error(tmp_path):
    """A valid AGE file handed to the CPM loader: no 'cpm' section, named."""
    path, _ = saved(tmp_path, "AGE")
    with pytest.raises(CheckpointMismatchError, match=r"AGE\.safetensors: invalid CPM config \(KeyError: no 'cpm'"):
        load_cpm(str(path.with_suffix("")))


def test_helpers_accept_json_forms_and_defaults():
    """Lists for tuples, ints for floats, None for optional fields; absent optional entries give the default."""
    values = {**AGE_CFG.to_dict(), "edit_layers": [0, 1], "groups": [[0, 1]], "mlp_hidden": None, "lr": 1}
    cfg = build_stored_config("x.safetensors", AGEConfig, values, "AGE")
    assert cfg.groups == ((0, 1),) and cfg.mlp_hidden is None and cfg.lr == 1
    assert stored_value("x.safetensors", {}, "homoglyphs", list[list[str]], "judge", default=[]) == []
    invalid = r"^x\.safetensors: invalid AGE config "
    with pytest.raises(CheckpointMismatchError, match=invalid + r"\(TypeError: mlp_hidden must be"):
        build_stored_config("x.safetensors", AGEConfig, {**values, "mlp_hidden": "4"}, "AGE")
    with pytest.raises(CheckpointMismatchError, match=invalid + r"\(KeyError: missing field\(s\) \['n_latent'\]"):
        build_stored_config("x.safetensors", AGEConfig, {k: v for k, v in values.items() if k != "n_latent"}, "AGE")
