"""The one rule for every path a run writes.

A run writes only

- under its run folder ``run_dir`` (inside the repository: under ``results/``; or any folder outside it that is new,
  empty or an earlier run folder), or
- into a shipped artefact under ``data/`` that its profile ``makes`` (``make pretrain``, ``make judge``, ``make clip``,
  ``make method``),
  and only from the unmodified batch of that profile, or
- into the committed ``papers_figures/`` — only the unmodified ``make reproduce`` batch.

Paths are compared after resolving ``..`` and symbolic links, never as strings. The runner checks every written
parameter before any kernel starts (`tagelib.run`); the notebooks check again before they write (`output_dirs`,
`output_path`), so a notebook run in JupyterLab or by plain papermill obeys the same rule. The runner tells its
kernels what the profile may make and whether this batch publishes, through the environment (``TAGE_MAKES``,
``TAGE_PUBLISH_FIGURES``); without the runner, nothing under ``data/`` or ``papers_figures/`` is writable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from tagelib.paths import DATA_DIR, REPO_ROOT, checkpoint_file, resolve
from tagelib.run_lock import LOCK_NAME, refuse_if_busy

RUNS_DIR = REPO_ROOT / "results"
PUBLISHED_FIGURES = REPO_ROOT / "papers_figures"
MAKES_ENV = "TAGE_MAKES"  # JSON list of the resolved artefacts this batch's profile makes (set by the runner)
PUBLISH_ENV = "TAGE_PUBLISH_FIGURES"  # "1" in the kernels of the unmodified batch that rewrites papers_figures/
DEFAULT_FIGURES = "{run_dir}/papers_figures"

# Every notebook parameter that names a path, by what the notebook does with it. `tests/test_write_guard.py` fails
# on a path parameter of a notebook that is in neither set.
WRITTEN_PATHS = {  # parameter -> the step count (or flag) that makes the notebook write it (None: always written)
    "run_dir": None, "figures_dir": None, "checkpoint": "train_steps", "judge": "judge_steps", "clip": "clip_steps",
    "attribute_probe": "probe_steps", "ship_as": "ship_as",  # ship_as, ship_codes_as: written when not ""
    "ship_codes_as": "ship_codes_as"}
READ_PATHS = {"data_dir", "codebook", "cpm", "age_checkpoint", "import_checkpoint", "compare_checkpoint", "inception_dir",
              "clip_pretrained"}


class WriteRefused(ValueError):
    """A path a run would write breaks the write rule; the message names the parameter and the rule."""


def _real(path: str | os.PathLike) -> Path:
    """Absolute, `..` and symbolic links resolved (as far as the path exists)."""
    return resolve(path).resolve()


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` is `folder` or lies under it, both resolved."""
    return _real(path).is_relative_to(_real(folder))


def is_run_folder(folder: Path) -> bool:
    """A folder a run made: it holds the run lock file, or (runs before the lock) a run's executed notebooks."""
    return (folder / LOCK_NAME).is_file() or any(
        (folder / name).exists() for name in ("notebooks", "prepared", "run_summary.json"))


def check_run_dir(run_dir: str | os.PathLike, key: str = "run_dir") -> Path:
    """The resolved run folder, or WriteRefused: inside the repository it must lie under results/; anywhere, it must
    not hold the repository, and an existing folder must be empty or a run folder (never a home or a project)."""
    if not str(run_dir).strip():
        raise WriteRefused(f"{key} must be a non-empty path")
    real = _real(run_dir)
    root, runs = REPO_ROOT.resolve(), RUNS_DIR.resolve()
    if root.is_relative_to(real):
        raise WriteRefused(f"{key}={str(run_dir)!r} is the repository or a folder above it ({real}); a run writes under "
                           "results/ (e.g. results/my_run) or a new folder outside the repository")
    if real.is_relative_to(root) and not (real.is_relative_to(runs) and real != runs):
        raise WriteRefused(f"{key}={str(run_dir)!r} would put run outputs among the repository's sources, shipped data "
                           f"or committed figures ({real}); runs write under results/ (e.g. results/my_run) or a "
                           "folder outside the repository")
    if real.exists() and not real.is_dir():
        raise WriteRefused(f"{key}={str(run_dir)!r} is a file ({real}), not a folder")
    if real.is_dir() and any(real.iterdir()) and not is_run_folder(real):
        raise WriteRefused(f"{key}={str(run_dir)!r} is a folder with other content ({real}: no {LOCK_NAME}, no "
                           "notebooks/); a run writes into a new or empty folder, or into an earlier run folder")
    return real


