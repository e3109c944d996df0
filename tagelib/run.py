"""The papermill batch: run the numbered notebooks in order with a profile's parameters.

    python -m tagelib.run --profile tiny                 # all notebooks -> results/tiny/notebooks/
    python -m tagelib.run --profile smoke --prepare-only # parameterised copies -> results/smoke/prepared/ (nbval)
    python -m tagelib.run --profile tiny --only 00_data --set seed=3

A profile is ``profiles/<name>.yaml`` (`tagelib.profiles`). Each notebook's values, later ones winning:

    notebook defaults < profile `defaults` < profile `notebooks.<NB>` < --set key=v < --set NB.key=v

``run_dir`` and ``figures_dir`` are per run (``--set run_dir=...`` moves every output, since profile values
may say ``{run_dir}``). Everything is checked before any kernel starts: every key is declared by a notebook
it reaches, every value has its declared type and a valid range (`tagelib.params`), files a notebook reads
exist or are made earlier in the batch, and every path the batch writes obeys the write rule
(`tagelib.write_guard`): under ``run_dir``, or into a shipped artefact under ``data/`` that the profile's
``makes`` names (unmodified batch only). ``papers_figures/`` is rewritten only by an unmodified batch of a
profile that publishes there (``make reproduce``); a run with ``--only`` or ``--set`` writes its figures under
its run folder. The batch holds ``<run_dir>/.tage-run.lock`` from its checks to its end (`tagelib.run_lock`):
a second batch into the same folder is refused at once. An executed notebook is published only when it ran to
the end; a failed one is kept beside the last good copy as ``NN_name.failed.ipynb``. Notebooks never see the
profile's name.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tagelib import params as P
from tagelib import write_guard as W
from tagelib.atomic import write_text_atomic
from tagelib.folder_artefact import MANIFEST, FolderArtefactError, is_artefact, verify
from tagelib.paths import DATA_DIR, NOTEBOOKS_DIR, REPO_ROOT, checkpoint_file, resolve
from tagelib.profiles import RUN_KEYS, available_notebooks, available_profiles, load_profile
from tagelib.run_lock import HELD_ENV, RunFolderBusy, RunLock
from tagelib.shipped_method import SHIPPED
from tagelib.timing import read_stages, timing_table

# A notebook writes the checkpoint named by the key when it declares the step count of the value and that
# count is > 0 (notebook 01 trains E and G and saves them to `checkpoint`); otherwise it reads it.
WRITTEN_WHEN = {k: steps for k, steps in W.WRITTEN_PATHS.items() if steps}
MADE_BY = {"checkpoint": "01_latent_space (train_steps > 0), or `make pretrain` for data/latent/glyph32",
           "judge": "00_judge (judge_steps > 0), or `make judge` for data/judge/glyph32_judge",
           "clip": "00_clip (clip_steps > 0), or `make clip` for data/clip/glyph32_clip",
           "attribute_probe": "00_clip (probe_steps > 0), or `make clip` for data/clip/glyph32_attributes",
           "data_dir": "`make dataset` (see data/README.md)"}
RUN_FOLDER_EXAMPLE = {"checkpoint": "latent/glyph32", "judge": "judge/glyph32_judge", "clip": "clip/glyph32_clip",
                      "attribute_probe": "clip/glyph32_attributes", "ship_as": "method/module",
                      "ship_codes_as": "method/shot_codes"}  # instead of data/
# Run outputs a notebook reads from an earlier notebook (parameter -> the notebook that writes it into its run folder).
MADE_IN_RUN = {key: maker for key, (_, maker) in SHIPPED.items()}  # each has a shipped fallback in data/method
# Artefacts that are folders, not `<stem>.safetensors`: key -> the kind its manifest names (`tagelib.folder_artefact`;
# open_clip's local-dir format, published by one rename, `tagelib.clip_glyph.save_clip`).
FOLDER_ARTEFACTS = {"clip": "glyph CLIP (open_clip local-dir)"}  # = clip_glyph.CLIP_KIND


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The notebook's ``parameters`` cell, as papermill reads it (name -> inferred type, default, help)."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


@dataclass
class Plan:
    """What a batch will do, fully checked: notebooks in order with their parameters, and where outputs go."""

    profile: str
    run_dir: str
    figures_dir: str
    notebooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    publishes: bool = False  # this unmodified batch rewrites the committed papers_figures/
    makes: list[Path] = field(default_factory=list)  # shipped artefacts this unmodified batch may rewrite
    lock: RunLock | None = None  # held from the plan's check of run_dir to the end of the batch (`build_plan(lock=...)`)
    selection: tuple[list[str] | None, list[str]] = (None, [])  # --only and --set as given (the run summary)

    @property
    def out_dir(self) -> Path:
        """Executed notebooks; `prepared_dir` holds parameterised, unexecuted copies (--prepare-only, nbval)."""
        return resolve(self.run_dir) / "notebooks"

    @property
    def prepared_dir(self) -> Path:
        return resolve(self.run_dir) / "prepared"


# ----------------------------------------------------------------------------- --set parsing


def parse_overrides(items: list[str], notebooks: list[str]) -> dict[str, dict[str, str]]:
    """``--set key=value`` (every selected notebook that declares key) or ``--set NB.key=value``.

    Values stay text here; each is read as its parameter's declared type when the plan is built.
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        target, dot, param = key.rpartition(".")
        if dot and not target:
            raise SystemExit(f"--set {item!r}: empty notebook name before '.'; use --set {param}=... or --set NB.{param}=...")
        if not param.isidentifier():
            raise SystemExit(f"--set {item!r}: {param!r} is not a parameter name")
        if target and target not in notebooks:
            raise SystemExit(f"--set {item!r}: unknown or unselected notebook {target!r}; selected: {notebooks}")
        if target and param in RUN_KEYS:
            raise SystemExit(f"--set {item!r}: {param} is one per run; use --set {param}=...")
        out.setdefault(target or "*", {})[param] = raw
    return out


