"""Training checkpoints: the model in its mfv2 format plus the trainer state, in one atomic file.

``<output>/checkpoints/latest.pth`` is rewritten every epoch and ``ep%04d.pth`` is kept every
``checkpoint_every`` epochs and at the end. Each is a plain dict that loads with
``torch.load(weights_only=True)``: ``build_model(checkpoint=...)`` (MixFormerV2) or
``build_mixvit(checkpoint=...)`` (MixViT) read the weights and ignore the trainer state under
``meta['trainer']`` (optimiser, scheduler, AMP scaler, epoch and every rank's RNG states), which
:func:`load_training_state` restores for an exact resume. ``official=True`` also writes the upstream
``{'net': state_dict}`` layout next to it as ``*.pth.tar``.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfv2.errors import ConfigError
from mfv2.training.models import save_network

__all__ = [
    "rng_state",
    "set_rng_state",
    "save_training_checkpoint",
    "load_training_state",
    "checkpoint_dir",
    "LATEST",
]

log = logging.getLogger(__name__)

LATEST = "latest.pth"


def checkpoint_dir(output: Path) -> Path:
    return output / "checkpoints"


def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python RNG states, as tensors and plain containers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_training_checkpoint(
    kind: str,
    model: torch.nn.Module,
    folder: Path,
    *,
    epoch: int,
    trainer_state: dict[str, Any],
    train_config: dict[str, Any],
    stats: dict[str, float],
    keep: bool,
    official: bool,
) -> Path:
    """Write ``latest.pth`` (and ``ep%04d.pth`` when ``keep``), each atomically; returns the newest path."""
    from mfv2.models import save_official

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"kind": kind, "epoch": epoch, "train_config": train_config, "stats": stats, "trainer": trainer_state}
    names = [LATEST] + ([f"ep{epoch:04d}.pth"] if keep else [])
    path = folder / LATEST
    for name in names:
        path = save_network(kind, model, folder / name, meta)
        if official:
            save_official(model.state_dict(), folder / (Path(name).stem + ".pth.tar"))
    log.info("saved %s", path)
    return path


def load_training_state(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model state dict and the ``meta`` (epoch, trainer state) of a training checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"cannot resume: {p} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or corrupt files
        raise ConfigError(f"cannot resume from {p}: not an mfv2 training checkpoint ({type(e).__name__})") from e
    meta = obj.get("meta", {}) if isinstance(obj, dict) else {}
    if "trainer" not in meta or "state_dict" not in obj:
        raise ConfigError(f"cannot resume from {p}: it holds no trainer state (written by something else than 'mfv2 train')")
    if meta.get("kind") != kind:
        raise ConfigError(f"cannot resume from {p}: it holds a {meta.get('kind')} model, the config trains {kind}")
    return obj["state_dict"], meta
