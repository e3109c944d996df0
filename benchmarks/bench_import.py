"""Import time of each tagelib module, each in a fresh interpreter (median of --repeat runs).

    .venv/bin/python benchmarks/bench_import.py --repeat 3

Also says which heavy packages an import pulls in: torch is needed by most modules; lpips and
torchvision load only when an LPIPS network is built; the runner (`tagelib.run`) needs neither.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

MODULES = ["tagelib", "tagelib.run", "tagelib.checkpoints", "tagelib.latent", "tagelib.perceptual", "tagelib.fewshot"]
HEAVY = ["torch", "torchvision", "lpips", "papermill", "matplotlib"]
PROBE = """
import json, sys, time
t = time.perf_counter()
import {module}
print(json.dumps({{"seconds": time.perf_counter() - t, "loaded": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(module: str, repeat: int) -> dict:
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)], check=True,
                                      capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent).stdout)
            for _ in range(repeat)]
    return {"seconds": statistics.median(r["seconds"] for r in runs), "loaded": runs[0]["loaded"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="fresh interpreters per module (median reported)")
    args = parser.parse_args()
    print(f"{'module':22s} {'import s':>9s}  heavy packages loaded")
    for module in MODULES:
        r = measure(module, args.repeat)
        print(f"{module:22s} {r['seconds']:9.3f}  {', '.join(r['loaded']) or '-'}")


if __name__ == "__main__":
    main()