# ----------------------------------------------------------------------------- building the plan


def _did_you_mean(unknown: list[str], valid) -> str:
    close = {u: difflib.get_close_matches(u, sorted(valid), n=1) for u in unknown}
    hints = [f"{u!r} -> {m[0]!r}" for u, m in close.items() if m]
    return f" (did you mean {', '.join(hints)}?)" if hints else ""


def _default(spec: dict[str, Any]) -> Any:
    try:
        return ast.literal_eval(spec["default"])
    except (ValueError, SyntaxError, KeyError):
        return None


def _with_run_dir(value: Any, run_dir: str) -> Any:
    return value.replace("{run_dir}", run_dir) if isinstance(value, str) else value


def _artefact_file(key: str, target: Path) -> Path:
    """The file whose presence means the artefact named by `key` exists (`<stem>.safetensors`, or a folder's manifest)."""
    return target / MANIFEST if key in FOLDER_ARTEFACTS else checkpoint_file(target)


def notebook_parameters(profile: dict[str, Any], name: str, declared: dict[str, Any],
                        overrides: dict[str, dict[str, str]], run_dir: str, figures_dir: str) -> dict[str, Any]:
    """The values injected into one notebook, by the documented precedence, `{run_dir}` filled in, each checked."""
    unknown = sorted(set(profile["notebooks"].get(name, {})) - set(declared))
    unknown += sorted(set(overrides.get(name, {})) - set(declared))
    if unknown:
        raise SystemExit(f"{name}: unknown parameter(s) {unknown}{_did_you_mean(unknown, declared)}; "
                         f"valid: {sorted(declared)}")
    values: dict[str, Any] = {"run_dir": run_dir, "figures_dir": figures_dir}
    values.update(profile["defaults"])
    values.update(profile["notebooks"].get(name, {}))
    for scope in ("*", name):
        for key, raw in overrides.get(scope, {}).items():
            if key in declared and key not in RUN_KEYS:
                values[key] = P.parse_value(raw, declared[key].get("inferred_type_name"))
    params = {k: _with_run_dir(v, run_dir) for k, v in values.items() if k in declared}
    for key, value in params.items():
        P.check_value(name, key, value, declared[key])
    return params


