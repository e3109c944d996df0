"""Atomic file writes: write to a temporary file beside the target, fsync it, then rename over the target.

A reader sees either the old file or the new one, never a mix. A write killed before its rename leaves
only a temporary file named ``.<name>.tmp-<pid>-<random>`` beside the target; readers never open those,
and the next write to the same target removes the ones whose process is gone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from pathlib import Path
from typing import Iterator

_TMP_MARK = ".tmp-"
_UMASK = os.umask(0o022)  # read once at import (reading it means setting it), then restored
os.umask(_UMASK)
_active: set[Path] = set()  # temporaries this process is writing right now (never cleaned as stale)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files left beside `path` by writes whose process no longer runs (or by this one, finished)."""
    path = Path(path)
    prefix = f".{path.name}{_TMP_MARK}"
    stale = []
    for tmp in path.parent.glob(glob.escape(f".{path.name}.") + "*") if path.parent.is_dir() else []:
        if tmp in _active:
            continue
        if tmp.name.startswith(prefix):
            pid = tmp.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and _process_alive(int(pid)) and int(pid) != os.getpid():
                continue  # another process is writing this target now
            stale.append(tmp)
        elif tmp.name.endswith(".tmp"):  # the earlier naming (mkstemp), written before pids were recorded
            stale.append(tmp)
    return stale


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; when the body succeeds, publish it as `path`.

    If the body raises, the temporary file is removed and `path` is left untouched. The new file gets
    ordinary permissions (0666 less the umask), and its bytes reach the disk before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in stale_temporaries(path):
        old.unlink(missing_ok=True)
    tmp = path.parent / f".{path.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    _active.add(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)  # the rename itself reaches the disk
    finally:
        _active.discard(tmp)
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
