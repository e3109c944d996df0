"""Profiles: ``profiles/<name>.yaml``, the papermill parameters of one size of the pipeline (smoke, tiny, ...).

Keys:

- ``description``: one line for people;
- ``run_dir``: the run folder (default ``results/<name>``); every output of the run goes under it;
- ``figures_dir``: tables and figures (default ``{run_dir}/papers_figures``); ``papers_figures`` makes an
  unmodified batch of this profile rewrite the committed folder;
- ``makes``: shipped artefacts under ``data/`` this profile regenerates on purpose (e.g. ``pretrain``:
  ``[data/latent/glyph32]``), checked as resolved paths; every other profile may not write under ``data/``
  (`tagelib.write_guard`: a run writes only under its ``run_dir`` or into what its profile makes);
- ``defaults``: values for every notebook that declares the key;
- ``notebooks``: per-notebook values, each of which the notebook must declare;
- ``skip``: notebooks this profile does not run (e.g. the glyph-only 00_data in the paper profiles);
- ``inputs``: inputs the runner builds into ``{run_dir}/inputs/`` before checking the batch (``paper-synthetic``:
  `tagelib.paper_synthetic.write_inputs`, the rehearsal's LoFGAN-format file and official-layout checkpoints).

String values may say ``{run_dir}``, replaced by the run folder of the run (so ``--set run_dir=...`` moves them).
"""

from __future__ import annotations

from typing import Any

import yaml

from tagelib.paths import NOTEBOOKS_DIR, PROFILES_DIR
from tagelib.write_guard import WriteRefused, check_makes

PROFILE_KEYS = {"description", "run_dir", "figures_dir", "makes", "defaults", "notebooks", "skip", "inputs"}
INPUT_BUILDERS = ("paper-synthetic",)
RUN_KEYS = ("run_dir", "figures_dir")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def available_notebooks() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def _parse(path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = ": ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
        raise SystemExit(f"{where}: invalid YAML: {problem}") from None


def load_profile(name: str) -> dict[str, Any]:
    """Read and check ``profiles/<name>.yaml``; errors name the file (and line for YAML errors) and list valid keys."""
    if name not in available_profiles():
        raise SystemExit(f"unknown profile {name!r}; valid: {available_profiles()}")
    path = PROFILES_DIR / f"{name}.yaml"
    profile = _parse(path)
    if profile is None:
        profile = {}
    if not isinstance(profile, dict):
        raise SystemExit(f"{path}: a profile is a mapping with keys {sorted(PROFILE_KEYS)}, got a {type(profile).__name__}")
    unknown = set(profile) - PROFILE_KEYS
    if unknown:
        raise SystemExit(f"{path}: unknown key(s) {sorted(unknown)}; valid: {sorted(PROFILE_KEYS)}")
    profile.setdefault("run_dir", f"results/{name}")
    profile.setdefault("figures_dir", "{run_dir}/papers_figures")
    for key in ("defaults", "notebooks"):
        profile[key] = profile.get(key) or {}
        if not isinstance(profile[key], dict):
            raise SystemExit(f"{path}: {key} must be a mapping, got {profile[key]!r}")
    for nb, values in profile["notebooks"].items():
        if not isinstance(values, dict):
            raise SystemExit(f"{path}: notebooks.{nb} must be a mapping of parameter: value, got {values!r}")
    makes = profile.setdefault("makes", [])
    if not isinstance(makes, list):
        raise SystemExit(f"{path}: makes must be a list of paths under data/, got {makes!r}")
    try:
        check_makes(makes, str(path))  # resolved paths, not string prefixes: data/../tagelib/x is refused
    except WriteRefused as e:
        raise SystemExit(str(e)) from None
    for key in RUN_KEYS:
        if not isinstance(profile[key], str) or not profile[key]:
            raise SystemExit(f"{path}: {key} must be a non-empty path, got {profile[key]!r}")
        per_notebook = [nb for nb, values in profile["notebooks"].items() if key in values]
        if key in profile["defaults"] or per_notebook:
            raise SystemExit(f"{path}: {key} is one per run; set it at the top level, not under defaults or notebooks")
    skip = profile.setdefault("skip", [])
    if not isinstance(skip, list) or not set(skip) <= set(available_notebooks()):
        raise SystemExit(f"{path}: skip must be a list of notebooks among {available_notebooks()}, got {skip!r}")
    if profile.setdefault("inputs", None) not in (None, *INPUT_BUILDERS):
        raise SystemExit(f"{path}: inputs={profile['inputs']!r}; valid: {list(INPUT_BUILDERS)}")
    unknown_nbs = set(profile["notebooks"]) - set(available_notebooks())
    if unknown_nbs:
        raise SystemExit(f"{path}: unknown notebook(s) {sorted(unknown_nbs)}; valid: {available_notebooks()}")
    return profile