def _check_global_keys(profile: dict[str, Any], overrides: dict[str, dict[str, str]],
                       declared_all: dict[str, dict], selected: list[str]) -> None:
    """Profile defaults must be declared by some notebook; global --set keys by some *selected* notebook."""
    everywhere = set().union(*map(set, declared_all.values()))
    unknown = sorted(set(profile["defaults"]) - everywhere)
    if unknown:
        raise SystemExit(f"profile defaults: no notebook declares {unknown}{_did_you_mean(unknown, everywhere)}; "
                         f"valid: {sorted(everywhere)}")
    reached = set().union(*(set(declared_all[n]) for n in selected))
    unknown = sorted(set(overrides.get("*", {})) - reached)
    if unknown:
        raise SystemExit(f"--set: no selected notebook declares {unknown}{_did_you_mean(unknown, reached)}; the selected notebooks "
                         f"({', '.join(selected)}) declare: {sorted(reached)}")


def _run_folders(profile_name: str, profile: dict[str, Any], overrides: dict[str, dict[str, str]],
                 modified: bool, notes: list[str]) -> tuple[str, str, bool]:
    """run_dir and figures_dir of this run, checked by the write rule (`tagelib.write_guard`), and whether the batch
    publishes: papers_figures/ only for an unmodified publishing batch; otherwise figures go under the run folder."""
    run_dir = overrides.get("*", {}).get("run_dir", profile["run_dir"])
    figures_dir = _with_run_dir(overrides.get("*", {}).get("figures_dir", profile["figures_dir"]), run_dir)
    for key, value in (("run_dir", run_dir), ("figures_dir", figures_dir)):
        if not value.strip():
            raise SystemExit(f"--set {key}=: {key} must be a non-empty path")
    publishing = resolve(figures_dir).resolve() == W.PUBLISHED_FIGURES.resolve()
    if publishing and modified:
        if "figures_dir" in overrides.get("*", {}):
            raise SystemExit("--set figures_dir=papers_figures: the committed papers_figures/ is rewritten only by "
                             "the unmodified batch (`make reproduce`); drop --only/--set, or choose another folder")
        figures_dir = f"{run_dir}/papers_figures"
        notes.append(f"--only/--set given: figures and tables go to {figures_dir}, not papers_figures/ "
                     f"(only the unmodified `--profile {profile_name}` batch rewrites papers_figures/)")
        publishing = False
    try:
        W.check_run_dir(run_dir)
        if not publishing:
            W.figures_folder(figures_dir, run_dir)
    except W.WriteRefused as e:
        raise SystemExit(str(e)) from None
    return run_dir, figures_dir, publishing


def _prompts():
    """tagelib.prompts, imported only when a notebook reads a CLIP (it imports torch and open_clip)."""
    from tagelib import prompts

    return prompts


