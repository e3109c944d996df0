"""The paper-format rehearsal's inputs: a LoFGAN-format file and random checkpoints in the official layouts."""

import numpy as np
import pytest
import torch

from tagelib.checkpoints import CheckpointMismatchError, import_foreign_checkpoint
from tagelib.latent import LatentSpace
from tagelib.paper_data import LOFGAN, load_lofgan
from tagelib.paper_synthetic import synthetic_images, synthetic_latent_config, write_inputs
from tagelib.stylegan2 import Generator


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("rehearsal"))


def test_synthetic_file_is_a_lofgan_file_of_the_synthetic_protocol(inputs):
    ds = load_lofgan(inputs["data"], "synthetic")
    spec = LOFGAN["synthetic"]
    assert isinstance(ds.images, np.memmap) and ds.images.shape == (spec.images_per_class, spec.classes, 64, 64, 3)
    assert len(ds.seen) == spec.seen and ds.tensor(0, 0).shape == (3, 64, 64)
    np.testing.assert_array_equal(np.load(inputs["data"]), synthetic_images())  # rebuilt identically from the seed


def test_classes_differ_more_than_images_of_one_class():
    """Colour is the class's: the mean colour of an image's brightest pixels is closer within a class."""
    images = synthetic_images(classes=8, per_class=10, size=32).reshape(8, 10, -1, 3).astype(float)
    bright = np.argsort(images.sum(-1), axis=-1)[..., -40:]  # (C, P, 40) brightest pixels: the blob's centre
    colour = np.take_along_axis(images, bright[..., None], axis=2).mean(2)  # (C, P, 3)
    within = np.linalg.norm(colour - colour.mean(1, keepdims=True), axis=-1).mean()
    between = np.linalg.norm(colour.mean(1)[:, None] - colour.mean(1)[None], axis=-1).sum() / (8 * 7)
    assert between > 2 * within


def test_official_layout_checkpoints_load_through_the_importer(inputs):
    cfg = synthetic_latent_config()
    model = LatentSpace.from_foreign(inputs["psp"], cfg)
    assert model.frozen and model.training_info["kind"] == "psp"
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    w = model.encode(x)
    assert w.shape == (2, cfg.generator.n_latent, cfg.generator.style_dim)
    generator = Generator(cfg.generator, fused=False).eval()
    import_foreign_checkpoint(inputs["stylegan2"], generator=generator)
    torch.testing.assert_close(generator(w, randomize_noise=False), model.decode(w), rtol=0, atol=0)
    with pytest.raises(CheckpointMismatchError):  # another architecture is refused, naming the file
        LatentSpace.from_foreign(inputs["psp"], synthetic_latent_config(style_dim=32))
    with pytest.raises(ValueError, match="no encoder"):
        LatentSpace.from_foreign(inputs["stylegan2"], cfg)


def test_parameter_choices_match_the_library():
    from tagelib.paper_data import DATASETS
    from tagelib.params import ARCHITECTURES, DATASET_NAMES

    assert DATASET_NAMES == DATASETS
    from tagelib.latent import paper_latent_config

    for name in ARCHITECTURES:
        paper_latent_config(name)  # every choice the runner accepts builds
    with pytest.raises(ValueError, match="unknown architecture"):
        paper_latent_config("stylegan3")


def test_official_age_architecture_and_pooled_decoding():
    from tagelib.latent import LatentSpaceConfig, paper_latent_config
    from tagelib.psp import EncoderConfig
    from tagelib.stylegan2 import GeneratorConfig

    age = paper_latent_config("age-1024")
    assert (age.generator.size, age.generator.n_latent, age.encoder.input_size) == (1024, 18, 256)
    small = LatentSpaceConfig(GeneratorConfig(size=32, style_dim=16, n_mlp=1, widths=(16, 16, 16, 16)),
                              EncoderConfig(input_size=16, n_styles=8, style_dim=16, units=(1, 1, 1, 1),
                                            widths=(8, 8, 8, 8), mode="ir"))
    model = LatentSpace(small).eval()
    w = torch.randn(2, 8, 16)
    big = model.decoder(w, randomize_noise=False)  # (2, 3, 32, 32)
    torch.testing.assert_close(model.decode(w), torch.nn.functional.avg_pool2d(big, 2))  # pSp's face_pool
    assert model.encode(model.decode(w)).shape == (2, 8, 16)
    with pytest.raises(ValueError, match="multiple"):
        LatentSpaceConfig(GeneratorConfig(size=32, style_dim=16, n_mlp=1, widths=(16, 16, 16, 16)),
                          EncoderConfig(input_size=64, n_styles=8, style_dim=16))


@pytest.mark.parametrize("profile", ["paper", "paper-flowers", "paper-vggface"])
def test_paper_profiles_say_where_the_public_files_are_before_anything_runs(profile):
    from tagelib.run import build_plan

    with pytest.raises(SystemExit, match="prepare_paper_datasets"):
        build_plan(profile)


def test_rehearsal_numbers_are_marked_meaningless(inputs):
    from types import SimpleNamespace

    from tagelib.report import REHEARSAL_NOTE, provenance

    ruler = SimpleNamespace(extractors=[], judge=SimpleNamespace(homoglyphs=[]), collapse_floor=0.1)
    prov = provenance(str(inputs["data"]), 0, ruler)
    assert prov["note"] == REHEARSAL_NOTE and "sha256 of the first 16 MiB" in prov["data"]
    assert "note" not in provenance("data/glyphs", 0, ruler)
