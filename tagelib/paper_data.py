"""The paper's datasets behind the glyph dataset's interface: LoFGAN `.npy` files and AGE's image folders.

    ds = load_lofgan("datasets/animal_128.npy", "animal", size=128)   # memory-mapped, nothing read yet
    ds = load_image_folders("datasets/animal_faces", size=256)        # AGE/FUNIT layout: train/ and valid/
    x = ds.tensor(ds.pool(ds.categories[ds.unseen[0]], "unseen_shots")[:3], ds.unseen[0])   # (3, 3, H, W)

Both return an `ImageClassDataset`, a `GlyphDataset` whose "styles" are image slots: slot i of category c is the
c-th class's i-th image (unrelated across classes, unlike a font). Every notebook reads it as it reads glyphs.

LoFGAN protocol (`main_metric.py` of LoFGAN): the first `seen` classes are seen (Animal Faces 119 of 149,
Flowers 85 of 102, VGGFaces 1802 of 2354), the others unseen; an unseen class's shots are drawn from its first
10 images (VGGFaces: 30), its real reference is the rest. Our evaluation pool is that rest, split in halves
(the judge may train on the first, the metrics compare with the second), where LoFGAN's FID uses all of it.
The glyph notebooks also check generalisation on "held-out families", styles no training ever sees; here the
last 10 % of every class's image slots play that part (`heldout_styles`): seen classes' images there are kept out
of every training set (a 10 % smaller training set than LoFGAN's), unseen classes keep LoFGAN's pools.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from tagelib.glyphs.dataset import GlyphDataset
from tagelib.paths import resolve


@dataclass(frozen=True)
class LofganSpec:
    file: str  # file name in LoFGAN's dataset share
    classes: int  # all classes in the file (LoFGAN's paper)
    seen: int  # the first `seen` classes train; the rest are unseen
    shot_pool: int  # shots are drawn from an unseen class's first `shot_pool` images
    images_per_class: int | None  # None: not documented, only checked to exceed shot_pool
    subject: str = "image"  # what an image shows, for prompts ("a photo of a smiling <subject>")


LOFGAN = {
    "animal": LofganSpec("animal_128.npy", 149, 119, 10, 100, "animal face"),
    "flower": LofganSpec("flower_c8189_s128_data_rgb.npy", 102, 85, 10, None, "flower"),
    "vggface": LofganSpec("vgg_face_data_rgb.npy", 2354, 1802, 30, None, "face"),
    "synthetic": LofganSpec("paper_synthetic.npy", 40, 30, 10, 40, "drawing"),  # the rehearsal's (tagelib.paper_synthetic)
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageClassDataset(GlyphDataset):
    """RGB images per class. `images[slots, classes]` gives raw (..., H, W, 3) uint8 (or float in [0, 1], as
    LoFGAN's VGGFaces file stores them); `tensor` returns float (..., 3, size, size) in [-1, 1]."""

    channels = 3

    def __init__(self, images, coverage: np.ndarray, categories: list[str], split: dict, size: int,
                 subject: str = "image"):
        styles = [{"full_name": f"image {i}", "family_key": f"slot {i}", "caption": "a photo"}
                  for i in range(coverage.shape[0])]
        super().__init__(images, coverage, categories, styles, split)
        self._size, self.subject = size, subject

    @property
    def size(self) -> int:
        return self._size

    def to_tensor(self, raw: np.ndarray) -> torch.Tensor:
        """(..., H, W, 3) uint8 or float in [0, 1] -> float (..., 3, size, size) in [-1, 1] (antialiased resize)."""
        raw = np.asarray(raw)
        x = torch.from_numpy(np.array(raw, dtype=np.float32))  # a copy: memory-mapped slices are read-only
        x = x.mul(2.0).sub(1.0) if np.issubdtype(raw.dtype, np.floating) else x.div(127.5).sub(1.0)
        x = x.movedim(-1, -3)  # (..., 3, H, W)
        if x.shape[-1] != self._size or x.shape[-2] != self._size:
            lead = x.shape[:-3]
            x = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(self._size, self._size), mode="bilinear",
                              antialias=True, align_corners=False).reshape(*lead, 3, self._size, self._size)
        return x.clamp(-1.0, 1.0)

    def sample_attributes(self, styles: np.ndarray, categories: np.ndarray, images: torch.Tensor) -> dict[str, np.ndarray]:
        """Two attributes measured on each image (N, 3, H, W) in [-1, 1], for colouring plots: mean brightness and
        mean saturation (max − min over the colour channels)."""
        x = (images.float() + 1) / 2
        return {"brightness": x.mean((1, 2, 3)).numpy(), "saturation": (x.amax(1) - x.amin(1)).mean((1, 2)).numpy()}

    def to_ink(self, images: torch.Tensor) -> np.ndarray:
        """Inverse of `to_tensor` at `size`: float (..., 3, H, W) -> uint8 (..., H, W, 3)."""
        return images.movedim(-3, -1).add(1.0).mul(127.5).round().clamp(0, 255).byte().cpu().numpy()