def _check_files(plan: Plan, profile: dict[str, Any], declared: dict[str, dict], effective: dict[str, dict],
                 modified: bool) -> None:
    """Written paths: never shipped data unless an unmodified batch of the profile that makes it; read paths:
    exist or are made earlier in the batch."""
    made_here: list[Path] = []
    checked_data: set[Path] = set()
    for name, _ in plan.notebooks:
        values = effective[name]
        for key, step_key in WRITTEN_WHEN.items():
            if key not in declared[name]:
                continue
            target = resolve(values[key])
            flag = values.get(step_key)
            writes = step_key in declared[name] and (bool(flag) if isinstance(flag, str) else (flag or 0) > 0)
            if key in ("ship_as", "ship_codes_as") and not writes:
                continue  # "": the trained module stays in the run folder only
            writes |= key == "checkpoint" and bool(values.get("import_checkpoint"))  # notebook 01 imports into it
            if writes:
                _check_written(plan, profile, name, key, values, target, modified)
                if _artefact_file(key, target).exists() and "overwrite" in declared[name] and not values.get("overwrite"):
                    raise SystemExit(f"{name}: {key}={values[key]!r} exists and overwrite is False; "
                                     f"set {name}.overwrite=true to retrain over it, or choose another {key}")
                made_here.append(target)
            elif key == "checkpoint":
                _check_readable_checkpoint(name, values, target, made_here)
            elif key == "attribute_probe" and not values[key]:
                continue  # photographs: no probe (tagelib.prompts)
            elif key == "clip" and _prompts().is_open_clip_name(values[key]):
                continue  # a model by open_clip name (ViT-B-32); its weights: clip_pretrained
            elif not any(W.same_artefact(target, m) for m in made_here) and not _artefact_file(key, target).is_file():
                raise SystemExit(f"{name}: {key}={values[key]!r} does not exist ({_artefact_file(key, target)}); it is made "
                                 f"by {MADE_BY[key]} — run that notebook first, in this batch or with the same run_dir")
            elif key in FOLDER_ARTEFACTS and not any(W.same_artefact(target, m) for m in made_here):
                try:  # a folder read as it is: every file against its manifest, before any kernel starts
                    verify(target, FOLDER_ARTEFACTS[key])
                except FolderArtefactError as e:
                    raise SystemExit(f"{name}: {key}={values[key]!r}: {e}") from None
        for key, maker in MADE_IN_RUN.items():
            earlier = [n for n, _ in plan.notebooks[:[n for n, _ in plan.notebooks].index(name)]]
            if key in values and maker not in earlier and not checkpoint_file(resolve(values[key])).is_file():
                shipped = SHIPPED[key][0]
                if not checkpoint_file(shipped).is_file():
                    raise SystemExit(f"{name}: {key}={values[key]!r} does not exist ({checkpoint_file(resolve(values[key]))}) "
                                     f"and neither does the shipped {checkpoint_file(shipped)}; it is made by notebook "
                                     f"{maker} — run it first, in this batch or with the same run_dir")
                plan.notes.append(f"{name}: {key}={values[key]!r} is not made in this run folder; the notebook reads "
                                  f"the shipped {shipped.relative_to(REPO_ROOT)} instead")
        is_file = values.get("dataset", "glyphs") not in ("glyphs", "folders")  # a LoFGAN .npy
        data = resolve(values["data_dir"]) if "data_dir" in values else None
        if data is not None and not (data.is_file() if is_file else data.is_dir()):
            made_by = MADE_BY["data_dir"] if values.get("dataset", "glyphs") == "glyphs" else (
                "the paper's public files: `python data/prepare_paper_datasets.py` says where they are")
            raise SystemExit(f"{name}: data_dir={values['data_dir']!r} does not exist (dataset="
                             f"{values.get('dataset', 'glyphs')!r} needs a {'file' if is_file else 'folder'}); it is made by {made_by}")
        if data is not None and is_file and data not in checked_data:
            _check_lofgan_file(name, values["data_dir"], data)
            checked_data.add(data)
        if values.get("import_checkpoint") and not resolve(values["import_checkpoint"]).is_file():
            raise SystemExit(f"{name}: import_checkpoint={values['import_checkpoint']!r} does not exist; download the "
                             "official pSp / AGE checkpoint (README, \"Paper datasets on a GPU\")")
        pretrained = str(values.get("clip_pretrained") or "")
        if pretrained and _prompts().names_a_weights_file(pretrained) and not resolve(pretrained).is_file():
            raise SystemExit(f"{name}: clip_pretrained={pretrained!r} is not a file; give open_clip's pretrained tag "
                             "(e.g. openai, downloaded on first use) or the path of the downloaded weights")
        if "inception" in str(values.get("fd_extractors", "")).split(","):
            from tagelib.metrics import INCEPTION_FILE

            if not (resolve(values.get("inception_dir") or ".") / INCEPTION_FILE).is_file():
                raise SystemExit(f"{name}: fd_extractors={values['fd_extractors']!r} asks for FID, but "
                                 f"{resolve(values.get('inception_dir') or '.') / INCEPTION_FILE} does not exist; put "
                                 f"clean-fid's Inception-v3 file there (README, \"Paper datasets on a GPU\") or drop inception")
        compare = resolve(values["compare_checkpoint"]) if values.get("compare_checkpoint") else None
        if compare and not any(W.same_artefact(compare, m) for m in made_here) and not checkpoint_file(compare).is_file():
            raise SystemExit(f"{name}: compare_checkpoint={values['compare_checkpoint']!r} does not exist "
                             f"({checkpoint_file(resolve(values['compare_checkpoint']))}); give a latent space made by "
                             f"{MADE_BY['checkpoint']}, or \"\" to show no comparison")
        if "data_dir" in values and "image_size" in values:
            images = resolve(values["data_dir"]) / f"glyphs{values['image_size']}.npz"
            if not images.is_file():
                raise SystemExit(f"{name}: image_size={values['image_size']} needs {images}, which does not exist; "
                                 f"build it with `python -m tagelib.glyphs.build --size {values['image_size']}` (data/README.md)")


