"""Process-group helpers for ``torchrun`` (DDP on NCCL with GPUs, gloo on CPU) and single-process runs.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (it passes no ``--local-rank``); a run
without them is a single process and none of these helpers touches ``torch.distributed``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mfv2.errors import ConfigError

__all__ = ["DistInfo", "setup_distributed", "resolve_device", "all_gather_objects", "barrier", "cleanup_distributed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Rank of this process, number of processes, rank on this node, and whether we made the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0, *, distributed: bool = False) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when a GPU is there, else ``cpu``; ``cuda`` gets the local rank.

    In a ``torchrun`` run (``distributed``) every rank takes the GPU of its ``LOCAL_RANK``, also for an
    explicit ``cuda:N`` (which would put every rank on GPU N); a warning says so.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available; use device: cpu")
        if ":" in name and not distributed:
            return torch.device(name)
        if ":" in name and name != f"cuda:{local_rank}":
            log.warning("device %s under torchrun: this rank (LOCAL_RANK %d) uses cuda:%d", name, local_rank, local_rank)
        return torch.device(f"cuda:{local_rank}")
    if name != "cpu":
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group described by the environment (if any) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local, distributed=world > 1)
    if world <= 1:
        return DistInfo(), device
    owns = not dist.is_initialized()
    if owns:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, owns), device


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group if this process created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
