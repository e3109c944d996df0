"""One device choice and data-parallel training (torchrun + DistributedDataParallel) for AGE, CLM and CPM.

    torchrun --nproc_per_node 4 -m tagelib.run ...        # or any script that calls init_distributed()

Every rank draws the SAME global batch (same seeded generator, full copy of the precomputed codes), takes its
`rows` and back-propagates its share; DDP averages the gradients. Losses are normalised by the global batch, so
one process with batch B and W processes with B / W rows each follow the same loss curve up to float
tolerance (`tests/test_distributed.py` checks it with gloo and 2 processes on CPU). NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

DEVICES = ("auto", "cpu", "cuda")


def pick_device(device: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU; `cpu` forces the CPU; `cuda` refuses to run without a GPU."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of n (n must divide evenly, so every rank weighs the same)."""
        if n % self.world:
            raise ValueError(f"a global batch of {n} does not split evenly over {self.world} processes")
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def wrap(self, module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """DDP around `module` when distributed (buffers are synced once at start, then kept in sync by the callers)."""
        if not self.active:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False,
                                       find_unused_parameters=find_unused_parameters)

    def sum(self, t: Tensor) -> Tensor:
        """Sum of t over all ranks (t itself when not distributed)."""
        if not self.active:
            return t
        t = t.detach().clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def mean(self, value: float) -> float:
        """Mean of a per-rank number over all ranks."""
        return value if not self.active else self.sum(torch.tensor(float(value), device=self.device)).item() / self.world


SINGLE = Distributed()


# Random draws: seeded torch.Generators live on the CPU, so draws are made there and moved to the data's device —
# the same numbers on every device, and a CPU generator never meets a CUDA tensor.


def draw(fn, *args, generator: torch.Generator | None = None, device: torch.device | str = "cpu", **kwargs) -> Tensor:
    """`fn(*args, generator=generator, **kwargs)` (torch.rand, randn, randint, randperm) drawn on the generator's
    device and moved to `device`."""
    return fn(*args, generator=generator, **kwargs).to(device)


def multinomial(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of probs (M, K) -> (M, 1). On a GPU whose generator lives there, torch.multinomial; otherwise
    inverse-CDF sampling with M uniforms from the (CPU) generator: exact, the same draws on every device, and on a
    CPU ~20x faster than torch.multinomial over a 1024-code codebook (18 ms per call of 640 rows, 2 threads)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if probs.device.type == gen_device.type == "cuda":
        return torch.multinomial(probs, 1, generator=generator)
    return inverse_cdf_draw(probs, generator)


def inverse_cdf_draw(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of (unnormalised) probs (M, K) -> (M, 1), from M uniforms of the (CPU) generator."""
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=torch.float64).to(probs.device)
    cdf = probs.double().cumsum(-1)
    return (cdf < u * cdf[:, -1:]).sum(-1, keepdim=True).clamp_(max=probs.shape[-1] - 1)


def init_distributed(device: str = "auto") -> Distributed:
    """Join the process group torchrun set up (WORLD_SIZE > 1), or return a one-process `Distributed`."""
    target = pick_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(device=target)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if target.type == "cuda":
        torch.cuda.set_device(local)
        target = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return Distributed(rank, world, target)


def end_worker(place: Distributed) -> None:
    """End a torchrun worker: free the DDP wrappers still alive, wait for every rank, destroy the process group, and
    leave without C++ static destructors. Needed: a DDP reducer that outlives its (destroyed) gloo group aborts the
    process at exit ("terminate called without an active exception", SIGABRT) — 2 of 16 exits of a minimal 2-rank
    script, and 1 of 30 runs of the two-process stage test, before this; 0 of 16 and 0 of 30 after. A no-op outside
    torchrun. Call it last: nothing after it runs."""
    if not place.active:
        return
    gc.collect()  # DDP wrappers in reference cycles go now, while their group exists
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
