"""Training the CPM on seen categories: k-shot conditioning drawn on the fly, MaskGIT masking, CE + L2.

Each training example is one seen-category code w_i with its CLM indices and residual on S. Its conditioning
(`condition="class_embedding"`, TAGE) is the mean code of k ∈ {1..max_shots} OTHER glyphs of the same category —
a k-shot class embedding as at generation time, never the sample itself, so the CPM must predict what another
font of this character looks like. `condition="own_code"` conditions on w_i itself (the NN-matching-in-disguise
control). PSM (`tagelib.psm`) adds prompts and a CLIP loss through the same loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from tqdm.auto import trange

from tagelib import clm, fewshot
from tagelib.checkpoint_io import CheckpointMismatchError, build_stored_config, load_checked, load_module, stored_value
from tagelib.codebook import Codebook, CodebookConfig
from tagelib.config import build_config, check_choice
from tagelib.cpm import CodePredictor, CPMConfig, cpm_loss, random_mask, sample
from tagelib.distributed import SINGLE, Distributed
from tagelib.factorize import residuals
from tagelib.paths import require

CONDITIONS = ("class_embedding", "own_code")


@dataclass
class CPMTrainConfig:
    steps: int = 1500  # optimisation steps
    batch_size: int = 256  # codes per step
    lr: float = 5e-4  # AdamW peak learning rate (linear warm-up, cosine decay)
    weight_decay: float = 0.01  # AdamW weight decay
    warmup: int = 100  # warm-up steps
    lambda_ce: float = 1.0  # weight of the cross-entropy against the CLM indices
    lambda_l2: float = 1.0  # weight of the L2 between the soft code and the true residual
    max_shots: int = 3  # k of the conditioning class embedding is drawn from 1..max_shots
    condition: str = "class_embedding"  # "class_embedding" (TAGE) or "own_code" (control: re-predicts NN matching)
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("condition", self.condition, CONDITIONS)
        if self.steps < 1 or self.batch_size < 1 or self.max_shots < 1 or self.warmup < 0:
            raise ValueError(f"need steps, batch_size, max_shots >= 1 and warmup >= 0; got {self}")
        if not self.lr > 0 or self.lambda_ce < 0 or self.lambda_l2 < 0:
            raise ValueError(f"need lr > 0 and non-negative loss weights; got {self}")

    @classmethod
    def from_dict(cls, values) -> "CPMTrainConfig":
        return build_config(cls, values)


class CPMData(NamedTuple):
    """Seen-category training codes and their CLM targets."""

    w: torch.Tensor  # (N, L, D) codes
    labels: torch.Tensor  # (N,) category ids (any integers; only equality matters)
    targets: torch.Tensor  # (N, |S|) CLM indices of the residuals
    residual: torch.Tensor  # (N, |S|, D) residuals a = w − w̄_c on S


@torch.no_grad()
def cpm_data(w: torch.Tensor, labels: torch.Tensor, class_emb_per_sample: torch.Tensor, codebook: Codebook,
             layers: list[int]) -> CPMData:
    """Residuals of w (N, L, D) around their class embeddings (N, L, D) on S, and their nearest CLM codes."""
    a = residuals(w, class_emb_per_sample, layers)  # (N, |S|, D)
    _, idx = clm.quantize(codebook, a)
    return CPMData(w, labels, idx, a)


class ShotSampler:
    """Draws, for sample indices i (B,), `k_max` other samples of the same category (B, k_max), vectorised."""

    def __init__(self, labels: torch.Tensor):
        self.order = labels.argsort(stable=True)  # sample ids grouped by category
        _, inverse, counts = labels.unique(return_inverse=True, return_counts=True)
        if (counts < 2).any():
            raise ValueError("every category needs at least 2 training codes to draw shots other than the target")
        starts = counts.cumsum(0) - counts
        self.start, self.count = starts[inverse], counts[inverse]  # (N,) per sample
        self.position = torch.empty_like(self.order)
        self.position[self.order] = torch.arange(len(labels))
        self.position -= self.start  # rank of each sample within its category

    def others(self, i: torch.Tensor, k_max: int, generator: torch.Generator | None = None) -> torch.Tensor:
        n = self.count[i][:, None]  # (B, 1)
        offset = 1 + (torch.rand(len(i), k_max, generator=generator) * (n - 1)).long()  # 1..n-1: never i itself
        return self.order[self.start[i][:, None] + (self.position[i][:, None] + offset) % n]  # (B, k_max)


def conditioning(data: CPMData, i: torch.Tensor, shots: ShotSampler, cfg: CPMTrainConfig,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond (B, L, D), the first shot's index (B,)) for training samples i: a k-shot class embedding of other
    glyphs of the same category, k uniform in 1..max_shots (or w_i itself for `own_code`)."""
    if cfg.condition == "own_code":
        return data.w[i], i
    j = shots.others(i, cfg.max_shots, generator)  # (B, k_max)
    k = torch.randint(1, cfg.max_shots + 1, (len(i), 1), generator=generator)  # (B, 1)
    weight = (torch.arange(cfg.max_shots) < k).float() / k  # (B, k_max): 1/k on the first k
    return torch.einsum("bk,bkld->bld", weight, data.w[j]), j[:, 0]


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


