"""Notebook parameters checked before any kernel starts: types from the `parameters` cell, ranges by name.

Each notebook declares its parameters in one cell, ``name: type = default  # help`` (papermill's
inspection reads the type hint and the comment). The runner checks every value it will inject:

- its **type** against the hint (``bool``, ``int``, ``float``; an int is accepted for a float);
- its **range or format** from `RULES`, keyed by parameter name (names mean the same in every notebook);
  an int without a rule must be >= 0, a float without a rule must be finite and >= 0;
- layer indices against the latent space's number of W+ layers when the checkpoint already exists.

Errors name the notebook, the parameter, the value and what is valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import yaml

ABLATION_VARIANTS = ("base", "pseudo", "augment", "augment+pseudo", "no cross")  # tagelib.latent_ablation.VARIANTS
DATASET_NAMES = ("glyphs", "animal", "flower", "vggface", "synthetic", "folders")  # paper_data.DATASETS
ARCHITECTURES = ("age-1024", "psp-256", "paper-synthetic")  # latent.paper_latent_config
PROMPT_WORDS = ("bold", "light", "italic", "serif", "sans-serif", "monospace", "condensed", "wide")  # attribute_probe.ATTRIBUTES

TYPES = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}


class ParameterError(ValueError):
    """A parameter value that a notebook would reject or misuse."""


@dataclass(frozen=True)
class Rule:
    """`check(value)` is True for a valid value; `valid` says in words what is accepted."""

    valid: str
    check: Callable[[Any], bool]


def at_least(lo: float) -> Rule:
    return Rule(f">= {lo}", lambda v: v >= lo)


def positive() -> Rule:
    return Rule("finite and > 0", lambda v: math.isfinite(v) and v > 0)


def finite() -> Rule:
    return Rule("a finite number", lambda v: math.isfinite(v))


def one_of(*choices: Any) -> Rule:
    return Rule(f"one of {list(choices)}", lambda v: v in choices)


def int_list(text: str, sep: str = ",") -> list[int]:
    """Parse "0,1,2" as [0, 1, 2]; ValueError on anything else (empty items, non-integers)."""
    items = [t.strip() for t in text.split(sep)]
    if not items or any(not t.lstrip("-").isdigit() for t in items):
        raise ValueError(text)
    return [int(t) for t in items]


def _is_int_list(v: str, length: int | None, lo: int, unique: bool) -> bool:
    try:
        xs = int_list(v)
    except ValueError:
        return False
    return (length is None or len(xs) == length) and min(xs) >= lo and (not unique or len(set(xs)) == len(xs))


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def int_list_rule(length: int | None = None, lo: int = 1, unique: bool = False) -> Rule:
    n = f"{length} " if length else ""
    return Rule(f"{n}comma-separated integers >= {lo}" + (", no repeats" if unique else "") + ' (e.g. "'
                + ",".join(str(lo + i) for i in range(length or 3)) + '")',
                lambda v: _is_int_list(v, length, lo, unique))


def layer_groups_rule() -> Rule:
    return Rule('"|"-separated groups of comma-separated layer indices >= 0 (e.g. "0,1,2,3|4,5,6,7")',
                lambda v: all(_is_int_list(g, None, 0, True) for g in v.split("|")))


COUNT = at_least(1)
RULES: dict[str, Rule] = {
    # sizes and counts that must be at least one
    "threads": COUNT, "batch_size": COUNT, "age_batch": COUNT, "clm_batch": COUNT, "style_dim": COUNT,
    "dict_size": COUNT, "num_codes": COUNT, "knn_k": COUNT, "grid_styles": COUNT, "grid_categories": COUNT,
    "eval_images": COUNT, "target_images": at_least(3), "eval_pairs": COUNT, "max_styles": COUNT, "n_generate": at_least(2), "n_pairs": COUNT,
    "age_steps": COUNT, "clm_steps": COUNT, "sweep_steps": COUNT, "judge_batch": COUNT, "judge_embed": COUNT,
    "eval_generated": at_least(2), "eval_real": at_least(2), "episodes": Rule("0 (skip) or >= 2", lambda v: v == 0 or v >= 2), "episode_generated": COUNT,
    "clip_batch": at_least(2), "probe_batch": COUNT, "clip_width": COUNT, "clip_layers": COUNT,
    "clip_text_width": COUNT, "clip_embed": COUNT, "clip_patch": one_of(2, 4, 8, 16),
    "image_size": one_of(32, 64),
    "d_model": COUNT, "depth": COUNT, "heads": COUNT, "cpm_steps": COUNT, "cpm_batch": COUNT, "max_shots": COUNT,
    "decode_steps": COUNT, "throughput_batch": COUNT, "sweep_generated": at_least(2), "psm_steps": COUNT,
    "psm_batch": COUNT, "captions_per_style": COUNT, "prompt_samples": COUNT, "grid_samples": COUNT,
    # rates and temperatures
    "lr": positive(), "refine_lr": positive(), "age_lr": positive(), "judge_lr": positive(),
    "clip_lr": positive(), "probe_lr": positive(), "cpm_lr": positive(), "psm_lr": positive(),
    "dropout": Rule("a number in [0, 1)", lambda v: 0 <= v < 1), "prompt_dropout": Rule("a number in [0, 1)", lambda v: 0 <= v < 1),
    "temperature_sweep": Rule('comma-separated numbers > 0 (e.g. "0.5,1")', lambda v: all(_is_float(t) and float(t) > 0 for t in v.split(","))),
    "knn_candidates": int_list_rule(), "guidance_sweep": Rule('comma-separated finite numbers (e.g. "1,3")',
                                                              lambda v: all(_is_float(t) for t in v.split(","))), "resample_sweep": int_list_rule(lo=0),
    "augment": Rule("a number in [0, 1]", lambda v: 0 <= v <= 1),
    "pseudo_fraction": Rule("a number in [0, 1]", lambda v: 0 <= v <= 1),
    "val_fraction": Rule("a number in (0, 1)", lambda v: 0 < v < 1), "collapse_quantile": Rule("a number in (0, 1)", lambda v: 0 < v < 1), "knn_temperature": positive(), "alpha": finite(),
    # structured strings
    "gen_widths": int_list_rule(4), "judge_widths": int_list_rule(), "probe_widths": int_list_rule(), "alpha_sweep": Rule(
        'comma-separated finite numbers (e.g. "0.25,0.5")', lambda v: all(_is_float(t) for t in v.split(","))), "enc_units": int_list_rule(4), "enc_widths": int_list_rule(4),
    "sweep_sizes": int_list_rule(), "edit_layers": int_list_rule(lo=0, unique=True),
    "layer_sets": layer_groups_rule(), "age_groups": layer_groups_rule(),
    # paths must not be empty
    "run_dir": Rule("a non-empty path", bool), "figures_dir": Rule("a non-empty path", bool),
    "data_dir": Rule("a non-empty path", bool), "checkpoint": Rule("a non-empty path", bool),
    "judge": Rule("a non-empty path", bool), "clip": Rule("a non-empty path", bool),
    "codebook": Rule("a non-empty path", bool), "cpm": Rule("a non-empty path", bool),
    "age_checkpoint": Rule("a non-empty path", bool),
    "decode_order": one_of("confidence", "random"),
    "device": one_of("auto", "cpu", "cuda"), "train_processes": COUNT,
    "fd_extractors": Rule('comma-separated FD features starting with judge, among judge, vgg16, inception '
                          '(e.g. "judge,vgg16,inception")',
                          lambda v: v.split(",")[0] == "judge" and all(t in ("judge", "vgg16", "inception") for t in v.split(","))),
    "dataset": one_of(*DATASET_NAMES), "architecture": one_of(*ARCHITECTURES),
    "prompts": Rule("distinct comma-separated words (glyphs: among " + ", ".join(PROMPT_WORDS) + ")",
                    lambda v: bool(v) and all(t.strip() for t in v.split(","))
                    and len({t.strip() for t in v.split(",")}) == len(v.split(","))),
    "ablation_variants": Rule(f"comma-separated names among {list(ABLATION_VARIANTS)}",
                              lambda v: all(t in ABLATION_VARIANTS for t in v.split(","))),
}
LAYER_PARAMETERS = ("edit_layers", "layer_sets", "age_groups")  # W+ layer indices, checked against n_latent


def parse_value(raw: str, type_name: str) -> Any:
    """A `--set` value as the parameter's type wants it: text stays text for ``str`` parameters (quotes
    removed), anything else is read as YAML (``3``, ``0.5``, ``true``) and type-checked afterwards."""
    if type_name == "str":
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
        return yaml.safe_load(raw) if quoted else raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _describe(type_name: str, rule: Rule | None) -> str:
    return f"{'an' if type_name == 'int' else 'a'} {type_name}" + (f" {rule.valid}" if rule else "")


def _rule_for(name: str, type_name: str) -> Rule | None:
    rule = RULES.get(name)
    if rule is None and type_name == "int":
        return at_least(0)
    if rule is None and type_name == "float":
        return Rule("finite and >= 0", lambda v: math.isfinite(v) and v >= 0)
    return rule


def check_value(notebook: str, name: str, value: Any, spec: dict[str, Any]) -> None:
    """Raise ParameterError unless `value` has the declared type and passes the rule for `name`."""
    type_name = spec.get("inferred_type_name") or "None"
    help_text = f" ({spec['help']})" if spec.get("help") else ""
    where, rule = f"{notebook}: {name}={value!r}", _rule_for(name, type_name)
    allowed = TYPES.get(type_name)
    if allowed is not None and (isinstance(value, bool) and type_name != "bool" or not isinstance(value, allowed)):
        raise ParameterError(f"{where} is a {type(value).__name__}; {name} must be {_describe(type_name, rule)}{help_text}")
    if rule is not None and not rule.check(value):
        raise ParameterError(f"{where} is not valid; {name} must be {_describe(type_name, rule)}{help_text}")


def check_layers(notebook: str, params: dict[str, Any], n_latent: int, source: str) -> None:
    """Layer-index parameters must name layers of a latent space with `n_latent` W+ layers."""
    for name in LAYER_PARAMETERS:
        if name in params:
            indices = [i for group in str(params[name]).split("|") for i in int_list(group)]
            bad = sorted({i for i in indices if not 0 <= i < n_latent})
            if bad:
                raise ParameterError(f"{notebook}: {name}={params[name]!r} names layer(s) {bad}, but {source} has "
                                     f"{n_latent} W+ layers; valid indices: 0..{n_latent - 1}")


def check_relations(notebook: str, values: dict[str, Any]) -> None:
    """Constraints between parameters of one notebook (`values`: defaults with the injected values on top)."""
    if values.get("dataset") == "glyphs" and "prompts" in values:
        unknown = [t.strip() for t in values["prompts"].split(",") if t.strip() not in PROMPT_WORDS]
        if unknown:
            raise ParameterError(f"{notebook}: prompts={values['prompts']!r}: {unknown} have no attribute probe; glyph "
                                 f"prompts are among {list(PROMPT_WORDS)}")
        if not values.get("attribute_probe"):
            raise ParameterError(f"{notebook}: glyph prompts are scored by the attribute probe: set attribute_probe "
                                 "(made by 00_clip)")
    if "resample" in values and "edit_layers" in values and values["resample"] > len(int_list(values["edit_layers"])):
        raise ParameterError(f"{notebook}: resample={values['resample']} exceeds the {len(int_list(values['edit_layers']))} "
                             f"edited layers of edit_layers={values['edit_layers']!r}")
    if "d_model" in values and "heads" in values and values["d_model"] % values["heads"]:
        raise ParameterError(f"{notebook}: d_model={values['d_model']} must be divisible by heads={values['heads']}")
    if "age_groups" in values and "edit_layers" in values:
        groups = sorted(i for g in values["age_groups"].split("|") for i in int_list(g))
        if groups != sorted(int_list(values["edit_layers"])):
            raise ParameterError(f"{notebook}: age_groups={values['age_groups']!r} must split edit_layers="
                                 f"{values['edit_layers']!r} into groups, every edited layer in exactly one group")
