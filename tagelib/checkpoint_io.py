"""Our checkpoint format: one safetensors file that carries its config and a content hash.

``<stem>.safetensors`` holds the tensors; its header metadata holds

- ``format``: ``tagelib-checkpoint-v2``;
- ``config``: the JSON config (a dict or dataclass, e.g. the model's sizes and its training record);
- ``groups``: JSON list of module names when several modules share the file (keys ``<group>/<key>``), else null;
- ``sha256``: hash of format, config, groups and every tensor's name, dtype, shape and bytes.

One file, published by one atomic rename, cannot pair new weights with an old config; the hash is
checked on every load, so a corrupted byte raises `CheckpointCorruptError` instead of loading wrong
weights. Every error names the file. The earlier two-file format (``tagelib-checkpoint-v1``:
``<stem>.safetensors`` + ``<stem>.json``) is still read, without a hash to check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Mapping, TypeVar

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor, nn

from tagelib.atomic import write_bytes_atomic
from tagelib.config import build_config
from tagelib.paths import checkpoint_file

FORMAT = "tagelib-checkpoint-v2"
LEGACY_FORMAT = "tagelib-checkpoint-v1"
_SEP = "/"  # group separator inside safetensors keys; never appears in torch state-dict keys
_MAX_HEADER = 100 * 2**20  # safetensors' own limit is 100 MB
_MAX_REASON = 400  # characters of the reason in an invalid-config message
T = TypeVar("T")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and what is wrong."""


class CheckpointCorruptError(CheckpointError):
    """The file is truncated, not a checkpoint, or its content does not match its stored hash."""


class CheckpointMismatchError(CheckpointError):
    """A state dict or config does not fit the module it is loaded into (missing / unexpected keys, shapes)."""


# ----------------------------------------------------------------------------- state-dict checks


