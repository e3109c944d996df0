"""Where things live: the repository root, run folders, and relative paths resolved against the root."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROFILES_DIR = REPO_ROOT / "profiles"
DATA_DIR = REPO_ROOT / "data"


def resolve(path: str | Path) -> Path:
    """Resolve `path` against the repository root unless it is absolute.

    Notebooks run from different folders (JupyterLab: notebooks/, papermill: results/<profile>/),
    so every path parameter is written relative to the root and resolved here.
    """
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def checkpoint_file(path_or_stem: str | Path) -> Path:
    """`<stem>.safetensors` for a checkpoint stem, or the path itself when it ends in .safetensors (.json: the
    earlier two-file format's config, same stem). A stem may contain dots (`glyph32.v2` -> `glyph32.v2.safetensors`)."""
    p = Path(path_or_stem)
    if p.suffix == ".safetensors":
        return p
    return p.with_suffix(".safetensors") if p.suffix == ".json" else p.with_name(p.name + ".safetensors")


def require(path: str | Path, made_by: str) -> Path:
    """Return the resolved `path`, or fail with a message naming the notebook or command that makes it."""
    resolved = resolve(path)
    if not resolved.exists():
        raise FileNotFoundError(f"{resolved} does not exist; it is made by {made_by}. Run that first.")
    return resolved
