"""Data parallel = one process: AGE, CLM and CPM loss curves under torchrun (gloo, 2 processes on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tagelib import age as age_lib
from tagelib import ddp_check
from tagelib.clm import CLMTrainConfig
from tagelib.codebook import Codebook, CodebookConfig
from tagelib.cpm import CodePredictor, CPMConfig
from tagelib.cpm_train import CPMData, CPMTrainConfig
from tagelib.distributed import Distributed, inverse_cdf_draw, pick_device
from tagelib.latent import LatentSpace, glyph_latent_config
from tagelib.perceptual import load_lpips
from tagelib.stages import StageRunner

REPO = Path(__file__).resolve().parent.parent


def test_two_processes_follow_the_one_process_loss_curves(tmp_path):
    one = ddp_check.run(steps=12, device="cpu")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "two.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tagelib.ddp_check", "--out", str(out), "--steps", "12"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["world"] == 2 and one["world"] == 1
    for stage in ("age", "clm", "cpm"):
        assert len(two[stage]) == 12
        np.testing.assert_allclose(two[stage], one[stage], rtol=1e-5, err_msg=stage)
        assert max(one[stage]) - min(one[stage]) > 1e-3  # the curves move: the comparison is not of constants
    np.testing.assert_allclose(two["clm_usage"], one["clm_usage"], rtol=1e-6)  # hits summed over the ranks
    np.testing.assert_allclose(two["cpm_accuracy"], one["cpm_accuracy"], atol=1e-9)
    for weights in ("age_A", "clm_embed", "cpm_weights"):
        np.testing.assert_allclose(two[weights], one[weights], rtol=1e-4, err_msg=weights)


def test_rows_split_a_global_batch_evenly_or_refuse():
    ranks = [Distributed(rank=r, world=4) for r in range(4)]
    assert [list(range(12))[d.rows(12)] for d in ranks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    with pytest.raises(ValueError, match="evenly"):
        ranks[0].rows(10)
    assert Distributed().rows(7) == slice(0, 7) and not Distributed().active


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        pick_device("tpu")
    if not __import__("torch").cuda.is_available():
        assert pick_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA"):
            pick_device("cuda")


def test_inverse_cdf_draws_follow_the_probabilities_and_never_pick_a_zero():
    probs = torch.tensor([[0.0, 2.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])  # unnormalised rows
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([inverse_cdf_draw(probs, gen) for _ in range(4000)], 1)  # (2, 4000)
    share = torch.stack([(draws[0] == k).double().mean() for k in range(4)])
    assert (draws[0] != 0).all() and (draws[1] == 0).all()
    torch.testing.assert_close(share, torch.tensor([0.0, 0.5, 0.25, 0.25], dtype=torch.float64), atol=0.03, rtol=0)


def _tiny_stage_inputs(tmp_path):
    """A random 32 px latent space on disk, and the inputs of an AGE, a CLM and a CPM stage around it."""
    torch.manual_seed(0)
    model = LatentSpace(glyph_latent_config(style_dim=16, gen_widths="16,16,16,16", enc_units="1,1,1,1",
                                            enc_widths="8,8,8,8")).freeze()
    model.save(tmp_path / "latent")
    labels = torch.arange(4).repeat_interleave(4)  # (16,)
    w = torch.randn(4, model.n_latent, 16)[labels] + 0.3 * torch.randn(16, model.n_latent, 16)  # (16, L, D)
    means = torch.stack([w[labels == c].mean(0) for c in range(4)])  # (4, L, D)
    images = torch.rand(16, 1, 32, 32) * 2 - 1
    return model, w, labels, means, images


def test_stage_runner_on_two_processes_trains_what_one_process_trains(tmp_path):
    """StageRunner's torchrun path (job file -> 2 gloo ranks -> weights back) = its in-process path."""
    model, w, labels, means, images = _tiny_stage_inputs(tmp_path)
    lpips_alex = load_lpips("alex")
    layers = [0, 1, 2, 3]
    age_cfg = age_lib.AGEConfig(n_latent=model.n_latent, style_dim=16, edit_layers=tuple(layers), groups=((0, 1), (2, 3)),
                                dict_size=4, mlp_hidden=(8,), optimizer="adam", lr=1e-3)
    targets = torch.randint(8, (16, len(layers)), generator=torch.Generator().manual_seed(1))
    results = {}
    for processes in (1, 2):
        runner = StageRunner(str(tmp_path / "latent"), model, lpips_alex, Distributed(), processes, tmp_path / "work")
        torch.manual_seed(2)
        age = age_lib.AGE(age_cfg)
        age_hist = runner.age(age, w, labels, means, images, steps=4, batch_size=4, seed=0)
        codebook = Codebook(CodebookConfig(num_codes=8, dim=16))
        clm_hist = runner.clm(codebook, w, means[labels], layers, CLMTrainConfig(steps=4, batch_size=4))
        torch.manual_seed(3)
        cpm = CodePredictor(CPMConfig(num_codes=8, code_dim=16, n_latent=model.n_latent, n_edit=4, d_model=16,
                                      depth=1, heads=2, dropout=0.0), codebook.embed.detach())
        data = CPMData(w, labels, targets, codebook.embed.detach()[targets])
        cpm_hist = runner.cpm(cpm, data, CPMTrainConfig(steps=4, batch_size=4, warmup=1))
        results[processes] = (age_hist["loss"], clm_hist["loss"], cpm_hist["loss"], age.A.detach().clone(),
                              codebook.embed.detach().clone(), torch.cat([p.detach().flatten() for p in cpm.parameters()]))
    for one, two in zip(results[1][:3], results[2][:3]):  # the loss curves of the three stages
        torch.testing.assert_close(torch.as_tensor(two), torch.as_tensor(one), rtol=1e-4, atol=1e-6)
    for one, two in zip(results[1][3:], results[2][3:]):  # the weights: Adam turns float-rounding differences of
        torch.testing.assert_close(two, one, rtol=0, atol=2e-4)  # near-zero gradients into up to a fraction of a step
    assert not (tmp_path / "work" / "age_job.pt").exists()  # job and result files are cleaned up


def test_stage_runner_refuses_a_bad_process_count(tmp_path):
    with pytest.raises(ValueError, match="train_processes"):
        StageRunner("x", None, None, Distributed(), 0, tmp_path)


def test_mixed_precision_is_never_switched_on_for_the_cpu():
    model = LatentSpace(glyph_latent_config(style_dim=16, gen_widths="16,16,16,16", enc_units="1,1,1,1",
                                            enc_widths="8,8,8,8")).freeze()
    model.to_device(torch.device("cpu"), amp=True)
    w = torch.randn(2, model.n_latent, 16)
    assert model.amp is False and model.device.type == "cpu"
    image = model.decode(w)
    assert image.dtype == torch.float32 and torch.equal(image, model.decoder(w, randomize_noise=False))