def _check_lofgan_file(name: str, value: str, path: Path) -> None:
    """A LoFGAN .npy is read as it will be (header against the file size, dtype, sampled images), before any kernel."""
    from tagelib.paper_data import open_lofgan  # numpy and torch: only for the paper datasets

    try:
        open_lofgan(path, None)
    except ValueError as e:
        raise SystemExit(f"{name}: data_dir={value!r} cannot be used: {e}\n  check it with "
                         f"`python data/prepare_paper_datasets.py <dataset> {value}`") from None


def _check_written(plan: Plan, profile: dict[str, Any], name: str, key: str, values: dict[str, Any],
                   target: Path, modified: bool) -> None:
    """A written artefact obeys the write rule (`tagelib.write_guard`): under the run folder, or under data/ only
    an artefact the profile `makes`, from an unmodified batch; an existing folder artefact is replaced only when its
    manifest says it is one of that kind."""
    if key in FOLDER_ARTEFACTS and (target.exists() or target.is_symlink()) and not is_artefact(target, FOLDER_ARTEFACTS[key]):
        raise SystemExit(f"{name}: {key}={values[key]!r} exists ({target.resolve()}) and is not a {FOLDER_ARTEFACTS[key]} "
                         f"artefact folder (no valid {MANIFEST}, or other files in it); training would replace it, so "
                         f"the batch stops here. Choose a new path, e.g. {key}={plan.run_dir}/{RUN_FOLDER_EXAMPLE[key]}")
    if not W.inside(target, DATA_DIR):
        try:
            W.check_write(key, values[key], plan.run_dir)
        except W.WriteRefused as e:
            raise SystemExit(f"{name}: {e}") from None
        return
    instead = f"--set {name}.{key}={plan.run_dir}/{RUN_FOLDER_EXAMPLE[key]}"
    if not any(W.same_artefact(target, resolve(m)) for m in profile["makes"]):
        own = f"; it makes only {profile['makes']}" if profile["makes"] else ""
        raise SystemExit(
            f"{name}: {key}={values[key]!r} with {WRITTEN_WHEN[key]}={values[WRITTEN_WHEN[key]]} would write into shipped "
            f"data under data/, which profile {plan.profile!r} may not write{own}.\n"
            f"  To regenerate a shipped artefact on purpose, run the profile made for it "
            f"(`make pretrain` for data/latent/glyph32, `make judge` for data/judge/glyph32_judge, `make clip` for "
            f"data/clip/*); otherwise write "
            f"under the run folder, e.g. {instead}")
    if modified:
        raise SystemExit(
            f"{name}: {key}={values[key]!r} is the shipped artefact profile {plan.profile!r} makes, but --set "
            f"changes this batch; shipped files are regenerated only as the profile says (`make pretrain`, `make judge`, "
            f"`make clip`). "
            f"To experiment, write under the run folder: {instead}")


