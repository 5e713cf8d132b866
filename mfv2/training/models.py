"""The networks a training run can build and save: MixFormerV2 students and MixViT teachers, by ``kind``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mfv2.registry import Registry

__all__ = ["ModelKind", "MODEL_KINDS", "build_network", "save_network", "input_sizes"]


@dataclass(frozen=True)
class ModelKind:
    """How to build (``variant, checkpoint, drop_path_rate -> model``) and save (``model, path, meta``) a kind."""

    build: Callable[..., nn.Module]
    save: Callable[[nn.Module, Path, dict[str, Any]], Path]


def _build_mixformerv2(variant: str | None, checkpoint: str | None, drop_path_rate: float) -> nn.Module:
    from mfv2.models import build_model

    return build_model(variant, checkpoint, drop_path_rate=drop_path_rate)


def _save_mixformerv2(model: nn.Module, path: Path, meta: dict[str, Any]) -> Path:
    from mfv2.models import save_native

    return save_native(model.state_dict(), model.config, path, meta)  # type: ignore[arg-type]


def _build_mixvit(variant: str | None, checkpoint: str | None, drop_path_rate: float) -> nn.Module:
    from mfv2.models.mixvit import build_mixvit

    return build_mixvit(variant, checkpoint, drop_path_rate=drop_path_rate)


def _save_mixvit(model: nn.Module, path: Path, meta: dict[str, Any]) -> Path:
    from mfv2.models.mixvit import save_mixvit

    return save_mixvit(model, path, meta)  # type: ignore[arg-type]


MODEL_KINDS: Registry[ModelKind] = Registry("model kind")
MODEL_KINDS.add("mixformerv2", ModelKind(_build_mixformerv2, _save_mixformerv2))
MODEL_KINDS.add("mixvit", ModelKind(_build_mixvit, _save_mixvit))


def build_network(
    kind: str, variant: str | None, checkpoint: str | os.PathLike[str] | None = None, drop_path_rate: float = 0.0
) -> nn.Module:
    """A model of ``kind`` (``mixformerv2`` or ``mixvit``); with a checkpoint, ``variant`` may be ``None``."""
    return MODEL_KINDS.get(kind).build(variant, None if checkpoint is None else str(checkpoint), drop_path_rate)


def save_network(kind: str, model: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``model`` in the mfv2 format of its kind, atomically; the file also loads with ``build_*``."""
    return MODEL_KINDS.get(kind).save(model, Path(path), meta)


def input_sizes(model: nn.Module) -> tuple[int, int, int]:
    """(template size, search size, patch size) of a MixFormerV2 or MixViT model."""
    cfg: Any = model.config
    return int(cfg.template_size), int(cfg.search_size), int(cfg.patch_size)
