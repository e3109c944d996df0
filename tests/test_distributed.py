"""Data parallel = one process: AGE, CLM and CPM loss curves under torchrun (gloo, 2 processes on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tagelib import ddp_check
from tagelib.distributed import Distributed, pick_device

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