def _check_readable_checkpoint(name: str, values: dict[str, Any], target: Path, made_here: list[Path]) -> None:
    """The checkpoint a notebook loads exists (or an earlier notebook makes it); its layers fit edit_layers."""
    if any(W.same_artefact(target, m) for m in made_here):
        return  # made earlier in this batch: its layer count is checked when it is loaded
    path = checkpoint_file(target)
    if not path.is_file():
        raise SystemExit(f"{name}: checkpoint={values['checkpoint']!r} does not exist ({path}); it is made by "
                         f"{MADE_BY['checkpoint']} — run that notebook first, in this batch or with the same run_dir")
    if not any(k in values for k in P.LAYER_PARAMETERS):
        return
    from tagelib.checkpoint_io import CheckpointError, read_checkpoint_config  # torch: only when needed
    from tagelib.stylegan2 import GeneratorConfig

    try:
        n_latent = GeneratorConfig.from_dict(read_checkpoint_config(path)["generator"]).n_latent
    except (CheckpointError, KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"{name}: checkpoint {path} cannot be read as a latent space ({type(e).__name__}: {e})") from None
    P.check_layers(name, values, n_latent, f"checkpoint {values['checkpoint']}")


def build_plan(profile_name: str, only: list[str] | None = None, overrides: list[str] = (), lock: str = "") -> Plan:
    """Check everything about a batch without running it; any problem is a SystemExit with the reason.

    lock: when given (the command line, recorded in the lock file), the run folder's lock is taken as soon as run_dir
    is checked, before anything is written into it (the paper-synthetic inputs), and held in `plan.lock` for the
    caller to release; a check that fails later releases it.
    """
    try:
        return _build_plan(profile_name, only, list(overrides), lock)
    except P.ParameterError as e:
        raise SystemExit(str(e)) from None


def _build_plan(profile_name: str, only: list[str] | None, overrides: list[str], lock: str) -> Plan:
    profile = load_profile(profile_name)
    names = available_notebooks()
    if only:
        bad = sorted(set(only) - set(names))
        if bad:
            raise SystemExit(f"--only: unknown notebook(s) {bad}; valid: {names}")
        skipped = sorted(set(only) & set(profile["skip"]))
        if skipped:
            raise SystemExit(f"--only {skipped}: profile {profile_name} does not run them (its `skip`)")
        names = [n for n in names if n in only]
    names = [n for n in names if n not in profile["skip"]]
    parsed = parse_overrides(overrides, names)
    declared_all = {n: declared_parameters(NOTEBOOKS_DIR / f"{n}.ipynb") for n in available_notebooks()}
    _check_global_keys(profile, parsed, declared_all, names)
    notes: list[str] = []
    run_dir, figures_dir, publishes = _run_folders(profile_name, profile, parsed, bool(only or overrides), notes)
    try:
        makes = [] if overrides else W.check_makes(profile["makes"], f"profiles/{profile_name}.yaml")
    except W.WriteRefused as e:
        raise SystemExit(str(e)) from None
    plan = Plan(profile_name, run_dir, figures_dir, notes=notes, publishes=publishes, makes=makes,
                selection=(only, overrides))
    if lock:
        try:
            plan.lock = RunLock(W.check_run_dir(run_dir), lock).acquire()
        except RunFolderBusy as e:
            raise SystemExit(str(e)) from None
        notes += [plan.lock.note] if plan.lock.note else []
    try:
        if profile["inputs"] == "paper-synthetic":  # built first, so that the file checks below find them
            from tagelib.paper_synthetic import write_inputs

            write_inputs(W.make_run_folder(plan.run_dir) / "inputs")
        effective = {}
        for name in names:
            params = notebook_parameters(profile, name, declared_all[name], parsed, plan.run_dir, plan.figures_dir)
            plan.notebooks.append((name, params))
            effective[name] = {k: _default(spec) for k, spec in declared_all[name].items()} | params
            P.check_relations(name, effective[name])
        _check_files(plan, profile, {n: declared_all[n] for n in names}, effective, modified=bool(overrides))
    except BaseException:
        if plan.lock is not None:
            plan.lock.release()
        raise
    return plan


