"""A CLIP model of the glyph domain, built, trained, saved and loaded with open_clip.

The PSM needs text embeddings of attribute prompts ("a bold glyph") and a differentiable image embedding
of generated glyphs in the same space. No pretrained CLIP knows 32 px glyphs, so we train a small one
with open_clip's own pieces: a registered model config (a ViT on 8x8 patches, the standard
`SimpleTokenizer` with a short context), `ClipLoss` with its learnable logit scale, and open_clip's
``local-dir`` format (``open_clip_config.json`` + ``open_clip_model.safetensors``), so the shipped model
loads with nothing but open_clip:

    model, tokenizer = load_clip("data/clip/glyph32_clip")   # create_model_and_transforms("local-dir:...")
    img = encode_images(model, x)          # x (N, 1, 32, 32) in [-1, 1] -> (N, E), unit norm, differentiable
    txt = encode_text(model, tokenizer, list(ATTRIBUTE_PROMPTS.values()))   # (T, E), unit norm

It trains on the training font families and seen categories only: nothing about the unseen categories
or the held-out families reaches it. Captions come from the styles' metadata (`full_caption`,
`random_caption`).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import Tensor
from tqdm.auto import trange

from tagelib import folder_artefact
from tagelib.atomic import write_bytes_atomic, write_text_atomic
from tagelib.config import build_config
from tagelib.glyphs.style import WEIGHT_WORDS

MADE_BY = "notebooks/00_clip.ipynb (clip_steps > 0), or `make clip` for the shipped data/clip/glyph32_clip"
WORD_ORDER = ("weight", "italic", "width", "monospace", "class")  # order of the words in a full caption
SYNONYMS = {  # one attribute value -> the words a caption may use for it (the first: the full caption's)
    "thin": ("thin", "hairline"), "extra-light": ("extra-light", "extralight", "ultralight"), "light": ("light",),
    "regular": ("regular", "normal"), "medium": ("medium",), "semibold": ("semibold", "semi-bold", "demibold"),
    "bold": ("bold",), "extra-bold": ("extra-bold", "extrabold", "heavy"), "black": ("black", "heavy"),
    "italic": ("italic", "oblique", "slanted"), "condensed": ("condensed", "narrow"),
    "extended": ("extended", "wide", "expanded"), "monospace": ("monospace", "monospaced", "fixed-width"),
    "serif": ("serif",), "sans-serif": ("sans-serif", "sans serif", "sans"), "decorative": ("decorative", "display"),
    "script": ("script", "handwritten"),
}
TEMPLATES = ("{a} {w} glyph", "{a} {w} glyph", "{a} {w} glyph", "{w} glyph", "{a} {w} letter", "{a} {w} character",
             "a glyph in {a} {w} font")  # {a}: the article of the first word
ATTRIBUTE_PROMPTS = {w: f"{'an' if w[0] in 'aeiou' else 'a'} {w} glyph" for w in  # word -> prompt ("an italic glyph");
                     ("bold", "light", "italic", "serif", "sans-serif", "monospace", "condensed", "wide")}  # = probe ATTRIBUTES


# ----------------------------------------------------------------------------- captions


def weight_word(weight: int) -> str:
    """The named weight class nearest to a declared weight (100..900)."""
    return WEIGHT_WORDS[min(WEIGHT_WORDS, key=lambda w: abs(w - weight))]


def style_attributes(style: dict) -> dict[str, str]:
    """Slot -> attribute value of one style (weight, italic, width, monospace, class; absent slots omitted)."""
    weight = weight_word(style["weight"])
    out = {"weight": weight}
    if style["italic"]:
        out["italic"] = "italic"
    if style["width_class"] != "normal":
        out["width"] = style["width_class"]
    if style["monospace"] and style["classification"] != "monospace":
        out["monospace"] = "monospace"
    out["class"] = style["classification"]
    return out


def full_caption(style: dict) -> str:
    """The deterministic caption of a style, e.g. 'a bold italic condensed serif glyph' (= `style["caption"]`
    for the shipped data, plus 'monospace' for measured-monospace faces of another class)."""
    attrs = style_attributes(style)
    words = " ".join(attrs[k] for k in WORD_ORDER if k in attrs)
    return f"{_article(words)} {words} glyph"


def _article(words: str) -> str:
    return "an" if words[0] in "aeiou" else "a"


def random_caption(style: dict, rng: np.random.Generator, keep: float = 0.5) -> str:
    """A caption naming a random non-empty subset of the style's true attributes, in canonical or shuffled
    order, each by a random synonym; weights 100-300 may be called 'light', 600-900 'bold'."""
    attrs = style_attributes(style)
    slots = [k for k in WORD_ORDER if k in attrs and rng.random() < keep] or [WORD_ORDER[0] if rng.random() < 0.5 else "class"]
    if rng.random() < 0.5:
        slots = [slots[i] for i in rng.permutation(len(slots))]
    words = []
    for slot in slots:
        value = attrs[slot]
        if slot == "weight" and rng.random() < 0.5:
            value = {"thin": "light", "extra-light": "light", "semibold": "bold", "extra-bold": "bold", "black": "bold"}.get(value, value)
        words.append(str(rng.choice(SYNONYMS[value])))
    text = " ".join(words)
    return str(rng.choice(TEMPLATES)).format(a=_article(text), w=text)


# ----------------------------------------------------------------------------- the model


@dataclass
class GlyphClipConfig:
    embed_dim: int = 64  # joint embedding size
    image_size: int = 32
    patch_size: int = 8  # (32 / 8)^2 = 16 patch tokens + a class token (4: 64 tokens, 5x the CPU time)
    vision_width: int = 128
    vision_layers: int = 4
    vision_head_width: int = 32
    text_width: int = 48  # the token table is 49408 x text_width floats: keep it small (file size)
    text_layers: int = 3
    text_heads: int = 4
    context_length: int = 20  # tokens, with start and end; the longest caption needs ~14

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size or self.vision_width % self.vision_head_width or self.text_width % self.text_heads:
            raise ValueError(f"sizes must divide: {self}")
        if min(self.embed_dim, self.vision_layers, self.text_layers, self.context_length - 8) < 1:
            raise ValueError(f"invalid CLIP config: {self}")

    @classmethod
    def from_dict(cls, values) -> "GlyphClipConfig":
        return build_config(cls, values)

    def model_cfg(self) -> dict:
        """open_clip's model config (the `model_cfg` of open_clip_config.json)."""
        return {"embed_dim": self.embed_dim,
                "vision_cfg": {"image_size": self.image_size, "patch_size": self.patch_size, "width": self.vision_width,
                               "layers": self.vision_layers, "head_width": self.vision_head_width},
                "text_cfg": {"context_length": self.context_length, "vocab_size": 49408, "width": self.text_width,
                             "heads": self.text_heads, "layers": self.text_layers}}


