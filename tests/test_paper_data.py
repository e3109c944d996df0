"""Paper datasets: LoFGAN `.npy` files (memory-mapped) and AGE's folders behind the glyph dataset's interface."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import pytest
import torch
from PIL import Image

from tagelib.paper_data import LOFGAN, ImageClassDataset, load_image_folders, load_lofgan

CLASSES, PER_CLASS, SIDE = 12, 14, 16


@pytest.fixture
def lofgan_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (CLASSES, PER_CLASS, SIDE, SIDE, 3), dtype=np.uint8)
    path = tmp_path / "animal_128.npy"
    np.save(path, data)
    return path, data


def test_lofgan_file_is_memory_mapped_and_indexed_like_glyphs(lofgan_file):
    path, data = lofgan_file
    ds = load_lofgan(path, "animal", seen=8, shot_pool=4)
    assert isinstance(ds, ImageClassDataset) and isinstance(ds.images, np.memmap)
    assert ds.images.shape == (PER_CLASS, CLASSES, SIDE, SIDE, 3)  # slot-major, as glyphs are style-major
    assert ds.seen == list(range(8)) and ds.unseen == list(range(8, 12))
    c = ds.unseen[1]
    assert ds.pool(ds.categories[c], "unseen_shots") == [0, 1, 2, 3]
    assert ds.pool(ds.categories[c], "unseen_eval") == list(range(4, PER_CLASS))
    x = ds.tensor([0, 2], c)  # (2, 3, H, W)
    expected = torch.from_numpy(data[c, [0, 2]]).float().div(127.5).sub(1).permute(0, 3, 1, 2)
    torch.testing.assert_close(x, expected)
    np.testing.assert_array_equal(ds.to_ink(x), data[c, [0, 2]])
    train = ds.split("train")  # the last image slot of each class (10 %, at least one) is held out of training
    assert train.images.shape == (8 * (PER_CLASS - 1), 3, SIDE, SIDE) and set(train.category.tolist()) == set(range(8))
    assert ds.split_info["heldout_styles"] == [PER_CLASS - 1] and len(ds.split("heldout_seen")) == 8
    assert not set(ds.pairs("train")[0]) & set(ds.split_info["heldout_styles"])


def test_lofgan_resizes_and_reads_float_files(lofgan_file, tmp_path):
    path, data = lofgan_file
    small = load_lofgan(path, "animal", size=8, seen=8, shot_pool=4).tensor(np.arange(3), 9)
    assert small.shape == (3, 3, 8, 8) and small.abs().max() <= 1
    full = load_lofgan(path, "animal", seen=8, shot_pool=4).tensor(np.arange(3), 9)
    torch.testing.assert_close(small.mean((-1, -2)), full.mean((-1, -2)), atol=0.02, rtol=0)
    np.save(tmp_path / "vgg_face_data_rgb.npy", data.astype(np.float32) / 255)  # VGGFaces stores [0, 1] floats
    as_float = load_lofgan(tmp_path / "vgg_face_data_rgb.npy", "vggface", seen=8, shot_pool=4).tensor(np.arange(3), 9)
    torch.testing.assert_close(as_float, full, atol=1e-5, rtol=0)


def test_lofgan_refuses_wrong_files(lofgan_file, tmp_path):
    path, data = lofgan_file
    with pytest.raises(ValueError, match="149"):  # the real Animal Faces file has 149 classes
        load_lofgan(path, "animal")
    with pytest.raises(ValueError, match="unknown LoFGAN dataset"):
        load_lofgan(path, "cats", seen=8)
    with pytest.raises(FileNotFoundError, match="prepare_paper_datasets"):
        load_lofgan(tmp_path / "missing.npy", "flower")
    np.save(tmp_path / "gray.npy", data[..., 0])
    with pytest.raises(ValueError, match="shape"):
        load_lofgan(tmp_path / "gray.npy", "animal", seen=8)
    with pytest.raises(ValueError, match="evaluation images"):
        load_lofgan(path, "animal", seen=8, shot_pool=PER_CLASS - 1)


def _write_folder(root, part, cls, n, rng, ext="png"):
    (root / part).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / part / f"{cls}_{i:03d}.{ext}")


def test_age_folders_give_classes_by_file_prefix(tmp_path):
    rng = np.random.default_rng(1)
    for cls, n in (("n001", 5), ("n002", 7)):
        _write_folder(tmp_path, "train", cls, n, rng)
    for cls, n in (("n101", 13), ("n102", 12)):
        _write_folder(tmp_path, "valid", cls, n, rng)
    (tmp_path / "valid" / "notes.txt").write_text("not an image")
    ds = load_image_folders(tmp_path, size=16, shot_pool=10)
    assert ds.categories == ["n001", "n002", "n101", "n102"] and ds.unseen == [2, 3]
    assert ds.coverage.sum(0).tolist() == [5, 7, 13, 12]
    assert ds.split_info["heldout_styles"] == [4]  # 10 % (at least one) of the smallest seen class's 5 slots
    assert len(ds.split("train")) == 4 + 6 and ds.pool("n101", "unseen_eval") == [10, 11, 12]
    x = ds.tensor(np.array([[0], [1]]), np.array([[2, 3]]))  # broadcast (2, 2) like np.ix_
    assert x.shape == (2, 2, 3, 16, 16)
    with Image.open(tmp_path / "valid" / "n102_001.png") as im:
        expected = np.asarray(im.convert("RGB").resize((16, 16), Image.BICUBIC))
    np.testing.assert_array_equal(ds.to_ink(x[1, 1]), expected)
    with pytest.raises(IndexError, match="slot 6"):
        ds.images[6, 0]


def test_age_folders_refuse_bad_layouts(tmp_path):
    rng = np.random.default_rng(2)
    _write_folder(tmp_path, "train", "n001", 3, rng)
    with pytest.raises(FileNotFoundError, match="valid"):
        load_image_folders(tmp_path)
    _write_folder(tmp_path, "valid", "n001", 12, rng)
    with pytest.raises(ValueError, match="both"):
        load_image_folders(tmp_path)
    _write_folder(tmp_path, "valid", "n101", 4, rng)
    (tmp_path / "valid" / "n001_000.png").rename(tmp_path / "train" / "n001_100.png")
    for f in (tmp_path / "valid").glob("n001_*"):
        f.unlink()
    with pytest.raises(ValueError, match="fewer than"):
        load_image_folders(tmp_path, shot_pool=10)


def _prepare_script():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "data" / "prepare_paper_datasets.py"
    spec = importlib.util.spec_from_file_location("prepare_paper_datasets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_script_accepts_a_file_of_the_protocol_and_refuses_others(tmp_path, capsys):
    script = _prepare_script()
    assert script.main([]) == 0 and "animal_128.npy" in capsys.readouterr().out
    good = tmp_path / "animal_128.npy"  # the real shape, at 4 px to stay small
    np.save(good, np.random.default_rng(0).integers(0, 256, (149, 100, 4, 4, 3), dtype=np.uint8))
    assert script.main(["animal", str(good)]) == 0
    out = capsys.readouterr().out
    assert "unseen 30" in out and "sha256" in out and "OK" in out
    assert script.main(["flower", str(good)]) == 1  # 149 classes is not Flowers
    assert "102" in capsys.readouterr().err
    zeros = tmp_path / "vgg_face_data_rgb.npy"
    np.save(zeros, np.zeros((2354, 40, 2, 2, 3), np.float32))
    assert script.main(["vggface", str(zeros)]) == 1 and "constant" in capsys.readouterr().err


def test_a_judge_of_rgb_classes_trains_from_a_lazy_view(lofgan_file):
    """The judge reads a memory-mapped dataset through `ds.view` (a batch at a time) and learns RGB classes."""
    from tagelib.judge import GlyphJudge, JudgeConfig, JudgeTrainConfig, homoglyph_groups, train_judge

    path, data = lofgan_file
    ds = load_lofgan(path, "animal", seen=8, shot_pool=4)
    styles, cats = ds.pairs("train")
    view = ds.view(styles, cats)
    assert len(view) == len(styles) and view[np.array([0, 5])].shape == (2, SIDE, SIDE, 3)
    torch.manual_seed(0)
    judge = GlyphJudge(JudgeConfig(num_classes=CLASSES, image_size=SIDE, in_channels=3, widths=(8, 16), embed_dim=16))
    hist = train_judge(judge, view, cats, JudgeTrainConfig(steps=40, batch_size=32, lr=5e-3, augment=True),
                       progress=False, to_tensor=ds.to_tensor)
    assert np.mean(hist["accuracy"][-5:]) > np.mean(hist["accuracy"][:5])  # random RGB noise per class: memorised
    assert homoglyph_groups(ds) == []  # photographs have no homoglyphs


def test_plots_show_glyphs_as_ink_and_photographs_as_they_are():
    from tagelib.plotting import to_display

    rgb = torch.rand(2, 3, 4, 4) * 2 - 1
    np.testing.assert_allclose(to_display(rgb), ((rgb + 1) / 2).permute(0, 2, 3, 1).numpy(), atol=1e-6)
    glyph = torch.ones(2, 1, 4, 4)  # all ink
    assert to_display(glyph).shape == (2, 4, 4, 3) and np.all(to_display(glyph) == 0)  # black ink on white
    raw = np.full((4, 4, 3), 255, np.uint8)
    assert np.all(to_display(raw) == 1.0)


def test_sample_attributes_are_measured_on_photographs(lofgan_file):
    path, data = lofgan_file
    ds = load_lofgan(path, "animal", seen=8, shot_pool=4)
    styles, cats = np.array([0, 1]), np.array([2, 3])
    attrs = ds.sample_attributes(styles, cats, ds.tensor(styles, cats))
    np.testing.assert_allclose(attrs["brightness"], data[[2, 3], [0, 1]].mean((1, 2, 3)) / 255, atol=1e-5)
    assert set(attrs) == {"brightness", "saturation"} and (attrs["saturation"] >= 0).all()


# Bad files: every check names the file and the reason, the loader at load time, the script without a traceback.

SYNTHETIC = LOFGAN["synthetic"]
SHAPE = (SYNTHETIC.classes, SYNTHETIC.images_per_class, 2, 2, 3)  # the synthetic protocol's counts, at 2 px


def _images():
    return np.random.default_rng(3).integers(0, 256, SHAPE, dtype=np.uint8)


def _truncated(path):
    np.save(path, _images())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # an interrupted download


def _lying_header(path):
    with open(path, "wb") as f:
        header = {"descr": "|u1", "fortran_order": False, "shape": (10**6, 100, 128, 128, 3)}
        npy_format.write_array_header_1_0(f, header)
        f.write(bytes(1000))


class _Canary:
    """Unpickling it creates the file `path`: proof that a check unpickled what it had to refuse."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _object_array(path):
    np.save(path, np.array([_Canary(path.with_name("unpickled")), None], dtype=object), allow_pickle=True)


