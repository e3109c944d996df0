"""Build the glyph dataset from a folder of fonts.

    python -m tagelib.glyphs.build --fonts /path/to/fontcache/files --manifest /path/to/manifest.json \
        --out data/glyphs --size 32

Pipeline: list faces -> cmap coverage -> render (one scale per font) -> reject fallback boxes and empty
glyphs -> measure metadata -> drop illegible and all-caps faces -> merge clones -> choose extra-script
categories with enough styles -> fixed split -> write `glyphs<size>.npz`, `styles.json`, `split.json`,
`curation.json` atomically. Every decision is recorded in `curation.json`.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tagelib.atomic import atomic_path, write_text_atomic
from tagelib.glyphs import charset, curate, split
from tagelib.glyphs.render import PROBE_CHAR, FontFace, covered_chars, list_faces, render_face
from tagelib.glyphs.style import describe, family_key

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc", ".woff", ".woff2")
MIN_LEGIBILITY = 0.6  # fraction of a face's 62 glyphs recognised by the top-5 nearest-consensus rule
MAX_CAPS_SCORE = 0.7  # lowercase/capital shape correlation above which a face is all-caps or small caps


@dataclass
class Candidate:
    """One rendered face before curation."""

    face: FontFace
    images: np.ndarray  # (len(charset.ALL), H, W) uint8, zeros where not covered
    coverage: np.ndarray  # (len(charset.ALL),) bool
    info: dict


@dataclass
class BuildResult:
    images: np.ndarray  # (S, K, H, W) uint8 ink
    coverage: np.ndarray  # (S, K) bool
    categories: list[str]
    styles: list[dict]
    split: dict
    curation: dict = field(default_factory=dict)


def find_fonts(folder: str | Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Font files under `folder`, skipping those whose relative path contains one of `exclude`."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file()
                  and not any(x in str(p.relative_to(folder)) for x in exclude))


def render_candidate(args: tuple[FontFace, int, dict]) -> Candidate | str:
    """Render one face; returns a Candidate or a one-line reason for rejecting it (file named)."""
    face, size, meta = args
    try:
        covered = covered_chars(face, charset.ALL)
        missing = [c for c in charset.REQUIRED if c not in covered]
        if missing:
            return f"{face.key}: cmap lacks {''.join(missing[:10])}{'...' if len(missing) > 10 else ''}"
        optional = [c for c in charset.OPTIONAL if c in covered]
        chars = charset.REQUIRED + "".join(optional)
        rendered = render_face(face, chars, size, extra=PROBE_CHAR)  # (n + 1, H, W)
        glyphs, box = rendered[:-1], rendered[-1]
        empty = [c for c, g in zip(chars, glyphs) if g.max() < 64]
        boxed = [c for c, g in zip(chars, glyphs) if box.any() and np.array_equal(g, box)]
        bad_required = [c for c in empty + boxed if c in charset.REQUIRED]
        if bad_required:
            return f"{face.key}: empty or fallback-box glyphs {''.join(bad_required)}"
        keep = [i for i, c in enumerate(chars) if c not in empty and c not in boxed]
        images = np.zeros((len(charset.ALL), size, size), dtype=np.uint8)
        coverage = np.zeros(len(charset.ALL), dtype=bool)
        index = [charset.ALL.index(chars[i]) for i in keep]
        images[index] = glyphs[keep]
        coverage[index] = True
        info = describe(face, charset.REQUIRED, glyphs[: len(charset.REQUIRED)], size, source=meta.get("source", ""),
                        license=meta.get("license", ""), weight_override=meta.get("weight_from_filename"))
        return Candidate(face, images, coverage, info.to_dict())
    except Exception as exc:  # corrupt or unreadable file: report it by name, keep going
        return f"{face.key}: unreadable ({type(exc).__name__}: {exc})"


def _preference(info: dict) -> tuple:
    """Which member of a clone group to keep: known licence, Debian before npm, then shortest name."""
    return (info["license"] in ("", "unknown"), not info["source"].startswith("debian"), len(info["full_name"]), info["path"])


def build(font_files: list[Path], size: int = 32, manifest: dict | None = None, min_styles: int = 200,
          seed: int = 0, workers: int = 2, root: Path | None = None) -> BuildResult:
    """Render, curate and split; `manifest` maps a file path (relative to `root`) to source/licence fields."""
    manifest = manifest or {}
    jobs = []
    for path in font_files:
        rel = str(path.relative_to(root)) if root else str(path)
        try:
            faces = list_faces(path)
        except Exception as exc:
            print(f"skip {path}: unreadable ({exc})")
            continue
        jobs += [(face, size, manifest.get(rel, {})) for face in faces]
    rejected: list[str] = []
    cands: list[Candidate] = []
    with mp.Pool(workers) as pool:
        for out in tqdm(pool.imap(render_candidate, jobs, chunksize=4), total=len(jobs), desc="render faces"):
            (rejected.append(out) if isinstance(out, str) else cands.append(out))
    if not cands:
        raise ValueError(f"no usable face among {len(jobs)}; first rejections: {rejected[:5]}")
    cands.sort(key=lambda c: (c.info["family"], c.info["subfamily"], c.info["path"], c.face.index))
    req = len(charset.REQUIRED)
    images = np.stack([c.images for c in cands])  # (S, len(ALL), H, W)
    coverage = np.stack([c.coverage for c in cands])  # (S, len(ALL))

    legible = curate.legibility(images[:, :req])
    caps = curate.caps_score(images[:, :req], charset.REQUIRED)
    drop = {i: f"illegible ({legible[i]:.2f} < {MIN_LEGIBILITY})" for i in np.nonzero(legible < MIN_LEGIBILITY)[0]}
    drop.update({i: f"all-caps or small caps (score {caps[i]:.2f})" for i in np.nonzero(caps > MAX_CAPS_SCORE)[0] if i not in drop})
    kept = [i for i in range(len(cands)) if i not in drop]
    clone_groups = curate.find_clones(images[kept, :req])
    clones = []
    for group in clone_groups:
        members = sorted((kept[g] for g in group), key=lambda i: _preference(cands[i].info))
        clones.append([cands[i].info["full_name"] for i in members])
        drop.update({i: f"clone of {cands[members[0]].info['full_name']}" for i in members[1:]})
    kept = [i for i in range(len(cands)) if i not in drop]

    counts = coverage[kept].sum(0)
    cat_idx = [k for k, c in enumerate(charset.ALL) if c in charset.REQUIRED or counts[k] >= min_styles]
    categories = [charset.ALL[k] for k in cat_idx]
    images, coverage = images[kept][:, cat_idx], coverage[kept][:, cat_idx]
    styles = [cands[i].info for i in kept]
    for sid, info in enumerate(styles):
        info["style_id"] = sid
        info["family_key"] = family_key(info["family"])
    the_split = split.make_split(categories, [s["family_key"] for s in styles], coverage, seed=seed)
    curation = {
        "faces_seen": len(jobs), "faces_rendered": len(cands), "styles_kept": len(kept),
        "rejected_at_render": rejected,
        "dropped": {cands[i].info["full_name"] + f" [{cands[i].face.key}]": why for i, why in sorted(drop.items())},
        "clone_groups": clones,
        "rules": {"min_legibility": MIN_LEGIBILITY, "max_caps_score": MAX_CAPS_SCORE,
                  "clone_threshold": curate.CLONE_THRESHOLD, "min_styles_per_category": min_styles},
        "optional_category_counts": {charset.ALL[k]: int(counts[k]) for k in range(req, len(charset.ALL))},
    }
    return BuildResult(images, coverage, categories, styles, the_split, curation)


def save(result: BuildResult, out: Path, size: int, font_root: Path | None = None) -> None:
    """Write the artefact atomically: images + coverage (npz), styles, split and curation (json)."""
    out.mkdir(parents=True, exist_ok=True)
    for s in result.styles:  # store paths relative to the font folder, never this machine's layout
        if font_root and Path(s["path"]).is_absolute():
            s["path"] = str(Path(s["path"]).relative_to(font_root))
    buf = io.BytesIO()
    np.savez_compressed(buf, images=result.images, coverage=result.coverage, categories=np.array(result.categories))
    with atomic_path(out / f"glyphs{size}.npz") as tmp:
        tmp.write_bytes(buf.getvalue())
    write_text_atomic(out / "styles.json", json.dumps(result.styles, indent=1, ensure_ascii=False))
    write_text_atomic(out / "split.json", json.dumps(result.split, indent=1, ensure_ascii=False))
    write_text_atomic(out / "curation.json", json.dumps(result.curation, indent=1, ensure_ascii=False))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fonts", required=True, type=Path, help="folder searched recursively for font files")
    ap.add_argument("--manifest", type=Path, help="manifest.json from data/fonts/make_manifest.py (sources, licences)")
    ap.add_argument("--out", type=Path, default=Path("data/glyphs"))
    ap.add_argument("--size", type=int, default=32, choices=[32, 64])
    ap.add_argument("--min-styles", type=int, default=200, help="styles an extra-script category needs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--exclude", nargs="*", default=[], help="skip font paths containing any of these strings")
    args = ap.parse_args(argv)
    manifest = {}
    if args.manifest:
        manifest = {rec["path"]: rec for rec in json.loads(args.manifest.read_text())}
    start = time.perf_counter()
    fonts = args.fonts.resolve()
    result = build(find_fonts(fonts, tuple(args.exclude)), args.size, manifest, args.min_styles, args.seed, args.workers, root=fonts)
    save(result, args.out, args.size, font_root=fonts)
    print(f"{len(result.styles)} styles x {len(result.categories)} categories -> {args.out} "
          f"in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
