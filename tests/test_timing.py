"""Where a batch's time goes: notebook stages (Stopwatch) and the runner's per-notebook table."""

import json
import time

from tagelib import run, timing
from tagelib import write_guard as W


def test_laps_accumulate_per_stage_and_are_written_after_each(tmp_path):
    clock = timing.Stopwatch(tmp_path)
    time.sleep(0.02)
    clock.lap("training")
    time.sleep(0.01)
    clock.lap("figures")
    clock.lap("training")
    stored = json.loads((tmp_path / timing.STAGE_FILE).read_text())
    assert stored == clock.stages and list(stored) == ["training", "figures"]
    assert stored["training"] >= 0.02 - 1e-3 and stored["figures"] >= 0.01 - 1e-3


def test_stages_of_an_earlier_run_or_an_unreadable_file_are_not_reported(tmp_path):
    timing.Stopwatch(tmp_path).lap("training")
    assert timing.read_stages(tmp_path, since=time.time() - 60) != {}
    assert timing.read_stages(tmp_path, since=time.time() + 60) == {}  # written before this batch started
    (tmp_path / timing.STAGE_FILE).write_text("{not json")
    assert timing.read_stages(tmp_path, since=0) == {}


def test_the_table_shows_each_notebook_its_stages_and_the_rest(tmp_path):
    md, csv = timing.timing_table({"01_a": {"seconds": 10.0, "stages": {"training": 6.0}}, "02_b": {"seconds": 2.0}})
    assert csv.splitlines() == ["notebook,seconds", "01_a,10.00", "02_b,2.00"]
    assert "| 01_a | 10.0 | training 6 s, other 4 s |" in md and "**12.0** (0.2 min)" in md


def test_only_the_publishing_batch_writes_table_timings(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "PUBLISHED_FIGURES", tmp_path / "papers_figures")
    (tmp_path / "papers_figures").mkdir()
    timings = {"00_data": {"seconds": 3.0, "stages": {"figures": 2.0}}}
    plan = run.Plan("tiny", str(tmp_path / "run"), "papers_figures", publishes=False, selection=(["00_data"], []))
    run._write_timings(plan, timings)
    assert json.loads((tmp_path / "run" / "timings.json").read_text())["notebooks"] == timings
    assert not any((tmp_path / "papers_figures").iterdir())
    run._write_timings(run.Plan("tiny", str(tmp_path / "run"), "papers_figures", publishes=True), timings)
    assert (tmp_path / "papers_figures" / "table_timings.csv").read_text().startswith("notebook,seconds\n00_data,3.00")
    assert "CPU cores" in (tmp_path / "papers_figures" / "table_timings.md").read_text()
