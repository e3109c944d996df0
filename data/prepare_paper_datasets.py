"""Where the paper's datasets are, and a check of what you downloaded.

    python data/prepare_paper_datasets.py                         # where to get each file, where to put it
    python data/prepare_paper_datasets.py animal datasets/animal_128.npy      # check a LoFGAN file
    python data/prepare_paper_datasets.py folders datasets/animal_faces       # check AGE's train/ + valid/ layout

A check reads the `.npy` header, compares the size it promises with the file's (a truncated download), its shape
and dtype with LoFGAN's protocol (no pickled arrays), samples a few images (memory-mapped: no NaN, not constant),
hashes the file and prints what the `paper` profiles will see. A folder check decodes every image. Each problem is
printed as "<path>: <reason>"; exit status 1 when anything does not fit.
No download happens here: the files sit behind links that change, and this repository never fetches at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tagelib.paper_data import LOFGAN, load_image_folders, open_lofgan, read_image, sample_images  # noqa: E402

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
    """The SHA-256 of the file at `path` (hex), read in chunks with a progress bar."""
    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="sha256") as bar:
        while block := f.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def check_lofgan_file(dataset: str, path: Path) -> list[str]:
    """Problems found in a LoFGAN file (empty: fits the protocol), each "<path>: <reason>". Prints what it measured.

    The header, size, dtype and sampled images are checked by the loader's own `open_lofgan` before anything is
    memory-mapped or hashed: a truncated download, a pickled array or an HTML page is reported, not raised."""
    spec = LOFGAN[dataset]
    if not path.is_file():
        return [f"{path}: no such file"]
    try:
        data = open_lofgan(path, spec)
    except ValueError as exc:
        return [str(exc)]
    print(f"{path}: shape {data.shape}, dtype {data.dtype}, {path.stat().st_size / 2**30:.2f} GiB")
    problems = []
    if path.name != spec.file:
        problems.append(f"{path}: file name {path.name!r}; LoFGAN calls it {spec.file!r} (renamed? wrong dataset?)")
    sample = sample_images(data)
    print(f"seen classes {spec.seen}, unseen {data.shape[0] - spec.seen}; shot pool: first {spec.shot_pool} images, "
          f"evaluation pool: the other {data.shape[1] - spec.shot_pool}; sampled values in "
          f"[{float(sample.min()):.3g}, {float(sample.max()):.3g}]")
    print(f"sha256 {sha256(path)} (no published hash to compare with; record it)")
    return problems


def check_folders(root: Path) -> list[str]:
    """Problems found in AGE's folder layout (empty: fits the protocol): the layout the loader checks, then every
    image decoded (`read_image`, as the loader reads them), each file that does not decode listed with why."""
    try:
        ds = load_image_folders(root)
    except (FileNotFoundError, ValueError) as exc:
        return [str(exc)]
    counts = ds.coverage.sum(0)
    print(f"{root}: {len(ds.seen)} seen classes (train/), {len(ds.unseen)} unseen (valid/), "
          f"{int(counts.sum())} images, {counts.min()}-{counts.max()} per class")
    return undecodable_images([f for files in ds.images.files for f in files])


def undecodable_images(files: list[Path]) -> list[str]:
    """Each of `files` that does not decode, as "<path>: <reason>", with a progress bar (every image is read)."""
    problems = []
    for f in tqdm(files, desc="decode", unit="img"):
        try:
            read_image(f)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def main(argv: list[str] | None = None) -> int:
    """Print where the datasets are (no argument) or check one; 0 when it fits the protocol, 1 when not."""
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
