"""Where the paper's datasets are, and a check of what you downloaded.

    python data/prepare_paper_datasets.py                         # where to get each file, where to put it
    python data/prepare_paper_datasets.py animal datasets/animal_128.npy      # check a LoFGAN file
    python data/prepare_paper_datasets.py folders datasets/animal_faces       # check AGE's train/ + valid/ layout

A check reads the `.npy` header and a few images (memory-mapped), compares the shape with LoFGAN's protocol,
hashes the file and prints what the `paper` profiles will see. Exit status 1 when the file does not fit.
No download happens here: the files sit behind links that change, and this repository never fetches at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tagelib.paper_data import LOFGAN, check_lofgan_array, load_image_folders  # noqa: E402

WHERE = """The paper's datasets (few-shot image generation, LoFGAN protocol):

  animal   animal_128.npy                    Animal Faces, 149 classes x 100 images, 128 px
  flower   flower_c8189_s128_data_rgb.npy    Flowers, 102 classes, 128 px
  vggface  vgg_face_data_rgb.npy             VGGFaces, 2354 classes (stored as floats in [0, 1])

  Get them from the "Preparing Dataset" link of the LoFGAN-pytorch README (github.com/edward3862/LoFGAN-pytorch)
  and put them in datasets/ (the paper profiles' default paths), then check each one:
      python data/prepare_paper_datasets.py animal datasets/animal_128.npy

AGE's folder layout (github.com/UniBester/AGE): <root>/train/ and <root>/valid/ with files <class>_<id>.jpg.
  Check it with: python data/prepare_paper_datasets.py folders <root>

Checkpoints (AGE's README lists them): the pSp encoder + StyleGAN2 generator trained per dataset, and AGE's own
checkpoint; the paper profiles load them through tagelib.checkpoints.import_foreign_checkpoint.
No hashes are published for any of these files: a check prints the SHA-256 so that you can record yours."""


def sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="sha256") as bar:
        while block := f.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def check_lofgan_file(dataset: str, path: Path) -> list[str]:
    """Problems found in a LoFGAN file (empty: fits the protocol). Prints what it measured."""
    spec = LOFGAN[dataset]
    if not path.exists():
        return [f"{path} does not exist"]
    data = np.load(path, mmap_mode="r")
    print(f"{path}: shape {data.shape}, dtype {data.dtype}, {path.stat().st_size / 2**30:.2f} GiB")
    try:
        check_lofgan_array(data, spec, path)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    if path.name != spec.file:
        problems.append(f"file name {path.name!r}; LoFGAN calls it {spec.file!r} (renamed? wrong dataset?)")
    sample = np.asarray(data[:: max(1, len(data) // 8), 0])  # one image of every ~8th class
    lo, hi = float(sample.min()), float(sample.max())
    if np.issubdtype(data.dtype, np.floating) and not (lo >= 0 and hi <= 1.0 + 1e-6):
        problems.append(f"float images span [{lo:.3g}, {hi:.3g}], expected [0, 1]")
    if hi - lo < 1e-3:
        problems.append("the sampled images are constant (an empty or zero-filled file?)")
    print(f"seen classes {spec.seen}, unseen {data.shape[0] - spec.seen}; shot pool: first {spec.shot_pool} images, "
          f"evaluation pool: the other {data.shape[1] - spec.shot_pool}; sampled values in [{lo:.3g}, {hi:.3g}]")
    print(f"sha256 {sha256(path)} (no published hash to compare with; record it)")
    return problems


def check_folders(root: Path) -> list[str]:
    try:
        ds = load_image_folders(root)
    except (FileNotFoundError, ValueError) as exc:
        return [str(exc)]
    counts = ds.coverage.sum(0)
    print(f"{root}: {len(ds.seen)} seen classes (train/), {len(ds.unseen)} unseen (valid/), "
          f"{int(counts.sum())} images, {counts.min()}-{counts.max()} per class")
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=[*LOFGAN, "folders"], help="dataset to check")
    parser.add_argument("path", nargs="?", type=Path, help="the .npy file, or the folder holding train/ and valid/")
    args = parser.parse_args(argv)
    if args.what is None:
        print(WHERE)
        return 0
    if args.path is None:
        parser.error(f"give the path of the {args.what} file or folder to check")
    problems = check_folders(args.path) if args.what == "folders" else check_lofgan_file(args.what, args.path)
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print("OK: fits the protocol" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
