"""LoReTrack for MixFormerV2: a low-resolution student distilled from the same network at full resolution.

Dong et al., "LoReTrack: Efficient and Accurate Low-Resolution Transformer Tracking" (2024), applied to
MixFormerV2 as the ``loretrack`` objective. The student is the teacher's architecture at smaller inputs
(:func:`lowres_config`, e.g. ``S-160``: template 80, search 160; the sin-cos tables are built for its
grid); the teacher is the frozen model at its native size. The loss is

    l1 * L1 + ciou * CIoU (ground truth) + qkv * QKV-KD + disc * Disc-KD

* **QKV-KD** (:func:`qkv_kd_loss`): in the last block, the queries, keys and values of the student's
  search tokens mimic the teacher's (the sum over q, k, v), the teacher's search-token grid resized
  bilinearly to the student's (:func:`resize_token_grid`). They are captured with a forward hook on
  ``backbone.blocks[-1].attn.qkv``.
* **Disc-KD** (:func:`disc_kd_loss`): the teacher's last-block search features, resized the same way,
  give a discrimination mask (:func:`discrimination_mask`: per-token mean of squared activations above
  ``tau``); the per-token distance between student and teacher features is weighted ``alpha`` inside
  the mask and ``beta`` outside.

Where the authors' code and the paper's text differ, the code is the default and the text one
``--set`` away: the per-token distance is KL with temperature ``temperature`` 4 between the channel
softmaxes (times T², ``loss_form: kl``; the text's MSE is ``loss_form: mse``), the weights 0.01 were
tuned for it on ViT-B features (the defaults here; at the demo scale they give the terms 0.1-0.3 % of the
loss, and ``lr_demo_loretrack`` uses 2.0 / 0.5, see benchmarks/compression/README.md). Which axis the softmax runs over is our reading (``kl_axis: tokens``, channel-wise
distillation: each channel a distribution over the search tokens; ``channels`` is the other reading); the mask thresholds the raw energy (``mask_norm: none``; ``minmax`` normalises it per
sample to [0, 1] first, which marks most tokens).

With ``qkv: 0`` and ``disc: 0`` the objective trains the plain low-resolution model (same start, same
data), the baseline LoReTrack improves on. The student starts from the teacher's weights
(``init_from_teacher``); the position tables are the only tensors that differ.

Both networks see the same crops (same crop factors: the low-resolution crop covers the same region in
fewer pixels). As in the authors' code the trainer cuts the crops at the teacher's (high) resolution
(:meth:`LoReTrackObjective.crop_sizes`): the teacher sees the real high-resolution pixels and the
student the same crops resized down (bilinear, antialiased).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from mfv2.config import ModelConfig, variant_config
from mfv2.errors import ConfigError
from mfv2.models.mixformerv2 import NUM_PRED_TOKENS, MixFormerV2
from mfv2.models.mixformerv2.vit import Block
from mfv2.training.losses import box_iou, ciou_loss, cxcywh_to_xyxy, l1_loss, xywh_to_xyxy
from mfv2.training.objectives.base import OBJECTIVES, Batch, TeacherObjective, TeacherOptions, unwrap

__all__ = [
    "lowres_config",
    "init_lowres_from_teacher",
    "resize_token_grid",
    "resize_crops",
    "discrimination_mask",
    "token_distance",
    "qkv_kd_loss",
    "disc_kd_loss",
    "LoReTrackOptions",
    "LoReTrackObjective",
]

log = logging.getLogger(__name__)

_POSITION_TABLES = ("backbone.pos_embed_s", "backbone.pos_embed_t")


def lowres_config(
    base: str | ModelConfig, search_size: int, template_size: int | None = None, name: str | None = None
) -> ModelConfig:
    """``base`` at another input size: ``lowres_config("S", 160)`` is ``S-160`` (template 80, search 160).

    Args:
        base: a registered variant name or a :class:`ModelConfig`.
        search_size: the new search crop side, a multiple of the patch size.
        template_size: the new template side (default half the search side).
        name: the config's name (default ``<base>-<search_size>``).

    Raises:
        ConfigError: a size that is not a positive multiple of the patch size.
    """
    cfg = variant_config(base)
    template = search_size // 2 if template_size is None else template_size
    for what, size in (("search_size", search_size), ("template_size", template)):
        if size < cfg.patch_size or size % cfg.patch_size:
            hint = "; pass template_size explicitly" if what == "template_size" and template_size is None else ""
            raise ConfigError(f"{what} {size} is not a positive multiple of the patch size {cfg.patch_size}{hint}")
    return cfg.replace(name=name or f"{cfg.name}-{search_size}", search_size=search_size, template_size=template)


def init_lowres_from_teacher(student: MixFormerV2, teacher: MixFormerV2) -> None:
    """Copy every teacher weight into the student except the position tables (the student keeps its own).

    Raises:
        ConfigError: the networks differ in anything but the input sizes.
    """
    t_sd = teacher.state_dict()
    state = dict(student.state_dict())
    for key, value in state.items():
        if key in _POSITION_TABLES:
            continue
        if key not in t_sd or t_sd[key].shape != value.shape:
            got = tuple(t_sd[key].shape) if key in t_sd else "missing"
            raise ConfigError(
                f"the low-resolution student is not the teacher's architecture: {key} {tuple(value.shape)} vs "
                f"teacher {got}; change only template_size and search_size, or set "
                "objective.options.init_from_teacher: false"
            )
        state[key] = t_sd[key]
    student.load_state_dict(state, strict=True)


def resize_token_grid(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize a square, row-major token grid bilinearly (``align_corners=False``).

    Token ``(r, c)`` of a ``g x g`` grid covers the image cell centred at ``((c + 0.5) / g, (r + 0.5) / g)``;
    the result holds, for each cell of the ``grid x grid`` grid, the value interpolated at its centre.

    Args:
        tokens: (..., g*g, C).
        grid: the output grid side.

    Returns:
        (..., grid*grid, C); ``tokens`` itself when the sides agree.
    """
    *lead, n, c = tokens.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"{n} tokens are not a square grid")
    if g == grid:
        return tokens
    # (..., g*g, C) -> (L, C, g, g)
    x = tokens.reshape(-1, g, g, c).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)
    # (L, C, grid, grid) -> (..., grid*grid, C)
    return x.permute(0, 2, 3, 1).reshape(*lead, grid * grid, c)


