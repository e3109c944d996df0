"""Where a batch's time goes: each notebook's stages (`Stopwatch`) and the runner's per-notebook table (`timing_table`).

In a notebook, one line at the end of each stage's cell:

    clock = Stopwatch(out_dir)          # after output_dirs(...): the clock starts here
    ...                                 # inversion of the shots
    clock.lap("inversion")              # seconds since the previous lap, added to stage "inversion"

The laps go to ``<run_dir>/<notebook>/stage_seconds.json`` after every lap (a notebook stopped half-way still says
where its time went); the runner gathers them with each notebook's wall time into ``<run_dir>/timings.json`` and
prints the table at the end of the batch (`tagelib.run`), with what no lap covers (kernel start, imports, the
set-up before the clock starts) as "other". Stage names used by the notebooks: set-up, inversion, training,
evaluation (generation and the ruler's metrics of the main rows), metrics (other measurements), sweeps, figures.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tagelib.atomic import write_text_atomic

STAGE_FILE = "stage_seconds.json"


class Stopwatch:
    """Accumulates wall seconds per named stage of one notebook and writes them after every lap."""

    def __init__(self, out_dir: str | os.PathLike):
        self.path = Path(out_dir) / STAGE_FILE
        self.stages: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Add the seconds since the previous lap (or the start) to `stage` (returns nothing: it ends cells)."""
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        self.stages[stage] = round(self.stages.get(stage, 0.0) + seconds, 2)
        write_text_atomic(self.path, json.dumps(self.stages, indent=1))


def read_stages(out_dir: str | os.PathLike, since: float) -> dict[str, float]:
    """The stages a notebook recorded in `out_dir` during this batch (file written after `since`, a time.time());
    {} when it records none, or when the file is from an earlier run or unreadable."""
    path = Path(out_dir) / STAGE_FILE
    try:
        if path.stat().st_mtime < since:
            return {}
        stages = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    ok = isinstance(stages, dict) and all(isinstance(v, (int, float)) for v in stages.values())
    return {str(k): float(v) for k, v in stages.items()} if ok else {}


def timing_table(timings: dict[str, dict]) -> tuple[str, str]:
    """(markdown, csv) of per-notebook seconds and their stages, from {notebook: {"seconds": s, "stages": {...}}}."""
    rows = []
    for nb, t in timings.items():
        stages = dict(t.get("stages", {}))
        if stages:
            stages["other"] = max(0.0, t["seconds"] - sum(stages.values()))
        rows.append((nb, t["seconds"], ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()) or "–"))
    total = sum(s for _, s, _ in rows)
    md = ["| notebook | seconds | stages |", "|---|---:|---|"]
    md += [f"| {nb} | {s:.1f} | {stages} |" for nb, s, stages in rows]
    md.append(f"| **total** | **{total:.1f}** ({total / 60:.1f} min) | |")
    csv = ["notebook,seconds"] + [f"{nb},{s:.2f}" for nb, s, _ in rows]
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"
