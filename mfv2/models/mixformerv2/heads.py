"""Prediction heads of MixFormerV2: the distribution box head and the score head."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DistributionBoxHead", "ScoreHead", "expected_coordinate"]


def expected_coordinate(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over ``F`` bins and its expectation ``E[i] / F`` in [0, (F-1)/F].

    Args:
        logits: (..., F) bin logits of one box edge.

    Returns:
        The probabilities (..., F) and the normalised coordinate (...).
    """
    num_bins = logits.shape[-1]
    prob = logits.softmax(dim=-1)
    bins = torch.arange(num_bins, dtype=prob.dtype, device=prob.device) / num_bins
    return prob, prob @ bins


class DistributionBoxHead(nn.Module):
    """One MLP per prediction token -> ``F`` bin logits of its box edge.

    ``layers.0`` = Linear -> LayerNorm(eps 1e-5) -> ReLU; ``layers.1`` = Linear -> LayerNorm(eps 1e-5):
    the official key layout ``box_head.layers.{0.0, 0.1, 1.0, 1.1}``.
    """

    def __init__(self, dim: int, num_bins: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-5), nn.ReLU()),
                nn.Sequential(nn.Linear(dim, num_bins), nn.LayerNorm(num_bins, eps=1e-5)),
            ]
        )

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Box from the four prediction tokens.

        Args:
            tokens: (B, 4, C) prediction tokens in the order l, r, t, b.

        Returns:
            ``pred_boxes`` (B, 4) normalised cx, cy, w, h; ``logits_{l,r,t,b}`` and ``prob_{l,r,t,b}`` (B, F).
        """
        logits = self.layers[1](self.layers[0](tokens))  # (B, 4, F)
        prob, coord = expected_coordinate(logits)  # (B, 4, F), (B, 4)
        l, r, t, b = coord.unbind(dim=1)
        boxes = torch.stack([(l + r) / 2, (t + b) / 2, r - l, b - t], dim=1)  # xyxy -> cxcywh, unclamped
        out = {"pred_boxes": boxes}
        for i, edge in enumerate("lrtb"):
            out[f"logits_{edge}"] = logits[:, i]
            out[f"prob_{edge}"] = prob[:, i]
        return out


class ScoreHead(nn.Module):
    """Linear -> ReLU -> Linear(1) per prediction token, then the mean over the four -> logit (B,)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(dim, dim), nn.ReLU()), nn.Linear(dim, 1)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # (B, 4, C) -> (B, 4, 1) -> (B,)
        return self.layers[1](self.layers[0](tokens)).mean(dim=(1, 2))
