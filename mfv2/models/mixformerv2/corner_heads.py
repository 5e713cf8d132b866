"""Dense corner heads of the MixViT teacher: score maps for the top-left and bottom-right box corners.

Two layouts, named after the official configs (module names follow the official state-dict keys):

* ``corner``: five convolutions on the (B, C, g, g) search feature map, stride 16;
* ``corner_up``: the same tower with nearest-neighbour upsampling and lateral "adjust" branches, giving
  a (4g)x(4g) map, stride 4 (72x72 for a 288 search crop).

:func:`soft_argmax` turns a map into a probability over its cells, the expected corner and the two
marginals (over rows and over columns) that distillation matches against the student's edge bins.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CornerHead", "conv_bn_relu", "soft_argmax", "CornerKind"]

CornerKind = Literal["corner", "corner_up"]


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """3x3 convolution (with bias) -> BatchNorm -> ReLU, keys ``.0`` and ``.1``."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="nearest")


class CornerHead(nn.Module):
    """Top-left and bottom-right corner score maps from the search feature map.

    Args:
        in_channels: width of the backbone tokens (768 for ViT-B).
        channels: ``HEAD_DIM`` of the official config (384); the tower halves it three times, so it
            must be divisible by 8.
        kind: ``"corner_up"`` (pyramidal, 4x upsampled) or ``"corner"`` (plain, backbone resolution).
    """

    def __init__(self, in_channels: int, channels: int, kind: CornerKind = "corner_up") -> None:
        super().__init__()
        if channels % 8:
            raise ValueError(f"corner head channels must be divisible by 8, got {channels}")
        if kind not in ("corner", "corner_up"):
            raise ValueError(f"corner head kind must be 'corner' or 'corner_up', got {kind!r}")
        self.kind = kind
        self.upsample = 4 if kind == "corner_up" else 1
        c1, c2, c3, c4 = channels, channels // 2, channels // 4, channels // 8
        # Registration order = the official state-dict order: all tl modules, then all br modules.
        for corner in ("tl", "br"):
            self.add_module(f"conv1_{corner}", conv_bn_relu(in_channels, c1))
            self.add_module(f"conv2_{corner}", conv_bn_relu(c1, c2))
            self.add_module(f"conv3_{corner}", conv_bn_relu(c2, c3))
            self.add_module(f"conv4_{corner}", conv_bn_relu(c3, c4))
            self.add_module(f"conv5_{corner}", nn.Conv2d(c4, 1, 1))
            if kind == "corner_up":
                self.add_module(f"adjust1_{corner}", conv_bn_relu(in_channels, c2))
                self.add_module(f"adjust2_{corner}", conv_bn_relu(in_channels, c3))
                self.add_module(
                    f"adjust3_{corner}", nn.Sequential(conv_bn_relu(c2, c3), conv_bn_relu(c3, c4), conv_bn_relu(c4, 1))
                )
                self.add_module(f"adjust4_{corner}", nn.Sequential(conv_bn_relu(c3, c4), conv_bn_relu(c4, 1)))

    def _m(self, name: str) -> nn.Module:
        return cast(nn.Module, self._modules[name])

    def _plain(self, x: torch.Tensor, corner: str) -> torch.Tensor:
        for i in range(1, 5):
            x = self._m(f"conv{i}_{corner}")(x)
        return self._m(f"conv5_{corner}")(x)

    def _pyramid(self, x: torch.Tensor, corner: str) -> torch.Tensor:
        m = self._m
        c2 = m(f"conv2_{corner}")(m(f"conv1_{corner}")(x))  # (B, c/2, g, g)
        u1 = _up(c2, 2) + _up(m(f"adjust1_{corner}")(x), 2)  # (B, c/2, 2g, 2g)
        c3 = m(f"conv3_{corner}")(u1)  # (B, c/4, 2g, 2g)
        u2 = _up(c3, 2) + _up(m(f"adjust2_{corner}")(x), 4)  # (B, c/4, 4g, 4g)
        c5 = m(f"conv5_{corner}")(m(f"conv4_{corner}")(u2))  # (B, 1, 4g, 4g)
        return c5 + _up(m(f"adjust3_{corner}")(c2), 4) + _up(m(f"adjust4_{corner}")(c3), 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score maps (logits) of the two corners.

        Args:
            x: (B, C, g, g) search feature map.

        Returns:
            Top-left and bottom-right maps, each (B, M, M) with M = g (``corner``) or 4g (``corner_up``).
        """
        run = self._pyramid if self.kind == "corner_up" else self._plain
        return run(x, "tl").squeeze(1), run(x, "br").squeeze(1)


def soft_argmax(score_map: torch.Tensor) -> dict[str, torch.Tensor]:
    """Softmax over all cells of a square map and the expected cell, normalised to the crop.

    Cell ``(row, col)`` stands for the point ``(col / M, row / M)`` of the crop (its top-left corner),
    so coordinates lie in [0, (M-1)/M], the convention of the student's bins.

    Args:
        score_map: (B, M, M) logits, rows = y, columns = x.

    Returns:
        ``prob`` (B, M*M) row-major, ``x`` and ``y`` (B,) normalised, ``prob_x`` (B, M) the marginal over
        columns (summed over rows) and ``prob_y`` (B, M) the marginal over rows.
    """
    B, M, _ = score_map.shape
    prob = score_map.reshape(B, M * M).softmax(dim=-1)
    grid = prob.reshape(B, M, M)  # (B, rows, cols)
    prob_x = grid.sum(dim=1)  # (B, cols)
    prob_y = grid.sum(dim=2)  # (B, rows)
    pos = torch.arange(M, dtype=prob.dtype, device=prob.device) / M
    return {"prob": prob, "x": prob_x @ pos, "y": prob_y @ pos, "prob_x": prob_x, "prob_y": prob_y}
