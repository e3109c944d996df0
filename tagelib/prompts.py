"""Where PSM's prompts come from, and how a prompt's effect is judged, for glyphs and for photographs.

- CLIP: `load_clip_model(spec, pretrained)` takes an open_clip local-dir folder (the glyph CLIP of 00_clip) or an
  open_clip model name (`ViT-B-32`) with a pretrained tag (`openai`, `laion2b_s34b_b79k`: open_clip downloads it) or
  a local weights file (offline). `encode_images` feeds our images (N, C, S, S) in [-1, 1] to any of them.
- `PromptKit`: the prompt sentences for the evaluated words, the PSM's training prompts (a `psm.PromptBank`) and a
  scorer that says which images show each word.
  - glyphs: captions of each training glyph's own font (its metadata), scored by the attribute probe of 00_clip;
  - photographs (no captions exist): language-free training — each training image's own CLIP image embedding,
    perturbed by `image_prompt_noise` (LAFITE's trick to bridge CLIP's image–text gap), stands for its caption;
    at generation the prompt is the text "a photo of a <word> <subject>". Scored by CLIP zero-shot: an image shows
    <word> when CLIP finds it closer to that text than to the neutral "a photo of a <subject>". That is the
    steering CLIP judging itself, a weaker test than the glyphs' independent probe; tables say which scorer ran.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from tagelib import clip_glyph, psm
from tagelib.attribute_probe import ATTRIBUTES, load_probe
from tagelib.paper_synthetic import REHEARSAL_CLIP, register_rehearsal_clip
from tagelib.paths import resolve


def names_a_weights_file(pretrained: str) -> bool:
    """Is `clip_pretrained` meant as a file (a path, or a weights suffix) rather than one of open_clip's tags?"""
    return "/" in pretrained or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors"))


def is_open_clip_name(spec: str) -> bool:
    """Is `spec` an open_clip model name (ViT-B-32, the rehearsal's) rather than a local-dir folder?"""
    import open_clip

    return not resolve(spec).exists() and (spec == REHEARSAL_CLIP or spec in open_clip.list_models())


def load_clip_model(spec: str, pretrained: str = "", device: torch.device | str = "cpu"):
    """(model, tokenizer) frozen in eval mode on `device`, from an open_clip local-dir folder or a model name."""
    import open_clip

    folder = resolve(spec)
    if spec == REHEARSAL_CLIP:
        register_rehearsal_clip()
    if folder.is_dir():  # a glyph CLIP folder, checked against its manifest
        model, tokenizer = clip_glyph.load_clip(folder)
        model.source = f"{folder} (open_clip local-dir)"
    elif spec in open_clip.list_models():
        local = resolve(pretrained) if pretrained else None
        if local is not None and local.is_file():
            pretrained = str(local)  # a local weights file (offline)
        elif names_a_weights_file(pretrained):
            raise FileNotFoundError(f"clip_pretrained={pretrained!r} looks like a weights file but is not one; "
                                    f"give open_clip's tag (e.g. openai) with the internet, or the downloaded file")
        logging.disable(logging.WARNING)  # open_clip warns when no weights are asked for: the rehearsal's case
        try:
            model = open_clip.create_model(spec, pretrained=pretrained or None)
        finally:
            logging.disable(logging.NOTSET)
        tokenizer = open_clip.get_tokenizer(spec)
        model.training_info = {}
        model.source = f"open_clip {spec}, " + (f"pretrained {pretrained}" if pretrained else "RANDOM weights")
    else:
        raise FileNotFoundError(f"clip={spec!r} is neither an open_clip local-dir folder nor "
                                f"an open_clip model name (e.g. ViT-B-32); the glyph CLIP is made by notebooks/00_clip")
    return model.eval().requires_grad_(False).to(device), tokenizer


def encode_images(model, images: Tensor) -> Tensor:
    """(N, C, S, S) in [-1, 1] -> (N, E) unit-norm CLIP embeddings, on the images' device; differentiable.

    Grayscale is repeated to RGB; images are resized (bilinear) to the model's input size and normalised with its
    mean and std. The glyph CLIP (mean = std = 0.5 at the images' own size) reads them as they are. Not merged into
    `clip_glyph.encode_images`: a glyph CLIP freshly built for training (`create_clip`) reports open_clip's default
    mean and std, though it is trained on images as they are."""
    visual = model.visual
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    mean, std = getattr(visual, "image_mean", None) or (0.5,) * 3, getattr(visual, "image_std", None) or (0.5,) * 3
    if size == images.shape[-1] and tuple(mean) == (0.5,) * 3 and tuple(std) == (0.5,) * 3:
        return clip_glyph.encode_images(model, images)
    device = next(model.parameters()).device
    x = images.to(device).expand(-1, 3, -1, -1).add(1).div(2)  # (N, 3, S, S) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - x.new_tensor(mean)[:, None, None]) / x.new_tensor(std)[:, None, None]
    return model.encode_image(x, normalize=True).to(images.device)


