"""One run at a time per run folder: ``<run_dir>/.tage-run.lock``, an exclusive `flock` held for the whole batch.

    with RunLock("results/tiny", command="tagelib.run --profile tiny"):
        ...   # a second runner into results/tiny is refused at once, naming this one's PID and start time

The lock file stays in the folder after the run (it also marks the folder as a run folder, `is_run_folder`). The
kernel drops a `flock` when its process dies, however it dies, so a lock is never left held by a dead process; the
file then still names the dead holder, and the next run says that it takes the lock over. Notebooks opened in
JupyterLab call `refuse_if_busy` before writing, so they do not write beside a running batch either (the batch's own
kernels are told by ``TAGE_LOCKED_RUN_DIR`` that the lock is their runner's).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".tage-run.lock"
HELD_ENV = "TAGE_LOCKED_RUN_DIR"  # set by the runner for its kernels: the run folder whose lock it holds


class RunFolderBusy(RuntimeError):
    """Another process is running a batch into this run folder."""


def _holder(text: str) -> dict:
    try:
        info = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict) -> str:
    if not info:
        return "an unknown process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"PID {info.get('pid')} on {info.get('host')}, started {started} ({info.get('command', '?')})"


class RunLock:
    """Exclusive lock of one run folder; `acquire` refuses a busy folder and reports a taken-over stale lock."""

    def __init__(self, run_dir: str | os.PathLike, command: str = ""):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command
        self.note = ""  # set when a stale lock was taken over
        self._fd: int | None = None
        self._made_folder = False  # acquire created run_dir (removed again on release if nothing else was written)

    def acquire(self) -> "RunLock":
        self._made_folder = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise RunFolderBusy(f"run_dir {self.run_dir} is busy: another run holds {self.path} — {_describe(held)}. "
                                "Wait for it to finish, or choose another run_dir") from None
        previous = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        if previous and not previous.get("released"):
            self.note = (f"{self.path}: taking over the stale lock of {_describe(previous)}, which ended without "
                         "releasing it (its process is gone)")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": self.command}
        self._write(fd, info)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        info = _holder(os.pread(self._fd, 4096, 0).decode(errors="replace"))
        self._write(self._fd, {**info, "released": time.time()})
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        if self._made_folder and [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]:
            self.path.unlink()  # a batch that stopped before writing anything leaves no folder behind
            self.run_dir.rmdir()

    @staticmethod
    def _write(fd: int, info: dict) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def refuse_if_busy(run_dir: str | os.PathLike) -> None:
    """Raise RunFolderBusy when a batch other than this kernel's own runner holds `run_dir`'s lock."""
    run_dir = Path(run_dir)
    if os.environ.get(HELD_ENV) and Path(os.environ[HELD_ENV]).resolve() == run_dir.resolve():
        return  # our own runner holds it
    path = run_dir / LOCK_NAME
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        held = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        raise RunFolderBusy(f"run_dir {run_dir} is busy: a batch is running into it — {_describe(held)}. Wait for it, "
                            "or set run_dir to another folder") from None
    finally:
        os.close(fd)
