"""``build_model``: a model of any registered family, from a variant, a config or a checkpoint."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, cast

import torch

from mfv2.errors import ConfigError
from mfv2.models.checkpoint import assign_state_dict, read_checkpoint
from mfv2.models.family import FAMILIES, family_of, get_family

if TYPE_CHECKING:
    from mfv2.models.mixformerv2 import MixFormerV2

__all__ = ["build_model"]


def build_model(
    variant_or_config: Any = None,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    drop_path_rate: float = 0.0,
    template_size: int | None = None,
    search_size: int | None = None,
) -> MixFormerV2:
    """Build a model, optionally loading weights strictly.

    Args:
        variant_or_config: a variant name (``"S"``, ``"B"``, ...) or a family's config (a
            :class:`~mfv2.config.ModelConfig` for MixFormerV2); ``None`` means the architecture recorded in
            or detected from ``checkpoint``, and the first family's default variant (MixFormerV2-S) without one.
        checkpoint: an official release file (``{'net': state_dict}``, training checkpoints included) or
            an mfv2 native checkpoint. A mismatch raises :class:`~mfv2.errors.ConfigError` naming the
            missing, unexpected and mis-shaped keys and the variant the file looks like.
        drop_path_rate: stochastic depth for training (0 at inference).
        template_size, search_size: build the architecture at these input sizes instead; a checkpoint's
            fixed sin-cos position tables are rebuilt for the new grids (a learned table is refused), so
            the released files load at any resolution.

    Returns:
        The model in eval mode (typed as MixFormerV2, the one family so far).
    """
    sizes = {k: v for k, v in (("template_size", template_size), ("search_size", search_size)) if v is not None}
    if checkpoint is None:
        family = get_family(FAMILIES.names()[0]) if variant_or_config is None else family_of(variant_or_config)
        cfg = _resized(family.config(family.default_variant if variant_or_config is None else variant_or_config), sizes)
        return cast("MixFormerV2", family.build(cfg, drop_path_rate).eval())
    ckpt = read_checkpoint(checkpoint)
    family = get_family(ckpt.family) if variant_or_config is None else family_of(variant_or_config)
    cfg = ckpt.config if variant_or_config is None else family.config(variant_or_config)
    sd = ckpt.state_dict
    if sizes:
        if family.resize is None:
            raise ConfigError(f"{family.name} models cannot be built at other input sizes; drop template_size/search_size")
        cfg = _resized(cfg, sizes)
        sd = family.resize(sd, cfg, str(checkpoint))
    family.check_state_dict(sd, cfg, str(checkpoint))
    with torch.device("meta"):
        model = family.build(cfg, drop_path_rate)
    return cast("MixFormerV2", assign_state_dict(model, sd).eval())


def _resized(cfg: Any, sizes: dict[str, int]) -> Any:
    """``cfg`` at other input sizes, named ``<name>-<search>`` (or ``<name>-<template>x<search>``)."""
    if not sizes or all(getattr(cfg, k) == v for k, v in sizes.items()):
        return cfg
    new = dataclasses.replace(cfg, **sizes)
    suffix = str(new.search_size) if 2 * new.template_size == new.search_size else f"{new.template_size}x{new.search_size}"
    return dataclasses.replace(new, name=f"{cfg.name}-{suffix}")
