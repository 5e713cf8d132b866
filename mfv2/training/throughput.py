"""Is training bound by the data path or by the model? Measures both halves of a step separately.

``measure_throughput(cfg, batches=N)`` builds the config's data loader and model and reports the data
pipeline's samples/s (workers decoding, cropping and augmenting) and the time of one optimisation step
(forward, backward, clip, AdamW) on a batch already in memory. ``mfv2 train --benchmark N`` prints it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from mfv2.training.config import TrainConfig
from mfv2.training.distributed import resolve_device
from mfv2.training.models import build_network
from mfv2.training.objectives import build_objective
from mfv2.training.trainer import WORKER_CONTEXT, build_sampler, loader_worker_init, param_groups

__all__ = ["Throughput", "measure_throughput"]


@dataclass(frozen=True)
class Throughput:
    """Data samples/s (after the first batch), first-batch latency, step time, and the setting measured."""

    data_samples_per_s: float
    first_batch_s: float
    step_s: float
    model_samples_per_s: float
    batch_size: int
    num_workers: int
    threads: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def bound(self) -> str:
        return "data" if self.data_samples_per_s < self.model_samples_per_s else "model"


def measure_throughput(cfg: TrainConfig, *, batches: int = 10, steps: int = 3) -> Throughput:
    """Time ``batches`` batches of the data loader and ``steps`` optimisation steps (after one warm-up step).

    Args:
        cfg: the training config (its data, model, objective and optimiser sections are used).
        batches: data batches timed after the first one (which includes worker start-up).
        steps: optimisation steps timed on one batch.
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    m = cfg.model
    model = build_network(m.kind, m.variant, m.checkpoint, m.drop_path_rate).to(device).train()
    objective = build_objective(cfg.objective.name, cfg.objective.options, device=device)
    objective.prepare(model)
    d = cfg.data
    dataset = build_sampler(d.datasets, cfg, model, samples=d.batch_size * (batches + 1), augment=True, seed=cfg.seed)
    loader = DataLoader(dataset, batch_size=d.batch_size, num_workers=d.num_workers, drop_last=True,
                        worker_init_fn=loader_worker_init if d.num_workers else None,
                        multiprocessing_context=WORKER_CONTEXT if d.num_workers else None)
    it = iter(loader)
    t0 = time.perf_counter()
    batch = next(it)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    count = sum(len(b["search"]) for b in it)
    data_rate = count / max(time.perf_counter() - t0, 1e-9)

    batch = {k: v.to(device) for k, v in batch.items()}
    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(model, o.lr, o.backbone_lr_mult), lr=o.lr, weight_decay=o.weight_decay)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16, enabled=o.amp):
            loss, _ = objective(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    return Throughput(
        data_samples_per_s=data_rate, first_batch_s=first, step_s=step, model_samples_per_s=d.batch_size / step,
        batch_size=d.batch_size, num_workers=d.num_workers, threads=torch.get_num_threads(), device=str(device),
    )