def resize_crops(images: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 3, H, W) crops resized bilinearly to ``size`` x ``size`` (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    lead = images.shape[:-3]
    # (..., 3, H, W) -> (L, 3, H, W)
    flat = images.reshape(-1, *images.shape[-3:])
    shrink = size < images.shape[-1]
    out = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return out.reshape(*lead, 3, size, size)


def discrimination_mask(features: torch.Tensor, tau: float = 0.2, *, normalise: bool = False) -> torch.Tensor:
    """Tokens whose activation energy stands out: (B, N, C) -> (B, N) bool.

    Energy is the per-token mean of squared activations; the mask is ``energy > tau``. With
    ``normalise`` the energy is min-max normalised per sample first (a sample whose tokens all have
    the same energy then gets an empty mask).
    """
    energy = features.float().pow(2).mean(dim=-1)  # (B, N)
    if not normalise:
        return energy > tau
    low = energy.amin(dim=1, keepdim=True)
    span = energy.amax(dim=1, keepdim=True) - low
    return (energy - low) / span.clamp(min=torch.finfo(energy.dtype).tiny) > tau


LossForm = Literal["kl", "mse"]


def token_distance(
    student: torch.Tensor, teacher: torch.Tensor, form: LossForm = "kl", temperature: float = 4.0,
    axis: Literal["tokens", "channels"] = "tokens",
) -> torch.Tensor:
    """Per-token terms (B, N) of the distance between (B, N, C) features, so that their token mean is the loss.

    ``mse``: mean squared error over the channels. ``kl``: ``T^2 * KL(softmax(t / T) || softmax(s / T))``;
    with ``axis: tokens`` (channel-wise distillation: each channel a distribution over the tokens,
    averaged over the channels) token ``n`` carries its share of every channel's KL times ``N``; with
    ``axis: channels`` each token is a distribution over the channels.
    """
    if form == "mse":
        return (student - teacher).pow(2).mean(dim=-1)
    dim = 1 if axis == "tokens" else -1
    log_s = F.log_softmax(student / temperature, dim=dim)
    log_t = F.log_softmax(teacher / temperature, dim=dim)
    terms = temperature**2 * log_t.exp() * (log_t - log_s)  # (B, N, C)
    if axis == "tokens":
        return terms.mean(dim=-1) * student.shape[1]
    return terms.sum(dim=-1)


def qkv_kd_loss(
    student_qkv: torch.Tensor, teacher_qkv: torch.Tensor, *, form: LossForm = "kl", temperature: float = 4.0,
    axis: Literal["tokens", "channels"] = "tokens",
) -> torch.Tensor:
    """Sum over q, k, v of the token-mean distance between student and grid-resized teacher search tokens.

    Args:
        student_qkv: (B, Ns, 3C) the student's last-block ``qkv`` projection of its search tokens.
        teacher_qkv: (B, Nt, 3C) the teacher's; its grid is resized to the student's.
        form, temperature: the per-token distance (:func:`token_distance`).
    """
    target = resize_token_grid(teacher_qkv.detach().float(), math.isqrt(student_qkv.shape[1]))
    s = student_qkv.float()
    if s.shape != target.shape:
        raise ValueError(f"student q/k/v {tuple(s.shape)} and teacher {tuple(teacher_qkv.shape)} differ in width")
    parts = [token_distance(a, b, form, temperature, axis).mean() for a, b in zip(s.chunk(3, dim=-1), target.chunk(3, dim=-1))]
    return torch.stack(parts).sum()


def disc_kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    tau: float = 0.2,
    alpha: float = 0.6,
    beta: float = 0.4,
    normalise: bool = False,
    form: LossForm = "kl",
    temperature: float = 4.0,
    axis: Literal["tokens", "channels"] = "tokens",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-weighted feature distance of the search tokens, and the mask.

    Args:
        student: (B, Ns, C) the student's last-block search features.
        teacher: (B, Nt, C) the teacher's; resized to the student's grid before the mask is taken.
        tau, normalise: the mask (:func:`discrimination_mask`).
        form, temperature: the per-token distance (:func:`token_distance`).

    Returns:
        ``mean_n(w_n * d_n)`` with ``w = alpha`` in the mask and ``beta`` outside, and the (B, Ns) mask.
    """
    target = resize_token_grid(teacher.detach().float(), math.isqrt(student.shape[1]))
    mask = discrimination_mask(target, tau, normalise=normalise)
    error = token_distance(student.float(), target, form, temperature, axis)  # (B, Ns)
    weights = torch.where(mask, torch.full_like(error, alpha), torch.full_like(error, beta))
    return (weights * error).mean(), mask


class _QkvCapture:
    """Keeps the output of the last block's ``attn.qkv`` from the most recent forward."""

    def __init__(self, model: MixFormerV2) -> None:
        self.value: torch.Tensor | None = None
        last = cast(Block, model.backbone.blocks[-1])
        self.handle = last.attn.qkv.register_forward_hook(self._store)

    def _store(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.value = output

    def take(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("the last block's qkv projection did not run; the model is not a MixFormerV2")
        return value


def _search_tokens(tokens: torch.Tensor, num_search: int) -> torch.Tensor:
    """The search tokens of a full-forward sequence [templates, search, prediction tokens]."""
    end = tokens.shape[1] - NUM_PRED_TOKENS
    return tokens[:, end - num_search : end]


@dataclass(frozen=True)
class LoReTrackOptions(TeacherOptions):
    """Teacher (:class:`~.base.TeacherOptions`, ``teacher_kind`` must be ``mixformerv2``, at its own
    resolution) and loss weights of ``loretrack`` (see the module docstring)."""

    teacher_kind: str = "mixformerv2"
    teacher_input: Literal["student", "checkpoint"] = "checkpoint"
    init_from_teacher: bool = True
    l1: float = 5.0
    ciou: float = 2.0
    qkv: float = 0.01
    disc: float = 0.01
    tau: float = 0.2
    alpha: float = 0.6
    beta: float = 0.4
    loss_form: LossForm = "kl"
    temperature: float = 4.0
    kl_axis: Literal["tokens", "channels"] = "tokens"
    mask_norm: Literal["none", "minmax"] = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.teacher_kind != "mixformerv2":
            raise ConfigError(
                f"objective 'loretrack' distils a MixFormerV2 into itself at a lower resolution; the teacher is a "
                f"{self.teacher_kind}: give a MixFormerV2 teacher"
            )
        if any(getattr(self, w) < 0 for w in ("l1", "ciou", "qkv", "disc", "alpha", "beta")):
            raise ConfigError("objective.options weights l1, ciou, qkv, disc, alpha and beta must be >= 0")
        if self.tau < 0 or (self.mask_norm == "minmax" and self.tau >= 1.0):
            raise ConfigError(f"objective.options.tau is an energy threshold >= 0 (below 1 with mask_norm: minmax), "
                              f"got {self.tau}")
        if self.temperature <= 0:
            raise ConfigError(f"objective.options.temperature must be > 0, got {self.temperature}")


@OBJECTIVES.register("loretrack")
class LoReTrackObjective(TeacherObjective):
    """LoReTrack distillation of a low-resolution MixFormerV2 student (see the module docstring)."""

    Options = LoReTrackOptions

    def __init__(self, options: Mapping[str, Any] | None = None, *, device: torch.device | str = "cpu") -> None:
        super().__init__(options, device=device)
        self._teacher_qkv = _QkvCapture(self.teacher)
        self._student_qkv: _QkvCapture | None = None

    def prepare(self, model: nn.Module) -> None:
        super().prepare(model)
        student = unwrap(model)
        s, t = student.config, self.teacher.config
        if not hasattr(student, "box_head"):
            raise ConfigError("objective 'loretrack' needs a MixFormerV2 student (model.kind: mixformerv2)")
        if s.replace(name=t.name, template_size=t.template_size, search_size=t.search_size) != t:
            raise ConfigError(
                f"the low-resolution student ({s.describe()}) must be the teacher's architecture ({t.describe()}) "
                "with other template_size/search_size"
            )
        if self.options.init_from_teacher:
            init_lowres_from_teacher(student, self.teacher)
            log.info("loretrack: student %s (template %d, search %d) starts from the teacher (template %d, search %d)",
                     s.name, s.template_size, s.search_size, t.template_size, t.search_size)
        student.score_head.requires_grad_(False)
        self._student_qkv = _QkvCapture(student)

    def crop_sizes(self) -> tuple[int, int]:
        """The teacher's (template, search) sizes: the trainer cuts the crops at the high resolution."""
        cfg = self.teacher.config
        return int(cfg.template_size), int(cfg.search_size)

    def _inputs(self, cfg: ModelConfig, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (resize_crops(batch["template"], cfg.template_size),
                resize_crops(batch["online_template"], cfg.template_size),
                resize_crops(batch["search"], cfg.search_size))

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.options
        student = unwrap(model)
        s_cfg = student.config
        if self._student_qkv is None:
            raise RuntimeError("LoReTrackObjective.prepare(model) must run before training steps")
        out = model(*self._inputs(s_cfg, batch))
        s_qkv = _search_tokens(self._student_qkv.take(), s_cfg.num_search_tokens)
        pred = cxcywh_to_xyxy(out["pred_boxes"].float())
        total = pred.sum() * 0.0
        stats: dict[str, float] = {}
        pos = batch["label"] > 0.5
        if bool(pos.any()):
            gt = xywh_to_xyxy(batch["search_box"].float()).clamp(0, 1)
            l1 = l1_loss(pred[pos], gt[pos])
            ciou, iou = ciou_loss(pred[pos], gt[pos])
            total = total + o.l1 * l1 + o.ciou * ciou
            stats.update({"Loss/l1": l1.item(), "Loss/ciou": ciou.item(), "IoU": iou.mean().item()})
        if o.qkv > 0 or o.disc > 0:
            t_cfg = self.teacher.config
            with torch.no_grad():
                t_out = self.teacher(*self._inputs(t_cfg, batch))
            t_qkv = _search_tokens(self._teacher_qkv.take(), t_cfg.num_search_tokens)
            qkv = qkv_kd_loss(s_qkv, t_qkv, form=o.loss_form, temperature=o.temperature, axis=o.kl_axis)
            disc, mask = disc_kd_loss(
                _search_tokens(out["features"][-1], s_cfg.num_search_tokens),
                _search_tokens(t_out["features"][-1], t_cfg.num_search_tokens),
                tau=o.tau, alpha=o.alpha, beta=o.beta, normalise=o.mask_norm == "minmax",
                form=o.loss_form, temperature=o.temperature, axis=o.kl_axis,
            )
            total = total + o.qkv * qkv + o.disc * disc
            stats.update({"Loss/qkv_kd": qkv.item(), "Loss/disc_kd": disc.item(),
                          "disc_mask": mask.float().mean().item()})
        stats["Loss/total"] = total.item()
        if stats["Loss/total"] > 0:  # each weighted term's share of the loss
            for key, weight in (("l1", o.l1), ("ciou", o.ciou), ("qkv_kd", o.qkv), ("disc_kd", o.disc)):
                if f"Loss/{key}" in stats:
                    stats[f"share/{key}"] = weight * stats[f"Loss/{key}"] / stats["Loss/total"]
        return total, stats

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        out = model(*self._inputs(unwrap(model).config, batch))
        gt = xywh_to_xyxy(batch["search_box"].float()).clamp(0, 1)
        return {"IoU": box_iou(cxcywh_to_xyxy(out["pred_boxes"].float()), gt)[0], "label": batch["label"]}
