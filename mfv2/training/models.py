"""The networks a training run builds, reads and saves, by ``kind``: MixFormerV2 students, MixViT teachers.

Routes and the trainer go through :data:`MODEL_KINDS` (one :class:`ModelKind` per kind), never through
``if kind == ...`` branches; a new kind of network is one more entry here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mfv2.registry import Registry

__all__ = ["ModelKind", "MODEL_KINDS", "build_network", "save_network", "read_state", "input_sizes"]


@dataclass(frozen=True)
class ModelKind:
    """What training needs to know about one kind of network.

    Attributes:
        title: the kind's name in messages (``MixFormerV2``).
        build: ``(variant, checkpoint, drop_path_rate, template_size, search_size) -> model``; sizes ``None``
            keep the variant's (or the checkpoint's), others rebuild its fixed position tables.
        save: ``(model, path, meta) -> path``, the mfv2 format of the kind (loads again with ``build``).
        read_state: ``path -> state dict`` of any file of the kind (official or mfv2).
        config: ``variant name | {config fields} -> config``.
        create: ``config -> model`` with fresh weights.
        variants: the registered configs, to name a config after the variant it equals.
    """

    title: str
    build: Callable[[str | None, str | None, float, int | None, int | None], nn.Module]
    save: Callable[[nn.Module, Path, dict[str, Any]], Path]
    read_state: Callable[[Path], dict[str, torch.Tensor]]
    config: Callable[[str | Mapping[str, Any]], Any]
    create: Callable[[Any], nn.Module]
    variants: Callable[[], Registry[Any]]

    def named(self, cfg: Any, name: str | None) -> Any:
        """``cfg`` named ``name``, else after the registered variant it equals, else unchanged."""
        if name:
            return dataclasses.replace(cfg, name=name)
        registry = self.variants()
        for variant in registry:
            known = registry.get(variant)
            if dataclasses.replace(known, name=cfg.name) == cfg:
                return known
        return cfg


def _from_family(family: str, title: str) -> ModelKind:
    """The kind of a registered model family (:data:`mfv2.models.family.FAMILIES`): its configs,
    variants and fresh model come from the family, files go through ``build_model`` / ``save_native`` /
    ``read_checkpoint``, so nothing about the family is written twice."""

    def registered() -> Any:
        from mfv2.models import get_family

        return get_family(family)

    def build(variant: str | None, checkpoint: str | None, drop_path_rate: float, template: int | None,
              search: int | None) -> nn.Module:
        from mfv2.models import build_model

        return build_model(variant, checkpoint, drop_path_rate=drop_path_rate, template_size=template, search_size=search)

    def save(model: nn.Module, path: Path, meta: dict[str, Any]) -> Path:
        from mfv2.models import save_native

        return save_native(model.state_dict(), model.config, path, meta)  # type: ignore[arg-type]

    def read_state(path: Path) -> dict[str, torch.Tensor]:
        from mfv2.models.checkpoint import read_checkpoint

        return read_checkpoint(path).state_dict

    def config(value: str | Mapping[str, Any]) -> Any:
        f = registered()
        return f.config(value) if isinstance(value, str) else f.config_type.from_dict(dict(value))

    return ModelKind(title, build, save, read_state, config, lambda cfg: registered().build(cfg, 0.0),
                     lambda: registered().variants)


def _mixvit() -> ModelKind:
    def build(variant: str | None, checkpoint: str | None, drop_path_rate: float, template: int | None,
              search: int | None) -> nn.Module:
        from mfv2.models.mixformerv2.mixvit import build_mixvit

        return build_mixvit(variant, checkpoint, drop_path_rate=drop_path_rate, template_size=template, search_size=search)

    def save(model: nn.Module, path: Path, meta: dict[str, Any]) -> Path:
        from mfv2.models.mixformerv2.mixvit import save_mixvit

        return save_mixvit(model, path, meta)  # type: ignore[arg-type]

    def read_state(path: Path) -> dict[str, torch.Tensor]:
        from mfv2.models.mixformerv2.mixvit import load_mixvit_state

        return load_mixvit_state(path)[0]

    def config(spec: str | Mapping[str, Any]) -> Any:
        from mfv2.models.mixformerv2.mixvit import MIXVIT_VARIANTS, MixViTConfig

        return MIXVIT_VARIANTS.get(spec) if isinstance(spec, str) else MixViTConfig.from_dict(dict(spec))

    def create(cfg: Any) -> nn.Module:
        from mfv2.models.mixformerv2.mixvit import MixViT

        return MixViT(cfg)

    def variants() -> Registry[Any]:
        from mfv2.models.mixformerv2.mixvit import MIXVIT_VARIANTS

        return MIXVIT_VARIANTS

    return ModelKind("MixViT", build, save, read_state, config, create, variants)


MODEL_KINDS: Registry[ModelKind] = Registry("model kind")
# The student kind is the MixFormerV2 model family; MixViT (teachers only) is the one training-only kind.
MODEL_KINDS.add("mixformerv2", _from_family("mixformerv2", "MixFormerV2"))
MODEL_KINDS.add("mixvit", _mixvit())


def build_network(
    kind: str,
    variant: str | None,
    checkpoint: str | os.PathLike[str] | None = None,
    drop_path_rate: float = 0.0,
    *,
    template_size: int | None = None,
    search_size: int | None = None,
) -> nn.Module:
    """A model of ``kind`` (``mixformerv2`` or ``mixvit``); with a checkpoint, ``variant`` may be ``None``.

    ``template_size``/``search_size`` build it at other input sizes (fixed sin-cos tables rebuilt).
    """
    path = None if checkpoint is None else str(checkpoint)
    return MODEL_KINDS.get(kind).build(variant, path, drop_path_rate, template_size, search_size)


def save_network(kind: str, model: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``model`` in the mfv2 format of its kind, atomically; the file also loads with ``build_*``."""
    return MODEL_KINDS.get(kind).save(model, Path(path), meta)


def read_state(kind: str, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint of ``kind`` (official or mfv2 layout), read without running pickled code."""
    return MODEL_KINDS.get(kind).read_state(Path(path))


def input_sizes(model: nn.Module) -> tuple[int, int, int]:
    """(template size, search size, patch size) of a MixFormerV2 or MixViT model."""
    cfg: Any = model.config
    return int(cfg.template_size), int(cfg.search_size), int(cfg.patch_size)
