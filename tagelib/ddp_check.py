"""Data-parallel equivalence check: AGE, CLM and CPM trained a few steps on a small random latent space.

    python -m tagelib.ddp_check --out one.json                                  # one process
    torchrun --standalone --nproc_per_node 2 -m tagelib.ddp_check --out two.json   # two (gloo on CPU, NCCL on GPU)

Both runs draw the same data and global batches; their loss curves and final weights must agree up to float
tolerance (`tests/test_distributed.py` compares them). Rank 0 writes the histories and weight checksums.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tagelib import age as age_lib
from tagelib.atomic import write_text_atomic
from tagelib.clm import CLMTrainConfig, train_clm
from tagelib.codebook import Codebook, CodebookConfig
from tagelib.cpm import CodePredictor, CPMConfig
from tagelib.cpm_train import CPMData, CPMTrainConfig, train_cpm
from tagelib.distributed import DEVICES, end_worker, init_distributed
from tagelib.stylegan2 import Generator, GeneratorConfig

D, SIZE, CATEGORIES, PER_CATEGORY, LAYERS = 16, 8, 6, 8, [0, 1, 2, 3]


def tiny_problem(seed: int = 0):
    """A random 8 px generator (L = 4 layers of D = 16) and codes around 6 category means: (G, w, labels, means)."""
    torch.manual_seed(seed)
    gen = Generator(GeneratorConfig(size=SIZE, style_dim=D, n_mlp=1, widths=(16, 16), img_channels=1)).eval()
    gen.requires_grad_(False)
    labels = torch.arange(CATEGORIES).repeat_interleave(PER_CATEGORY)  # (N,)
    means = torch.randn(CATEGORIES, gen.n_latent, D)  # (C, L, D), L = 4 at 8 px
    w = means[labels] + 0.3 * torch.randn(len(labels), *means.shape[1:])  # (N, L, D)
    return gen, w, labels, means


def run(steps: int, device: str) -> dict:
    dist = init_distributed(device)
    gen, w, labels, means = tiny_problem()
    decode = lambda codes: gen(codes, randomize_noise=False)
    perceptual = lambda a, b: (a - b).abs().flatten(1).mean(1)  # (B,): a cheap stand-in for LPIPS
    out = {"world": dist.world}

    torch.manual_seed(1)
    age = age_lib.AGE(age_lib.AGEConfig(n_latent=w.shape[1], style_dim=D, edit_layers=(0, 1, 2, 3),
                                        groups=((0, 1), (2, 3)), dict_size=8, mlp_hidden=(16,), lambda_lpips=0.0,
                                        optimizer="adam", lr=1e-3))
    out["age"] = age_lib.train_age(age, w, labels, means, decode, steps=steps, batch_size=8, progress=False,
                                   dist=dist)["loss"]
    out["age_A"] = age.A.detach().double().sum().item()

    torch.manual_seed(2)
    codebook = Codebook(CodebookConfig(num_codes=16, dim=D))
    clm_hist = train_clm(codebook, w, means[labels], LAYERS, decode, perceptual,
                         CLMTrainConfig(steps=steps, batch_size=8, revive_every=5), progress=False, dist=dist)
    out["clm"], out["clm_usage"] = clm_hist["loss"], codebook.usage_count.tolist()
    out["clm_embed"] = codebook.embed.detach().double().sum().item()

    torch.manual_seed(3)
    targets = torch.randint(16, (len(w), len(LAYERS)))
    cpm = CodePredictor(CPMConfig(num_codes=16, code_dim=D, n_latent=w.shape[1], n_edit=len(LAYERS), d_model=16,
                                  depth=1, heads=2, dropout=0.0), codebook.embed.detach())
    cpm_hist = train_cpm(cpm, CPMData(w, labels, targets, codebook.embed.detach()[targets]),
                         CPMTrainConfig(steps=steps, batch_size=8, lr=1e-3, warmup=2), progress=False, dist=dist)
    out["cpm"], out["cpm_accuracy"] = cpm_hist["loss"], cpm_hist["accuracy"]
    out["cpm_weights"] = sum(p.detach().double().sum().item() for p in cpm.parameters())
    return out if dist.is_main else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file rank 0 writes")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    args = parser.parse_args(argv)
    result = run(args.steps, args.device)
    if result:
        write_text_atomic(args.out, json.dumps(result))
    end_worker(init_distributed(args.device))  # the group run() joined: leave it cleanly (a no-op in one process)


if __name__ == "__main__":
    main()
