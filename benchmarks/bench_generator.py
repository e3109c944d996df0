"""How close G's decoding and the metric networks come to this CPU's limit: achieved GFLOP/s against a plain matmul.

    .venv/bin/python benchmarks/bench_generator.py                 # 32 px, batch 256, 2 threads, shipped networks
    .venv/bin/python benchmarks/bench_generator.py --threads 1 --batch 128
    .venv/bin/python benchmarks/bench_generator.py --chunks 16,32,64,128,256,512   # + G and E by chunk size

`--chunks`: G and E over 512 codes / images fed in chunks of each size (what `LatentSpace.decode_batched` and
`encode_batched` do): on a CPU, small chunks keep the activations in cache, and the chunk size sets the rate as much
as the kernels do (`tagelib.latent.CPU_BATCH` holds the sizes chosen from this table).

The ceiling is the fp32 rate of one large matmul (torch.mm, 2048 x 2048) with the same threads. Each network's FLOPs
per image are counted by torch's FlopCounterMode (2 per multiply-add of convs, linears and matmuls; the elementwise
work is not counted), so "ratio_to_matmul" = (images/s x FLOPs per image) / matmul FLOP/s: the share of the dense
rate the network reaches. On some CPUs (AMD EPYC here: MKL's sgemm is not its best code) oneDNN's 3x3 convolutions
run faster than the matmul, so a second reference is given: a large 3x3 conv's effective rate ("ratio_to_conv3x3"). Networks: the shipped generator G (both modulation paths: the unfused one scales
activations, the fused one runs a grouped conv with per-sample weights; `LatentSpace` uses the faster on the CPU),
the ruler's feature extractors as `tagelib.metrics.feature_extractor` builds them (the shipped judge's features,
FD-domain; LPIPS-vgg's VGG16 trunk at 32 px, FD-VGG16), on real glyphs and their codes. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tagelib.glyphs.dataset import GlyphDataset
from tagelib.judge import load_judge
from tagelib.latent import LatentSpace
from tagelib.metrics import feature_extractor
from tagelib.paths import DATA_DIR
from tagelib.stylegan2 import Generator


def best_seconds(fn, repeats: int) -> float:
    """Fastest of `repeats` calls after one warm-up call (the least disturbed by anything else on the machine)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops_per_s(repeats: int, n: int = 2048) -> float:
    """fp32 FLOP/s of one large torch.mm (MKL): the issue's ceiling."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_seconds(lambda: torch.mm(a, b), repeats)


def conv3x3_flops_per_s(repeats: int) -> float:
    """Effective fp32 FLOP/s of a large 3x3 conv (oneDNN), counted as direct convolution: oneDNN may use fewer
    multiplies (Winograd-like algorithms) or better kernels than MKL's matmul on this CPU, so it can exceed it."""
    x, w = torch.randn(64, 512, 16, 16), torch.randn(512, 512, 3, 3)
    return 2 * 64 * 16 * 16 * 512 * 512 * 9 / best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1), repeats)


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure(name: str, fn, batch: int, repeats: int, matmul: float, conv: float) -> dict:
    with torch.no_grad():
        flops = flops_of(fn) / batch
        seconds = best_seconds(fn, repeats)
    rate = batch / seconds
    return {"network": name, "images_per_s": round(rate, 1), "gflops_per_image": round(flops / 1e9, 4),
            "achieved_gflops_per_s": round(rate * flops / 1e9, 2), "ratio_to_matmul": round(rate * flops / matmul, 3),
            "ratio_to_conv3x3": round(rate * flops / conv, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunks", default="", help="comma-separated chunk sizes for G and E over 512 images (\"\": skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ceilings = matmul_flops_per_s(args.repeats), conv3x3_flops_per_s(args.repeats)
    model = LatentSpace.load(DATA_DIR / "latent" / "glyph32")
    fused = Generator(model.cfg.generator, fused=True).eval().requires_grad_(False)
    fused.load_state_dict(model.decoder.state_dict())
    ds = GlyphDataset.load(DATA_DIR / "glyphs")
    styles, categories = ds.coverage.nonzero()
    pick = torch.randperm(len(styles))[:args.batch].numpy()
    x = ds.tensor(styles[pick], categories[pick])  # (B, 1, 32, 32) real glyphs in [-1, 1]
    with torch.no_grad():
        w = model.encode(x)  # (B, L, D): codes where G is used
    judge = feature_extractor("judge", judge=load_judge(DATA_DIR / "judge" / "glyph32_judge"))
    vgg = feature_extractor("vgg16")  # LPIPS-vgg's trunk at 32 px, relu5_3 averaged: the ruler's FD-VGG16
    with torch.no_grad():
        gap = (model.decoder(w, randomize_noise=False) - fused(w, randomize_noise=False)).abs().max().item()
    rows = [measure("G, unfused modulation (LatentSpace's CPU path)", lambda: model.decoder(w, randomize_noise=False),
                    args.batch, args.repeats, *ceilings),
            measure("G, fused modulation (grouped conv)", lambda: fused(w, randomize_noise=False), args.batch,
                    args.repeats, *ceilings),
            measure("judge features (FD-domain)", lambda: judge(x), args.batch, args.repeats, *ceilings),
            measure("VGG16 trunk at 32 px (FD-VGG16, LPIPS-vgg)", lambda: vgg(x), args.batch, args.repeats, *ceilings)]
    chunk_rows = []
    if args.chunks:
        codes, images = w.repeat(-(-512 // len(w)), 1, 1)[:512], x.repeat(-(-512 // len(x)), 1, 1, 1)[:512]
        for size in [int(c) for c in args.chunks.split(",")]:
            for name, net, data in (("G", lambda v: model.decoder(v, randomize_noise=False), codes),
                                    ("E", model.encoder, images)):
                chunked = lambda net=net, data=data, size=size: [net(data[i:i + size]) for i in range(0, 512, size)]
                row = measure(f"{name}, 512 in chunks of {size}", chunked, 512, args.repeats, *ceilings)
                chunk_rows.append({**row, "chunk": size})
    print(json.dumps({"threads": args.threads, "batch": args.batch, "matmul_gflops_per_s": round(ceilings[0] / 1e9, 1),
                      "conv3x3_effective_gflops_per_s": round(ceilings[1] / 1e9, 1),
                      "fused_vs_unfused_max_abs_difference": gap, "rows": rows, "chunk_rows": chunk_rows}, indent=1))


if __name__ == "__main__":
    main()