@torch.no_grad()
def embed_images(model, images: Tensor, batch_size: int = 256) -> Tensor:
    """`encode_images` of many images without gradients: (N, E)."""
    return torch.cat([encode_images(model, images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str]) -> Tensor:
    """Sentences -> (T, E) unit-norm CLIP text embeddings, on the CPU."""
    return clip_glyph.encode_text(model, tokenizer, texts).float().cpu()


class PromptKit(NamedTuple):
    words: list[str]
    texts: list[str]  # the prompt sentence of each word
    bank: psm.PromptBank  # PSM's training prompts
    score: Callable[[Tensor], Tensor]  # images (N, C, H, W) -> (N, P) bool: does image n show word p?
    scorer: str  # what scores, in words, for the tables


def glyph_kit(ds, words: list[str], embed_text, probe_path: str | Path, styles: Tensor,
              cfg: psm.PSMTrainConfig) -> PromptKit:
    """Glyphs: font captions as training prompts, "a bold glyph" as prompt, the attribute probe as scorer."""
    unknown = [w for w in words if w not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"prompts {unknown} have no attribute probe; choose among {list(ATTRIBUTES)}")
    probe = load_probe(probe_path)
    columns = [ATTRIBUTES.index(w) for w in words]
    bank = psm.prompt_bank(embed_text, ds.styles, styles, clip_glyph.random_caption, cfg)
    return PromptKit(words, [clip_glyph.ATTRIBUTE_PROMPTS[w] for w in words], bank,
                     lambda imgs: probe.predict(imgs)[:, columns] > 0.5,
                     "the attribute probe of 00_clip (a CNN trained on real glyphs against their fonts' measured metadata)")


@torch.no_grad()
def image_kit(ds, words: list[str], clip_model, embed_text, images: Tensor, cfg: psm.PSMTrainConfig,
              noise: float) -> PromptKit:
    """Photographs: each training image's own CLIP embedding (+ noise) as its training prompt, "a photo of a <word>
    <subject>" as prompt, CLIP zero-shot against "a photo of a <subject>" as scorer."""
    subject = getattr(ds, "subject", "image")
    texts = [f"a photo of a {w} {subject}" for w in words]
    own = embed_images(clip_model, images)  # (N, E)
    bank = psm.PromptBank(own[:, None], torch.arange(len(own)), cfg.prompt_dropout, noise=noise)
    text_emb = embed_text(texts + [f"a photo of a {subject}"])  # (P + 1, E)

    def score(imgs: Tensor) -> Tensor:
        sims = embed_images(clip_model, imgs).float().cpu() @ text_emb.T  # (N, P + 1)
        return sims[:, :-1] > sims[:, -1:]

    return PromptKit(words, texts, bank, score,
                     f"CLIP zero-shot (the steering CLIP itself: \"a photo of a <word> {subject}\" closer than "
                     f"\"a photo of a {subject}\")")


def prompt_kit(ds, words: list[str], clip_model, tokenizer, probe_path: str, styles: Tensor, images: Tensor,
               cfg: psm.PSMTrainConfig, noise: float) -> PromptKit:
    """The kit for `ds`: glyphs when it carries font metadata, photographs otherwise."""
    embed_text = lambda texts: embed_texts(clip_model, tokenizer, texts)
    if getattr(ds, "channels", 1) == 1:
        if not probe_path:
            raise ValueError("glyph prompts are scored by the attribute probe: set attribute_probe (made by 00_clip)")
        return glyph_kit(ds, words, embed_text, probe_path, styles, cfg)
    return image_kit(ds, words, clip_model, embed_text, images, cfg, noise)


def word_list(text: str) -> list[str]:
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words or len(set(words)) != len(words):
        raise ValueError(f"prompts must be distinct comma-separated words, got {text!r}")
    return words