def heldout_slots(images_per_class: int) -> int:
    """How many trailing image slots are held out of training: 10 %, at least one."""
    return max(1, images_per_class // 10)


def lofgan_split(n_classes: int, images_per_class: int, seen: int, shot_pool: int, names: list[str]) -> dict:
    """The split dictionary of the glyph dataset, filled with LoFGAN's protocol (see the module docstring)."""
    if not 0 < seen < n_classes:
        raise ValueError(f"seen={seen} must leave both seen and unseen classes among {n_classes}")
    if not 0 < shot_pool < images_per_class - 1:
        raise ValueError(f"shot_pool={shot_pool} must leave at least two evaluation images of {images_per_class}")
    slots = list(range(images_per_class))
    heldout = heldout_slots(images_per_class)
    return {"seen_categories": names[:seen], "unseen_categories": names[seen:], "train_styles": slots[:-heldout],
            "heldout_styles": slots[-heldout:], "heldout_families": ["held-out image slots"],
            "unseen_pools": {c: {"shot_pool": slots[:shot_pool], "eval_pool": slots[shot_pool:]} for c in names[seen:]}}


def load_lofgan(path: str | Path, dataset: str, size: int | None = None, seen: int | None = None,
                shot_pool: int | None = None) -> ImageClassDataset:
    """A LoFGAN `.npy` file (classes, images, H, W, 3), memory-mapped: images are read when indexed.

    `dataset` names the protocol (animal, flower, vggface: seen classes and shot pool from LoFGAN; `seen` and
    `shot_pool` override it, e.g. for the paper-synthetic rehearsal); `size` resizes (default: the file's).
    The file is checked first (`open_lofgan`): a bad one is refused here, naming it, not mid-run."""
    if dataset not in LOFGAN:
        raise ValueError(f"unknown LoFGAN dataset {dataset!r}; valid: {sorted(LOFGAN)}")
    spec = LOFGAN[dataset]
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: download LoFGAN's `{spec.file}` and check it with "
                                f"`python data/prepare_paper_datasets.py {dataset} {path}`")
    data = open_lofgan(path, spec if seen is None else None)
    n_classes, per_class = data.shape[:2]
    names = [f"{dataset}_{c:04d}" for c in range(n_classes)]
    split = lofgan_split(n_classes, per_class, spec.seen if seen is None else seen,
                         spec.shot_pool if shot_pool is None else shot_pool, names)
    images = data.transpose(1, 0, 2, 3, 4)  # (images, classes, H, W, 3): slot-major like the glyphs, still mapped
    return ImageClassDataset(images, np.ones((per_class, n_classes), bool), names, split, size or data.shape[2],
                             spec.subject)


def open_lofgan(path: Path, spec: LofganSpec | None) -> np.memmap:
    """The LoFGAN file at `path`, memory-mapped once its header, size, layout (`spec`: LoFGAN's class counts, None
    to skip them) and sampled images pass; otherwise ValueError "<path>: <reason>". Nothing is unpickled."""
    header = read_npy_header(path)
    check_lofgan_layout(header.shape, header.dtype, spec, path)
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    problems = image_content_problems(sample_images(data))
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}")
    return data


