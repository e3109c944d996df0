"""Shared work done once per run: tensors remembered under ``<run_dir>/cache/``, keyed by the content they depend on.

    cache = RunCache.of_run(out_dir)                          # <run_dir>/cache, beside the notebooks' folders
    key = content_key(model=model, images=pool, steps=50)     # sha256 of weights, pixels and parameters
    found = cache.load("shot-codes", key)                     # (tensors, note), or None when absent or corrupt
    cache.save("shot-codes", key, tensors, note={...})        # atomic; a sha256 of tensors and note guards the file
    tensors, note = cached(cache, "kind", key, compute)       # compute() -> (tensors, note), once per key

A key is computed from the *content* of what the result depends on (tensors' bytes, shapes and dtypes, modules'
weights, parameter values), never from file names: a retrained checkpoint or a changed dataset gives a new key, so a
stale entry is never read. A file whose payload does not match its recorded digest, or that does not parse, is
reported and recomputed by the caller, never trusted. What is cached (`tagelib.inversion.ShotInverter`,
`tagelib.evaluation.Ruler`): the shot inversions, the reference images' features per extractor, the metrics of a
measured image set (the real ceiling), the training codes; the collapse floor has its own JSON
(`evaluation.cached_collapse_floor`).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tagelib.atomic import atomic_path

CACHE_FOLDER = "cache"
KEY_VERSION = "1"  # bump when a cached computation changes meaning


def _update(digest: hashlib._Hash, value: Any) -> None:
    """Feed one value into a digest: tensors by dtype, shape and bytes, modules by their state dict, the rest by JSON."""
    if isinstance(value, nn.Module):
        value = value.state_dict()
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"tensor {t.dtype} {tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"array {value.dtype} {value.shape}|".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        digest.update(b"{")
        for k in sorted(value, key=str):
            digest.update(f"{k}:".encode())
            _update(digest, value[k])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for v in value:
            _update(digest, v)
        digest.update(b"]")
    else:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    digest.update(b";")


def content_key(**parts: Any) -> str:
    """sha256 (hex) of named parts: tensors, arrays, modules (their weights), and JSON-able values."""
    digest = hashlib.sha256(f"tage-cache v{KEY_VERSION}|".encode())
    _update(digest, parts)
    return digest.hexdigest()


def _payload_digest(tensors: Mapping[str, torch.Tensor], note_text: str) -> str:
    digest = hashlib.sha256()
    _update(digest, dict(tensors))
    digest.update(note_text.encode())
    return digest.hexdigest()


class RunCache:
    """A folder of content-keyed safetensors files, one per (kind, key)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @classmethod
    def of_run(cls, out_dir: str | os.PathLike) -> RunCache:
        """The run's cache, for a notebook whose outputs go to `out_dir` = <run_dir>/<notebook>."""
        return cls(Path(out_dir).parent / CACHE_FOLDER)

    def path(self, kind: str, key: str) -> Path:
        if not kind.replace("-", "").isalnum():
            raise ValueError(f"cache kind {kind!r}: letters, digits and '-' only")
        return self.folder / f"{kind}-{key[:32]}.safetensors"

    def load(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, note) stored under (kind, key); None when absent, or when the file is corrupt (reported)."""
        return read_entry(self.path(kind, key), key)

    def save(self, kind: str, key: str, tensors: Mapping[str, torch.Tensor], note: Mapping[str, Any] | None = None) -> Path:
        """Store tensors and a JSON note under (kind, key) atomically, guarded by a sha256 of both."""
        return write_entry(self.path(kind, key), kind, key, tensors, note)


def read_entry(path: str | os.PathLike, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, note) of one cache file made for `key`; None when it is absent or made for another key, and None
    with a warning when it is corrupt (a truncated or tampered file is recomputed by the caller, never trusted)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        if meta.get("payload_sha256") != _payload_digest(tensors, meta.get("note", "")):
            raise ValueError("its content does not match its recorded sha256")
        note = json.loads(meta["note"])
    except Exception as e:  # noqa: BLE001 - any unreadable file is recomputed, whatever broke it
        warnings.warn(f"cache file {path} is unusable ({e}); recomputing it", stacklevel=3)
        return None
    return (tensors, note) if meta.get("key") == key else None


def write_entry(path: str | os.PathLike, kind: str, key: str, tensors: Mapping[str, torch.Tensor],
                note: Mapping[str, Any] | None = None) -> Path:
    """Write one cache file atomically: tensors, a JSON note, the key, and a sha256 of tensors and note."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    note_text = json.dumps(dict(note or {}), default=str)
    meta = {"key": key, "kind": kind, "payload_sha256": _payload_digest(tensors, note_text), "note": note_text}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def cached(cache: RunCache | None, kind: str, key: str, compute: Callable[[], tuple[dict[str, torch.Tensor], dict]]
           ) -> tuple[dict[str, torch.Tensor], dict]:
    """`compute() -> (tensors, note)` once per key in the run's cache (without a cache: every time). A corrupt entry
    is recomputed and rewritten. The note comes back JSON round-tripped either way, so a hit equals a miss."""
    found = cache.load(kind, key) if cache is not None else None
    if found is None:
        tensors, note = compute()
        if cache is not None:
            cache.save(kind, key, tensors, note)
        found = tensors, json.loads(json.dumps(dict(note), default=str))
    return found