ExtraLoss = Callable[[CodePredictor, dict], tuple[torch.Tensor, dict[str, float]]]
PromptSampler = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def train_cpm(cpm: CodePredictor, data: CPMData, cfg: CPMTrainConfig, prompts: PromptSampler | None = None,
              extra_loss: ExtraLoss | None = None, progress: bool = True, desc: str = "CPM",
              dist: Distributed = SINGLE) -> dict[str, list]:
    """Train `cpm` in place; returns the per-step history (loss, ce, l2, accuracy on masked tokens, seconds, ...).

    `prompts(i, generator) -> (embeddings (B, E), on (B,) bool)` gives PSM's prompt per sample; `extra_loss(cpm,
    batch)` adds a term (PSM's CLIP loss) from the batch dict {"cond", "prompt", "prompt_on", "shot", "i"}.
    `dist` (torchrun): every rank draws the same global batch and trains on its rows; the history is global.
    Training runs on `dist.device` (the data stays where it is, batches move); the CPM ends where it started.
    """
    if dist.active and extra_loss is not None:
        raise ValueError("the extra loss (PSM's CLIP loss) is not data-parallel: train PSM in one process")
    gen = torch.Generator().manual_seed(cfg.seed)  # CPU: batches are drawn there and moved, the same on every device
    shots = ShotSampler(data.labels)
    device, home = dist.device, cpm.codebook.device  # train on this rank's device, hand the CPM back where it was
    cpm.to(device)
    model = dist.wrap(cpm, find_unused_parameters=cpm.config.prompt_dim > 0 and prompts is None)
    opt = torch.optim.AdamW(cpm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg.warmup, cfg.steps))
    hist: dict[str, list] = {"loss": [], "ce": [], "l2": [], "accuracy": [], "seconds": []}
    start = time.perf_counter()
    cpm.train()
    for _ in trange(cfg.steps, desc=desc, disable=not progress or not dist.is_main):
        i = torch.randint(len(data.w), (cfg.batch_size,), generator=gen)  # the global batch, same on every rank
        cond, first_shot = conditioning(data, i, shots, cfg, gen)
        prompt, on = prompts(i, gen) if prompts is not None else (None, None)
        masked = random_mask(len(i), data.targets.shape[1], gen)
        cond, prompt, on, masked = (None if t is None else t.to(device) for t in (cond, prompt, on, masked))
        n_masked = masked.sum().float()
        r = dist.rows(len(i))  # this rank's rows (all of them in one process)
        mine = lambda t: None if t is None else t[r]
        target = data.targets[i][r].to(device)
        logits = model(cond[r], target, masked[r], mine(prompt), mine(on))  # (B / W, |S|, N)
        loss, logs = cpm_loss(logits, target, masked[r], data.residual[i][r].to(device), cpm.codebook, cfg.lambda_ce,
                              cfg.lambda_l2, normalizer=n_masked / dist.world)
        if extra_loss is not None:
            extra, extra_logs = extra_loss(cpm, {"cond": cond, "prompt": prompt, "prompt_on": on, "shot": first_shot, "i": i})
            loss = loss + extra
            logs.update(extra_logs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(cpm.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            hits = ((logits.argmax(-1) == target) & masked[r]).sum().float()
            logs["accuracy"] = dist.sum(hits).item() / n_masked.item()
        logs = {k: dist.mean(v) if k in ("ce", "l2") else v for k, v in logs.items()}
        logs.update(loss=dist.mean(loss.item()), seconds=time.perf_counter() - start)
        for key, value in logs.items():
            hist.setdefault(key, []).append(value)
    cpm.eval()
    cpm.to(home)
    return hist


# ----------------------------------------------------------------------------- what notebooks 04 and 05 start from


def load_codebook(stem: str, layers: list[int]) -> Codebook:
    """The CLM codebook of notebook 03 (`<stem>.safetensors`), checked to quantize the same edited layers.

    Every error names the file: missing, corrupted, an invalid stored config, other layers, or other weights."""
    path = require(f"{stem}.safetensors", "notebook 03_codebook_learning")
    state, info = load_module(path)
    cfg = build_stored_config(path, CodebookConfig, info, "codebook", key="codebook")
    trained_on = stored_value(path, info, "edit_layers", list[int], "codebook")
    if list(trained_on) != list(layers):
        raise CheckpointMismatchError(
            f"{path}: the codebook was trained on layers {trained_on}, this notebook edits {layers}: "
            f"set edit_layers={','.join(map(str, trained_on))} or retrain notebook 03")
    codebook = Codebook(cfg)
    load_checked(codebook, state, name="the codebook", source=path)
    return codebook.eval()


def load_cpm(stem: str) -> tuple[CodePredictor, dict]:
    """The CPM of notebook 04 (`<stem>.safetensors`, its codebook inside) in eval mode, and its stored info.

    Every error names the file: missing, corrupted, an invalid stored config, or other weights."""
    path = require(f"{stem}.safetensors", "notebook 04_code_prediction")
    state, info = load_module(path)
    cfg = build_stored_config(path, CPMConfig, info, "CPM", key="cpm")
    # a placeholder codebook of the configured size: the stored one comes with the weights (its shape checked there)
    cpm = CodePredictor(cfg, torch.zeros(cfg.num_codes, cfg.code_dim))
    load_checked(cpm, state, name="the CPM", source=path)
    return cpm.eval(), info


def seen_code_data(model, ds, codebook: Codebook, layers: list[int], max_styles: int, seed: int
                   ) -> tuple[CPMData, torch.Tensor, torch.Tensor]:
    """The CPM's training data from seen-category training glyphs (`fewshot.training_codes`), with each code's
    style id (N,) and image (N, 1, H, W)."""
    w, labels, styles, images = fewshot.training_codes(model, ds, max_styles, seed)
    seen_labels, seen_emb = fewshot.seen_class_embeddings(w, labels, ds)
    return cpm_data(w, seen_labels, seen_emb[seen_labels], codebook, layers), styles, images


@torch.no_grad()
def code_statistics(cpm: CodePredictor, shot_codes: list[torch.Tensor], codebook: Codebook, layers: list[int],
                    history: dict, condition: str = "class_embedding", n: int = 128, temperature: float = 1.0,
                    top_k: int = 0, steps: int = 8, order: str = "random", seed: int = 0) -> dict:
    """What a CPM does with unseen categories' shots, beside how well it fit its training codes.

    `shot_codes` holds one (k, L, D) tensor of inverted shots per category. Returned: the masked-token accuracy and
    CE over the last 50 training steps of `history`; the mean probability of the most likely code per layer in the
    first (all-masked) pass (1 = deterministic); the share of sampled layer codes equal to one of the shots' NN codes
    around their mean (NN matching's codes); the mean number of distinct code combinations among the n samples per category.
    """
    check_choice("condition", condition, CONDITIONS)
    gen, top1, agree, distinct = torch.Generator().manual_seed(seed), [], [], []
    for wk in shot_codes:  # (k, L, D)
        nn_codes = clm.quantize(codebook, residuals(wk, wk.mean(0), layers))[1]  # (k, |S|)
        cond = wk.mean(0).expand(n, -1, -1) if condition == "class_embedding" else wk[torch.arange(n) % len(wk)]
        all_masked = torch.ones(n, len(layers), dtype=torch.bool)
        first_pass = cpm(cond, torch.zeros(n, len(layers), dtype=torch.long), all_masked).softmax(-1)  # (n, |S|, N)
        top1.append(first_pass.amax(-1).mean().item())
        codes = sample(cpm, cond, temperature, top_k, steps, order=order, generator=gen)  # (n, |S|)
        agree.append((codes[:, None] == nn_codes[None]).any(1).float().mean().item())
        distinct.append(len(codes.unique(dim=0)))
    return {"train_masked_accuracy": float(np.mean(history["accuracy"][-50:])),
            "train_ce": float(np.mean(history["ce"][-50:])), "first_pass_top1_probability": float(np.mean(top1)),
            "agreement_with_NN": float(np.mean(agree)), "distinct_combinations": float(np.mean(distinct))}