@dataclass(frozen=True)
class NpyHeader:
    """What a `.npy` header promises: the array's shape and dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype


def read_npy_header(path: Path) -> NpyHeader:
    """The `.npy` header of `path`, read without touching the data, once the file is known to hold what the
    header promises: ValueError "<path>: <reason>" for a file that is not a `.npy`, an object (pickled) array, or
    a size that differs from header + shape x itemsize (a truncated download, a lying header)."""
    try:
        with open(path, "rb") as f:
            start = f.read(16)
            f.seek(0)
            try:
                version = npy_format.read_magic(f)
            except ValueError:
                raise ValueError(f"{path}: {not_npy_reason(start)}") from None
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{path}: .npy format version {version[0]}.{version[1]} not supported (1.0, 2.0)")
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            try:
                shape, _, dtype = read_header(f)
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"{path}: unreadable .npy header ({exc})") from None
            offset = f.tell()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if dtype.hasobject:
        raise ValueError(f"{path}: dtype {dtype} holds pickled Python objects; refused (images are uint8 or float)")
    expected, actual = offset + math.prod(shape) * dtype.itemsize, path.stat().st_size
    if actual != expected:
        cause = "truncated (an interrupted download?)" if actual < expected else "longer than its header says"
        raise ValueError(f"{path}: {cause}: header says shape {shape} {dtype} = {expected:,} bytes, "
                         f"the file has {actual:,}")
    return NpyHeader(tuple(shape), dtype)


def not_npy_reason(start: bytes) -> str:
    """Why a file starting with bytes `start` is no `.npy` file, naming what it looks like."""
    if not start:
        return "empty file (0 bytes), not a .npy file"
    if start.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "an HTML page, not a .npy file (a download link's web page?)"
    return f"not a .npy file (it starts with {start[:12]!r})"


def check_lofgan_layout(shape: tuple[int, ...], dtype: np.dtype, spec: LofganSpec | None, path: Path) -> None:
    """Refuse arrays that are not (classes, images, H, H, 3) uint8 / float, or that contradict LoFGAN's `spec`."""
    if len(shape) != 5 or shape[-1] != 3 or shape[2] != shape[3] or 0 in shape:
        raise ValueError(f"{path}: shape {shape} is not LoFGAN's (classes, images, H, H, 3)")
    if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{path}: dtype {dtype}; LoFGAN files hold uint8 (or float in [0, 1])")
    if spec is not None:
        if shape[0] != spec.classes:
            raise ValueError(f"{path}: {shape[0]} classes, LoFGAN's {spec.file} has {spec.classes}")
        if spec.images_per_class is not None and shape[1] != spec.images_per_class:
            raise ValueError(f"{path}: {shape[1]} images per class, LoFGAN's {spec.file} has "
                             f"{spec.images_per_class}")