def _preview(keys: list[str], n: int = 10) -> str:
    more = f", ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_state_dict(module: nn.Module, state: Mapping[str, Tensor], name: str = "module",
                     source: str | os.PathLike | None = None) -> None:
    """Raise CheckpointMismatchError unless `state` has exactly the keys and shapes of `module`.

    source: the file the state came from; the message then starts with it.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and isinstance(state[k], Tensor) and tuple(state[k].shape) != tuple(own[k].shape)]
    not_tensors = [k for k in own if k in state and not isinstance(state[k], Tensor)]
    if missing or unexpected or shapes or not_tensors:
        lines = [f"{source}: " * (source is not None) + f"checkpoint does not fit {name} ({type(module).__name__}):"]
        if missing:
            lines.append(f"  {len(missing)} missing key(s): {_preview(missing)}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected key(s): {_preview(unexpected)}")
        if shapes:
            lines.append(f"  {len(shapes)} shape mismatch(es): {_preview(shapes)}")
        if not_tensors:
            lines.append(f"  {len(not_tensors)} value(s) that are not tensors: {_preview(not_tensors)}")
        lines.append("  (check the config: size, style_dim, n_mlp, channel_multiplier, n_styles, ...)")
        raise CheckpointMismatchError("\n".join(lines))


def load_checked(module: nn.Module, state: Mapping[str, Tensor], name: str = "module",
                 source: str | os.PathLike | None = None) -> None:
    """`check_state_dict` then `module.load_state_dict(state, strict=True)`."""
    check_state_dict(module, state, name, source)
    module.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------- paths, hashing


def content_hash(tensors: Mapping[str, Tensor], config_text: str, groups_text: str) -> str:
    """sha256 over the format, config and groups texts and each tensor's name, dtype, shape and bytes (sorted)."""
    h = hashlib.sha256()
    h.update(f"{FORMAT}\0{config_text}\0{groups_text}\0".encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _to_state(obj: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    state = obj.state_dict() if isinstance(obj, nn.Module) else obj
    # own, contiguous CPU copies: safetensors refuses shared or strided storage
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _jsonable(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config))  # fail early (before any file is written) if not JSON-able


# ----------------------------------------------------------------------------- save


def save_module(path_stem: str | os.PathLike, module_or_state_dicts: nn.Module | Mapping[str, Any],
                config: Any) -> Path:
    """Write `<stem>.safetensors` (tensors + config + hash) atomically; returns its path.

    module_or_state_dicts: a module, one state dict, or a mapping name -> module / state dict
    (e.g. {"generator": G, "encoder": E}); `load_module` gives back the same layout.
    config: a dict or dataclass (stored as `asdict`). A `<stem>.json` of the earlier two-file format
    beside it is removed once the new file is in place (it would describe the old weights).
    """
    path = checkpoint_file(path_stem)
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
    config_text = json.dumps(_jsonable(config), sort_keys=True)
    groups_text = json.dumps(groups)
    meta = {"format": FORMAT, "config": config_text, "groups": groups_text,
            "sha256": content_hash(tensors, config_text, groups_text)}
    _check_replaceable(path)
    write_bytes_atomic(path, save_safetensors_bytes(tensors, metadata=meta))
    legacy = path.with_suffix(".json")
    if legacy.is_file() and _legacy_meta(legacy, quiet=True) is not None:
        legacy.unlink()
    return path


def _check_replaceable(path: Path) -> None:
    """An existing file at a checkpoint's path is replaced only when its header says it is one of ours (even one whose
    tensors are corrupted); anything else (another program's safetensors, a text file) is never overwritten."""
    if not path.exists() and not path.is_symlink():
        return
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        raw = head + (f.read(n) if 0 <= n <= _MAX_HEADER else b"")
    try:
        fmt = (_read_header(path, raw).get("__metadata__") or {}).get("format")
    except CheckpointCorruptError:
        fmt = None
    if path.is_symlink() or fmt not in (FORMAT, LEGACY_FORMAT):
        raise CheckpointError(f"{path} exists and is not a tagelib checkpoint (format={fmt!r}); refusing to overwrite "
                              "it — choose another path, or remove it yourself if it is yours to lose")


# ----------------------------------------------------------------------------- load


def _read_header(path: Path, raw: bytes) -> dict:
    """The safetensors JSON header of `raw` (the file's bytes), or CheckpointCorruptError."""
    if len(raw) < 8:
        raise CheckpointCorruptError(f"{path}: {len(raw)} bytes, too short for a safetensors file (empty or truncated)")
    n = int.from_bytes(raw[:8], "little")
    if n > _MAX_HEADER or 8 + n > len(raw):
        raise CheckpointCorruptError(f"{path}: header length {n} does not fit the file's {len(raw)} bytes "
                                     "(truncated, or not a safetensors file)")
    try:
        header = json.loads(raw[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointCorruptError(f"{path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointCorruptError(f"{path}: the safetensors header is not a JSON object")
    return header


def _legacy_meta(js_path: Path, quiet: bool = False) -> dict | None:
    """The config file of the two-file format, or None (`quiet`) / CheckpointCorruptError when it is not one."""
    try:
        meta = json.loads(js_path.read_text(encoding="utf-8"))
        if isinstance(meta, dict) and meta.get("format") == LEGACY_FORMAT and "config" in meta:
            return meta
        problem = f"format={meta.get('format')!r}" if isinstance(meta, dict) else "not a JSON object"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = str(e)
    if quiet:
        return None
    raise CheckpointCorruptError(f"{js_path}: not the config of a {LEGACY_FORMAT} checkpoint ({problem})")


def read_checkpoint_config(path_stem: str | os.PathLike, hint: str = "") -> Any:
    """The stored config without reading the tensors (cheap: the header only). Not hash-checked."""
    path = _existing(checkpoint_file(path_stem), hint)
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        raw = head + (f.read(n) if 0 <= n <= _MAX_HEADER else b"")
    return _stored(path, _read_header(path, raw), hint).config


def _existing(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}" + (f" -- {hint}" if hint else ""))
    return path


@dataclasses.dataclass
class _Stored:
    """What a header says: the config, the module groups, and (v2) the texts the hash covers."""

    config: Any
    groups: list[str] | None
    hashed: tuple[str, str, str] | None  # (stored sha256, config text, groups text); None for the legacy format


def _stored(path: Path, header: dict, hint: str) -> _Stored:
    """Interpret a safetensors header as ours: v2 (config in the header) or legacy v1 (config in <stem>.json)."""
    meta = header.get("__metadata__") or {}
    fmt = meta.get("format")
    if fmt == LEGACY_FORMAT and ("sha256" in meta or "config" in meta):  # a v2 header whose format field was damaged
        raise CheckpointCorruptError(f"{path}: damaged header (format {LEGACY_FORMAT!r} with the fields of {FORMAT!r})")
    if fmt == LEGACY_FORMAT:
        legacy = _legacy_meta(_existing(path.with_suffix(".json"), hint))
        return _Stored(legacy["config"], legacy.get("groups"), None)
    if fmt != FORMAT:
        raise CheckpointCorruptError(f"{path}: not a tagelib checkpoint (format={fmt!r}; expected {FORMAT!r}); "
                                     "foreign .pt files go through import_foreign_checkpoint")
    try:
        config_text, groups_text = meta["config"], meta.get("groups", "null")
        return _Stored(json.loads(config_text), json.loads(groups_text), (meta.get("sha256"), config_text, groups_text))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointCorruptError(f"{path}: unreadable config in the header ({type(e).__name__}: {e})") from None


def _group(path: Path, tensors: dict[str, Tensor], groups: list[str] | None) -> dict[str, Any]:
    if groups is None:
        return tensors
    out: dict[str, dict[str, Tensor]] = {g: {} for g in groups}
    for k, v in tensors.items():
        g, sep, key = k.partition(_SEP)
        if not sep or g not in out:
            raise CheckpointCorruptError(f"{path}: tensor {k!r} belongs to none of the groups {groups}")
        out[g][key] = v
    return out


def load_module(path_stem: str | os.PathLike, hint: str = "") -> tuple[dict[str, Any], Any]:
    """Read what `save_module` wrote: (state_dict, config) or ({name: state_dict}, config), hash-checked.

    hint: appended to the missing-file error, e.g. "it is made by notebooks/01_latent_space.ipynb".
    Raises FileNotFoundError (missing), CheckpointCorruptError (truncated, not ours, hash mismatch).
    """
    path = _existing(checkpoint_file(path_stem), hint)
    raw = path.read_bytes()
    stored = _stored(path, _read_header(path, raw), hint)
    try:
        tensors = load_safetensors_bytes(raw)
    except Exception as e:  # safetensors raises its own SafetensorError (and others) on bad offsets / dtypes
        raise CheckpointCorruptError(f"{path}: unreadable tensor data ({type(e).__name__}: {e})") from None
    if stored.hashed is not None:
        expected, config_text, groups_text = stored.hashed
        actual = content_hash(tensors, config_text, groups_text)
        if expected != actual:
            raise CheckpointCorruptError(
                f"{path}: content does not match its stored hash (stored sha256 {str(expected)[:16]}..., "
                f"computed {actual[:16]}...): the file is corrupted; regenerate it"
                + (f" ({hint})" if hint else "") + " or restore it (git checkout for shipped files)")
    return _group(path, tensors, stored.groups), stored.config


def load_state_into(module: nn.Module, path_stem: str | os.PathLike, group: str | None = None,
                    hint: str = "") -> Any:
    """Load a (hash-checked) checkpoint into `module` strictly; returns the stored config.

    Architecture mismatches raise CheckpointMismatchError naming the file and the keys / shapes.
    """
    path = checkpoint_file(path_stem)
    state, config = load_module(path, hint)
    if group is not None:
        if not isinstance(state.get(group) if isinstance(state, dict) else None, dict):
            raise CheckpointMismatchError(f"{path}: no module group {group!r} in this checkpoint")
        state = state[group]
    load_checked(module, state, name=group or "module", source=path)
    return config


# ----------------------------------------------------------------------------- stored configs


@contextlib.contextmanager
def stored_config_errors(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a TypeError, KeyError, ValueError or AttributeError raised inside into CheckpointMismatchError
    ``"<path>: invalid <what> config (<type>: <reason>)"``, short and without the traceback of internals.

    The one place loaders of our checkpoints turn a bad stored config into an error that names the file;
    `build_stored_config` and `stored_value` use it, and a loader may wrap its own consistency checks in it.
    """
    try:
        yield
    except CheckpointError:
        raise
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        reason = e.args[0] if isinstance(e, KeyError) and e.args else e  # str(KeyError) adds quotes
        reason = str(reason)
        if len(reason) > _MAX_REASON:
            reason = reason[:_MAX_REASON - 3] + "..."
        raise CheckpointMismatchError(f"{path}: invalid {what} config ({type(e).__name__}: {reason})") from None


def build_stored_config(path: str | os.PathLike, cls: type[T], values: Any, what: str, key: str | None = None) -> T:
    """Dataclass `cls` built from a checkpoint's stored config, or CheckpointMismatchError naming `path`.

    values: the stored fields of `cls` (a dict); with `key`, the whole stored config, whose `key` section holds them.
    Every field must be stored (`save_module` stores ``asdict``), each of its annotated type as JSON stores it (an int
    field takes an int, not "16" or true; a tuple field a list; a nested dataclass a dict of its fields); then `cls` is
    built with `tagelib.config.build_config` (unknown keys) and its own `__post_init__` checks (sizes, choices).
    Call it before any module is built from the config. what: names the config in the message, e.g. "judge".
    """
    with stored_config_errors(path, what):
        if key is not None:
            values = _section(values, key)
        if not isinstance(values, Mapping):
            raise TypeError(f"expected a dict of {cls.__name__} fields, got {_describe(values)}")
        _check_fields(cls, values, "")
        return build_config(cls, values)


_REQUIRED = object()


def stored_value(path: str | os.PathLike, config: Any, key: str, annotation: Any, what: str,
                 default: Any = _REQUIRED) -> Any:
    """`config[key]` of a checkpoint's stored config, checked to be of type `annotation` (e.g. ``list[str]``, as JSON
    stores it); `default` when the key is absent (required without one). Else CheckpointMismatchError naming `path`."""
    with stored_config_errors(path, what):
        if isinstance(config, Mapping) and key not in config and default is not _REQUIRED:
            return default
        value = _section(config, key)
        _check_type(value, annotation, key)
        return value


def _section(config: Any, key: str) -> Any:
    """config[key], with a TypeError when config is not a dict and a KeyError naming the keys it has."""
    if not isinstance(config, Mapping):
        raise TypeError(f"the stored config is {_describe(config)}, not a dict")
    if key not in config:
        raise KeyError(f"no {key!r} entry (it has {reprlib.repr(sorted(config))})")
    return config[key]


def _describe(value: Any) -> str:
    """A value's type and a short repr, e.g. ``str '16'``."""
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _check_fields(cls: type, values: Mapping, prefix: str) -> None:
    """TypeError for the first stored field of dataclass `cls` whose value does not fit its annotation; KeyError
    when fields are missing (a stored config holds every field: `save_module` stores ``asdict``, so an absent one
    means a damaged or foreign config, not a default to fill in)."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    for f in fields:
        if f.name in values:
            _check_type(values[f.name], hints.get(f.name, Any), prefix + f.name)
    missing = [prefix + f.name for f in fields if f.name not in values]
    if missing:
        raise KeyError(f"missing field(s) {missing} of {cls.__name__}")


def _check_type(value: Any, annotation: Any, name: str) -> None:
    """TypeError unless `value`, as JSON stores it, fits `annotation`. Checked: bool, int (not bool), float (int or
    float), str, None, unions, tuple / list (a JSON list; elements too), dict, nested dataclasses (a dict of their
    fields). Other annotations are left to the dataclass's own checks."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _check_type(value, arm, name)
            except TypeError:
                pass
        raise TypeError(f"{name} must be {_type_name(annotation)}, got {_describe(value)}")
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return
        if not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a dict of {annotation.__name__} fields, got {_describe(value)}")
        return _check_fields(annotation, value, name + ".")
    base = origin or annotation
    if base in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a list ({_type_name(annotation)}), got {_describe(value)}")
        if base is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            raise TypeError(f"{name} must have {len(args)} entries ({_type_name(annotation)}), got {_describe(value)}")
        element_types = [args[0]] * len(value) if len(args) == 1 or args[-1:] == (Ellipsis,) else list(args)
        for i, (item, item_type) in enumerate(zip(value, element_types)):
            _check_type(item, item_type, f"{name}[{i}]")
        return
    if base is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a dict, got {_describe(value)}")
        return
    scalar = {bool: (bool,), int: (int,), float: (int, float), str: (str,), type(None): (type(None),)}.get(base)
    if scalar is None:
        return  # Any, Literal, other classes: the dataclass's own checks
    if not isinstance(value, scalar) or (base is not bool and isinstance(value, bool)):
        raise TypeError(f"{name} must be {_type_name(base).replace('NoneType', 'None')}, got {_describe(value)}")