# ----------------------------------------------------------------------------- executing it


def _ipc_kernel_manager() -> type:
    """Kernels talk to the runner over Unix-domain sockets (IPC) in Jupyter's private runtime folder, not over
    unencrypted TCP on localhost (which ipykernel rightly warns about once per notebook)."""
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(parents=True, exist_ok=True)
            # an absolute socket prefix: a relative one would land in the kernel's working folder (notebooks/)
            super().__init__(transport="ipc", ip=str(runtime / f"kernel-{uuid.uuid4().hex}-ipc"), **kwargs)

    return IPCKernelManager


def _execute(name: str, params: dict[str, Any], out_dir: Path, prepare_only: bool) -> Path:
    """Run one notebook into a temporary copy; publish it as NN_name.ipynb only when it ran to the end.

    Any failure (an error in a cell, a dead kernel, a timeout) keeps what was executed as
    NN_name.failed.ipynb beside the last good copy and stops the batch; Ctrl-C leaves no partial file.
    """
    import papermill

    final, failed = out_dir / f"{name}.ipynb", out_dir / f"{name}.failed.ipynb"
    running = out_dir / f".{name}.running.ipynb"
    try:
        papermill.execute_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(running), parameters=params,
                                   prepare_only=prepare_only, cwd=str(NOTEBOOKS_DIR), progress_bar=False,
                                   log_output=False, kernel_manager_class=_ipc_kernel_manager())
    except Exception as e:
        if not running.exists():
            raise
        os.replace(running, failed)
        where = f" in cell [{e.exec_count}]" if isinstance(e, papermill.PapermillExecutionError) else ""
        what = f"{e.ename}: {e.evalue}" if isinstance(e, papermill.PapermillExecutionError) else f"{type(e).__name__}: {e}"
        kept = f"the last good copy is unchanged: {final}" if final.exists() else "no earlier good copy"
        raise SystemExit(f"{name} failed{where}: {what}\n  executed copy with the traceback: {failed}\n  {kept}") from None
    except BaseException:
        running.unlink(missing_ok=True)
        raise
    os.replace(running, final)
    if not prepare_only:
        failed.unlink(missing_ok=True)  # it described an earlier attempt
    return final


@contextlib.contextmanager
def _kernel_environment(plan: Plan, command: str) -> Iterator[None]:
    """What the batch's kernels inherit, restored afterwards: this tree first on their import path (a second
    checkout's kernels never import another tree's tagelib), the provenance line, and what the write rule allows this
    batch (`tagelib.write_guard`: the run folder whose lock the runner holds, the artefacts it may make, publishing)."""
    values = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])),
              "TAGE_PROFILE": command,  # provenance only (tables say which profile made them); never branched on
              HELD_ENV: str(W.check_run_dir(plan.run_dir)), W.MAKES_ENV: json.dumps([str(m) for m in plan.makes]),
              W.PUBLISH_ENV: "1" if plan.publishes else "0"}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(profile_name: str, only: list[str] | None = None, prepare_only: bool = False,
        overrides: list[str] = ()) -> Path:
    """Check the whole batch, then execute (or only parameterise) its notebooks in order, holding the run folder's
    lock throughout (a second batch into the same run_dir is refused at once).

    Returns the folder of executed notebooks (`<run_dir>/notebooks`), or of the parameterised copies
    (`<run_dir>/prepared`) with `prepare_only`, which leaves the last executed ones alone. Any problem found before
    the start stops the batch with a message; a failing notebook stops it after saving its executed copy as
    NN_name.failed.ipynb.
    """
    command = " ".join([profile_name, *(["--only", *only] if only else []), *(f"--set {o}" for o in overrides)])
    plan = build_plan(profile_name, only, overrides, lock=f"tagelib.run --profile {command}")
    try:
        with _kernel_environment(plan, command):
            return _run_plan(plan, prepare_only)
    finally:
        plan.lock.release()


