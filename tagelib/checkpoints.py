"""Checkpoints: one explicit importer for foreign `.pt` files (official StyleGAN2, pSp, AGE).

Foreign formats (all read with ``torch.load(weights_only=True)``; nothing else is unpickled):

- rosinality/stylegan2-pytorch: top-level ``g_ema`` / ``g`` / ``d`` state dicts, optional
  ``latent_avg`` (D,) from `convert_weight.py`, optional ``args`` (argparse.Namespace, allow-listed).
- pSp (eladrich/pixel2style2pixel): ``state_dict`` with ``encoder.*`` and ``decoder.*`` keys,
  top-level ``latent_avg`` ((L, D) or (D,)) and ``opts`` (a dict).
- AGE (UniBester/AGE): as pSp plus ``ax.*`` (dictionary ``ax.A`` (6, 512, 100) and its MLPs);
  the ``ax`` sub-dict is returned for the AGE module to load.

Our own format (one safetensors file with its config and a content hash) lives in
`tagelib.checkpoint_io`; its public names are re-exported here.
"""

from __future__ import annotations

import argparse
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from tagelib.checkpoint_io import (  # re-exported: the public checkpoint API
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    check_state_dict,
    load_checked,
    load_module,
    load_state_into,
    read_checkpoint_config,
    save_module,
)

__all__ = ["CheckpointCorruptError", "CheckpointError", "CheckpointMismatchError", "ImportedCheckpoint",
           "check_state_dict", "import_foreign_checkpoint", "load_checked", "load_module", "load_state_into",
           "read_checkpoint_config", "save_module"]

# ----------------------------------------------------------------------------- foreign checkpoints


@dataclass
class ImportedCheckpoint:
    """What `import_foreign_checkpoint` found (and loaded into the modules it was given)."""

    kind: str  # "rosinality", "psp" or "age"
    loaded: tuple[str, ...]  # names of the modules that were loaded, e.g. ("generator", "encoder")
    latent_avg: Tensor | None = None  # (D,) or (L, D) as stored
    opts: dict | None = None  # pSp/AGE training options
    ax: dict[str, Tensor] | None = None  # AGE `ax.*` weights with the prefix removed
    state_dicts: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # every sub-dict found


def _torch_load(path: Path) -> Mapping[str, Any]:
    """`torch.load(weights_only=True)`; an empty, truncated or non-checkpoint file raises a short
    CheckpointCorruptError naming the file (torch's own messages run to pages)."""
    if path.stat().st_size == 0:
        raise CheckpointCorruptError(f"{path}: empty file, not a PyTorch checkpoint")
    try:
        # rosinality's train.py pickles `args` (an argparse.Namespace): allow that one plain class
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError, UnicodeDecodeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CheckpointCorruptError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointCorruptError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def _check_latent_avg(latent_avg: Tensor, target: Tensor) -> None:
    """pSp's average code must broadcast to the encoder's (L, D): (D,), (1, D) or (L, D)."""
    if latent_avg.dim() not in (1, 2) or latent_avg.shape[-1] != target.shape[-1] or (
            latent_avg.dim() == 2 and latent_avg.shape[0] not in (1, target.shape[0])):
        raise CheckpointMismatchError(f"latent_avg has shape {tuple(latent_avg.shape)}; the encoder needs "
                                      f"(D,), (1, D) or (L, D) with (L, D) = {tuple(target.shape)}")
    if not latent_avg.is_floating_point() or not torch.isfinite(latent_avg).all():
        raise CheckpointMismatchError("latent_avg must be finite floating-point values")


