"""Each notebook alone, as a researcher opens it on a fresh clone: its own defaults, a new run folder, no earlier notebook
run — so it reads the shipped latent space, judge, CLIP and method checkpoints (`data/method`, `make method`) and the
shipped shot codes. Budget: ≤ 4 min each on 2 CPU cores.

    .venv/bin/python benchmarks/bench_notebooks_alone.py                       # every notebook -> results/alone/
    .venv/bin/python benchmarks/bench_notebooks_alone.py 04_code_prediction    # one

Each runs through the runner (`--profile tiny --only NB`) with `shipped_codes=true` (the notebooks' own default; the
batch profiles compute their codes) in a folder of its own, `results/alone/<NB>`, emptied first: the runner's
timing table (`<run_dir>/timings.json`) gives its wall time and stages. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

from tagelib.paths import REPO_ROOT
from tagelib.profiles import available_notebooks
from tagelib.timing import timing_table

ALONE_DIR = REPO_ROOT / "results" / "alone"
USES_SHOT_CODES = ("01_latent_space", "02_attribute_factorization", "03_codebook_learning", "04_code_prediction",
                   "05_prompt_semantics")


def run_alone(notebook: str) -> dict:
    run_dir = ALONE_DIR / notebook
    if run_dir.exists():
        shutil.rmtree(run_dir)  # only ever this script's own folder under results/alone
    command = [sys.executable, "-m", "tagelib.run", "--profile", "tiny", "--only", notebook, "--set", f"run_dir={run_dir}"]
    if notebook in USES_SHOT_CODES:
        command += ["--set", "shipped_codes=true"]
    subprocess.run(command, check=True, cwd=REPO_ROOT)
    return json.loads((run_dir / "timings.json").read_text())["notebooks"][notebook]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebook names (default: all)")
    args = parser.parse_args(argv)
    names = args.notebooks or available_notebooks()
    unknown = sorted(set(names) - set(available_notebooks()))
    if unknown:
        raise SystemExit(f"unknown notebook(s) {unknown}; valid: {available_notebooks()}")
    markdown, _ = timing_table({name: run_alone(name) for name in names})
    print(markdown)


if __name__ == "__main__":
    main()