BAD_NPY = {  # case: (writer of the file, what the message must say)
    "truncated npy": (_truncated, r"truncated .*the file has"),
    "lying header": (_lying_header, r"truncated .*header says shape \(1000000, 100, 128, 128, 3\)"),
    "object array": (_object_array, "pickled Python objects; refused"),
    "text file": (lambda p: p.write_text("animal faces, 149 classes\n"), "not a .npy file"),
    "HTML page": (lambda p: p.write_text("<!DOCTYPE html><html><body>Sign in</body></html>"), "an HTML page"),
    "NaN float file": (lambda p: np.save(p, np.full(SHAPE, np.nan, np.float32)), "NaN or infinite values"),
    "constant float file": (lambda p: np.save(p, np.full(SHAPE, 0.5, np.float32)), "images are constant"),
    "wrong dtype": (lambda p: np.save(p, _images().astype(np.int64)), "dtype int64"),
    "wrong shape": (lambda p: np.save(p, _images()[..., 0]), "shape .* is not LoFGAN's"),
}


@pytest.fixture(params=list(BAD_NPY))
def bad_npy(request, tmp_path):
    """(path, reason): a bad file named as the synthetic protocol's, and the reason its refusal must give."""
    writer, reason = BAD_NPY[request.param]
    path = tmp_path / SYNTHETIC.file
    writer(path)
    return path, reason