def make_run_folder(run_dir: str | os.PathLike) -> Path:
    """Check `run_dir` by the rule, create it, and mark it as a run folder (its lock file); returns it resolved."""
    run = check_run_dir(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / LOCK_NAME).touch(exist_ok=True)
    return run


def check_makes(makes: Iterable[str], source: str) -> list[Path]:
    """A profile's `makes`: each must resolve to a path under data/ (not merely start with 'data/')."""
    out = []
    for m in makes:
        if not isinstance(m, str) or not m or not inside(m, DATA_DIR) or _real(m) == DATA_DIR.resolve():
            raise WriteRefused(f"{source}: makes names {m!r}, which is not a shipped artefact under data/ "
                               f"(resolved: {_real(m) if isinstance(m, str) and m else m})")
        out.append(_real(m))
    return out


def same_artefact(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Two names of one artefact: a checkpoint stem and its `.safetensors`, or one folder, after resolving."""
    return _real(checkpoint_file(resolve(a))) == _real(checkpoint_file(resolve(b))) or _real(a) == _real(b)


def check_write(key: str, value: str | os.PathLike, run_dir: str | os.PathLike, makes: Iterable[str | Path] = ()) -> Path:
    """The resolved target of parameter `key`, or WriteRefused when the rule does not allow writing it."""
    if not str(value).strip():
        raise WriteRefused(f"{key} must be a non-empty path to write")
    target, run = _real(value), _real(run_dir)
    if target.is_relative_to(run) and target != run and not target.name == LOCK_NAME:
        return target
    if any(same_artefact(value, m) for m in makes):
        return target
    made = f" or into what the profile makes ({', '.join(str(m) for m in makes)})" if makes else ""
    raise WriteRefused(f"{key}={str(value)!r} would write {target}, outside the run folder {run}{made}. A run writes "
                       f"only under its run_dir: e.g. {key}={Path(str(run_dir)) / Path(str(value)).name}")


def makes_from_env() -> list[Path]:
    """The artefacts the runner said this batch's profile makes (none outside the runner)."""
    try:
        return [Path(p) for p in json.loads(os.environ.get(MAKES_ENV, "[]"))]
    except (json.JSONDecodeError, TypeError):
        return []


def figures_folder(figures_dir: str, run_dir: str | os.PathLike) -> Path:
    """The resolved figures folder: under the run folder, or papers_figures/ in the publishing batch only."""
    folder = _real(str(figures_dir).replace("{run_dir}", str(run_dir)))
    if folder.is_relative_to(PUBLISHED_FIGURES.resolve()):
        if os.environ.get(PUBLISH_ENV) == "1" and folder == PUBLISHED_FIGURES.resolve():
            return folder
        raise WriteRefused(f"figures_dir={str(figures_dir)!r}: the committed papers_figures/ is rewritten only by the "
                           f"unmodified `make reproduce` batch; here, figures go under the run folder "
                           f"(figures_dir={DEFAULT_FIGURES!r})")
    if folder == _real(run_dir):
        return folder  # figures in the run folder itself
    return check_write("figures_dir", str(figures_dir).replace("{run_dir}", str(run_dir)), run_dir)


def output_dirs(run_dir: str, figures_dir: str, notebook: str) -> tuple[Path, Path]:
    """Check the run folder and figures folder by the rule (and that no other batch is running into the run folder),
    create them, and return (`<run_dir>/<notebook>`, the figures folder). Every notebook calls this first."""
    run = make_run_folder(run_dir)
    refuse_if_busy(run)
    fig_dir = figures_folder(figures_dir, run_dir)
    out_dir = run / notebook
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, fig_dir


def output_path(key: str, value: str, run_dir: str) -> Path:
    """The resolved path a notebook is about to write for parameter `key` (a checkpoint stem or a folder), checked
    by the rule with what the runner says the profile makes."""
    return check_write(key, value, run_dir, makes_from_env())
