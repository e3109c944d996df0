"""Paper-size costs on this machine's device (issue 12), with random-weight official-size networks: nothing to download.

    .venv/bin/python benchmarks/bench_paper.py                                   # CUDA when present, else the CPU
    .venv/bin/python benchmarks/bench_paper.py --device cpu --batch 2 --repeats 1 --classes 2 --n 8   # a CPU sample

Measured, each with the device's memory peak (GPU only):
- generation: G (StyleGAN2 1024 px, W+ 18 x 512, pooled to 256 px as pSp does) images/s, float32 and (GPU) bf16;
- encoding: E (pSp's ir_se-50 GradualStyleEncoder at 256 px) images/s;
- one training step of AGE (dictionary (6, 512, 100) through G and LPIPS-alex), CLM (N = 10,000 codes through G and
  LPIPS-alex) and CPM (N = 10,000, `--cpm-width`, 4 blocks) at `--batch`, by the library trainers on the device;
- one LoFGAN-protocol evaluation's image metrics: `--classes` x `--n` generated vs `--n` real 256 px images (random
  pixels: the cost does not depend on them) -> LPIPS diversity, collapse and FD-VGG16 at 256 px, as `evaluate` does.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tagelib import age as age_lib
from tagelib.clm import CLMTrainConfig, train_clm
from tagelib.codebook import Codebook, CodebookConfig
from tagelib.cpm import CodePredictor, CPMConfig
from tagelib.cpm_train import CPMData, CPMTrainConfig, train_cpm
from tagelib.distributed import Distributed, pick_device
from tagelib.latent import LatentSpace, paper_latent_config
from tagelib.metrics import frechet_distance, lpips_diversity, pairs_and_vgg_features
from tagelib.perceptual import load_lpips, lpips_distance

EDIT = [0, 1, 2, 3, 4, 5]


class Clock:
    """Wall time of a block with the device synchronised, and the device's memory peak inside it."""

    def __init__(self, device: torch.device):
        self.device, self.cuda = device, device.type == "cuda"

    def __call__(self, fn, repeats: int) -> tuple[float, float | None]:
        fn()  # warm-up (cuDNN autotuning, lazy inits)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            if self.cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None
        return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=8, help="images / codes per step")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (best is kept)")
    parser.add_argument("--classes", type=int, default=30, help="unseen classes of the evaluation")
    parser.add_argument("--n", type=int, default=128, help="generated and real images per class")
    parser.add_argument("--cpm-width", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    clock, b, out = Clock(device), args.batch, {"device": str(device), "batch": args.batch}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    torch.manual_seed(0)
    model = LatentSpace(paper_latent_config("age-1024")).freeze().to_device(device, amp=False)
    lpips_alex = load_lpips("alex", device=device)
    w = model.latent_avg + 0.5 * torch.randn(b, model.n_latent, 512, device=device)  # (B, 18, 512)
    x = torch.rand(b, 3, 256, 256, device=device) * 2 - 1

    with torch.no_grad():
        for amp in ([False, True] if device.type == "cuda" else [False]):
            model.amp = amp
            s, peak = clock(lambda: model.decode(w), args.repeats)
            out[f"G_{'bf16' if amp else 'fp32'}"] = {"images_per_s": b / s, "memory_peak_gib": peak}
        model.amp = False
        s, peak = clock(lambda: model.encode(x), args.repeats)
        out["E_fp32"] = {"images_per_s": b / s, "memory_peak_gib": peak}

    dist = Distributed(device=device)
    n_codes = 4 * b
    codes = model.latent_avg.cpu() + 0.5 * torch.randn(n_codes, model.n_latent, 512)  # (4B, 18, 512) training codes
    labels = torch.arange(n_codes) % 4
    means = torch.stack([codes[labels == c].mean(0) for c in range(4)])  # (4, 18, 512)
    perceptual = lambda p, q: lpips_distance(lpips_alex, p.clamp(-1, 1), q)
    age = age_lib.AGE(age_lib.AGEConfig(n_latent=model.n_latent, style_dim=512, edit_layers=tuple(EDIT),
                                        groups=((0, 1, 2), (3, 4, 5)), dict_size=100, optimizer="adam"))
    photos = torch.rand(n_codes, 3, 256, 256) * 2 - 1  # AGE's reconstruction targets: real images (here random)
    s, peak = clock(lambda: age_lib.train_age(age, codes, labels, means, model.decode, perceptual, images=photos,
                                              steps=1, batch_size=b, progress=False, dist=dist), args.repeats)
    out["AGE_step"] = {"steps_per_s": 1 / s, "memory_peak_gib": peak}
    codebook = Codebook(CodebookConfig(num_codes=10_000, dim=512))
    clm_cfg = CLMTrainConfig(steps=1, batch_size=b, revive_every=0)
    s, peak = clock(lambda: train_clm(codebook, codes, means[labels], EDIT, model.decode,
                                      lambda p, q: lpips_distance(lpips_alex, p, q), clm_cfg, progress=False,
                                      dist=dist), args.repeats)
    out["CLM_step_with_kmeans_init"] = {"steps_per_s": 1 / s, "memory_peak_gib": peak,
                                        "note": "each call re-initialises the 10,000 codes by k-means on 4B x 6 residuals"}
    targets = torch.randint(10_000, (n_codes, len(EDIT)))
    cpm = CodePredictor(CPMConfig(num_codes=10_000, code_dim=512, n_latent=model.n_latent, n_edit=len(EDIT),
                                  d_model=args.cpm_width, depth=4, heads=8), codebook.embed.detach())
    data = CPMData(codes, labels, targets, codebook.embed.detach()[targets])
    s, peak = clock(lambda: train_cpm(cpm, data, CPMTrainConfig(steps=1, batch_size=b, warmup=1), progress=False,
                                      dist=dist), args.repeats)
    out["CPM_step"] = {"steps_per_s": 1 / s, "memory_peak_gib": peak, "d_model": args.cpm_width}

    lpips_vgg = load_lpips("vgg", device=device)
    generated = [torch.rand(args.n, 3, 256, 256) * 2 - 1 for _ in range(args.classes)]
    real = torch.rand(args.classes * args.n, 3, 256, 256) * 2 - 1

    def evaluation_metrics() -> None:
        pairs, feats = pairs_and_vgg_features(lpips_vgg, generated, size=256)
        _, ref = pairs_and_vgg_features(lpips_vgg, [real[i:i + args.n] for i in range(0, len(real), args.n)], size=256)
        lpips_diversity(pairs), frechet_distance(feats, ref)

    s, peak = clock(evaluation_metrics, 1)
    out["evaluation_metrics"] = {"seconds": s, "memory_peak_gib": peak, "classes": args.classes, "n": args.n,
                                 "what": "LPIPS diversity + FD-VGG16 at 256 px, generated and real features"}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