def test_loader_refuses_a_bad_npy_naming_it(bad_npy):
    path, reason = bad_npy
    with pytest.raises(ValueError) as refused:
        load_lofgan(path, "synthetic")
    assert str(refused.value).startswith(f"{path}: ") and re.search(reason, str(refused.value))
    assert not path.with_name("unpickled").exists()


def test_prepare_script_reports_a_bad_npy_without_traceback(bad_npy, capsys):
    path, reason = bad_npy
    assert _prepare_script().main(["synthetic", str(path)]) == 1
    out, err = capsys.readouterr()
    assert f"PROBLEM: {path}: " in err and re.search(reason, err) and "Traceback" not in out + err
    assert not path.with_name("unpickled").exists()


def test_prepare_script_process_exits_1_on_a_lying_header(tmp_path):
    path = tmp_path / SYNTHETIC.file
    _lying_header(path)
    script = Path(__file__).resolve().parent.parent / "data" / "prepare_paper_datasets.py"
    done = subprocess.run([sys.executable, str(script), "synthetic", str(path)], capture_output=True, text=True)
    assert done.returncode == 1 and f"{path}: truncated" in done.stderr and "Traceback" not in done.stdout + done.stderr


BAD_JPG = {  # case: (damage done to a JPEG file, what the message must say)
    "corrupt jpg": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "does not decode"),
    "non-image jpg": (lambda p: p.write_text("<html>404 not found</html>"), "not an image PIL recognises"),
    "zero-byte jpg": (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
}


