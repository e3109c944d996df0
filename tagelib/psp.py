"""pSp encoder (Richardson et al., CVPR 2021): image -> W+ codes through a feature pyramid.

`GradualStyleEncoder` is an IR / IR-SE ResNet backbone whose three pyramid levels feed one
`GradualStyleBlock` per W+ layer: coarse layers read the deepest map (input/16), middle layers
the middle map (input/8), fine layers the shallowest (input/4). Module names and shapes follow
eladrich/pixel2style2pixel (`models/encoders/psp_encoders.py`, `helpers.py`), so with the default
config an official pSp/AGE checkpoint's `encoder.*` weights load with `strict=True`.
For the glyph models the config adds `units`/`widths` (a small backbone) and any power-of-two
`input_size`; pyramid sizes and the number of stride-2 convs per style block follow from it.

Shapes: B batch, L = n_styles, D = style_dim, S = input_size.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagelib.config import build_config, check_choice
from tagelib.stylegan2 import EqualLinear

# pSp `get_blocks`: residual units per stage for each depth
UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}


@dataclass
class EncoderConfig:
    input_size: int = 256  # S, power of two >= 16
    in_channels: int = 3  # 3 RGB, 1 grayscale glyphs
    n_styles: int = 18  # L, must equal the generator's n_latent
    style_dim: int = 512  # D
    num_layers: int = 50  # 50 / 100 / 152: pSp's unit counts (ignored when `units` is set)
    units: tuple[int, ...] | None = None  # custom units per stage, e.g. (1, 2, 2, 1) for a small encoder
    widths: tuple[int, ...] = (64, 128, 256, 512)  # channels of the 4 stages (pSp: 64, 128, 256, 512)
    mode: str = "ir_se"  # "ir" or "ir_se" (squeeze-excitation)
    coarse_ind: int = 3  # styles [0, coarse_ind) read the input/16 map
    middle_ind: int = 7  # styles [coarse_ind, middle_ind) read input/8, the rest input/4

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ["ir", "ir_se"])
        log = int(math.log2(self.input_size)) if self.input_size > 0 else -1
        if self.input_size < 16 or 2**log != self.input_size:
            raise ValueError(f"input_size={self.input_size} must be a power of two >= 16")
        if self.units is None:
            check_choice("num_layers", self.num_layers, sorted(UNITS))
        else:
            self.units = tuple(int(u) for u in self.units)
            if len(self.units) != 4 or min(self.units) < 1:
                raise ValueError(f"units={self.units} must be 4 positive counts")
        self.widths = tuple(int(w) for w in self.widths)
        if len(self.widths) != 4:
            raise ValueError(f"widths={self.widths} must have 4 entries")
        if not 0 <= self.coarse_ind <= self.middle_ind:  # indices past n_styles: no layers in that group
            raise ValueError(f"need 0 <= coarse_ind <= middle_ind, got {self.coarse_ind}, {self.middle_ind}")

    @property
    def stage_units(self) -> tuple[int, int, int, int]:
        return self.units if self.units is not None else UNITS[self.num_layers]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EncoderConfig":
        """Build from a (JSON) mapping; unknown keys raise a ValueError listing the valid ones."""
        return build_config(cls, values)


class SEModule(nn.Module):
    """Squeeze-excitation: channel gates from global average pooling (fc1/fc2 are 1x1 convs)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIR(nn.Module):
    """ArcFace IR unit: BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN [-> SE], plus shortcut.

    res_layer indices: 0 BN(in), 1 conv, 2 PReLU, 3 conv, 4 BN, 5 SE (ir_se only).
    shortcut_layer: MaxPool2d(1, stride) (no weights) when in == out, else 1x1 conv + BN.
    """

    def __init__(self, in_ch: int, depth: int, stride: int, se: bool):
        super().__init__()
        if in_ch == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        layers = [
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """map2style: log2(spatial) stride-2 3x3 convs (+ LeakyReLU) to 1x1, then EqualLinear -> (B, out)."""

    def __init__(self, in_ch: int, out_ch: int, spatial: int):
        super().__init__()
        self.out_ch = out_ch
        n = max(int(math.log2(spatial)), 1)
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_ch, out_ch, lr_mul=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, in, s, s) -> (B, out)
        return self.linear(self.convs(x).reshape(x.shape[0], self.out_ch))


