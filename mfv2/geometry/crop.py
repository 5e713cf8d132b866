"""Crop geometry of the official MixFormerV2 tracker and its inverse, in NumPy and OpenCV only.

``sample_target`` cuts a square of side ``ceil(sqrt(w*h) * factor)`` around the box centre (corner by
Python's ``round``), pads with zeros and resizes bilinearly; ``map_box_back`` takes a prediction in
the resized crop back to frame pixels around the previous centre, and
:func:`~mfv2.geometry.boxes.clip_box` keeps the result inside the frame with a margin (shrunk to the
frame on frames smaller than it). Every backend's tracker loop uses these same functions.

The official padding has a quirk kept here for parity: when the window passes the right (bottom)
edge, the last image column (row) is replaced by padding too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from mfv2.errors import ShapeError
from mfv2.geometry.boxes import Box

__all__ = ["Crop", "crop_size", "sample_target", "map_box_back", "preprocess", "Normalize"]


class Crop(NamedTuple):
    """A resized crop and where it came from.

    ``image`` is (S, S, 3) uint8 in the frame's channel order; ``resize_factor`` = S / side;
    ``window`` = (x1, y1, side) in frame pixels, the square that was cut (it may extend past the frame).
    """

    image: np.ndarray
    resize_factor: float
    window: tuple[int, int, int]


def crop_size(box_xywh: Sequence[float], factor: float) -> int:
    """Side of the square crop around ``box_xywh``: ``ceil(sqrt(w * h) * factor)``."""
    _, _, w, h = box_xywh
    return math.ceil(math.sqrt(w * h) * factor)


def sample_target(frame: np.ndarray, box_xywh: Sequence[float], factor: float, output_size: int) -> Crop:
    """Cut the ``factor``-times context square around a box, zero-pad it and resize it.

    Args:
        frame: (H, W, C) uint8 image.
        box_xywh: target box, top-left x, y, width, height in pixels.
        factor: side of the crop relative to ``sqrt(w * h)``.
        output_size: side S of the returned crop.

    Returns:
        A :class:`Crop`; ``image`` is (S, S, C) uint8.

    Raises:
        ShapeError: for a box that is not finite or has no area.
    """
    x, y, w, h = (float(v) for v in box_xywh)
    if not (w > 0 and h > 0 and math.isfinite(x + y + w * h * factor)):
        raise ShapeError(f"cannot crop around box {x:g},{y:g},{w:g},{h:g}: it must be finite with width and height > 0")
    side = crop_size((x, y, w, h), factor)
    x1 = round(x + 0.5 * w - 0.5 * side)
    y1 = round(y + 0.5 * h - 0.5 * side)
    H, W = frame.shape[:2]
    # Visible part of the window. The official right/bottom padding is one pixel wider than needed:
    # a window reaching the right (bottom) edge loses column W-1 (row H-1) to padding.
    vx1, vy1 = max(x1, 0), max(y1, 0)
    vx2 = x1 + side if x1 + side < W else W - 1
    vy2 = y1 + side if y1 + side < H else H - 1
    if vx1 == x1 and vy1 == y1 and vx2 == x1 + side and vy2 == y1 + side:
        patch = frame[y1 : y1 + side, x1 : x1 + side]
    else:
        patch = np.zeros((side, side) + frame.shape[2:], dtype=frame.dtype)
        if vx2 > vx1 and vy2 > vy1:
            patch[vy1 - y1 : vy2 - y1, vx1 - x1 : vx2 - x1] = frame[vy1:vy2, vx1:vx2]
    image = cv2.resize(patch, (output_size, output_size), interpolation=cv2.INTER_LINEAR)
    return Crop(image, output_size / side, (x1, y1, side))


def map_box_back(pred_cxcywh: Sequence[float], prev_box_xywh: Sequence[float], resize_factor: float, search_size: int) -> Box:
    """A prediction normalised to the search crop -> ``(x, y, w, h)`` in frame pixels.

    As the official tracker does: scale by ``S / resize_factor`` and place the crop centre on the
    previous box centre (the sub-pixel offset of the rounded crop corner is ignored).
    """
    scale = search_size / resize_factor
    cx, cy, w, h = (float(v) * scale for v in pred_cxcywh)
    px, py, pw, ph = prev_box_xywh
    half = 0.5 * scale
    cx += px + 0.5 * pw - half
    cy += py + 0.5 * ph - half
    return (cx - 0.5 * w, cy - 0.5 * h, w, h)


class Normalize:
    """(S, S, 3) uint8 BGR -> (1, 3, S, S) float32 RGB, ``(x / 255 - mean) / std`` per channel.

    The per-channel scale and offset are computed once here, not per frame; :func:`preprocess` is
    the same transform as a one-off call.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        std32 = np.asarray(std, dtype=np.float32)
        self.scale = (1.0 / (255.0 * std32)).reshape(3, 1, 1)
        self.offset = (np.asarray(mean, dtype=np.float32) / std32).reshape(3, 1, 1)

    def __call__(self, crop_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The normalised crop; with ``out`` ((3, S, S) float32, e.g. one row of a batch) written into it."""
        # (S, S, 3) BGR -> (3, S, S) RGB
        rgb = crop_bgr[:, :, ::-1].transpose(2, 0, 1)
        if out is None:
            out = rgb.astype(np.float32, order="C")
        else:
            np.copyto(out, rgb, casting="unsafe")
        out *= self.scale
        out -= self.offset
        return out[None] if out.ndim == 3 else out


def preprocess(crop_bgr: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(S, S, 3) uint8 BGR -> (1, 3, S, S) float32 RGB, ``(x / 255 - mean) / std`` per channel."""
    return Normalize(mean, std)(crop_bgr)