@pytest.fixture
def jpg_folders(tmp_path):
    """AGE's layout with JPEGs: train/ one class of 3 images, valid/ one class of 12."""
    rng = np.random.default_rng(4)
    _write_folder(tmp_path, "train", "n001", 3, rng, "jpg")
    _write_folder(tmp_path, "valid", "n101", 12, rng, "jpg")
    return tmp_path


@pytest.mark.parametrize("case", list(BAD_JPG))
def test_folder_images_name_the_file_that_does_not_decode(jpg_folders, case):
    damage, reason = BAD_JPG[case]
    bad = jpg_folders / "valid" / "n101_004.jpg"
    damage(bad)
    ds = load_image_folders(jpg_folders, size=8)
    assert ds.tensor(3, 1).shape == (3, 8, 8)
    with pytest.raises(ValueError) as refused:
        ds.tensor(4, 1)
    assert str(refused.value).startswith(f"{bad}: ") and re.search(reason, str(refused.value))


@pytest.mark.parametrize("case", list(BAD_JPG))
def test_prepare_script_decodes_every_image_of_the_folders(jpg_folders, case, capsys):
    script = _prepare_script()
    assert script.main(["folders", str(jpg_folders)]) == 0 and "OK: fits the protocol" in capsys.readouterr().out
    damage, reason = BAD_JPG[case]
    bad = jpg_folders / "train" / "n001_002.jpg"
    damage(bad)
    assert script.main(["folders", str(jpg_folders)]) == 1
    out, err = capsys.readouterr()
    assert re.search(f"PROBLEM: {re.escape(str(bad))}: {reason}", err) and "1 problem(s)" in out
    assert "OK" not in out and "Traceback" not in out + err
