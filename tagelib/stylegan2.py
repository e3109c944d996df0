"""StyleGAN2 generator and discriminator in plain PyTorch (no custom CUDA ops, nothing to compile).

The architecture follows Karras et al. (CVPR 2020) as laid out in rosinality/stylegan2-pytorch:
parameter and buffer names and shapes are the same as that code's, so an official
`g_ema` state dict (e.g. the 1024 px FFHQ model used by pSp and AGE) loads with `strict=True`
into `Generator(GeneratorConfig(size=1024))`. Two additions for the small glyph models:
`max_channels` caps every resolution's width, `img_channels` sets the output channels.

Shapes: B batch, L = n_latent = 2*log2(size) - 2 W+ layers, D = style_dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagelib.config import build_config

SQRT2 = math.sqrt(2.0)


def _channels(size: int, channel_multiplier: int, max_channels: int) -> int:
    """Feature width at resolution `size` (rosinality's table, capped at `max_channels`)."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    base = table[size] * (channel_multiplier if size >= 64 else 1)
    return min(base, max_channels)


def _widths(cfg, log_size: int) -> dict[int, int]:
    """Width per resolution {4: C4, 8: C8, ...}: `cfg.widths` if given, else rosinality's capped table."""
    sizes = [2**i for i in range(2, log_size + 1)]
    if cfg.widths:
        if len(cfg.widths) != len(sizes):
            raise ValueError(f"widths={cfg.widths} needs one entry per resolution {sizes}")
        return dict(zip(sizes, (int(w) for w in cfg.widths)))
    return {r: _channels(r, cfg.channel_multiplier, cfg.max_channels) for r in sizes}


def _check_size(size: int, name: str = "size") -> int:
    log_size = int(math.log2(size)) if size > 0 else -1
    if size < 8 or size > 1024 or 2**log_size != size:
        raise ValueError(f"{name}={size} must be a power of two in [8, 1024]")
    return log_size


def _normalise_config(cfg) -> None:
    """Shared by the generator and discriminator configs: check the size; JSON lists back to tuples."""
    _check_size(cfg.size)
    cfg.blur_kernel = tuple(cfg.blur_kernel)
    cfg.widths = tuple(int(w) for w in cfg.widths)


@dataclass
class GeneratorConfig:
    size: int = 32  # output resolution, power of two in [8, 1024]
    style_dim: int = 512  # D, width of z, w and of every W+ layer
    n_mlp: int = 8  # depth of the mapping network
    channel_multiplier: int = 2  # widths at >= 64 px (rosinality default 2)
    max_channels: int = 512  # cap on every resolution's width; 512 = rosinality exactly
    widths: tuple[int, ...] = ()  # explicit width per resolution (4, 8, ..., size); empty = the capped table
    img_channels: int = 3  # 3 RGB, 1 grayscale glyphs
    lr_mlp: float = 0.01  # learning-rate multiplier of the mapping network
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)  # FIR filter for up/down-sampling

    def __post_init__(self) -> None:
        _normalise_config(self)

    @property
    def n_latent(self) -> int:
        """L, W+ layers: two per resolution from 8 px up, plus two at 4 px (rosinality)."""
        return 2 * int(math.log2(self.size)) - 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "GeneratorConfig":
        """Build from a (JSON) mapping; unknown keys raise a ValueError listing the valid ones."""
        return build_config(cls, values)


# ----------------------------------------------------------------------------- FIR filtering


def make_kernel(k: Sequence[float]) -> Tensor:
    """1-D taps -> normalised separable 2-D FIR kernel (sum 1)."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, FIR-filter, downsample: (B, C, H, W) -> (B, C, H', W').

    H' = (H*up + pad[0] + pad[1] - kh) // down + 1; the same padding is used on both axes.
    """
    b, c, h, w = x.shape
    if up > 1:  # put each sample at position i*up, zeros between
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:  # negative padding crops
        x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).expand(c, 1, *kernel.shape)  # (C, 1, kh, kw)
    return F.conv2d(x, weight, stride=down, groups=c)  # depthwise: same filter on every channel


class Upsample(nn.Module):
    """x2 FIR upsampling used on the ToRGB skip path. Buffer `kernel` (k, k)."""

    def __init__(self, kernel: Sequence[int], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR low-pass applied around strided (transposed) convolutions. Buffer `kernel` (k, k)."""

    def __init__(self, kernel: Sequence[int], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


# ----------------------------------------------------------------------------- equalised layers


def fused_leaky_relu(x: Tensor, bias: Tensor | None = None, negative_slope: float = 0.2, scale: float = SQRT2) -> Tensor:
    """Add a per-channel bias (dim 1), leaky-ReLU, rescale by sqrt(2) to keep unit variance."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int, bias: bool = True):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None  # (C,)

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with run-time He scaling; `lr_mul` slows its learning rate (mapping net)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool | str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))  # (out, in)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None  # (out,)
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = bool(activation)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


