"""The paper-format rehearsal's inputs, built in seconds: a LoFGAN-format `.npy` and official-layout checkpoints.

    python -m tagelib.paper_synthetic --out results/paper-synthetic/inputs

writes `paper_synthetic.npy` ((classes, images, 64, 64, 3) uint8, LoFGAN's layout), `psp.pt` (pSp's layout:
`state_dict` with `encoder.*` / `decoder.*`, `latent_avg`, `opts`) and `stylegan2.pt` (rosinality's: `g_ema`,
`latent_avg`), all with RANDOM weights. They exist so that the paper code path (memory-mapped LoFGAN loader,
`import_foreign_checkpoint`, RGB everywhere) runs on every machine; numbers measured on them mean nothing.

The images are drawn, not photographed: class = a coloured blob with its own outline (a few polar harmonics),
image = that blob at a random place, size and rotation on a random background.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch

from tagelib.atomic import write_bytes_atomic
from tagelib.latent import LatentSpace, LatentSpaceConfig
from tagelib.psp import EncoderConfig
from tagelib.stylegan2 import GeneratorConfig

CLASSES, PER_CLASS, SIZE = 40, 40, 64  # the `synthetic` entry of tagelib.paper_data.LOFGAN must agree


def synthetic_images(classes: int = CLASSES, per_class: int = PER_CLASS, size: int = SIZE, seed: int = 0
                     ) -> np.ndarray:
    """(classes, per_class, size, size, 3) uint8: one blob shape and colour per class, random pose per image."""
    rng = np.random.default_rng(seed)
    harmonics = np.arange(2, 6)  # (H,)
    amplitude = rng.uniform(0.05, 0.3, (classes, 1, len(harmonics), 1, 1))  # class outline
    phase = rng.uniform(0, 2 * np.pi, (classes, 1, len(harmonics), 1, 1))
    colour = rng.uniform(0.25, 1.0, (classes, 1, 1, 1, 3))
    background = rng.uniform(0.0, 0.5, (classes, per_class, 1, 1, 3))  # image pose and background
    scale = rng.uniform(0.45, 0.8, (classes, per_class, 1, 1))
    angle = rng.uniform(0, 2 * np.pi, (classes, per_class, 1, 1))
    shift = rng.uniform(-0.2, 0.2, (classes, per_class, 2, 1, 1))
    axis = np.linspace(-1, 1, size)
    y, x = axis[:, None] - shift[:, :, 0], axis[None, :] - shift[:, :, 1]  # (C, P, S, S) each
    radius, theta = np.hypot(x, y), np.arctan2(y, x) - angle
    outline = scale * (1 + (amplitude * np.cos(harmonics[:, None, None] * theta[:, :, None] + phase)).sum(2))
    inside = 1 / (1 + np.exp(-(outline - radius) * size / 4))  # soft edge, (C, P, S, S)
    shade = 1 - 0.4 * np.clip(radius / np.maximum(outline, 1e-3), 0, 1)  # lit centre
    image = background * (1 - inside[..., None]) + colour * (inside * shade)[..., None]
    return np.round(image * 255).clip(0, 255).astype(np.uint8)


def synthetic_latent_config(size: int = SIZE, style_dim: int = 64) -> LatentSpaceConfig:
    """An RGB latent space of the official architectures, small enough for CPU: StyleGAN2 (rosinality) at `size`
    px with W+ of 2·log2(size) − 2 layers, pSp's GradualStyleEncoder (ir_se) with small stages."""
    gen = GeneratorConfig(size=size, style_dim=style_dim, n_mlp=2, max_channels=64, img_channels=3)
    enc = EncoderConfig(input_size=size, in_channels=3, n_styles=gen.n_latent, style_dim=style_dim, mode="ir_se",
                        units=(1, 1, 1, 1), widths=(16, 32, 64, 64), coarse_ind=3, middle_ind=7)
    return LatentSpaceConfig(gen, enc)


def official_checkpoints(cfg: LatentSpaceConfig, seed: int = 0) -> dict[str, dict]:
    """Random-weight checkpoints in the official layouts: {"psp": pSp dict, "stylegan2": rosinality dict}."""
    torch.manual_seed(seed)
    model = LatentSpace(cfg)
    latent_avg = model.decoder.mean_latent(256)  # (D,): what rosinality's generator calls mean_latent
    state = model.state_dict()
    psp = {"state_dict": {k: v for k, v in state.items() if k.startswith(("encoder.", "decoder."))},
           "latent_avg": latent_avg.expand(model.n_latent, -1).clone(),
           "opts": {"encoder_type": "GradualStyleEncoder", "output_size": cfg.generator.size,
                    "input_nc": cfg.encoder.in_channels, "label_nc": 0, "start_from_latent_avg": True}}
    stylegan2 = {"g_ema": {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")},
                 "latent_avg": latent_avg.clone()}
    return {"psp": psp, "stylegan2": stylegan2}


# The rehearsal's CLIP: a ViT-B-32-shaped open_clip model in miniature (its own name, patches, CLIP's mean and std,
# so images are resized and normalised as for ViT-B-32), registered with open_clip and created by name with random
# weights — the paper profiles' path (`clip: ViT-B-32`), minus the download.
REHEARSAL_CLIP = "tage-rehearsal-vit"
REHEARSAL_CLIP_CFG = {"embed_dim": 32,
                      "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
                      "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


def register_rehearsal_clip() -> str:
    """Register the rehearsal's CLIP config with open_clip (once per process); returns its name."""
    from tagelib.clip_glyph import add_open_clip_config

    return add_open_clip_config(REHEARSAL_CLIP, REHEARSAL_CLIP_CFG)


def write_inputs(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the rehearsal's dataset and checkpoints into `out_dir` (atomically; existing files are replaced,
    they are rebuilt identically from the seed). Returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"data": out / "paper_synthetic.npy", "psp": out / "psp.pt", "stylegan2": out / "stylegan2.pt"}
    write_bytes_atomic(paths["data"], _npy_bytes(synthetic_images(seed=seed)))
    for name, ckpt in official_checkpoints(synthetic_latent_config(), seed).items():
        write_bytes_atomic(paths[name], _torch_bytes(ckpt))
    return paths


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the .npy and the .pt files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write_inputs(args.out, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
