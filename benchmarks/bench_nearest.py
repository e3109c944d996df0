"""Benchmark tagelib.codebook.nearest_codes (chunked addmm) against torch.cdist(x, c).argmin(1).

Paper size by default: N = 10,000 codes, D = 512, 8,192 queries, float32, CPU.
Reports the median time of several runs after a warm-up, the peak extra resident memory of one
call (measured in a fresh subprocess per method, next to the analytic size of the distance
block), and how often the indices agree with cdist's.

    PYTHONPATH=. python benchmarks/bench_nearest.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from tagelib.codebook import nearest_codes


def make_data(n_codes: int, dim: int, n_queries: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_queries, dim, generator=g)  # (M, D)
    c = torch.randn(n_codes, dim, generator=g)  # (N, D)
    return x, c


def run_method(name: str, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    if name == "cdist":
        return torch.cdist(x, c).argmin(1)
    return nearest_codes(x, c, chunk_size=int(name.split("=")[1]))[0]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(args: argparse.Namespace) -> None:
    """In a fresh process: growth of the peak RSS (VmHWM) during one call of one method.

    Linux only: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS, so the
    import-time peak of torch does not hide the call's own peak. Includes the (M,) outputs and
    the allocator's own slack, so it is an upper bound on the method's working memory.
    """
    torch.set_num_threads(args.threads)
    x, c = make_data(args.codes, args.dim, args.queries, args.seed)
    run_method(args.child, x[:8], c)  # initialise BLAS / thread pools outside the measurement
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    run_method(args.child, x, c)
    print(json.dumps({"extra": max(0, _status_kib("VmHWM") - base) * 1024}))


def measure_memory(name: str, args: argparse.Namespace, trials: int = 3) -> int:
    """Largest peak-RSS growth over a few fresh processes (the heap allocator's reuse varies)."""
    cmd = [sys.executable, __file__, "--child", name]
    for k in ("threads", "codes", "dim", "queries", "seed"):
        cmd += [f"--{k}", str(getattr(args, k))]
    extras = []
    for _ in range(trials):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        extras.append(json.loads(out.strip().splitlines()[-1])["extra"])
    return max(extras)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codes", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=8192)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_memory(args)
        return

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    x, c = make_data(args.codes, args.dim, args.queries, args.seed)
    methods = ["cdist"] + [f"chunk={k}" for k in args.chunks]
    ref = run_method("cdist", x, c)
    agree = {}
    for name in methods:  # warm-up, and the agreement check
        agree[name] = (run_method(name, x, c) == ref).double().mean().item()
    times: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):  # round-robin, so a transient load hits every method alike
        for name in methods:
            t0, c0 = time.perf_counter(), time.process_time()
            run_method(name, x, c)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    rows = []
    for name in methods:
        block = args.queries if name == "cdist" else min(int(name.split("=")[1]), args.queries)
        rows.append(
            {
                "method": "torch.cdist + argmin" if name == "cdist" else f"nearest_codes, {name}",
                "median_s": statistics.median(times[name]),
                "min_s": min(times[name]),
                "cpu_s": statistics.median(cpu[name]),
                "block_mb": block * args.codes * 4 / 1e6,
                "peak_mb": measure_memory(name, args) / 1e6,
                "agree": agree[name],
            }
        )

    print(
        f"\nnearest code search: N={args.codes} codes, D={args.dim}, M={args.queries} queries, float32, "
        f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"{args.threads} threads, median of {args.repeats} interleaved runs after 1 warm-up\n"
    )
    print(
        "| method | median wall s | min wall s | median CPU s (all threads) "
        "| distance block MB | measured peak extra RSS MB (max of 3) | index agreement with cdist |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['cpu_s']:.3f} "
            f"| {r['block_mb']:.0f} | {r['peak_mb']:.0f} | {100 * r['agree']:.3f} % |"
        )
    cd = rows[0]
    for key, label in (("median_s", "median wall"), ("cpu_s", "median CPU")):
        best = min(rows[1:], key=lambda r: r[key])
        print(
            f"\nfastest chunked by {label}: {best['method']}; cdist / it: "
            f"wall {cd['median_s'] / best['median_s']:.2f}x, CPU {cd['cpu_s'] / best['cpu_s']:.2f}x, "
            f"distance block {cd['block_mb'] / best['block_mb']:.1f}x, "
            f"measured peak {cd['peak_mb'] / max(best['peak_mb'], 1e-9):.1f}x"
        )
    print(
        f"\nload average (1 min) before / after: {load0:.2f} / {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs; wall times are comparable only on an otherwise idle machine."
    )

if __name__ == "__main__":
    main()
