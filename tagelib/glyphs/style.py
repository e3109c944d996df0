"""Per-style metadata and captions.

Names, licence hints and the OS/2 weight are read from the font; slant, width, monospace and stroke
weight are measured from the renders and advance widths, because fonts often lie in their OS/2 fields.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import ImageFont

from tagelib.glyphs.render import FontFace, open_ttfont

WEIGHT_WORDS = {100: "thin", 200: "extra-light", 300: "light", 400: "regular", 500: "medium",
                600: "semibold", 700: "bold", 800: "extra-bold", 900: "black"}
SCRIPT_WORDS = ("script", "hand", "brush", "calligra", "cursive", "chancery", "swash", "pen ", "marker")
DECORATIVE_WORDS = ("decorative", "display", "shadow", "outline", "stencil", "inline", "fraktur", "blackletter", "unifraktur")
SANS_WORDS = ("sans", "grotesk", "grotesque", "gothic")
SERIF_WORDS = ("serif", "roman", "slab", "garamond", "times", "antiqua", "baskerville", "bodoni", "caslon", "libertin")
MONO_WORDS = ("mono", "code", "typewriter", "courier", "console")
# Width classes from the mean lowercase advance / cap height (DejaVu Sans: 0.77; calibrated on the build).
CONDENSED_BELOW = 0.62
EXTENDED_ABOVE = 0.90
# Median stroke / cap height of the styles whose declared weight is each class (measured on the shipped
# build); used only where a font declares an impossible weight (e.g. 28926, or 32).
STROKE_BY_WEIGHT = {100: 0.058, 200: 0.063, 300: 0.074, 400: 0.094, 500: 0.108, 600: 0.125, 700: 0.135,
                    800: 0.165, 900: 0.191}
STYLE_TOKENS = r"\b(extra|ultra|semi|demi)?[- ]?(thin|hairline|light|book|regular|normal|medium|bold|heavy|black|italic|oblique|slanted|condensed|narrow|expanded|extended|wide|display|text)\b"


@dataclass
class StyleInfo:
    """Metadata of one style (font face); `caption` is what the CLIP model of the PSM will read."""

    family: str
    subfamily: str
    full_name: str
    weight: int  # 100..900: OS/2 usWeightClass or the @fontsource file name's weight, if plausible
    weight_source: str  # "declared", or "stroke" when the declared weight was impossible
    italic: bool  # measured: |slant| above 5 degrees
    slant_deg: float  # measured from vertical stems; positive = leaning right
    width: float  # measured: mean lowercase advance / cap height
    width_class: str  # condensed / normal / extended
    monospace: bool  # measured: equal advance widths
    stroke: float  # measured: mean stroke thickness / cap height
    classification: str  # serif / sans-serif / monospace / script / decorative
    source: str
    license: str
    path: str
    face_index: int
    caption: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _names(face: FontFace) -> tuple[str, str, str, int | None, int]:
    font = open_ttfont(face)
    try:
        name = font["name"]

        def get(*ids: int) -> str:
            for i in ids:
                rec = name.getDebugName(i)
                if rec:
                    return rec.strip()
            return ""

        os2 = font["OS/2"] if "OS/2" in font else None
        weight = int(os2.usWeightClass) if os2 is not None else None
        panose = getattr(os2, "panose", None)
        family_type = int(panose.bFamilyType) if panose is not None else 0
        return get(16, 1), get(17, 2), get(4, 1), weight, family_type
    finally:
        font.close()


def resolve_weight(declared: int | None, stroke: float) -> tuple[int, str]:
    """(weight, where it came from): the declared value if plausible (1–9 is the old scale, ×100),
    otherwise the class whose median stroke thickness is nearest to the measured one."""
    if declared is not None and 1 <= declared <= 9:
        return declared * 100, "declared"
    if declared is not None and 100 <= declared <= 1000:
        return min(declared, 900), "declared"
    return min(STROKE_BY_WEIGHT, key=lambda w: abs(STROKE_BY_WEIGHT[w] - stroke)), "stroke"


def family_key(family: str) -> str:
    """A family name without weight/width/slope words: the unit of the held-out family split."""
    key = re.sub(STYLE_TOKENS, " ", family.lower())
    return re.sub(r"[^a-z0-9]+", " ", key).strip() or family.lower()


def measure_slant(stems: np.ndarray) -> float:
    """Slant in degrees from glyphs with vertical stems (n, H, W) ink: slope of the row ink centroid."""
    ink = stems.astype(np.float64)  # (n, H, W)
    h, w = ink.shape[1:]
    row_mass = ink.sum(2)  # (n, H)
    cx = (ink * np.arange(w)).sum(2) / np.maximum(row_mass, 1e-9)  # (n, H) centroid x per row
    rows = np.broadcast_to(np.arange(h, dtype=np.float64), row_mass.shape)
    wt = (row_mass > 0.25 * row_mass.max(1, keepdims=True)).astype(np.float64)
    my = (wt * rows).sum() / wt.sum()
    mx = (wt * cx).sum() / wt.sum()
    slope = (wt * (rows - my) * (cx - mx)).sum() / max((wt * (rows - my) ** 2).sum(), 1e-9)  # dx/dy
    return math.degrees(math.atan(-slope))


def measure_stroke(images: np.ndarray, cap_px: float) -> float:
    """Mean stroke thickness / cap height: 2·ink area / ink perimeter, perimeter from the gradient."""
    ink = images.astype(np.float64) / 255.0  # (n, H, W)
    area = ink.sum((1, 2))
    perim = np.abs(np.diff(ink, axis=1)).sum((1, 2)) + np.abs(np.diff(ink, axis=2)).sum((1, 2))
    return float(np.median(2 * area / np.maximum(perim, 1e-9)) / cap_px)


def has_serifs(images: np.ndarray) -> bool:
    """Feet wider than the stem on 'I' and 'l' (given as (2, H, W) ink) mark a serif face."""
    ratios = []
    for img in images:
        rows = np.nonzero(img.max(1) > 64)[0]
        if len(rows) < 6:
            continue
        width = (img > 96).sum(1)  # (H,) ink width per row
        mid = np.median(width[rows[len(rows) // 3: 2 * len(rows) // 3]])
        foot = width[rows[-2:]].max()
        ratios.append(foot / max(mid, 1))
    return bool(ratios) and float(np.mean(ratios)) > 1.7


def classify(family: str, monospace: bool, family_type: int, serif_feet: bool) -> str:
    """serif / sans-serif / monospace / script / decorative: names, then PANOSE family type, then measured feet."""
    name = family.lower()
    if monospace or any(w in name for w in MONO_WORDS):
        return "monospace"
    if any(w in name for w in SCRIPT_WORDS) or family_type == 3:
        return "script"
    if any(w in name for w in DECORATIVE_WORDS) or family_type == 4:
        return "decorative"
    if any(w in name for w in SANS_WORDS):
        return "sans-serif"
    if any(w in name for w in SERIF_WORDS):
        return "serif"
    return "serif" if serif_feet else "sans-serif"  # measured: PANOSE serif styles are often wrong


def caption(info: StyleInfo) -> str:
    """A short English description of the style, e.g. 'a bold italic condensed serif glyph'."""
    words = [WEIGHT_WORDS[min(WEIGHT_WORDS, key=lambda w: abs(w - info.weight))]]
    if info.italic:
        words.append("italic")
    if info.width_class != "normal":
        words.append(info.width_class)
    words.append(info.classification)
    text = " ".join(words)
    return f"{'an' if text[0] in 'aeiou' else 'a'} {text} glyph"


def describe(face: FontFace, chars: str, images: np.ndarray, size: int, source: str = "", license: str = "",
             weight_override: int | None = None) -> StyleInfo:
    """Metadata of one style from its font file and its rendered glyphs `images` (len(chars), H, W)."""
    family, subfamily, full_name, weight, family_type = _names(face)
    idx = {c: i for i, c in enumerate(chars)}
    font = ImageFont.truetype(face.path, size=200, index=face.index)
    cap = -font.getbbox("H", anchor="ls")[1]
    letters = [c for c in chars if c.isascii() and c.isalnum()]
    advances = np.array([font.getlength(c) for c in letters])
    monospace = bool(advances.std() / advances.mean() < 0.02)
    width = float(np.mean([font.getlength(c) for c in "abcdefghijklmnopqrstuvwxyz" if c in idx]) / cap)
    slant = measure_slant(images[[idx[c] for c in "HINOU"]])
    stroke = measure_stroke(images[[idx[c] for c in letters]], 0.5 * size)  # nominal cap height (see data card)
    weight, weight_source = resolve_weight(weight_override or weight, stroke)
    info = StyleInfo(
        family=family, subfamily=subfamily, full_name=full_name,
        weight=weight, weight_source=weight_source, italic=abs(slant) > 5.0, slant_deg=round(slant, 2),
        width=round(width, 4), width_class="condensed" if width < CONDENSED_BELOW else "extended" if width > EXTENDED_ABOVE else "normal",
        monospace=monospace, stroke=round(stroke, 4),
        classification=classify(family, monospace, family_type,
                                has_serifs(images[[idx["I"], idx["l"]]])),
        source=source, license=license, path=face.path, face_index=face.index,
    )
    info.caption = caption(info)
    return info