# ----------------------------------------------------------------------------- synthesis blocks


class ModulatedConv2d(nn.Module):
    """Conv whose weights are scaled per sample by an affine map of w (and demodulated).

    weight (1, out, in, k, k); modulation EqualLinear(D -> in, bias 1); `blur` only when resampling.
    `fused=True` runs one grouped conv with per-sample weights (as in the paper); `fused=False`
    scales activations instead (same result up to rounding, faster on CPU for large batches).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, downsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1),
                 fused: bool = True):
        super().__init__()
        self.in_ch, self.out_ch, self.k = in_ch, out_ch, kernel_size
        self.upsample, self.downsample = upsample, downsample
        self.demodulate, self.fused = demodulate, fused
        if upsample:
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:  # x (B, in, H, W), style (B, D)
        b, c, h, w = x.shape
        s = self.modulation(style)  # (B, in)
        if not self.fused:
            return self._forward_unfused(x, s)
        weight = self.scale * self.weight * s.view(b, 1, c, 1, 1)  # (B, out, in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, self.out_ch, 1, 1, 1)
        if self.upsample:
            # transposed conv wants (in, out/groups, k, k) per group
            weight = weight.transpose(1, 2).reshape(b * c, self.out_ch, self.k, self.k)
            out = F.conv_transpose2d(x.reshape(1, b * c, h, w), weight, stride=2, groups=b)
            return self.blur(out.reshape(b, self.out_ch, *out.shape[2:]))  # (B, out, 2H, 2W)
        weight = weight.reshape(b * self.out_ch, c, self.k, self.k)
        if self.downsample:
            x = self.blur(x)
            out = F.conv2d(x.reshape(1, b * c, *x.shape[2:]), weight, stride=2, groups=b)
        else:
            out = F.conv2d(x.reshape(1, b * c, h, w), weight, padding=self.padding, groups=b)
        return out.reshape(b, self.out_ch, *out.shape[2:])

    def _forward_unfused(self, x: Tensor, s: Tensor) -> Tensor:
        weight = self.scale * self.weight[0]  # (out, in, k, k)
        x = x * s[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        elif self.downsample:
            out = F.conv2d(self.blur(x), weight, stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:  # 1/||w * s|| per (sample, out channel)
            d = torch.rsqrt(torch.einsum("oikl,bi->bo", weight.pow(2), s.pow(2)) + 1e-8)  # (B, out)
            out = out * d[:, :, None, None]
        return out


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # learned noise strength

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, *x.shape[2:]).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """ModulatedConv2d -> noise -> bias + leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), fused: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel, fused=fused)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to image channels, added to the upsampled skip."""

    def __init__(self, in_ch: int, style_dim: int, img_channels: int = 3, upsample: bool = True,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), fused: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, img_channels, 1, style_dim, demodulate=False, fused=fused)
        self.bias = nn.Parameter(torch.zeros(1, img_channels, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


# ----------------------------------------------------------------------------- generator


class Generator(nn.Module):
    """Mapping network `style` (z -> w) and synthesis network (W+ -> image).

    W+ layer use: w[0] conv1, w[1] to_rgb1, then per resolution 2**i (i = 3..log2 size)
    w[2i-5], w[2i-4] for the two convs and w[2i-3] for its ToRGB.
    """

    def __init__(self, cfg: GeneratorConfig, fused: bool = True):
        super().__init__()
        self.cfg = cfg
        self.size, self.style_dim = cfg.size, cfg.style_dim
        self.log_size = _check_size(cfg.size)
        d, bk = cfg.style_dim, cfg.blur_kernel
        ch = _widths(cfg, self.log_size)
        self.channels = ch

        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(d, d, lr_mul=cfg.lr_mlp, activation="fused_lrelu") for _ in range(cfg.n_mlp)]
        )
        self.input = ConstantInput(ch[4])  # input.input (1, C4, 4, 4)
        self.conv1 = StyledConv(ch[4], ch[4], 3, d, blur_kernel=bk, fused=fused)
        self.to_rgb1 = ToRGB(ch[4], d, cfg.img_channels, upsample=False, fused=fused)

        self.num_layers = (self.log_size - 2) * 2 + 1  # number of noise inputs
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # empty; kept because rosinality has it (no state)
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))  # fixed noise maps
        in_ch = ch[4]
        for i in range(3, self.log_size + 1):
            out_ch = ch[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, d, upsample=True, blur_kernel=bk, fused=fused))
            self.convs.append(StyledConv(out_ch, out_ch, 3, d, blur_kernel=bk, fused=fused))
            self.to_rgbs.append(ToRGB(out_ch, d, cfg.img_channels, blur_kernel=bk, fused=fused))
            in_ch = out_ch
        self.n_latent = self.log_size * 2 - 2

    def mapping(self, z: Tensor) -> Tensor:
        """z (B, D) -> w (B, D)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> Tensor:
        """Average w over `n` random z: (D,). pSp/AGE use this as `latent_avg`."""
        z = torch.randn(n, self.style_dim, generator=generator).to(self.input.input.device)
        return self.style(z).mean(0)

    def make_noise(self, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh noise maps, one per noise input: [(1, 1, 4, 4), (1, 1, 8, 8) x2, ...]."""
        dev = self.input.input.device
        return [torch.randn(b.shape, generator=generator).to(dev) for b in self.noises.buffers()]

    def forward(self, w_plus: Tensor, noise: Sequence[Tensor | None] | None = None,
                randomize_noise: bool = True) -> Tensor:
        """w_plus (B, L, D) (or w (B, D), broadcast to all L layers) -> image (B, img_channels, S, S).

        noise: list of `num_layers` maps (None entries draw fresh noise); when omitted, fresh noise
        (randomize_noise=True) or the stored `noises.noise_i` buffers (False, deterministic).
        """
        if w_plus.ndim == 2:
            w_plus = w_plus[:, None].expand(-1, self.n_latent, -1)
        if w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"w_plus must be (B, {self.n_latent}, {self.style_dim}), got {tuple(w_plus.shape)}")
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else [
                getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if len(noise) != self.num_layers:
            raise ValueError(f"noise must have {self.num_layers} entries, got {len(noise)}")

        out = self.conv1(self.input(w_plus.shape[0]), w_plus[:, 0], noise[0])  # (B, C4, 4, 4)
        skip = self.to_rgb1(out, w_plus[:, 1])  # (B, img_channels, 4, 4)
        i = 1
        for conv_up, conv, n1, n2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2],
                                                 self.to_rgbs):
            out = conv_up(out, w_plus[:, i], n1)  # (B, C, 2H, 2W)
            out = conv(out, w_plus[:, i + 1], n2)
            skip = to_rgb(out, w_plus[:, i + 2], skip)
            i += 2
        return skip


def truncate(w: Tensor, w_avg: Tensor, psi: float) -> Tensor:
    """Truncation trick: pull codes towards the average, w_avg + psi * (w - w_avg)."""
    return w_avg + psi * (w - w_avg)


# ----------------------------------------------------------------------------- discriminator


@dataclass
class DiscriminatorConfig:
    size: int = 32  # input resolution, power of two in [8, 1024]
    channel_multiplier: int = 2
    max_channels: int = 512  # 512 = rosinality exactly
    widths: tuple[int, ...] = ()  # explicit width per resolution (4, 8, ..., size); empty = the capped table
    img_channels: int = 3
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
    stddev_group: int = 4  # minibatch-stddev group size

    def __post_init__(self) -> None:
        _normalise_config(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DiscriminatorConfig":
        return build_config(cls, values)


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU]; children indexed as in rosinality."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        stride, padding = 1, kernel_size // 2
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, activate=False, bias=False, blur_kernel=blur_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class Discriminator(nn.Module):
    """Residual discriminator: image (B, C, S, S) -> logit (B, 1)."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        log_size = _check_size(cfg.size)
        ch = _widths(cfg, log_size)
        convs: list[nn.Module] = [ConvLayer(cfg.img_channels, ch[cfg.size], 1)]
        in_ch = ch[cfg.size]
        for i in range(log_size, 2, -1):
            convs.append(ResBlock(in_ch, ch[2 ** (i - 1)], cfg.blur_kernel))
            in_ch = ch[2 ** (i - 1)]
        self.convs = nn.Sequential(*convs)
        self.stddev_group, self.stddev_feat = cfg.stddev_group, 1
        self.final_conv = ConvLayer(in_ch + 1, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"), EqualLinear(ch[4], 1))

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs(x)  # (B, C, 4, 4)
        b, c, h, w = out.shape
        group = min(b, self.stddev_group)
        while b % group:  # rosinality requires B % group == 0; fall back to a divisor
            group -= 1
        # minibatch stddev: one extra feature map, the mean std over groups of `group` samples
        y = out.view(group, -1, self.stddev_feat, c // self.stddev_feat, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)  # (B/g, 1, 1, 1)
        out = torch.cat([out, y.repeat(group, 1, h, w)], 1)
        out = self.final_conv(out)
        return self.final_linear(out.reshape(b, -1))


# ----------------------------------------------------------------------------- losses


def d_logistic_loss(real_pred: Tensor, fake_pred: Tensor) -> Tensor:
    """Discriminator logistic loss: softplus(-D(x)) + softplus(D(G(z)))."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: Tensor) -> Tensor:
    """Generator non-saturating loss: softplus(-D(G(z)))."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: Tensor, real_img: Tensor) -> Tensor:
    """R1 regulariser E ||grad_x D(x)||^2 on real images (real_img needs requires_grad=True).

    Multiply by gamma / 2 (and the lazy-regularisation interval) in the training loop.
    """
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()
