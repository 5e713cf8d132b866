"""Boxes in NumPy: the one IoU, conversions between the three layouts the code uses, and clipping.

Layouts (each row ``(..., 4)``):

* ``xywh`` -- top-left corner and size, in pixels of the full frame at every public edge (LaSOT,
  OpenCV);
* ``cxcywh`` -- centre and size, as the model predicts it, normalised to the search crop;
* ``xyxy`` -- corners.

Pixel boxes have two conventions. *Continuous* (got10k, pysot, and every normalised box): a box covers
``[x, x+w)``. *Inclusive* pixels (OTB, LaSOT, UAV, pytracking): a box covers the pixels
``x .. x+w-1``, ``x2 = x + w - 1`` and ``+1`` on each intersection side. The -1 and +1 cancel, so both
give the same IoU (up to rounding); they differ only by got10k's optional clipping to the image
(:func:`iou_continuous` with ``bound``).

The differentiable IoU used for training is torch (``mfv2.training.losses``) and follows the same
layouts and formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from mfv2.errors import ConfigError, ShapeError

__all__ = [
    "Box",
    "BoxFormat",
    "PixelConvention",
    "as_boxes",
    "as_box_pair",
    "xywh_to_cxcywh",
    "cxcywh_to_xywh",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "convert_boxes",
    "box_intersection",
    "box_iou",
    "iou_inclusive",
    "iou_continuous",
    "clip_boxes_got10k",
    "cut_boxes",
    "clip_box",
]

Box = tuple[float, float, float, float]
BoxFormat = Literal["xywh", "cxcywh", "xyxy"]
PixelConvention = Literal["continuous", "inclusive"]

_FORMATS: tuple[str, ...] = ("xywh", "cxcywh", "xyxy")
_CONVENTIONS: tuple[str, ...] = ("continuous", "inclusive")


def as_boxes(boxes: Any, what: str = "boxes", fmt: BoxFormat = "xywh") -> np.ndarray:
    """``boxes`` as an ``(N, 4)`` float64 array; one box of 4 values becomes ``(1, 4)``.

    Raises:
        ShapeError: anything else than ``(4,)`` or ``(N, 4)``; ``what`` and ``fmt`` name it in the message.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ShapeError(f"{what}: expected (N, 4) {fmt} boxes, got shape {arr.shape}")
    return arr