def _run_plan(plan: Plan, prepare_only: bool) -> Path:
    from tqdm.auto import tqdm

    for note in plan.notes:
        print(note, file=sys.stderr)
    out_dir = plan.prepared_dir if prepare_only else plan.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    timings, stages = {}, {}
    bar = tqdm(plan.notebooks, desc=f"profile {plan.profile}", unit="notebook", disable=prepare_only)
    for name, params in bar:
        bar.set_postfix_str(name)
        start, started = time.perf_counter(), time.time()
        path = _execute(name, params, out_dir, prepare_only)
        timings[name] = round(time.perf_counter() - start, 2)
        stages[name] = read_stages(resolve(plan.run_dir) / name, since=started)
        if not prepare_only:
            tqdm.write(f"{name}: {timings[name]:.1f} s -> {path}")
    if not prepare_only:
        only, overrides = plan.selection
        summary = {"profile": plan.profile, "only": only, "overrides": overrides, "run_dir": plan.run_dir,
                   "figures_dir": plan.figures_dir, "seconds": timings, "total_seconds": round(sum(timings.values()), 2),
                   "parameters": dict(plan.notebooks)}
        names = [n for n, _ in plan.notebooks]
        stem = "run_summary" if not only else f"run_summary_{'+'.join(names)}"
        write_text_atomic(resolve(plan.run_dir) / f"{stem}.json", json.dumps(summary, indent=2))
        _write_timings(plan, {n: {"seconds": timings[n], "stages": stages[n]} for n in names})
        print(f"executed notebooks: {plan.out_dir}\nfigures and tables: {resolve(plan.figures_dir)}", file=sys.stderr)
    return out_dir


def _write_timings(plan: Plan, timings: dict[str, dict]) -> None:
    """`<run_dir>/timings.json` and the printed table; the publishing batch also commits it as
    papers_figures/table_timings.md + .csv (columns notebook,seconds), with the machine in the provenance."""
    from tagelib import report  # torch: imported once the notebooks have run

    only, overrides = plan.selection
    record = {"profile": plan.profile, "only": only, "overrides": overrides, "machine": report.machine(),
              "commit": report.git_commit(), "date": time.strftime("%Y-%m-%d %H:%M"), "notebooks": timings,
              "total_seconds": round(sum(t["seconds"] for t in timings.values()), 2)}
    write_text_atomic(resolve(plan.run_dir) / "timings.json", json.dumps(record, indent=2))
    markdown, csv = timing_table(timings)
    print(f"\nwall time per notebook (profile {plan.profile}):\n{markdown}", file=sys.stderr)
    if plan.publishes:
        head = (f"# Wall time of `make reproduce` (profile {plan.profile}, unmodified batch)\n\n"
                f"{record['date']}, commit `{record['commit']}`, {record['machine']}; stages as each notebook's "
                "`Stopwatch` recorded them (`tagelib.timing`).\n\n")
        write_text_atomic(W.PUBLISHED_FIGURES / "table_timings.md", head + markdown)
        write_text_atomic(W.PUBLISHED_FIGURES / "table_timings.csv", csv)


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
