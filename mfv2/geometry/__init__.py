"""Box and crop geometry in NumPy and OpenCV: the floor every other part uses (no torch, nothing of
mfv2 above ``errors``).

``boxes``: the one IoU (continuous and inclusive-pixel conventions), conversions between ``xywh``,
``cxcywh`` and ``xyxy``, clipping. ``crop``: the official tracker's crop, pad and resize, and the map
back to frame pixels.

``boxes`` needs NumPy only; the crop names load ``crop`` (and OpenCV) on first use, so the metrics
and the parity gates that need only IoUs do not import OpenCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mfv2.geometry import boxes
from mfv2.geometry.boxes import (
    Box,
    BoxFormat,
    PixelConvention,
    as_box_pair,
    as_boxes,
    box_intersection,
    box_iou,
    clip_box,
    clip_boxes_got10k,
    convert_boxes,
    cut_boxes,
    cxcywh_to_xywh,
    cxcywh_to_xyxy,
    iou_continuous,
    iou_inclusive,
    xywh_to_cxcywh,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)

if TYPE_CHECKING:
    from mfv2.geometry.crop import Crop, crop_size, map_box_back, preprocess, sample_target

_CROP_NAMES = frozenset({"Crop", "crop_size", "sample_target", "map_box_back", "preprocess"})

__all__ = [*boxes.__all__, *sorted(_CROP_NAMES)]


def __getattr__(name: str) -> Any:
    if name in _CROP_NAMES:
        from mfv2.geometry import crop

        return getattr(crop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
