"""The online tracker loop shared by every backend, and video sources and sinks.

The crop geometry lives in :mod:`mfv2.geometry`; its names are re-exported here.

Needs NumPy and OpenCV only (plus the chosen runtime); never torch unless the torch backend is used.
"""

from __future__ import annotations

from mfv2.geometry.boxes import clip_box
from mfv2.geometry.crop import Crop, crop_size, map_box_back, preprocess, sample_target
from mfv2.tracking.multi import MultiTracker, TargetResult
from mfv2.tracking.tracker import STAGES, Tracker
from mfv2.tracking.video import FrameSource, VideoSink, draw_box

__all__ = [
    "Tracker",
    "MultiTracker",
    "TargetResult",
    "STAGES",
    "Crop",
    "crop_size",
    "sample_target",
    "map_box_back",
    "clip_box",
    "preprocess",
    "FrameSource",
    "VideoSink",
    "draw_box",
]