# Our tensors are open_clip's normalised input: a grey image with white ink, (v - 0.5) / 0.5 per channel.
PREPROCESS_CFG = {"mode": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize_mode": "squash"}


def add_open_clip_config(name: str, model_cfg: dict) -> str:
    """Register an open_clip model config (once per process) so `open_clip.create_model(name)` builds it."""
    if name not in open_clip.list_models():
        with tempfile.TemporaryDirectory(prefix="open_clip_cfg_") as folder:  # read at once by open_clip, then removed
            path = Path(folder) / f"{name}.json"
            path.write_text(json.dumps(model_cfg))
            open_clip.add_model_config(path)
    return name


def register_config(cfg: GlyphClipConfig) -> str:
    """Register `cfg` with open_clip under a name derived from its sizes; returns the name."""
    return add_open_clip_config("glyph-clip-" + "-".join(str(v) for v in asdict(cfg).values()), cfg.model_cfg())


def create_clip(cfg: GlyphClipConfig, seed: int = 0) -> tuple[torch.nn.Module, open_clip.SimpleTokenizer]:
    """A randomly initialised model of `cfg` and its tokenizer, both through open_clip's registry."""
    name = register_config(cfg)
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded: none are meant to be
    try:
        model = open_clip.create_model(name)
    finally:
        logging.disable(logging.NOTSET)
    return model, open_clip.get_tokenizer(name)


def encode_images(model, images: Tensor) -> Tensor:
    """(N, 1, S, S) in [-1, 1] (ink = +1) -> (N, E) unit-norm embeddings, computed on the model's device and
    returned on the images'; differentiable w.r.t. `images`."""
    device = next(model.parameters()).device
    return model.encode_image(images.to(device).expand(-1, 3, -1, -1), normalize=True).to(images.device)


def encode_text(model, tokenizer, texts: list[str]) -> Tensor:
    """Captions -> (T, E) unit-norm embeddings, on the model's device."""
    return model.encode_text(tokenizer(list(texts)).to(next(model.parameters()).device), normalize=True)


@torch.no_grad()
def embed_images(model, images: Tensor, batch_size: int = 256) -> Tensor:
    """`encode_images` of many images in chunks, in eval mode, without gradients: (N, E)."""
    was = model.training
    model.eval()
    out = torch.cat([encode_images(model, images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    model.train(was)
    return out


# ----------------------------------------------------------------------------- training


@dataclass
class ClipTrainConfig:
    steps: int = 1500
    batch_size: int = 128  # distinct styles per step, one random seen glyph each
    lr: float = 1e-3  # AdamW peak learning rate (one-cycle: warm-up, then cosine decay)
    weight_decay: float = 0.1
    full_caption: float = 0.3  # share of captions that are the full caption; the rest random subsets
    augment: bool = True  # ±1 px shifts, light blur and pixel noise (a generator's soft drawings)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(f"steps must be >= 1 and batch_size >= 2, got {self.steps}, {self.batch_size}")
        if not self.lr > 0 or not 0 <= self.full_caption <= 1:
            raise ValueError(f"need lr > 0 and full_caption in [0, 1], got {self.lr}, {self.full_caption}")

    @classmethod
    def from_dict(cls, values) -> "ClipTrainConfig":
        return build_config(cls, values)


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Shift by -1..1 px, blur 30 % (3x3 mean, mixed in), add noise 50 % (σ ≤ 0.1); no rotation, scaling or
    stroke change: slant, width and weight are what the captions describe. (B, 1, S, S) -> same."""
    b = len(x)
    shift = torch.randint(-1, 2, (b, 2), generator=gen)
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    s = x.shape[-1]
    rows = (torch.arange(s)[None] + 1 + shift[:, :1])[:, None, :, None].expand(-1, 1, -1, s + 2)  # (B, 1, S, S + 2)
    x = padded.gather(2, rows)
    cols = (torch.arange(s)[None] + 1 + shift[:, 1:])[:, None, None, :].expand(-1, 1, s, -1)
    x = x.gather(3, cols)
    mix = 0.5 * torch.rand(b, 1, 1, 1, generator=gen) * (torch.rand(b, 1, 1, 1, generator=gen) < 0.3)
    x = torch.lerp(x, F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1), mix)
    noise = torch.randn(x.shape, generator=gen) * 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) < 0.5)
    return (x + noise).clamp(-1, 1)


def train_clip(model, tokenizer, ink: np.ndarray, coverage: np.ndarray, styles: list[dict], cfg: ClipTrainConfig,
               progress: bool = True) -> dict[str, list]:
    """Contrastive training on ink uint8 (S, K, H, W) of S styles x K categories (`coverage` (S, K) bool says which
    exist; pass training families x seen categories only) with captions of `styles`. Returns the history."""
    from open_clip import ClipLoss

    if not (len(ink) == len(coverage) == len(styles) >= 2) or not coverage.any(1).all():
        raise ValueError("need >= 2 styles, each with at least one glyph, and one style dict per row of ink")
    gen, rng = torch.Generator().manual_seed(cfg.seed), np.random.default_rng(cfg.seed)
    cov = torch.from_numpy(coverage).float()  # (S, K)
    full = [full_caption(st) for st in styles]
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    hist: dict[str, list] = {"loss": [], "accuracy": [], "logit_scale": [], "seconds": []}
    start, b = time.perf_counter(), min(cfg.batch_size, len(ink))
    model.train()
    for _ in trange(cfg.steps, desc="CLIP", disable=not progress):
        s = torch.randperm(len(ink), generator=gen)[:b]  # (B,) distinct styles
        k = torch.multinomial(cov[s], 1, generator=gen)[:, 0]  # (B,) one covered category each
        x = torch.from_numpy(ink[s.numpy(), k.numpy()]).float().div(127.5).sub(1)[:, None]  # (B, 1, H, W)
        if cfg.augment:
            x = augment(x, gen)
        texts = [full[i] if rng.random() < cfg.full_caption else random_caption(styles[i], rng) for i in s.tolist()]
        img, txt = encode_images(model, x), encode_text(model, tokenizer, texts)  # (B, E) each
        loss = loss_fn(img, txt, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # as open_clip's training loop does
        hist["loss"].append(loss.item())
        hist["accuracy"].append(((img @ txt.T).argmax(1) == torch.arange(b)).float().mean().item())
        hist["logit_scale"].append(model.logit_scale.exp().item())
        hist["seconds"].append(time.perf_counter() - start)
    model.eval()
    return hist


# ----------------------------------------------------------------------------- retrieval


@torch.no_grad()
def retrieval(image_emb: Tensor, caption_emb: Tensor, truth: Tensor, k: int = 5) -> dict[str, float]:
    """Image->caption and caption->image top-1 / top-k, with chance levels.

    image_emb (N, E) and caption_emb (C, E) unit norm; truth (N,) the index of each image's own caption.
    An image is right when its caption is retrieved; a caption's retrieved image is right when it has that caption.
    """
    n, c = len(image_emb), len(caption_emb)
    sim = image_emb @ caption_emb.T  # (N, C)
    hits = sim.topk(min(k, c), dim=1).indices == truth[:, None]  # (N, k)
    back = truth[sim.T.topk(min(k, n), dim=1).indices] == torch.arange(c)[:, None]  # (C, k)
    count = torch.bincount(truth, minlength=c).double()  # (C,) images per caption
    miss = torch.stack([(n - count - i) / (n - i) for i in range(min(k, n))]).clamp(min=0).prod(0)  # P(no hit in k)
    return {"image_to_caption_top1": hits[:, 0].float().mean().item(), f"image_to_caption_top{k}": hits.any(1).float().mean().item(),
            "image_to_caption_chance_top1": 1 / c, f"image_to_caption_chance_top{k}": min(k, c) / c,
            "caption_to_image_top1": back[:, 0].float().mean().item(), f"caption_to_image_top{k}": back.any(1).float().mean().item(),
            "caption_to_image_chance_top1": (count / n).mean().item(), f"caption_to_image_chance_top{k}": (1 - miss).mean().item(),
            "images": n, "captions": c}


def prompt_auc(image_emb: Tensor, prompt_emb: Tensor, labels: Tensor) -> Tensor:
    """(A,) ROC AUC of each prompt's similarity (image_emb (N, E) @ prompt_emb (A, E)) for labels (N, A) bool."""
    scores = image_emb @ prompt_emb.T  # (N, A)
    ranks = scores.argsort(0).argsort(0).double() + 1  # (N, A), 1 = lowest
    pos = labels.double().sum(0)
    neg = len(labels) - pos
    return ((ranks * labels).sum(0) - pos * (pos + 1) / 2) / (pos * neg)


# ----------------------------------------------------------------------------- local-dir format


CLIP_KIND = "glyph CLIP (open_clip local-dir)"  # the kind named in the folder's manifest (tagelib.folder_artefact)
CLIP_FILES = ("open_clip_config.json", "open_clip_model.safetensors")


def save_clip(folder: str | Path, model, cfg: GlyphClipConfig, info: dict | None = None, overwrite: bool = False) -> Path:
    """Write open_clip's local-dir format (open_clip_config.json with model_cfg, preprocess_cfg and our `info`;
    open_clip_model.safetensors) and a manifest of their hashes into a new folder beside `folder`, then rename it
    into place. An existing `folder` is replaced only with `overwrite`, and only when its manifest says it is a CLIP
    folder holding nothing else (`tagelib.folder_artefact.publish`)."""
    config = {"model_cfg": cfg.model_cfg(), "preprocess_cfg": {**PREPROCESS_CFG, "size": cfg.image_size},
              "glyph_clip": asdict(cfg), "training": info or {}}
    weights = save({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()})

    def fill(tmp: Path) -> None:
        write_text_atomic(tmp / CLIP_FILES[0], json.dumps(config, indent=1))  # fsync'ed, usual permissions
        write_bytes_atomic(tmp / CLIP_FILES[1], weights)

    return folder_artefact.publish(folder, CLIP_KIND, fill, overwrite=overwrite)


def load_clip(folder: str | Path) -> tuple[torch.nn.Module, open_clip.SimpleTokenizer]:
    """Model (eval mode, frozen; `.training_info` from the json) and tokenizer, through open_clip's local-dir loader,
    after checking every file against the folder's manifest (a corrupted or missing weights file is an error, never
    a randomly initialised model)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"CLIP model folder not found: {folder}; it is made by {MADE_BY}")
    folder_artefact.verify(folder, CLIP_KIND, needed=CLIP_FILES)
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.training_info = json.loads((folder / CLIP_FILES[0]).read_text()).get("training", {})
    return model.eval().requires_grad_(False), tokenizer


def clip_size_bytes(folder: str | Path) -> int:
    """Total size of a saved model folder."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
