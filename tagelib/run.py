"""The papermill batch: run the numbered notebooks in order with a profile's parameters.

    python -m tagelib.run --profile tiny                 # all notebooks -> results/tiny/notebooks/
    python -m tagelib.run --profile smoke --prepare-only # parameterised, unexecuted copies (for nbval)
    python -m tagelib.run --profile tiny --only 00_data --set seed=3

A profile is ``profiles/<name>.yaml``: ``run_dir`` and ``figures_dir`` (given to every notebook that
declares them), ``defaults`` (given to every notebook that declares the key) and ``notebooks``
(per-notebook values, each of which the notebook must declare). Notebooks never see the profile's name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tagelib.atomic import write_text_atomic
from tagelib.paths import NOTEBOOKS_DIR, PROFILES_DIR, resolve

PROFILE_KEYS = {"description", "run_dir", "figures_dir", "defaults", "notebooks"}


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def available_notebooks() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def load_profile(name: str) -> dict[str, Any]:
    """Read and validate ``profiles/<name>.yaml``; unknown names and keys list the valid ones."""
    if name not in available_profiles():
        raise SystemExit(f"unknown profile {name!r}; valid: {available_profiles()}")
    profile = yaml.safe_load((PROFILES_DIR / f"{name}.yaml").read_text()) or {}
    unknown = set(profile) - PROFILE_KEYS
    if unknown:
        raise SystemExit(f"profile {name!r}: unknown key(s) {sorted(unknown)}; valid: {sorted(PROFILE_KEYS)}")
    profile.setdefault("run_dir", f"results/{name}")
    profile.setdefault("figures_dir", f"{profile['run_dir']}/papers_figures")
    profile.setdefault("defaults", {})
    profile.setdefault("notebooks", {})
    unknown_nbs = set(profile["notebooks"]) - set(available_notebooks())
    if unknown_nbs:
        raise SystemExit(f"profile {name!r} names unknown notebook(s) {sorted(unknown_nbs)}; valid: {available_notebooks()}")
    return profile


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The notebook's ``parameters`` cell, as papermill reads it (name -> inferred type, default, help)."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def notebook_parameters(profile: dict[str, Any], name: str, declared: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge run folder, defaults, per-notebook values and overrides into the values this notebook declares."""
    shared = {"run_dir": profile["run_dir"], "figures_dir": profile["figures_dir"], **profile["defaults"]}
    params = {k: v for k, v in shared.items() if k in declared}
    specific = {**profile["notebooks"].get(name, {}), **overrides.get(name, {})}
    unknown = sorted(set(specific) - set(declared))
    if unknown:
        raise SystemExit(f"{name}: unknown parameter(s) {unknown}; valid: {sorted(declared)}")
    params.update({k: v for k, v in overrides.get("*", {}).items() if k in declared})
    params.update(specific)  # a notebook-specific value wins over a global one
    return params


def check_global_keys(profile: dict[str, Any], overrides: dict[str, dict[str, Any]], declared: dict[str, set]) -> None:
    """Profile defaults and global --set keys must be declared by at least one notebook (typos stop the batch)."""
    known = set().union(*declared.values()) if declared else set()
    for where, keys in (("profile defaults", profile["defaults"]), ("--set", overrides.get("*", {}))):
        unknown = sorted(set(keys) - known)
        if unknown:
            raise SystemExit(f"{where}: no notebook declares {unknown}; valid: {sorted(known)}")


def parse_overrides(items: list[str], notebooks: list[str]) -> dict[str, dict[str, Any]]:
    """``--set key=value`` (every notebook that declares key) or ``--set 01_latent_space.key=value``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        target, _, param = key.rpartition(".")
        if target and target not in notebooks:
            raise SystemExit(f"--set {item!r}: unknown notebook {target!r}; valid: {notebooks}")
        out.setdefault(target or "*", {})[param] = yaml.safe_load(raw)
    return out


def run(profile_name: str, only: list[str] | None = None, prepare_only: bool = False, overrides: list[str] = ()) -> Path:
    """Execute (or only parameterise) the notebooks in order; returns the folder of output notebooks."""
    import papermill
    from tqdm.auto import tqdm

    profile = load_profile(profile_name)
    names = available_notebooks()
    if only:
        bad = sorted(set(only) - set(names))
        if bad:
            raise SystemExit(f"--only: unknown notebook(s) {bad}; valid: {names}")
        names = [n for n in names if n in only]
    parsed = parse_overrides(list(overrides), available_notebooks())
    declared = {name: set(declared_parameters(NOTEBOOKS_DIR / f"{name}.ipynb")) for name in names}
    check_global_keys(profile, parsed, declared)
    plan = []
    for name in names:  # validate every notebook's parameters before running anything
        src = NOTEBOOKS_DIR / f"{name}.ipynb"
        plan.append((name, src, notebook_parameters(profile, name, declared[name], parsed)))
    out_dir = resolve(profile["run_dir"]) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    bar = tqdm(plan, desc=f"profile {profile_name}", unit="notebook", disable=prepare_only)
    for name, src, params in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        papermill.execute_notebook(
            str(src), str(out_dir / src.name), parameters=params, prepare_only=prepare_only,
            cwd=str(NOTEBOOKS_DIR), progress_bar=False, log_output=False,
        )
        timings[name] = round(time.perf_counter() - start, 2)
        if not prepare_only:
            tqdm.write(f"{name}: {timings[name]:.1f} s -> {out_dir / src.name}")
    if not prepare_only:
        summary = {"profile": profile_name, "seconds": timings, "total_seconds": round(sum(timings.values()), 2)}
        name = "run_summary.json" if not only else f"run_summary_{'+'.join(names)}.json"
        write_text_atomic(out_dir.parent / name, json.dumps(summary, indent=2))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, help=f"one of {available_profiles()}")
    parser.add_argument("--only", nargs="+", help="notebook names (e.g. 00_data) to run, in order")
    parser.add_argument("--prepare-only", action="store_true", help="write parameterised notebooks, do not execute")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[NB.]KEY=VALUE")
    args = parser.parse_args(argv)
    run(args.profile, args.only, args.prepare_only, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
