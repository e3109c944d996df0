"""The shipped method checkpoints (``data/method/``): AGE, the CLM codebook, the CPM and the PSM of the ``tiny`` batch.

They let each notebook open and run on its own on a fresh clone: a notebook whose upstream run output is missing
(notebook 04 before 02 and 03 have run in this run folder) reads the shipped file instead, and says so. ``make
reproduce`` still trains every module itself; ``make method`` (profile ``method``: the ``tiny`` batch with ``ship_as``
set) regenerates the shipped files, as ``make judge`` regenerates the judge.

    codebook_stem = upstream("codebook", codebook)       # the run output, or data/method/codebook when it is missing

Notebooks 02-05 save their trained module under the run folder, and also as ``ship_as`` when it is given (the ``method``
profile; the write rule lets only that profile's unmodified batch write under ``data/method``). Notebook 02 also ships
the shots' refined codes (``ship_codes_as``: ``shot_codes``, keyed like the run cache, `tagelib.inversion.ShotInverter`):
a run folder without codes (a notebook opened on a fresh clone, a fresh ``make reproduce``) starts from them instead
of refining every shot pool (``shipped_codes``), when they were made for the very same E, G, LPIPS weights and
refinement settings (the run cache's content key, checked on load) — a deterministic function of shipped inputs, like a
cache hit; ``make method`` computes the codes it ships.
"""

from __future__ import annotations

from pathlib import Path

from tagelib.paths import DATA_DIR, REPO_ROOT, checkpoint_file, resolve

METHOD_DIR = DATA_DIR / "method"
# parameter that reads a run output -> (the shipped stem, the notebook that makes it)
SHIPPED = {"age_checkpoint": (METHOD_DIR / "age", "02_attribute_factorization"),
           "codebook": (METHOD_DIR / "codebook", "03_codebook_learning"),
           "cpm": (METHOD_DIR / "cpm", "04_code_prediction")}
PSM_STEM = METHOD_DIR / "psm"  # made by 05_prompt_semantics; read by the explorer
SHOT_CODES = METHOD_DIR / "shot_codes"  # the shots' refined codes (02_attribute_factorization), for fresh run folders


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def upstream(key: str, value: str, quiet: bool = False) -> str:
    """The resolved checkpoint stem to read for parameter `key`: `value` when its file exists, else the shipped one
    (said aloud). FileNotFoundError names both, and the notebook that makes the run output, when neither exists."""
    shipped, maker = SHIPPED[key]
    if checkpoint_file(resolve(value)).is_file():
        return str(resolve(value))
    if not checkpoint_file(shipped).is_file():
        raise FileNotFoundError(f"{key}={value!r}: {checkpoint_file(resolve(value))} does not exist, nor does the shipped "
                                f"{_shown(checkpoint_file(shipped))}; run notebook {maker} first (same run_dir), or "
                                f"`make method` to rebuild the shipped checkpoints")
    if not quiet:
        print(f"{key}: {value} is not there (notebook {maker} has not run in this run folder); "
              f"using the shipped {_shown(shipped)} (the `tiny` batch's, made by `make method`)")
    return str(shipped)
