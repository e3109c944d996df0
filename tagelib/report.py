"""The main table: baseline rows measured by notebooks 01–03 and TAGE's rows (04–05), with the provenance of every number.

Each notebook writes its rows to ``<run_dir>/<notebook>/baselines.json`` (`save_rows`) and then rewrites
``table_baselines.{md,csv}`` from every row file of the run (`write_baseline_table`), so the table after
notebook 03 holds all of them and a partial run shows what it measured.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from tagelib.atomic import write_text_atomic
from tagelib.paths import REPO_ROOT, resolve

ROW_FILE = "baselines.json"
NOTEBOOKS = ("01_latent_space", "02_attribute_factorization", "03_codebook_learning", "04_code_prediction",
             "05_prompt_semantics")
COLUMNS = [  # (key in a row, header, format)
    ("method", "method", "{}"), ("k", "k", "{}"), ("n_per_category", "n / cat.", "{}"),
    ("n_real_per_category", "real / cat.", "{}"),
    ("preservation", "judge top-1 ↑", "{:.1%}"), ("preservation_strict", "strict", "{:.1%}"),
    ("heldout_preservation", "judge, held-out fonts ↑", "{:.1%}"),
    ("wrong_onto_seen", "misses → seen", "{:.0%}"),
    ("FD-domain", "FD-domain ↓", "{:.2f}"), ("KID-domain", "KID-domain ×10³ ↓", "{:.1f}"),
    ("FD-VGG16", "FD-VGG16 ↓", "{:.2f}"), ("lpips_diversity", "LPIPS-vgg div. ↑", "{:.4f}"),
    ("collapse_rate", "collapse ↓", "{:.1%}"), ("gain_1shot", "FSC gain 1-shot", "{}"),
    ("gain_5shot", "FSC gain 5-shot", "{}"), ("top_confusions", "top misreadings", "{}"),
]


REHEARSAL_DATA = "paper_synthetic.npy"  # tagelib.paper_data.LOFGAN["synthetic"].file
REHEARSAL_NOTE = "REHEARSAL: drawn data and random-weight networks (paper-synthetic); these numbers mean nothing"


def data_fingerprint(data_dir: str) -> str:
    """The data a number was measured on: the glyph artefact's sha256, or a paper `.npy` file's size and the sha256
    of its first 16 MiB (the file may be gigabytes), or an image folder's name."""
    path = resolve(data_dir)
    if path.is_file():
        with open(path, "rb") as f:
            head = hashlib.sha256(f.read(1 << 24)).hexdigest()[:12]
        return f"{data_dir} ({path.stat().st_size / 2**20:.0f} MiB, sha256 of the first 16 MiB {head}…)"
    npz = path / "glyphs32.npz"
    if npz.is_file():
        return f"{data_dir} (glyphs32.npz sha256 {hashlib.sha256(npz.read_bytes()).hexdigest()[:12]}…)"
    return f"{data_dir} (image folders)" if path.is_dir() else f"{data_dir} (missing)"


def is_rehearsal(data_dir: str) -> bool:
    """Is `data_dir` the paper-synthetic rehearsal's drawn file (numbers measured on it mean nothing)?"""
    return resolve(data_dir).name == REHEARSAL_DATA


def write_table(path: str | Path, text: str, data_dir: str) -> None:
    """Write a markdown table atomically; on the rehearsal's data its first line says the numbers mean nothing."""
    banner = f"> {REHEARSAL_NOTE}\n\n" if is_rehearsal(data_dir) else ""
    write_text_atomic(path, banner + text)


def provenance(data_dir: str, seed: int, ruler) -> dict:
    """Where a number comes from: profile, data (with its fingerprint), judge and extractors, seed, git commit,
    machine; a rehearsal's numbers are marked as meaningless."""
    prov = {"profile": os.environ.get("TAGE_PROFILE", "interactive (no profile)"),
            "data": data_fingerprint(data_dir), "extractors": [e.fd_name for e in ruler.extractors],
            "homoglyphs": ["/".join(g) for g in ruler.judge.homoglyphs], "collapse_floor": ruler.collapse_floor, "seed": seed,
            "commit": git_commit(), "machine": machine()}
    if is_rehearsal(data_dir):
        prov["note"] = REHEARSAL_NOTE
    return prov


