"""MVT: a MobileViT-S Siamese tracker with pixel-wise correlation and a centre head (BMVC 2023).

Two ways to run it, equal to float tolerance:

* ``model(template, search)``: the full forward from the raw images;
* ``feat = model.encode_template(template)`` once per sequence (the stem features, what the released
  tracker caches at initialisation), then ``model.track_search(search, feat)`` per frame.

Both return the centre head's maps and ``pred_boxes`` decoded from the un-windowed score map; the
tracker's Hann window belongs to the post-processing (:mod:`mfv2.artifacts.families`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mfv2.config import MVTConfig
from mfv2.models.mvt.backbone import MobileViTBackbone
from mfv2.models.mvt.head import CenterPredictor, decode_boxes
from mfv2.models.mvt.neck import BNAdjust, FeatureFusor

__all__ = ["MVT", "STEM_CHANNELS"]

STEM_CHANNELS = 64  # channels of the stem output (layer_2), the cached template state
_OUT_CHANNELS = 128  # channels of the backbone output (layer_4)


class MVT(nn.Module):
    """The MVT tracker network (official key layout: ``backbone``, ``neck``, ``feature_fusor``, ``box_head``)."""

    def __init__(self, cfg: MVTConfig | None = None) -> None:
        super().__init__()
        self.config = cfg if cfg is not None else MVTConfig()
        self.backbone = MobileViTBackbone()
        self.neck = BNAdjust(_OUT_CHANNELS)
        self.feature_fusor = FeatureFusor(self.config.corr_channels, self.config.head_channels)
        self.box_head = CenterPredictor(self.config.head_channels)

    def _check(self, name: str, x: torch.Tensor, shape: tuple[int, ...]) -> None:
        torch._assert(x.dim() == 4 and tuple(x.shape[1:]) == shape,
                      f"{name}: expected (B, {', '.join(map(str, shape))}) float32, got {tuple(x.shape)}")  # fmt: skip

    def encode_template(self, template: torch.Tensor) -> torch.Tensor:
        """(B, 3, Z, Z) RGB in [0, 1] -> stem features (B, 64, Z/4, Z/4); compute once per template."""
        z = self.config.template_size
        self._check("template", template, (3, z, z))
        return self.backbone.stem(template)

    def track_search(self, search: torch.Tensor, template_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-frame forward against cached template stem features (from :meth:`encode_template`).

        Args:
            search: (B, 3, X, X) RGB in [0, 1].
            template_features: (B, 64, Z/4, Z/4).

        Returns:
            ``pred_boxes`` (B, 4) cx, cy, w, h normalised to the crop (argmax of the un-windowed score
            map); ``score_map`` (B, 1, F, F) and ``size_map`` (B, 2, F, F) in [1e-4, 1 - 1e-4];
            ``offset_map`` (B, 2, F, F) in cells.
        """
        cfg = self.config
        self._check("search", search, (3, cfg.search_size, cfg.search_size))
        zq = cfg.template_size // 4
        self._check("template_features", template_features, (STEM_CHANNELS, zq, zq))
        x, z = self.backbone(self.backbone.stem(search), template_features)
        x, z = self.neck(x, z)
        out = self.box_head(self.feature_fusor(z, x))
        out["pred_boxes"] = decode_boxes(out["score_map"], out["size_map"], out["offset_map"])
        return out

    def forward(self, template: torch.Tensor, search: torch.Tensor) -> dict[str, torch.Tensor]:
        """Full forward from the raw template (B, 3, Z, Z) and search (B, 3, X, X) images; see :meth:`track_search`."""
        return self.track_search(search, self.encode_template(template))

    @torch.no_grad()
    def peak_score_map(self, gain: float = 100.0) -> MVT:
        """Scale the score branch's output conv by ``gain``, for untrained weights (benchmarks, tests).

        An untrained score map is nearly flat (0.51-0.53 at 256 pixels), so its windowed argmax, and
        every parity gate that compares decoded boxes, is decided by rounding noise; scaled, it has
        clear maxima. Speed does not change.
        """
        conv = self.box_head.get_submodule("conv5_ctr")
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
        conv.weight.mul_(gain)
        conv.bias.mul_(gain)
        return self

    def graphs(self) -> dict[str, Callable[..., dict[str, torch.Tensor]]]:
        """The exported graphs as functions of their named inputs, returning their named outputs."""

        def maps(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: out[k] for k in ("score_map", "size_map", "offset_map")}

        return {
            "full": lambda template, search: maps(self(template, search)),
            "template_encoder": lambda template: {"kv": self.encode_template(template)},
            "search_decoder": lambda search, kv: maps(self.track_search(search, kv)),
        }
