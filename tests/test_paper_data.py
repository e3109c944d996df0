"""Paper datasets: LoFGAN `.npy` files (memory-mapped) and AGE's folders behind the glyph dataset's interface."""

import numpy as np
import pytest
import torch
from PIL import Image

from tagelib.paper_data import ImageClassDataset, load_image_folders, load_lofgan

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


def _write_folder(root, part, cls, n, rng):
    (root / part).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / part / f"{cls}_{i:03d}.png")


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
    from pathlib import Path

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