def git_commit() -> str:
    """Short commit of the repository, '+dirty' when tracked files other than the outputs in papers_figures/ differ
    from it (a reproduce run rewrites those itself); 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!papers_figures"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"


def table_row(method: str, metrics: dict, gain: dict | None = None, uses_shots: bool = True,
              heldout: float | None = None) -> dict:
    """One table row from `Evaluation.metrics` (and `few_shot_gain`'s result and the held-out-family recognition
    `evaluation.heldout_recognition` when measured); k is '–' for rows that use no shots (real glyphs, reconstructions)."""
    keys = ("k", "n_per_category", "n_real_per_category", "preservation", "preservation_strict", "wrong_onto_seen",
            "FD-domain", "FD-VGG16", "lpips_diversity", "collapse_rate")
    row = {"method": method, **{k: metrics[k] for k in keys}}
    row["k"] = row["k"] if uses_shots else "–"
    row["heldout_preservation"] = "–" if heldout is None else heldout
    row["KID-domain"] = metrics["KID-domain"] * 1e3
    row["top_confusions"] = ", ".join(f"{a}→{b} ({n})" for a, b, n in metrics["confusions"][:3])
    for shots in ("1-shot", "5-shot"):
        g = (gain or {}).get(shots)
        row[f"gain_{shots.replace('-', '')}"] = f"{g['gain']['mean']:+.1%} ± {g['gain']['ci95']:.1%}" if g else "–"
    return row


def save_rows(out_dir: Path, rows: list[dict], prov: dict) -> Path:
    path = Path(out_dir) / ROW_FILE
    write_text_atomic(path, json.dumps({"provenance": prov, "rows": rows}, indent=1))
    return path


def _load_rows(run_dir: str) -> list[tuple[str, dict]]:
    found = []
    for nb in NOTEBOOKS:
        path = resolve(run_dir) / nb / ROW_FILE
        if path.is_file():
            found.append((nb, json.loads(path.read_text())))
    return found


def _cell(fmt: str, value) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def write_baseline_table(run_dir: str, figures_dir: str) -> str:
    """Rewrite `table_baselines.md` and `.csv` in `figures_dir` from every row file of the run; returns the markdown."""
    found = _load_rows(run_dir)
    if not found:
        raise FileNotFoundError(f"no {ROW_FILE} under {resolve(run_dir)}; run notebooks 01–05 first")
    lines = ["# Few-shot generation on unseen categories: baselines and TAGE (LoFGAN protocol, judge = a classifier trained on real images only)", "",
             "Each row: the unseen categories × n generated images vs the real reference images of each category (from the "
             "reference halves of the evaluation pools). judge top-1 = category preservation (homoglyphs — characters most fonts "
             "draw identically, listed below — count as one; strict = exact character); held-out fonts = judge top-1 with the "
             "shots (or, for reconstructions, the glyphs) taken from fonts of the held-out families, 32 images per category "
             "(– = not measured); misses → seen = share of the misreadings "
             "that name a seen character; FD-domain / KID-domain on the judge's penultimate features; FD-VGG16 on ImageNet "
             "VGG16 pool5 (images resized to 32 px; not FID); LPIPS-vgg diversity at 32 px (mean over pairs within a "
             "category); collapse = share of pairs closer than the calibrated floor; FSC gain = few-shot classification "
             "gain (10-way, real + generated vs real only, mean ± 95 % CI over episodes; – = not measured).", ""]
    notes = sorted({content["provenance"]["note"] for _, content in found if "note" in content["provenance"]})
    lines += [f"**{note}**" for note in notes] + ([""] if notes else [])
    header = [h for _, h, _ in COLUMNS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["notebook"] + [k for k, _, _ in COLUMNS])
    for nb, content in found:
        for row in content["rows"]:
            lines.append("| " + " | ".join(_cell(f, row.get(k, "–")) for k, _, f in COLUMNS) + " |")
            writer.writerow([nb] + [row.get(k, "") for k, _, _ in COLUMNS])
    lines += ["", "Provenance:"]
    for nb, content in found:
        p = content["provenance"]
        lines.append(f"- {nb}: profile `{p['profile']}`, data {p['data']}, extractors {', '.join(p['extractors'])}, "
                     f"homoglyphs {', '.join(p['homoglyphs']) or 'none'}, collapse floor {p['collapse_floor']:.4f}, "
                     f"seed {p['seed']}, commit `{p['commit']}`, {p['machine']}")
    text = "\n".join(lines) + "\n"
    write_text_atomic(resolve(figures_dir) / "table_baselines.md", text)
    write_text_atomic(resolve(figures_dir) / "table_baselines.csv", buf.getvalue())
    return text
