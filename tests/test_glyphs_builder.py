"""The glyph builder on fonts that are always present: matplotlib's bundled DejaVu, STIX, CM and LastResort."""

import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from tagelib.glyphs import charset, curate, render, style
from tagelib.glyphs.build import build, render_candidate

MPL_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
SANS = render.FontFace(str(MPL_FONTS / "DejaVuSans.ttf"))


def ink_rows(img):
    rows = np.nonzero(img.max(1) > 100)[0]
    return rows.min(), rows.max()


def test_render_shapes_and_baseline():
    imgs = render.render_face(SANS, "HxgAa", 32)
    assert imgs.shape == (5, 32, 32) and imgs.dtype == np.uint8
    h_top, h_bottom = ink_rows(imgs[0])
    x_top, x_bottom = ink_rows(imgs[1])
    g_top, g_bottom = ink_rows(imgs[2])
    assert h_bottom == x_bottom, "H and x sit on the same baseline"
    assert g_bottom > h_bottom + 2, "descender goes below the baseline"
    assert abs((h_bottom - h_top + 1) - 16) <= 1, "cap height is half the canvas"
    assert x_top > h_top + 3, "x-height below cap height: one scale per font, not per glyph"


def test_render_64_and_centring():
    img = render.render_face(SANS, "O", 64)[0]
    cols = np.nonzero(img.max(0) > 100)[0]
    assert abs((cols.min() + cols.max()) / 2 - 31.5) <= 1.0


def test_coverage_uses_cmap():
    assert render.covered_chars(SANS, "AbΓЖ") == "AbΓЖ"
    cm = render.FontFace(str(MPL_FONTS / "cmr10.ttf"))
    assert "Ж" not in render.covered_chars(cm, "AЖ")


def test_metadata_is_measured():
    def info(name):
        face = render.FontFace(str(MPL_FONTS / name))
        return style.describe(face, charset.REQUIRED, render.render_face(face, charset.REQUIRED), 32)

    regular, oblique, bold = info("DejaVuSans.ttf"), info("DejaVuSans-Oblique.ttf"), info("DejaVuSans-Bold.ttf")
    mono, serif = info("DejaVuSansMono.ttf"), info("DejaVuSerif.ttf")
    assert oblique.italic and not regular.italic and oblique.slant_deg > 6
    assert bold.stroke > 1.3 * regular.stroke and bold.weight == 700
    assert mono.monospace and not regular.monospace and mono.classification == "monospace"
    assert serif.classification == "serif" and regular.classification == "sans-serif"
    assert oblique.caption == "a regular italic sans-serif glyph"
    assert style.family_key("Roboto Condensed Light") == "roboto"
    assert style.family_key("Noto Serif ExtraCondensed SemiBold") == "noto serif"


def test_fallback_box_and_symbol_font_are_rejected():
    lastresort = render_candidate((render.FontFace(str(MPL_FONTS / "LastResortHE-Regular.ttf")), 32, {}))
    cmex = render_candidate((render.FontFace(str(MPL_FONTS / "cmex10.ttf")), 32, {}))
    assert isinstance(cmex, str) and "cmex10" in cmex
    assert not isinstance(lastresort, str)  # covers the cmap: only the legibility rule can catch it


def test_clone_distance_separates_clones_from_designs(tmp_path):
    faces = [render.FontFace(str(MPL_FONTS / n)) for n in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf")]
    imgs = np.stack([render.render_face(f, charset.REQUIRED) for f in faces])
    copy = imgs[0].copy()
    copy[:, 10, 10] = np.minimum(255, copy[:, 10, 10].astype(int) + 40)  # a near-identical re-hint
    stack = np.concatenate([imgs, copy[None]])
    assert curate.find_clones(stack) == [[0, 3]]
    flat = np.asarray(stack.reshape(4, -1), dtype=np.float32)
    import torch
    d = curate.clone_distance(torch.from_numpy(flat), torch.from_numpy(flat))
    assert d[0, 3] < 0.01 and d[0, 1] > 0.1 and d[0, 2] > 0.1


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fonts")
    for f in MPL_FONTS.glob("*.ttf"):
        shutil.copy(f, folder / f.name)
    shutil.copy(MPL_FONTS / "DejaVuSans.ttf", folder / "DejaVuSans-copy.ttf")  # an exact clone
    return build(sorted(folder.glob("*.ttf")), size=32, min_styles=5, workers=1, root=folder)


def test_build_curates(small_build):
    res = small_build
    names = [s["full_name"] for s in res.styles]
    assert len(names) == len(set((s["path"], s["face_index"]) for s in res.styles))
    assert "DejaVu Sans" in names and "Last Resort High-Efficiency" not in names
    assert any("DejaVu Sans" in g for g in res.curation["clone_groups"])
    assert res.images.shape == (len(res.styles), len(res.categories), 32, 32)
    covered = res.images[res.coverage]
    assert covered.reshape(len(covered), -1).max(1).min() >= 64, "no empty covered glyph"
    assert not res.images[~res.coverage].any()
    assert res.categories[:62] == list(charset.REQUIRED) and "Ж" in res.categories


def test_build_split_is_disjoint(small_build):
    sp = small_build.split
    assert not set(sp["seen_categories"]) & set(sp["unseen_categories"])
    assert not set(sp["train_styles"]) & set(sp["heldout_styles"])
    assert set(sp["unseen_categories"]) & set(charset.LATIN_LOWER)
    for pools in sp["unseen_pools"].values():
        assert not set(pools["shot_pool"]) & set(pools["eval_pool"])
        assert set(pools["shot_pool"]) <= set(sp["train_styles"])


def test_impossible_declared_weight_falls_back_to_stroke():
    assert style.resolve_weight(700, 0.05) == (700, "declared")
    assert style.resolve_weight(7, 0.05) == (700, "declared")  # the old 1-9 scale
    assert style.resolve_weight(28926, 0.19) == (900, "stroke")
    assert style.resolve_weight(None, 0.094) == (400, "stroke")
