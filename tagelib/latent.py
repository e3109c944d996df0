"""The frozen latent space TAGE edits: a pSp encoder E (image -> W+) and a StyleGAN2 generator G (W+ -> image).

`LatentSpace` bundles them with pSp's `latent_avg` and their configs; `save`/`load` store our own
weights as one hash-checked safetensors file with the config in its header (`tagelib.checkpoint_io`). Foreign checkpoints (rosinality, pSp, AGE) go through
`tagelib.checkpoints.import_foreign_checkpoint` instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagelib.checkpoint_io import CheckpointMismatchError, build_stored_config, load_checked, load_module, save_module
from tagelib.checkpoints import import_foreign_checkpoint
from tagelib.paths import checkpoint_file
from tagelib.psp import EncoderConfig, GradualStyleEncoder
from tagelib.stylegan2 import Generator, GeneratorConfig

MADE_BY = "notebooks/01_latent_space.ipynb (or `make pretrain` for the shipped data/latent/glyph32)"
CPU_BATCH = {"encode": 64, "decode": 32, "refine": 32}  # images per chunk on a CPU (`LatentSpace.batch_size`)


@dataclass
class LatentSpaceConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        if isinstance(self.generator, dict):
            self.generator = GeneratorConfig.from_dict(self.generator)
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        g, e = self.generator, self.encoder
        n_latent = g.n_latent
        if n_latent != e.n_styles or g.style_dim != e.style_dim:
            raise ValueError(f"encoder emits ({e.n_styles}, {e.style_dim}) codes, generator needs "
                             f"({n_latent}, {g.style_dim})")
        if e.in_channels != g.img_channels or e.input_size > g.size or g.size % e.input_size:
            raise ValueError(f"the generator draws {g.img_channels} x {g.size} px, the encoder reads "
                             f"{e.in_channels} x {e.input_size} px: channels must agree and the generator's size must "
                             "be the encoder's or a multiple of it (pSp/AGE pool 1024 px down to 256 px)")


def glyph_latent_config(style_dim: int = 128, gen_widths: str = "256,256,128,64", enc_units: str = "1,2,2,1",
                        enc_widths: str = "32,64,128,128", size: int = 32) -> LatentSpaceConfig:
    """The glyph latent space of notebook 01: one channel, `size` px, W+ of 8 layers x `style_dim`.
    Widths and units are comma-separated strings (as notebook parameters are)."""
    ints = lambda text: tuple(int(u) for u in text.split(","))
    return LatentSpaceConfig(
        GeneratorConfig(size=size, style_dim=style_dim, n_mlp=4, img_channels=1, widths=ints(gen_widths)),
        EncoderConfig(input_size=size, in_channels=1, n_styles=8, style_dim=style_dim, mode="ir",
                      units=ints(enc_units), widths=ints(enc_widths)))


def paper_latent_config(architecture: str) -> LatentSpaceConfig:
    """The official architectures a foreign checkpoint is loaded into (notebook 01's `architecture` parameter):

    - `age-1024`: AGE's and pSp's: StyleGAN2 Generator(1024, 512, 8) pooled to 256 px, GradualStyleEncoder ir_se-50
      at 256 px, W+ 18 x 512;
    - `psp-256`: a 256 px StyleGAN2 (W+ 14 x 512) with the same encoder;
    - `paper-synthetic`: the rehearsal's small RGB networks (`tagelib.paper_synthetic`)."""
    if architecture == "paper-synthetic":
        from tagelib.paper_synthetic import synthetic_latent_config

        return synthetic_latent_config()
    sizes = {"age-1024": 1024, "psp-256": 256}
    if architecture not in sizes:
        raise ValueError(f"unknown architecture {architecture!r}; valid: {[*sizes, 'paper-synthetic']}")
    generator = GeneratorConfig(size=sizes[architecture], style_dim=512, n_mlp=8, channel_multiplier=2, img_channels=3)
    return LatentSpaceConfig(generator, EncoderConfig(input_size=256, in_channels=3, n_styles=generator.n_latent,
                                                      style_dim=512, num_layers=50, mode="ir_se"))


class LatentSpace(nn.Module):
    """E and G with pSp's convention w = E(x) + latent_avg. Shapes: x (B, C, S, S), w (B, L, D)."""

    def __init__(self, cfg: LatentSpaceConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = GradualStyleEncoder(cfg.encoder)
        self.decoder = Generator(cfg.generator, fused=False)  # same maths as the grouped conv, 2.3x faster on CPU
        self.register_buffer("latent_avg", torch.zeros(self.decoder.n_latent, cfg.generator.style_dim))
        self.frozen = False
        self.amp = False  # bf16 autocast of G on CUDA (`to_device`); never on the CPU

    @property
    def device(self) -> torch.device:
        return self.latent_avg.device

    def to_device(self, device: torch.device, amp: bool = False) -> "LatentSpace":
        """Move E and G to `device`; `amp`: G runs under bf16 autocast there when it is a GPU (E, the codes and every
        metric stay float32). Inputs may live anywhere: encode/decode compute on `device` and answer on the input's."""
        self.amp = bool(amp) and device.type == "cuda"
        return self.to(device)

    @property
    def n_latent(self) -> int:
        return self.decoder.n_latent

    def encode(self, x: Tensor) -> Tensor:
        """x (B, C, S, S) in [-1, 1] -> w (B, L, D), computed on the model's device, returned on x's."""
        return (self.encoder(x.to(self.device)) + self.latent_avg).to(x.device)

    def decode(self, w: Tensor) -> Tensor:
        """w (B, L, D) -> image (B, C, S, S) at the encoder's size S (pSp's face_pool averages a larger generator's
        output down); the generator's fixed noise maps, so decoding is deterministic. Computed on the model's device
        (bf16 autocast with `amp` on a GPU), returned float32 on w's device; gradients flow through the moves."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            image = self.decoder(w.to(self.device), randomize_noise=False)
        image = image.float()
        size = self.cfg.encoder.input_size
        image = image if image.shape[-1] == size else F.adaptive_avg_pool2d(image, size)
        return image.to(w.device)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def freeze(self) -> "LatentSpace":
        """Freeze E and G for the editing stages: no gradients, eval mode that `.train()` cannot undo."""
        self.requires_grad_(False)
        self.frozen = True
        return super().train(False)

    def train(self, mode: bool = True) -> "LatentSpace":
        return super().train(False if self.frozen else mode)

    def provenance(self) -> str:
        """Where the weights come from, in a few words: the training recipe, or the imported checkpoint."""
        info = getattr(self, "training_info", {}) or {}
        if "imported_from" in info:
            return f"imported from {info['imported_from']} ({info['kind']})"
        if "train" not in info:
            return "untrained"
        train = info["train"]
        return (f"{train['steps']} steps × {train.get('batch_size', '?')}, {info.get('train_seconds', 0) / 60:.0f} min, "
                f"augment {train.get('augment', 0)}, pseudo {train.get('pseudo_fraction', 0)}")

    def batch_size(self, what: str) -> int:
        """Chunk size for many images: 512 on a GPU; on a CPU small enough that activations stay in cache (2 cores,
        32 px, `benchmarks/bench_generator.py --chunks`: G 3.1× and E 2.4× the throughput of chunks of 512)."""
        return 512 if self.device.type == "cuda" else CPU_BATCH[what]

    @torch.no_grad()
    def encode_batched(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Encode many images without gradients: (N, C, S, S) -> (N, L, D)."""
        bs = batch_size or self.batch_size("encode")
        return torch.cat([self.encode(x[i:i + bs]) for i in range(0, len(x), bs)])

    @torch.no_grad()
    def decode_batched(self, w: Tensor, batch_size: int | None = None) -> Tensor:
        """Decode many codes without gradients, clamped to the image range [-1, 1]: (N, L, D) -> (N, C, S, S)."""
        bs = batch_size or self.batch_size("decode")
        return torch.cat([self.decode(w[i:i + bs]) for i in range(0, len(w), bs)]).clamp(-1, 1)

    def save(self, stem: str | Path, extra_config: dict | None = None) -> Path:
        """Write `<stem>.safetensors` (weights, config, `extra_config`, hash) atomically; returns its path."""
        config = {"generator": dataclasses.asdict(self.cfg.generator), "encoder": dataclasses.asdict(self.cfg.encoder)}
        return save_module(stem, self, {**config, **(extra_config or {})})

    @classmethod
    def load(cls, stem: str | Path, frozen: bool = True) -> "LatentSpace":
        """Load our checkpoint. Every error names the file: missing (and the notebook that makes it),
        corrupted (`CheckpointCorruptError`), an invalid stored config (checked before the networks are built) or
        another architecture (`CheckpointMismatchError`)."""
        path = checkpoint_file(stem)
        state, config = load_module(path, hint=f"it is made by {MADE_BY}")
        missing = [k for k in ("generator", "encoder") if not isinstance(config, dict) or k not in config]
        if missing:
            keys = sorted(config) if isinstance(config, dict) else type(config).__name__
            raise CheckpointMismatchError(f"{path}: not a latent-space checkpoint: its config has no {missing} "
                                          f"section(s) (it has {keys}); latent spaces are made by {MADE_BY}")
        sections = {k: config[k] for k in ("generator", "encoder")}
        model = cls(build_stored_config(path, LatentSpaceConfig, sections, "latent-space"))
        load_checked(model, state, name="the latent space", source=path)
        model.training_info = {k: v for k, v in config.items() if k not in ("generator", "encoder")}
        return model.freeze() if frozen else model

    @classmethod
    def from_foreign(cls, path: str | Path, cfg: LatentSpaceConfig, frozen: bool = True) -> "LatentSpace":
        """An official pSp or AGE checkpoint (`encoder.*`, `decoder.*`, `latent_avg`) in the architecture `cfg`
        (`torch.load(weights_only=True)`; any key or shape mismatch names the file and the keys)."""
        model = cls(cfg)
        found = import_foreign_checkpoint(path, generator=model.decoder, encoder=model.encoder)
        if found.latent_avg is None:
            raise CheckpointMismatchError(f"{path}: no `latent_avg`; pSp and AGE checkpoints store one")
        avg = found.latent_avg.float()
        avg = avg.expand(model.n_latent, -1) if avg.dim() == 1 else avg
        if tuple(avg.shape) != tuple(model.latent_avg.shape):
            raise CheckpointMismatchError(f"{path}: latent_avg {tuple(found.latent_avg.shape)}, the architecture "
                                          f"needs {tuple(model.latent_avg.shape)}")
        model.latent_avg.copy_(avg)
        model.training_info = {"imported_from": str(path), "kind": found.kind}
        return model.freeze() if frozen else model
