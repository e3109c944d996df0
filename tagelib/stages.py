"""The training stages of notebooks 02–04 (AGE, CLM, CPM), in this process or on N ranks with torchrun + DDP.

    runner = StageRunner(checkpoint, ctx.model, ctx.lpips_alex, ctx.dist, processes=train_processes, work_dir=out_dir)
    history = runner.age(age_model, w, labels, class_emb, images, steps=600, batch_size=16, seed=0)

`processes = 1`: the library trainer runs here, on `dist.device`. `processes = N > 1`: the stage's inputs (codes,
labels, configs, the module's initial weights) go to a job file in `work_dir`, and

    python -m torch.distributed.run --standalone --nproc_per_node N -m tagelib.stages JOB

trains it on N ranks (NCCL on GPUs, gloo on the CPU), each loading the frozen latent space from `checkpoint`; rank
0 writes the weights and the history, which are loaded back into the module here. Every rank draws the same global
batches, so the loss curve is one process's up to float tolerance (`tests/test_distributed.py`).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from tagelib import age as age_lib
from tagelib.atomic import write_bytes_atomic
from tagelib.clm import CLMTrainConfig, train_clm
from tagelib.codebook import Codebook, CodebookConfig
from tagelib.cpm import CodePredictor, CPMConfig
from tagelib.cpm_train import CPMData, CPMTrainConfig, train_cpm
from tagelib.distributed import Distributed, end_worker, init_distributed
from tagelib.latent import LatentSpace
from tagelib.paths import resolve
from tagelib.perceptual import load_lpips, lpips_distance

STAGES = ("age", "clm", "cpm")


def age_perceptual(lpips_alex: nn.Module):
    """AGE's LPIPS term: LPIPS-alex between the clamped reconstruction and the real image."""
    return lambda x, y: lpips_distance(lpips_alex, x.clamp(-1, 1), y)


def clm_perceptual(lpips_alex: nn.Module):
    """CLM's LPIPS term: LPIPS-alex between the decoded quantized code and G(w) (`train_clm` clamps both)."""
    return lambda x, y: lpips_distance(lpips_alex, x, y)


def _serialise(module: nn.Module) -> dict:
    """A module's config and weights as plain dicts and tensors (loadable with weights_only=True)."""
    if isinstance(module, age_lib.AGE):
        config = module.cfg.to_dict()
    elif isinstance(module, (Codebook, CodePredictor)):
        config = asdict(module.config)
    else:
        raise TypeError(f"no training stage for {type(module).__name__}")
    return {"config": config, "state": {k: v.detach().cpu() for k, v in module.state_dict().items()}}


def _rebuild(stage: str, saved: dict) -> nn.Module:
    if stage == "age":
        module = age_lib.AGE(age_lib.AGEConfig.from_dict(saved["config"]))
    elif stage == "clm":
        module = Codebook(CodebookConfig(**saved["config"]))
    else:
        module = CodePredictor(CPMConfig.from_dict(saved["config"]), saved["state"]["codebook"])
    module.load_state_dict(saved["state"])
    return module


def run_stage(stage: str, module: nn.Module, inputs: dict, options: dict, model: LatentSpace | None,
              lpips_alex: nn.Module | None, dist: Distributed, progress: bool = True) -> dict:
    """Train `module` in place with the stage's library trainer; returns its history."""
    if stage == "age":
        return age_lib.train_age(module, inputs["w"], inputs["labels"], inputs["class_emb"], model.decode,
                                 age_perceptual(lpips_alex), images=inputs.get("images"), steps=options["steps"],
                                 batch_size=options["batch_size"], seed=options["seed"], progress=progress, dist=dist)
    if stage == "clm":
        return train_clm(module, inputs["w"], inputs["class_emb"], options["layers"], model.decode,
                         clm_perceptual(lpips_alex), CLMTrainConfig.from_dict(options["train"]), progress=progress,
                         dist=dist)
    if stage == "cpm":
        data = CPMData(inputs["w"], inputs["labels"], inputs["targets"], inputs["residual"])
        return train_cpm(module, data, CPMTrainConfig.from_dict(options["train"]), progress=progress,
                         desc=options.get("desc", "CPM"), dist=dist)
    raise ValueError(f"unknown stage {stage!r}; valid: {STAGES}")


