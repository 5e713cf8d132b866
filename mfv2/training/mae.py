"""MAE ViT weights for a stage-1 student: the official MAE checkpoint layout and timm's.

The official MixFormerV2 stage 1 starts the student's patch embedding and blocks from MAE weights
(``checkpoint['model']`` minus ``pos_embed`` and ``mask_token``, loaded non-strictly). Both layouts name
the ViT encoder ``patch_embed.proj.*`` and ``blocks.N.*`` (the official ``mae_pretrain_vit_base.pth``
wraps the state dict in ``{'model': ...}``; a timm ``vit_base_patch16_224.mae`` state dict saved with
``torch.save`` is bare). Those tensors go to ``backbone.patch_embed.*`` / ``backbone.blocks.N.*``; the
class token, the 224-pixel position table, the decoder and the heads are not used (the student's
position tables are the fixed sin-cos ones). The MAE model's width must be the student's; a student
with fewer blocks takes the first ones, as the official non-strict load does. This is how a student
whose width differs from its teacher's (a MixViT-L teacher, a ViT-B student) is initialised.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mfv2.errors import ConfigError

__all__ = ["read_mae_state", "mae_backbone_weights"]


def read_mae_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The encoder state dict of an MAE file: ``{'model': sd}`` (official), a bare ``sd`` (timm), ``module.`` dropped."""
    from mfv2.models.checkpoint import load_pickled

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"MAE checkpoint {p} does not exist; pass mae_pretrain_vit_base.pth or a timm MAE state dict")
    obj: Any = load_pickled(p)
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"{p} is not an MAE ViT checkpoint: expected {{'model': state_dict}} or a bare state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def mae_backbone_weights(path: str | os.PathLike[str], student: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student's ``backbone.patch_embed.*`` and ``backbone.blocks.*`` tensors taken from an MAE file.

    Raises:
        ConfigError: the file lacks one of them or holds it at another shape (another width or MLP ratio).
    """
    sd = read_mae_state(path)
    keys = [k for k in student if k.startswith(("backbone.patch_embed.", "backbone.blocks."))]
    bad = []
    out = {}
    for key in keys:
        src = key.removeprefix("backbone.")
        if src not in sd or tuple(sd[src].shape) != tuple(student[key].shape):
            bad.append(f"{src} {tuple(sd[src].shape) if src in sd else 'missing'} for {tuple(student[key].shape)}")
        else:
            out[key] = sd[src]
    if bad:
        raise ConfigError(
            f"MAE checkpoint {path}: {len(bad)} student backbone weights are missing or differ in shape (e.g. "
            f"{bad[0]}); the MAE ViT needs the student's width, MLP ratio and patch size, and as many blocks"
        )
    return out
