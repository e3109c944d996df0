"""Folder artefacts (the glyph CLIP's open_clip local-dir folder): a manifest of hashes, a check on load, a safe swap.

``<folder>/tage_manifest.json``::

    {"format": "tagelib-folder-v1", "kind": "open_clip local-dir",
     "files": {"open_clip_config.json": {"bytes": 68675, "sha256": "..."}, "open_clip_model.safetensors": {...}}}

`verify` checks every listed file's size and sha256 (a flipped bit, a truncated or missing file is an error naming
the file, never a silently random model); `is_artefact` tells whether a folder is one we may replace (its manifest is
of the right kind and it holds nothing the manifest does not list); `publish` writes a new folder beside the target
and swaps it in by rename, refusing to replace anything that is not an artefact of the same kind. Only json and
hashlib here: the runner uses it before any torch import.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

from tagelib.atomic import write_text_atomic

MANIFEST = "tage_manifest.json"
FORMAT = "tagelib-folder-v1"


class FolderArtefactError(ValueError):
    """A folder artefact is missing, incomplete, corrupted or of another kind; the message names the file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike, kind: str) -> Path:
    """Hash every file of `folder` (but the manifest) into its manifest."""
    folder = Path(folder)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    path = folder / MANIFEST
    write_text_atomic(path, json.dumps({"format": FORMAT, "kind": kind, "files": files}, indent=1) + "\n")
    return path


def read_manifest(folder: str | os.PathLike, kind: str) -> dict:
    """The manifest of a folder artefact of `kind`, or FolderArtefactError naming what is wrong."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FolderArtefactError(f"{path} not found: {folder} is not a {kind} artefact folder (or predates manifests)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FolderArtefactError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != FORMAT or manifest.get("kind") != kind or not files:
        raise FolderArtefactError(f"{path}: not a {FORMAT} manifest of a {kind} folder")
    return manifest


def verify(folder: str | os.PathLike, kind: str, needed: tuple[str, ...] = ()) -> None:
    """Every file the manifest lists is present with its size and sha256, and the `needed` files are among them."""
    folder = Path(folder)
    files = read_manifest(folder, kind)["files"]
    for name in needed:
        if name not in files:
            raise FolderArtefactError(f"{folder / MANIFEST}: lists no {name}; the folder is incomplete")
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            raise FolderArtefactError(f"{path} is missing (the manifest lists it); the folder is incomplete")
        if not isinstance(want, dict) or path.stat().st_size != want.get("bytes"):
            raise FolderArtefactError(f"{path}: {path.stat().st_size} bytes, the manifest says {want.get('bytes')} "
                                      "(truncated or replaced)")
        if _sha256(path) != want.get("sha256"):
            raise FolderArtefactError(f"{path}: content does not match the sha256 in {MANIFEST}: the file is corrupted; "
                                      "regenerate it or restore it (git checkout for shipped files)")


def is_artefact(folder: str | os.PathLike, kind: str) -> bool:
    """A folder we made for `kind`: a manifest of that kind, and no file or folder the manifest does not list."""
    folder = Path(folder)
    try:
        listed = set(read_manifest(folder, kind)["files"]) | {MANIFEST}
    except FolderArtefactError:
        return False
    return all(p.name in listed or (p.name.startswith(".") and ".tmp-" in p.name) for p in folder.iterdir())


def publish(folder: str | os.PathLike, kind: str, fill: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Write a folder artefact: `fill(tmp)` writes the files into a new folder beside `folder`, the manifest is added,
    and one rename publishes it. An existing `folder` is replaced only with `overwrite` and only when it is an
    artefact of the same `kind` (checked by its manifest); nothing else is ever removed."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{folder} exists; pass overwrite=True to replace it")
        if folder.is_symlink() or not folder.is_dir() or not is_artefact(folder, kind):
            raise FolderArtefactError(f"{folder} exists and is not a {kind} artefact (no valid {MANIFEST}, or it holds "
                                      "other files); refusing to replace it — choose another path")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    old = folder.parent / f".{folder.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        fill(tmp)
        write_manifest(tmp, kind)
        if folder.exists():
            folder.rename(old)  # the verified old artefact steps aside for the one rename that publishes the new one
        try:
            tmp.rename(folder)
        except BaseException:
            if old.exists():
                old.rename(folder)  # put the old one back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only what this call created
    if old.exists():
        shutil.rmtree(old)
    return folder