def _strip_ddp(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove DistributedDataParallel `module.` prefixes (AGE does the same when loading)."""
    out = {}
    for k, v in state.items():
        k = k[len("module."):] if k.startswith("module.") else k
        out[k.replace(".module.", ".")] = v
    return out


def _sub(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in state.items() if k.startswith(p)}


def _detect(ckpt: Mapping[str, Any]) -> str:
    if "state_dict" in ckpt:
        keys = _strip_ddp(_state_dict(ckpt["state_dict"], "'state_dict'")).keys()
        return "age" if any(k.startswith("ax.") for k in keys) else "psp"
    if "g_ema" in ckpt or "g" in ckpt:
        return "rosinality"
    raise ValueError(f"unrecognised checkpoint: top-level keys {sorted(map(str, ckpt))[:20]}; expected "
                     "'g_ema'/'g'/'d' (rosinality) or 'state_dict' with encoder./decoder. keys (pSp, AGE)")


def import_foreign_checkpoint(path_or_dict: str | os.PathLike | Mapping[str, Any], generator: nn.Module | None = None,
                              encoder: nn.Module | None = None, discriminator: nn.Module | None = None,
                              kind: str = "auto", generator_key: str = "g_ema") -> ImportedCheckpoint:
    """Load an official StyleGAN2 (rosinality), pSp or AGE checkpoint into our modules.

    generator: `stylegan2.Generator` (from `g_ema`, or `generator_key`, or pSp/AGE `decoder.*`).
    encoder: `psp.GradualStyleEncoder` (from `encoder.*`) or `psp.PSPEncoder` (also gets latent_avg).
    discriminator: `stylegan2.Discriminator` (rosinality `d`).
    kind: "auto" (detect), "rosinality", "psp" or "age". Modules passed as None are skipped;
    their weights are still returned in `state_dicts`. Any key/shape mismatch raises
    CheckpointMismatchError naming the missing and unexpected keys.
    """
    if kind not in ("auto", "rosinality", "psp", "age"):
        raise ValueError(f"kind={kind!r}; choose one of ['auto', 'rosinality', 'psp', 'age']")
    if isinstance(path_or_dict, Mapping):
        ckpt, where = path_or_dict, "checkpoint dict"
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        ckpt, where = _torch_load(path), str(path)
    try:
        return _import(ckpt, where, generator, encoder, discriminator, kind, generator_key)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{where}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _state_dict(value: Any, what: str) -> dict[str, Tensor]:
    if not isinstance(value, Mapping):
        raise CheckpointMismatchError(f"{what} is a {type(value).__name__}, not a state dict")
    return dict(value)


def _import(ckpt: Mapping[str, Any], where: str, generator: nn.Module | None, encoder: nn.Module | None,
            discriminator: nn.Module | None, kind: str, generator_key: str) -> ImportedCheckpoint:
    """Validate everything, then load; nothing is modified unless every check passes."""
    detected = _detect(ckpt)
    if kind != "auto" and kind != detected:
        raise ValueError(f"kind={kind!r} but the checkpoint looks like {detected!r}")

    subs: dict[str, dict[str, Tensor]] = {}
    opts = None
    if detected == "rosinality":
        for name, key in (("generator", generator_key), ("g", "g"), ("g_ema", "g_ema"), ("discriminator", "d")):
            if key in ckpt:
                subs.setdefault(name, _state_dict(ckpt[key], repr(key)))
        if "generator" not in subs:
            raise ValueError(f"rosinality checkpoint has no {generator_key!r}; top-level keys {sorted(ckpt)}")
        if encoder is not None:
            raise ValueError("a rosinality checkpoint holds no encoder; pass encoder=None")
    else:
        state = _strip_ddp(_state_dict(ckpt["state_dict"], "'state_dict'"))
        subs["generator"] = _sub(state, "decoder")
        subs["encoder"] = _sub(state, "encoder")
        if detected == "age":
            subs["ax"] = _sub(state, "ax")
        opts = dict(vars(ckpt["opts"]) if isinstance(ckpt.get("opts"), argparse.Namespace) else ckpt.get("opts") or {})
        if discriminator is not None:
            raise ValueError(f"a {detected} checkpoint holds no discriminator; pass discriminator=None")
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, Tensor):
        latent_avg = None  # e.g. a float in some forks; not an average code

    plan: list[tuple[str, nn.Module, dict[str, Tensor]]] = []  # (name, module, state)
    if generator is not None:
        plan.append(("generator", generator, subs["generator"]))
    if discriminator is not None:
        if "discriminator" not in subs:
            raise ValueError("the checkpoint has no discriminator 'd'")
        plan.append(("discriminator", discriminator, subs["discriminator"]))
    is_wrapper = encoder is not None and hasattr(encoder, "set_latent_avg") and hasattr(encoder, "encoder")
    if encoder is not None:  # psp.PSPEncoder wraps the GradualStyleEncoder as `.encoder`
        plan.append(("encoder", encoder.encoder if is_wrapper else encoder, subs["encoder"]))
    for name, module, state in plan:  # check everything first: a mismatch leaves every module untouched
        check_state_dict(module, state, name)
    if is_wrapper and latent_avg is not None:
        _check_latent_avg(latent_avg, encoder.latent_avg)
    for name, module, state in plan:
        module.load_state_dict(state, strict=True)
    if is_wrapper and latent_avg is not None:
        encoder.set_latent_avg(latent_avg)
    loaded = [name for name, _, _ in plan]
    return ImportedCheckpoint(kind=detected, loaded=tuple(loaded), latent_avg=latent_avg, opts=opts,
                              ax=subs.get("ax"), state_dicts=subs)