def sample_images(data: np.ndarray) -> np.ndarray:
    """A few images of a (classes, images, H, W, 3) array, read from disk: the first and last of every ~8th class."""
    return np.asarray(data[:: max(1, len(data) // 8)][:, [0, -1]])


def image_content_problems(sample: np.ndarray) -> list[str]:
    """Why sampled images are not images (empty: they are): NaN or infinite values, floats outside [0, 1], or one
    constant value (an empty or zero-filled file)."""
    if np.issubdtype(sample.dtype, np.floating):
        bad = ~np.isfinite(sample)
        if bad.any():
            return [f"the sampled images hold NaN or infinite values ({bad.mean():.0%} of the sampled values)"]
    lo, hi = float(sample.min()), float(sample.max())
    problems = []
    if np.issubdtype(sample.dtype, np.floating) and not (lo >= 0 and hi <= 1.0 + 1e-6):
        problems.append(f"float images span [{lo:.3g}, {hi:.3g}], expected [0, 1]")
    if hi - lo < 1e-3:
        problems.append(f"the sampled images are constant ({lo:.3g} everywhere: an empty or zero-filled file?)")
    return problems


def read_image(path: Path) -> Image.Image:
    """The image file at `path`, decoded to RGB; ValueError "<path>: <reason>" when it does not decode."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as exc:  # PIL raises many kinds (OSError, SyntaxError, struct.error, ...) for broken files
        raise ValueError(f"{path}: {undecodable_reason(path, exc)}") from None


def undecodable_reason(path: Path, exc: Exception) -> str:
    """Why the image file at `path` did not decode, `exc` being what PIL raised."""
    if isinstance(exc, FileNotFoundError):
        return "file not found (moved or deleted since the folder was listed?)"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    if isinstance(exc, UnidentifiedImageError):
        with open(path, "rb") as f:
            return f"not an image PIL recognises (it starts with {f.read(12)!r})"
    return f"does not decode ({type(exc).__name__}: {exc})"


class FolderImages:
    """Images of class folders read on indexing: `[slots, classes]` (ints or broadcastable index arrays) ->
    uint8 (..., size, size, 3). Slot i of a class is its i-th file in name order."""

    def __init__(self, files: list[list[Path]], size: int):
        self.files, self.size = files, size
        self.shape = (max(map(len, files)), len(files), size, size, 3)

    def __getitem__(self, key) -> np.ndarray:
        slots, classes = np.broadcast_arrays(*(np.asarray(k) for k in key))
        out = np.empty(slots.shape + (self.size, self.size, 3), np.uint8)
        for at in np.ndindex(slots.shape):  # one file per image: I/O, not pixels
            s, c = int(slots[at]), int(classes[at])
            if s >= len(self.files[c]):
                raise IndexError(f"class {c} has {len(self.files[c])} images, slot {s} asked")
            out[at] = np.asarray(read_image(self.files[c][s]).resize((self.size, self.size), Image.BICUBIC))
        return out


def load_image_folders(root: str | Path, size: int = 256, shot_pool: int = 10) -> ImageClassDataset:
    """AGE's layout: `root/train/` (seen classes) and `root/valid/` (unseen), the class being the file-name
    prefix before the first `_` (FUNIT crops, e.g. `n02085620_1234.jpg`). An unseen class's first `shot_pool`
    files (name order) are its shot pool, the rest its evaluation pool."""
    root = Path(root)
    groups = {}
    for part in ("train", "valid"):
        folder = root / part
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: AGE's layout is {root}/train/ and {root}/valid/ "
                                    "with files named <class>_<id>.<ext>")
        files: dict[str, list[Path]] = {}
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and "_" in f.stem:
                files.setdefault(f.stem.split("_", 1)[0], []).append(f)
        if not files:
            raise ValueError(f"{folder} holds no <class>_<id> images ({', '.join(IMAGE_SUFFIXES)})")
        groups[part] = files
    overlap = set(groups["train"]) & set(groups["valid"])
    if overlap:
        raise ValueError(f"classes in both train/ and valid/: {sorted(overlap)[:5]}")
    names = list(groups["train"]) + list(groups["valid"])
    per_class = [groups["train" if c in groups["train"] else "valid"][c] for c in names]
    small = [c for c in groups["valid"] if len(groups["valid"][c]) < shot_pool + 2]
    if small:
        raise ValueError(f"unseen classes with fewer than shot_pool + 2 = {shot_pool + 2} images: {small[:5]}")
    images = FolderImages(per_class, size)
    coverage = np.arange(images.shape[0])[:, None] < np.array([len(f) for f in per_class])[None]  # (slots, classes)
    slots = lambda c: list(range(len(groups["valid"][c])))
    smallest = min(len(f) for f in groups["train"].values())  # classes differ in size: hold out slots all seen
    held = list(range(smallest - heldout_slots(smallest), smallest))  # classes have, 10 % of the smallest
    split = {"seen_categories": list(groups["train"]), "unseen_categories": list(groups["valid"]),
             "train_styles": [s for s in range(images.shape[0]) if s not in held], "heldout_styles": held,
             "heldout_families": ["held-out image slots"],
             "unseen_pools": {c: {"shot_pool": slots(c)[:shot_pool], "eval_pool": slots(c)[shot_pool:]}
                              for c in groups["valid"]}}
    return ImageClassDataset(images, coverage, names, split, size)


DATASETS = ("glyphs", *LOFGAN, "folders")  # values of the notebooks' `dataset` parameter


def load_dataset(dataset: str, data_dir: str | Path, size: int = 0) -> GlyphDataset:
    """What a notebook's `dataset` and `data_dir` parameters name: `glyphs` (the embedded artefact's folder), a
    LoFGAN protocol (`animal`, `flower`, `vggface`, `synthetic`; `data_dir` is the `.npy` file) or `folders`
    (AGE's layout). `size` resizes (0: the data's own size; AGE's folders default to 256 px)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {list(DATASETS)}")
    path = resolve(data_dir)
    if dataset == "glyphs":
        return GlyphDataset.load(path, size or 32)
    if dataset == "folders":
        return load_image_folders(path, size or 256)
    return load_lofgan(path, dataset, size or None)
