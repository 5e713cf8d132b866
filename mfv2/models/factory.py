"""``build_model``: a model of any registered family, from a variant, a config or a checkpoint."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

from mfv2.models.checkpoint import read_checkpoint
from mfv2.models.family import FAMILIES, family_of, get_family

if TYPE_CHECKING:
    from mfv2.models.mixformerv2 import MixFormerV2

__all__ = ["build_model"]


def build_model(
    variant_or_config: Any = None,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    drop_path_rate: float = 0.0,
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

    Returns:
        The model in eval mode (typed as MixFormerV2, the one family so far).
    """
    if checkpoint is None:
        family = get_family(FAMILIES.names()[0]) if variant_or_config is None else family_of(variant_or_config)
        cfg = family.config(family.default_variant if variant_or_config is None else variant_or_config)
        return cast("MixFormerV2", family.build(cfg, drop_path_rate).eval())
    ckpt = read_checkpoint(checkpoint)
    family = get_family(ckpt.family) if variant_or_config is None else family_of(variant_or_config)
    cfg = ckpt.config if variant_or_config is None else family.config(variant_or_config)
    family.check_state_dict(ckpt.state_dict, cfg, str(checkpoint))
    model = family.build(cfg, drop_path_rate)
    model.load_state_dict(ckpt.state_dict, strict=True)
    return cast("MixFormerV2", model.eval())
