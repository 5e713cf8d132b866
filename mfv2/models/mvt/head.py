"""The OSTrack-style centre head of MVT and its box decoding (no half-cell offset)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CenterPredictor", "decode_boxes"]

_WIDTHS = (256, 128, 64, 32)
_EPS = 1e-4  # score and size maps are clamped sigmoids


def _branch_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=True), nn.BatchNorm2d(cout), nn.ReLU())


class CenterPredictor(nn.Module):
    """Three conv branches (``ctr``, ``offset``, ``size``) of 4 x [3x3 conv, BN, ReLU] and a 1x1 output conv."""

    def __init__(self, channels: int = 256) -> None:
        super().__init__()
        for branch, out in (("ctr", 1), ("offset", 2), ("size", 2)):  # registration order = official key order
            widths = (channels, *_WIDTHS)
            for i in range(4):
                self.add_module(f"conv{i + 1}_{branch}", _branch_conv(widths[i], widths[i + 1]))
            self.add_module(f"conv5_{branch}", nn.Conv2d(_WIDTHS[-1], out, 1))

    def _branch(self, branch: str, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 6):
            x = getattr(self, f"conv{i}_{branch}")(x)
        return x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, F, F) -> ``score_map`` (B, 1, F, F), ``size_map`` (B, 2, F, F) (w, h as fractions of
        the crop), ``offset_map`` (B, 2, F, F) (x, y in cells, raw)."""
        score = torch.sigmoid(self._branch("ctr", x)).clamp(_EPS, 1 - _EPS)
        size = torch.sigmoid(self._branch("size", x)).clamp(_EPS, 1 - _EPS)
        return {"score_map": score, "size_map": size, "offset_map": self._branch("offset", x)}


def decode_boxes(score_map: torch.Tensor, size_map: torch.Tensor, offset_map: torch.Tensor) -> torch.Tensor:
    """Box at the first maximum of ``score_map``: (B, 4) ``cx, cy, w, h`` normalised to the crop.

    ``cx = (col + offset_x) / F``, ``cy = (row + offset_y) / F``; ``w, h`` read from ``size_map``.
    """
    B, _, F, W = score_map.shape
    idx = score_map.flatten(1).argmax(dim=1)  # (B,)
    col, row = idx % W, torch.div(idx, W, rounding_mode="floor")
    gather = idx[:, None, None].expand(B, 2, 1)
    size = size_map.flatten(2).gather(2, gather).squeeze(2)  # (B, 2) w, h
    offset = offset_map.flatten(2).gather(2, gather).squeeze(2)  # (B, 2) x, y
    cx = (col.to(offset.dtype) + offset[:, 0]) / W
    cy = (row.to(offset.dtype) + offset[:, 1]) / F
    return torch.stack([cx, cy, size[:, 0], size[:, 1]], dim=1)
