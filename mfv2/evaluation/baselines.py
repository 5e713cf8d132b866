"""Reference trackers to score next to MixFormerV2: a static box and OpenCV's classical trackers.

All follow the OpenCV tracker API (``init(frame, box)``, ``update(frame) -> (ok, box)``) that
:func:`mfv2.evaluation.evaluate.run_dataset` drives. ``static`` reports the first box in every frame
(the floor any tracker must clear). The OpenCV ones are used when the installed OpenCV has them:
``mil`` ships with opencv-python; ``kcf`` and ``csrt`` need opencv-contrib-python. When an OpenCV
tracker reports a failure, the previous box is kept (its own output is then undefined).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mfv2.errors import ConfigError

__all__ = ["BASELINES", "StaticBox", "OpenCVTracker", "available_baselines", "baseline_factory"]

#: OpenCV class name of each classical baseline.
_OPENCV = {"mil": "TrackerMIL", "kcf": "TrackerKCF", "csrt": "TrackerCSRT"}
BASELINES = ("static", *_OPENCV)


class StaticBox:
    """The first box in every frame."""

    def init(self, frame: np.ndarray, bbox: Sequence[float]) -> None:
        self._box = tuple(float(v) for v in bbox)

    def update(self, frame: np.ndarray) -> tuple[bool, tuple[float, ...]]:
        return True, self._box


def _opencv_constructor(name: str) -> Callable[[], Any] | None:
    import cv2

    cls = _OPENCV[name]
    for namespace in (cv2, getattr(cv2, "legacy", None)):
        if namespace is None:
            continue
        if hasattr(namespace, cls) and hasattr(getattr(namespace, cls), "create"):
            return getattr(namespace, cls).create
        if hasattr(namespace, f"{cls}_create"):
            return getattr(namespace, f"{cls}_create")
    return None


class OpenCVTracker:
    """An OpenCV tracker that keeps the previous box when it reports a failure."""

    def __init__(self, name: str) -> None:
        create = _opencv_constructor(name) if name in _OPENCV else None
        if create is None:
            raise ConfigError(f"this OpenCV has no {name} tracker; available baselines: {', '.join(available_baselines())}")
        self.name = name
        self._create = create

    def init(self, frame: np.ndarray, bbox: Sequence[float]) -> None:
        self._tracker = self._create()
        self._box = tuple(float(v) for v in bbox)
        self._tracker.init(frame, tuple(int(round(v)) for v in self._box))

    def update(self, frame: np.ndarray) -> tuple[bool, tuple[float, ...]]:
        ok, box = self._tracker.update(frame)
        if ok and box[2] > 0 and box[3] > 0:
            self._box = tuple(float(v) for v in box)
        return bool(ok), self._box


def available_baselines() -> list[str]:
    """The baselines this installation can run (``static`` always)."""
    return ["static", *(n for n in _OPENCV if _opencv_constructor(n) is not None)]


def baseline_factory(name: str) -> Callable[[], StaticBox | OpenCVTracker]:
    """A function returning a fresh ``name`` tracker per sequence.

    Raises:
        ConfigError: an unknown name, or an OpenCV tracker this OpenCV build lacks.
    """
    key = name.lower()
    if key not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    if key == "static":
        return StaticBox
    OpenCVTracker(key)  # fail now, not on the first sequence
    return lambda: OpenCVTracker(key)
