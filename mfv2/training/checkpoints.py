"""Training checkpoints: the model in its mfv2 format, with or without the trainer state, atomically.

Every epoch writes a full state ``<output>/checkpoints/full_ep%04d.pth`` (the model plus, under
``meta['trainer']``, optimiser, scheduler, AMP scaler, epoch and every rank's RNG states) and points
``latest.pth`` at it (a hard link, so no second copy); only the ``keep_full`` newest full states are
kept. Milestones ``ep%04d.pth`` (every ``checkpoint_every`` epochs and the last) hold the weights
only: a full state of the 12-block model with AdamW moments is about three times its weights.
Each file is a plain dict that loads with ``torch.load(weights_only=True)``:
``build_model(checkpoint=...)`` (MixFormerV2) or ``build_mixvit(checkpoint=...)`` (MixViT) read the
weights; :func:`load_training_state` restores a full state for an exact resume. ``official=True``
also writes the upstream ``{'net': state_dict}`` layout next to each milestone and ``latest.pth`` as ``*.pth.tar``.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
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


def _full_epochs(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for p in folder.glob("full_ep*.pth"):
        digits = p.stem.removeprefix("full_ep")
        if digits.isdigit():
            found.append((int(digits), p))
    return sorted(found)


def _point_latest(folder: Path, target: Path) -> None:
    """Make ``latest.pth`` the file ``target`` atomically (hard link; a copy where links are unsupported)."""
    tmp = folder / f".{LATEST}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
    except OSError:
        shutil.copyfile(target, tmp)
    os.replace(tmp, folder / LATEST)


def save_training_checkpoint(
    kind: str,
    model: torch.nn.Module,
    folder: Path,
    *,
    epoch: int,
    trainer_state: dict[str, Any],
    train_config: dict[str, Any],
    stats: dict[str, float],
    milestone: bool,
    keep_full: int,
    official: bool,
) -> Path:
    """Write the epoch's full state (``latest.pth`` points at it) and, when ``milestone``, ``ep%04d.pth``.

    Full states older than the ``keep_full`` newest are deleted. Returns the milestone, else ``latest.pth``.
    """
    from mfv2.models import save_official

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"kind": kind, "epoch": epoch, "train_config": train_config, "stats": stats}
    full = save_network(kind, model, folder / f"full_ep{epoch:04d}.pth", {**meta, "trainer": trainer_state})
    _point_latest(folder, full)
    for _, old in _full_epochs(folder)[:-keep_full]:
        old.unlink()
    names = ["latest"] + ([f"ep{epoch:04d}"] if milestone else [])
    path = folder / LATEST
    if milestone:
        path = save_network(kind, model, folder / f"{names[-1]}.pth", meta)
        log.info("saved %s (weights) and %s (full state)", path, full)
    if official:
        for name in names:
            save_official(model.state_dict(), folder / f"{name}.pth.tar")
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