class GradualStyleEncoder(nn.Module):
    """Image (B, in_channels, S, S) -> W+ offsets (B, n_styles, style_dim)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        w0, w1, w2, w3 = cfg.widths
        self.input_layer = nn.Sequential(nn.Conv2d(cfg.in_channels, w0, 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(w0), nn.PReLU(w0))
        units, in_ch = [], w0
        for n, depth in zip(cfg.stage_units, cfg.widths):  # each stage halves the resolution
            for j in range(n):
                units.append(BottleneckIR(in_ch, depth, 2 if j == 0 else 1, se=cfg.mode == "ir_se"))
                in_ch = depth
        self.body = nn.Sequential(*units)
        # pyramid taps: last unit of stages 2, 3, 4 (pSp hard-codes 6, 20, 23 = the 50-layer values)
        ends = [n - 1 for n in itertools.accumulate(cfg.stage_units)]
        self.taps = (ends[1], ends[2], ends[3])

        s = cfg.input_size
        self.styles = nn.ModuleList()
        for i in range(cfg.n_styles):
            spatial = s // 16 if i < cfg.coarse_ind else s // 8 if i < cfg.middle_ind else s // 4
            self.styles.append(GradualStyleBlock(w3, cfg.style_dim, spatial))
        self.latlayer1 = nn.Conv2d(w2, w3, 1)  # c2 lateral -> c3 width
        self.latlayer2 = nn.Conv2d(w1, w3, 1)  # c1 lateral -> c3 width

    @staticmethod
    def _upsample_add(x: Tensor, y: Tensor) -> Tensor:
        return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        if x.shape[1:] != (cfg.in_channels, cfg.input_size, cfg.input_size):
            raise ValueError(f"expected images (B, {cfg.in_channels}, {cfg.input_size}, {cfg.input_size}), "
                             f"got {tuple(x.shape)}")
        x = self.input_layer(x)  # (B, w0, S, S)
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == self.taps[0]:
                c1 = x  # (B, w1, S/4, S/4)
            elif i == self.taps[1]:
                c2 = x  # (B, w2, S/8, S/8)
        c3 = x  # (B, w3, S/16, S/16)

        p2 = self._upsample_add(c3, self.latlayer1(c2))  # (B, w3, S/8, S/8)
        p1 = self._upsample_add(p2, self.latlayer2(c1))  # (B, w3, S/4, S/4)
        feats = [c3 if i < cfg.coarse_ind else p2 if i < cfg.middle_ind else p1 for i in range(cfg.n_styles)]
        return torch.stack([style(f) for style, f in zip(self.styles, feats)], dim=1)  # (B, L, D)


def encode(encoder: nn.Module, x: Tensor, latent_avg: Tensor | None = None) -> Tensor:
    """W+ codes of images, pSp style: encoder(x) + latent_avg (start_from_latent_avg).

    latent_avg: (D,) (broadcast to every layer) or (L, D); None adds nothing. Returns (B, L, D).
    """
    codes = encoder(x)
    return codes if latent_avg is None else codes + latent_avg.to(codes)


class PSPEncoder(nn.Module):
    """GradualStyleEncoder plus the `latent_avg` buffer (L, D) it starts from.

    state_dict keys: `encoder.*` (as in pSp checkpoints) and `latent_avg`; zeros = no offset.
    """

    def __init__(self, cfg: EncoderConfig, latent_avg: Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder = GradualStyleEncoder(cfg)
        self.register_buffer("latent_avg", torch.zeros(cfg.n_styles, cfg.style_dim))
        if latent_avg is not None:
            self.set_latent_avg(latent_avg)

    @torch.no_grad()
    def set_latent_avg(self, latent_avg: Tensor) -> None:
        """Store (D,) or (L, D) average code, broadcast to (L, D)."""
        self.latent_avg.copy_(latent_avg.to(self.latent_avg).expand_as(self.latent_avg))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, S, S) -> (B, L, D)
        return encode(self.encoder, x, self.latent_avg)
