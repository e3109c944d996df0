"""Render glyphs from font files: coverage through the cmap, one scale per font, glyphs on the baseline.

Layout of a `size`×`size` canvas (fractions of `size`): the baseline sits at `BASELINE`; the font is
scaled so that its cap height ('H') is `CAP_HEIGHT`, and shrunk as a whole, never per glyph, only if
some glyph of its character set would leave the canvas. Each glyph is centred horizontally on its ink.
Rendering is supersampled `SUPERSAMPLE`× and box-filtered down, so strokes keep sub-pixel weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

BASELINE = 0.74  # baseline row, fraction of the canvas height from the top
CAP_HEIGHT = 0.50  # target cap height, fraction of the canvas
MARGIN = 0.03  # free border on every side
SUPERSAMPLE = 4
PROBE_CHAR = "\ue000"  # a private-use code point: what a font draws for it is its fallback (.notdef) box


@dataclass(frozen=True)
class FontFace:
    """One style: a font file and, for collections (.ttc), the face index inside it."""

    path: str
    index: int = 0

    @property
    def key(self) -> str:
        return f"{self.path}#{self.index}"


def list_faces(path: str | Path) -> list[FontFace]:
    """Every face in a font file (collections hold several)."""
    path = str(path)
    if path.lower().endswith((".ttc", ".otc")):
        from fontTools.ttLib import TTCollection

        with TTCollection(path, lazy=True) as coll:
            return [FontFace(path, i) for i in range(len(coll.fonts))]
    return [FontFace(path, 0)]


def open_ttfont(face: FontFace) -> TTFont:
    return TTFont(face.path, fontNumber=face.index, lazy=True)


def covered_chars(face: FontFace, chars: str) -> str:
    """The characters of `chars` that the font maps to a real glyph in its cmap (not .notdef)."""
    font = open_ttfont(face)
    try:
        cmap = font.getBestCmap() or {}
    finally:
        font.close()
    return "".join(c for c in chars if cmap.get(ord(c)) not in (None, ".notdef"))


def _fit_scale(bboxes: np.ndarray, cap: float, size: int) -> float:
    """Scale factor (canvas px per reference px) for one font.

    bboxes: (n, 4) ink boxes (left, top, right, bottom) relative to the baseline-left anchor at the
    reference size; `cap` the cap height there. Cap height goes to CAP_HEIGHT·size unless a glyph of the
    set would cross the margin, in which case the whole font shrinks just enough.
    """
    scale = CAP_HEIGHT * size / cap
    room_up = (BASELINE - MARGIN) * size
    room_down = (1 - BASELINE - MARGIN) * size
    room_wide = (1 - 2 * MARGIN) * size
    ascent = max(float(-bboxes[:, 1].min()), 1e-6)
    descent = max(float(bboxes[:, 3].max()), 1e-6)
    width = max(float((bboxes[:, 2] - bboxes[:, 0]).max()), 1e-6)
    return min(scale, room_up / ascent, room_down / descent, room_wide / width)


def render_face(face: FontFace, chars: str, size: int = 32, extra: str = "", ref_size: int = 200) -> np.ndarray:
    """Render `chars` in one face: uint8 ink images (len(chars) + len(extra), size, size), 0 = background.

    All glyphs share one scale (see module docstring), fitted on `chars` only; `extra` characters are
    drawn at that scale too (e.g. PROBE_CHAR, to compare a glyph with the font's fallback box).
    Raises ValueError when the font has no 'H', so callers can skip it with the file named.
    """
    ref = ImageFont.truetype(face.path, size=ref_size, index=face.index)
    cap_box = ref.getbbox("H", anchor="ls")
    cap = -cap_box[1]
    if cap <= 0:
        raise ValueError(f"{face.key}: no cap height (empty 'H')")
    bboxes = np.array([ref.getbbox(c, anchor="ls") for c in chars], dtype=np.float64)  # (n, 4)
    scale = _fit_scale(bboxes, cap, size)
    big = size * SUPERSAMPLE
    font = ImageFont.truetype(face.path, size=ref_size * scale * SUPERSAMPLE, index=face.index)
    out = np.zeros((len(chars) + len(extra), size, size), dtype=np.uint8)
    for i, ch in enumerate(chars + extra):
        left, _, right, _ = font.getbbox(ch, anchor="ls")
        canvas = Image.new("L", (big, big), 0)
        x = (big - (right - left)) / 2 - left
        ImageDraw.Draw(canvas).text((x, BASELINE * big), ch, fill=255, font=font, anchor="ls")
        out[i] = np.asarray(canvas.resize((size, size), Image.Resampling.BOX))
    return out