def as_box_pair(boxes1: Any, boxes2: Any, fmt: BoxFormat = "xywh") -> tuple[np.ndarray, np.ndarray]:
    """Two matched box sets as ``(N, 4)`` float64 arrays (see :func:`as_boxes`).

    Raises:
        ShapeError: a set that is not ``(N, 4)``, or two different lengths.
    """
    a, b = as_boxes(boxes1, "boxes1", fmt), as_boxes(boxes2, "boxes2", fmt)
    if a.shape != b.shape:
        raise ShapeError(f"box arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    return a, b


def _split(boxes: Any) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise ShapeError(f"expected (..., 4) boxes, got shape {b.shape}")
    return b[..., :2], b[..., 2:]


def xywh_to_cxcywh(boxes: Any) -> np.ndarray:
    """(..., 4) top-left/size -> centre/size, float64."""
    xy, wh = _split(boxes)
    return np.concatenate([xy + wh / 2, wh], axis=-1)


def cxcywh_to_xywh(boxes: Any) -> np.ndarray:
    """(..., 4) centre/size -> top-left/size, float64."""
    c, wh = _split(boxes)
    return np.concatenate([c - wh / 2, wh], axis=-1)


def xywh_to_xyxy(boxes: Any) -> np.ndarray:
    """(..., 4) top-left/size -> corners (continuous: ``x2 = x + w``), float64."""
    xy, wh = _split(boxes)
    return np.concatenate([xy, xy + wh], axis=-1)


def xyxy_to_xywh(boxes: Any) -> np.ndarray:
    """(..., 4) corners -> top-left/size, float64 (an inverted box gets a negative size)."""
    lo, hi = _split(boxes)
    return np.concatenate([lo, hi - lo], axis=-1)


def cxcywh_to_xyxy(boxes: Any) -> np.ndarray:
    """(..., 4) centre/size -> corners, float64; the same formula as the torch one in training."""
    c, wh = _split(boxes)
    return np.concatenate([c - wh / 2, c + wh / 2], axis=-1)


def xyxy_to_cxcywh(boxes: Any) -> np.ndarray:
    """(..., 4) corners -> centre/size, float64."""
    lo, hi = _split(boxes)
    return np.concatenate([(lo + hi) / 2, hi - lo], axis=-1)


_TO_XYWH = {"xywh": lambda b: np.asarray(b, dtype=np.float64), "cxcywh": cxcywh_to_xywh, "xyxy": xyxy_to_xywh}
_FROM_XYWH = {"xywh": lambda b: np.asarray(b, dtype=np.float64), "cxcywh": xywh_to_cxcywh, "xyxy": xywh_to_xyxy}


def _check_format(fmt: str) -> None:
    if fmt not in _FORMATS:
        raise ConfigError(f"unknown box format {fmt!r}; use one of {', '.join(_FORMATS)}")


def convert_boxes(boxes: Any, src: BoxFormat, dst: BoxFormat) -> np.ndarray:
    """(..., 4) boxes from layout ``src`` to ``dst`` (``"xywh"``, ``"cxcywh"``, ``"xyxy"``), float64."""
    _check_format(src)
    _check_format(dst)
    if src == dst:
        return np.asarray(boxes, dtype=np.float64)
    return _FROM_XYWH[dst](_TO_XYWH[src](boxes))


def _intersection(a: np.ndarray, b: np.ndarray, e: float) -> np.ndarray:
    # A box covers x .. x+w-e; the overlap of each side is then +e (e = 1: inclusive pixels).
    lo = np.maximum(a[:, :2], b[:, :2])
    hi = np.minimum(a[:, :2] + a[:, 2:] - e, b[:, :2] + b[:, 2:] - e)
    side = np.maximum(hi - lo + e, 0.0)
    return side[:, 0] * side[:, 1]


def box_intersection(boxes1: Any, boxes2: Any) -> np.ndarray:
    """Intersection area of matched continuous xywh boxes, row by row.

    Returns:
        ``(N,)`` float64 >= 0; NaN where an input is NaN (``np.nan_to_num`` counts such a row as no overlap).

    Raises:
        ShapeError: shapes other than ``(N, 4)``, or two different lengths.
    """
    a, b = as_box_pair(boxes1, boxes2)
    return _intersection(a, b, 0.0)


def box_iou(boxes1: Any, boxes2: Any, *, fmt: BoxFormat = "xywh", convention: PixelConvention = "continuous") -> np.ndarray:
    """IoU of matched boxes, row by row: the one IoU of mfv2 outside training.

    Args:
        boxes1, boxes2: ``(N, 4)`` (or one ``(4,)``) boxes in layout ``fmt``, the same shape.
        fmt: ``"xywh"`` (pixels at the public edges), ``"cxcywh"`` (the model's normalised boxes) or
            ``"xyxy"``.
        convention: ``"continuous"`` (a box covers ``[x, x+w)``) or ``"inclusive"`` pixels (``x .. x+w-1``).

    Returns:
        ``(N,)`` float64 in [0, 1]. NaN where an input is NaN (callers that count NaN as a miss
        use ``np.nan_to_num``); 0 where the union is empty; a box with a negative size overlaps
        nothing.

    Raises:
        ShapeError: shapes other than ``(N, 4)``, or two different lengths.
        ConfigError: an unknown ``fmt`` or ``convention``.
    """
    _check_format(fmt)
    if convention not in _CONVENTIONS:
        raise ConfigError(f"unknown pixel convention {convention!r}; use one of {', '.join(_CONVENTIONS)}")
    a, b = as_box_pair(boxes1, boxes2, fmt)
    if fmt != "xywh":
        a, b = _TO_XYWH[fmt](a), _TO_XYWH[fmt](b)
    inter = _intersection(a, b, 1.0 if convention == "inclusive" else 0.0)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    out[np.isnan(inter) | np.isnan(union)] = np.nan  # keep NaN inputs visible to callers
    return np.clip(out, 0.0, 1.0)


def iou_inclusive(boxes1: Any, boxes2: Any) -> np.ndarray:
    """IoU with inclusive pixel boxes (OTB/LaSOT/pytracking): a box covers ``x .. x+w-1``.

    Args:
        boxes1, boxes2: ``(N, 4)`` xywh boxes in pixels.

    Returns:
        ``(N,)`` float64 in [0, 1]; NaN where an input is NaN, 0 where the union is empty.
    """
    return box_iou(boxes1, boxes2, convention="inclusive")


def clip_boxes_got10k(boxes: Any, bound: tuple[float, float]) -> np.ndarray:
    """Clip xywh boxes to a ``(width, height)`` image the way the got10k toolkit does.

    The corner is clamped into the image first, then the size so the box ends inside it; a box
    hanging off the left or top is therefore shifted rather than cut, as in the toolkit.
    """
    out = as_boxes(boxes, "boxes").copy()
    size = np.asarray(bound, dtype=np.float64)
    out[:, :2] = np.clip(out[:, :2], 0.0, size)
    out[:, 2:] = np.clip(out[:, 2:], 0.0, size - out[:, :2])
    return out


def cut_boxes(boxes: Any, width: float, height: float) -> np.ndarray:
    """The part of each continuous xywh box inside a ``width`` x ``height`` image (corners clamped).

    Unlike :func:`clip_boxes_got10k`, a box hanging off the left or top is cut, not shifted; a box
    wholly outside becomes a zero-size box on the border. NaN rows stay NaN.
    """
    b = as_boxes(boxes, "boxes")
    x0, y0 = np.clip(b[:, 0], 0, width), np.clip(b[:, 1], 0, height)
    x1, y1 = np.clip(b[:, 0] + b[:, 2], 0, width), np.clip(b[:, 1] + b[:, 3], 0, height)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def iou_continuous(boxes1: Any, boxes2: Any, *, bound: tuple[float, float] | None = None) -> np.ndarray:
    """IoU with continuous boxes (got10k/pysot): a box covers ``[x, x+w)``.

    Args:
        boxes1, boxes2: ``(N, 4)`` xywh boxes in pixels.
        bound: optional image ``(width, height)`` both sets are clipped to first
            (:func:`clip_boxes_got10k`).

    Returns:
        ``(N,)`` float64 in [0, 1]; NaN where an input is NaN, 0 where the union is empty.
    """
    a, b = as_box_pair(boxes1, boxes2)
    if bound is not None:
        a, b = clip_boxes_got10k(a, bound), clip_boxes_got10k(b, bound)
    return box_iou(a, b)


def clip_box(box_xywh: Sequence[float], height: int, width: int, margin: float = 10) -> Box:
    """Keep a box inside the frame: corners clamped with ``margin`` px to spare, sides at least ``margin``.

    As the official tracker does, for frames at least ``margin`` pixels wide and high. On a frame
    narrower (shorter) than the margin, the margin of that axis shrinks to the frame's side, so the
    box then spans the whole width (height) instead of reaching outside the image (issue #18). The
    result always lies inside ``[0, width] x [0, height]``.
    """
    x, y, w, h = (float(v) for v in box_xywh)
    mx, my = min(float(margin), float(width)), min(float(margin), float(height))
    x1 = min(max(0.0, x), width - mx)
    x2 = min(max(mx, x + w), width)
    y1 = min(max(0.0, y), height - my)
    y2 = min(max(my, y + h), height)
    return (x1, y1, max(mx, x2 - x1), max(my, y2 - y1))