class StageRunner:
    """Runs AGE / CLM / CPM training here (`processes = 1`) or under torchrun on `processes` ranks."""

    def __init__(self, checkpoint: str, model: LatentSpace, lpips_alex: nn.Module, dist: Distributed,
                 processes: int = 1, work_dir: str | Path = ".", amp: bool = True, threads: int = 2):
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"train_processes must be an integer >= 1, got {processes!r}")
        if processes > 1 and dist.device.type == "cuda" and processes > torch.cuda.device_count():
            raise ValueError(f"train_processes = {processes}, but only {torch.cuda.device_count()} GPUs are visible")
        self.checkpoint, self.model, self.lpips_alex, self.dist = checkpoint, model, lpips_alex, dist
        self.processes, self.work_dir, self.amp, self.threads = processes, Path(work_dir), amp, threads

    def age(self, module: age_lib.AGE, w, labels, class_emb, images=None, *, steps: int, batch_size: int,
            seed: int = 0) -> dict:
        inputs = {"w": w, "labels": labels, "class_emb": class_emb, **({"images": images} if images is not None else {})}
        return self._run("age", module, inputs, {"steps": steps, "batch_size": batch_size, "seed": seed})

    def clm(self, codebook: Codebook, w, class_emb_per_sample, layers: list[int], cfg: CLMTrainConfig,
            progress: bool = True) -> dict:
        return self._run("clm", codebook, {"w": w, "class_emb": class_emb_per_sample},
                         {"layers": list(layers), "train": asdict(cfg)}, progress)

    def cpm(self, cpm: CodePredictor, data: CPMData, cfg: CPMTrainConfig, desc: str = "CPM") -> dict:
        return self._run("cpm", cpm, data._asdict(), {"train": asdict(cfg), "desc": desc})

    def _run(self, stage: str, module: nn.Module, inputs: dict, options: dict, progress: bool = True) -> dict:
        if self.processes == 1:
            return run_stage(stage, module, inputs, options, self.model, self.lpips_alex, self.dist, progress)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        job, result = self.work_dir / f"{stage}_job.pt", self.work_dir / f"{stage}_result.pt"
        result.unlink(missing_ok=True)
        buffer = io.BytesIO()
        torch.save({"stage": stage, "module": _serialise(module), "options": options,
                    "inputs": {k: v.detach().cpu() for k, v in inputs.items()},
                    "checkpoint": str(resolve(self.checkpoint)) if stage != "cpm" else "",
                    "device": self.dist.device.type, "amp": self.amp,
                    "threads": max(1, self.threads // self.processes), "result": str(result)}, buffer)
        write_bytes_atomic(job, buffer.getvalue())
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.processes}",
                   "-m", "tagelib.stages", str(job)]
        done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        if done.returncode != 0 or not result.is_file():
            raise RuntimeError(f"the {stage} stage failed on {self.processes} processes (exit {done.returncode}); "
                               f"its job file is {job}; rerun it with: {' '.join(command)}")
        out = torch.load(result, weights_only=True)
        module.load_state_dict(out["state"])
        job.unlink()
        result.unlink()
        return out["history"]


def worker(job_path: str | Path) -> None:
    """One torchrun rank: rebuild the stage from the job file, train, and (rank 0) write weights and history."""
    job = torch.load(job_path, weights_only=True)
    dist = init_distributed(job["device"])
    torch.set_num_threads(job["threads"])
    stage = job["stage"]
    module = _rebuild(stage, job["module"])
    model = lpips_alex = None
    if stage != "cpm":
        model = LatentSpace.load(job["checkpoint"]).to_device(dist.device, job["amp"])
        lpips_alex = load_lpips("alex", device=dist.device)
    history = run_stage(stage, module, job["inputs"], job["options"], model, lpips_alex, dist)
    if dist.is_main:
        buffer = io.BytesIO()
        torch.save({"state": {k: v.detach().cpu() for k, v in module.state_dict().items()}, "history": history}, buffer)
        write_bytes_atomic(job["result"], buffer.getvalue())
    end_worker(dist)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path, help="a job file written by StageRunner")
    worker(parser.parse_args(argv).job)


if __name__ == "__main__":
    main()
