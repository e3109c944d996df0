"""Checkpoints: one explicit importer for foreign `.pt` files, and our own safetensors format.

Foreign formats (all read with ``torch.load(weights_only=True)``; nothing else is unpickled):

- rosinality/stylegan2-pytorch: top-level ``g_ema`` / ``g`` / ``d`` state dicts, optional
  ``latent_avg`` (D,) from `convert_weight.py`, optional ``args`` (argparse.Namespace, allow-listed).
- pSp (eladrich/pixel2style2pixel): ``state_dict`` with ``encoder.*`` and ``decoder.*`` keys,
  top-level ``latent_avg`` ((L, D) or (D,)) and ``opts`` (a dict).
- AGE (UniBester/AGE): as pSp plus ``ax.*`` (dictionary ``ax.A`` (6, 512, 100) and its MLPs);
  the ``ax`` sub-dict is returned for the AGE module to load.

Our format: ``<stem>.safetensors`` (tensors) + ``<stem>.json`` (config and layout), both written
atomically, read back with `load_module`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tagelib.atomic import atomic_path

FORMAT = "tagelib-checkpoint-v1"
_SEP = "/"  # group separator inside safetensors keys; never appears in torch state-dict keys


class CheckpointMismatchError(ValueError):
    """A state dict does not fit a module: lists missing / unexpected keys and shape mismatches."""


# ----------------------------------------------------------------------------- state-dict checks


def _preview(keys: list[str], n: int = 10) -> str:
    more = f", ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_state_dict(module: nn.Module, state: Mapping[str, Tensor], name: str = "module") -> None:
    """Raise CheckpointMismatchError unless `state` has exactly the keys and shapes of `module`."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        lines = [f"checkpoint does not fit {name} ({type(module).__name__}):"]
        if missing:
            lines.append(f"  {len(missing)} missing key(s): {_preview(missing)}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected key(s): {_preview(unexpected)}")
        if shapes:
            lines.append(f"  {len(shapes)} shape mismatch(es): {_preview(shapes)}")
        lines.append("  (check the config: size, style_dim, n_mlp, channel_multiplier, n_styles, ...)")
        raise CheckpointMismatchError("\n".join(lines))


def load_checked(module: nn.Module, state: Mapping[str, Tensor], name: str = "module") -> None:
    """`check_state_dict` then `module.load_state_dict(state, strict=True)`."""
    check_state_dict(module, state, name)
    module.load_state_dict(state, strict=True)


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


def _torch_load(path: str | os.PathLike) -> dict:
    # rosinality's train.py pickles `args` (an argparse.Namespace): allow that one plain class
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


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
        keys = _strip_ddp(ckpt["state_dict"]).keys()
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
        ckpt = path_or_dict
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        ckpt = _torch_load(path)
    detected = _detect(ckpt)
    if kind != "auto" and kind != detected:
        raise ValueError(f"kind={kind!r} but the checkpoint looks like {detected!r}")

    subs: dict[str, dict[str, Tensor]] = {}
    opts = None
    if detected == "rosinality":
        for name, key in (("generator", generator_key), ("g", "g"), ("g_ema", "g_ema"), ("discriminator", "d")):
            if key in ckpt:
                subs.setdefault(name, dict(ckpt[key]))
        if "generator" not in subs:
            raise ValueError(f"rosinality checkpoint has no {generator_key!r}; top-level keys {sorted(ckpt)}")
        if encoder is not None:
            raise ValueError("a rosinality checkpoint holds no encoder; pass encoder=None")
    else:
        state = _strip_ddp(ckpt["state_dict"])
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
    for name, module, state in plan:
        module.load_state_dict(state, strict=True)
    if is_wrapper and latent_avg is not None:
        encoder.set_latent_avg(latent_avg)
    loaded = [name for name, _, _ in plan]
    return ImportedCheckpoint(kind=detected, loaded=tuple(loaded), latent_avg=latent_avg, opts=opts,
                              ax=subs.get("ax"), state_dicts=subs)


# ----------------------------------------------------------------------------- our format


def _stem(path_stem: str | os.PathLike) -> Path:
    p = Path(path_stem)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def _to_state(obj: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    state = obj.state_dict() if isinstance(obj, nn.Module) else obj
    # own, contiguous CPU copies: safetensors refuses shared or strided storage
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _jsonable(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config))  # fail early (before any file is written) if not JSON-able


def save_module(path_stem: str | os.PathLike, module_or_state_dicts: nn.Module | Mapping[str, Any],
                config: Any) -> tuple[Path, Path]:
    """Write `<stem>.safetensors` (weights) and `<stem>.json` (config), each atomically.

    module_or_state_dicts: a module, one state dict, or a mapping name -> module / state dict
    (e.g. {"generator": G, "encoder": E}); `load_module` gives back the same layout.
    config: a dict or dataclass (stored as `asdict`). Returns the two paths.
    """
    stem = _stem(path_stem)
    obj = module_or_state_dicts
    single = isinstance(obj, nn.Module) or all(isinstance(v, Tensor) for v in obj.values())
    if single:
        tensors, groups = _to_state(obj), None
    else:
        groups = list(obj)
        bad = [g for g in groups if _SEP in g]
        if bad:
            raise ValueError(f"group names may not contain {_SEP!r}: {bad}")
        tensors = {f"{g}{_SEP}{k}": v for g in groups for k, v in _to_state(obj[g]).items()}
    meta = {"format": FORMAT, "groups": groups, "config": _jsonable(config)}
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"

    st_path, js_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    with atomic_path(st_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    with atomic_path(js_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return st_path, js_path


def load_module(path_stem: str | os.PathLike, hint: str = "") -> tuple[dict[str, Any], dict]:
    """Read what `save_module` wrote: (state_dict, config) or ({name: state_dict}, config).

    hint: appended to the missing-file error, e.g. "run notebooks/01_latent_space.ipynb first".
    """
    stem = _stem(path_stem)
    st_path, js_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for p in (js_path, st_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {p}" + (f" -- {hint}" if hint else ""))
    meta = json.loads(js_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{js_path} is not a {FORMAT} file (format={meta.get('format')!r})")
    tensors = load_file(str(st_path), device="cpu")
    groups = meta.get("groups")
    if groups is None:
        return tensors, meta["config"]
    out: dict[str, dict[str, Tensor]] = {g: {} for g in groups}
    for k, v in tensors.items():
        g, key = k.split(_SEP, 1)
        out[g][key] = v
    return out, meta["config"]
