"""mfv2 as a GOT-10k-toolkit tracker (``got10k.trackers.Tracker``), for the toolkit's experiments.

    from got10k.experiments import ExperimentGOT10k
    from mfv2.integrations.got10k import GOT10kTracker

    tracker = GOT10kTracker(backend="openvino", model="exports/S")
    experiment = ExperimentGOT10k("data/GOT-10k", subset="val")   # a local copy: no download
    experiment.run(tracker)
    experiment.report([tracker.name])

The toolkit hands over PIL images (RGB; grayscale and RGBA are converted too) and the first box
``[x, y, w, h]``; :meth:`GOT10kTracker.update` returns a ``(4,)`` array ``[x, y, w, h]``. Any object
with the OpenCV tracker API (an :class:`mfv2.tracking.Tracker`, a baseline) can be wrapped instead.
Importing this module needs ``got10k`` (``pip install got10k``; it is not an mfv2 runtime dependency).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from mfv2.errors import BackendUnavailableError, ShapeError

try:
    from got10k.trackers import Tracker as _ToolkitTracker
except ImportError as e:  # pragma: no cover - exercised only where got10k is missing
    raise BackendUnavailableError("the GOT-10k integration needs the got10k toolkit: pip install got10k") from e

__all__ = ["GOT10kTracker", "pil_to_bgr"]


def pil_to_bgr(image: Any) -> np.ndarray:
    """A PIL image (RGB, L, RGBA) or an RGB array as OpenCV's ``(H, W, 3)`` uint8 BGR."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ShapeError(f"expected an 8-bit image, got dtype {arr.dtype}")
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGR)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    raise ShapeError(f"expected an RGB, RGBA or grayscale image, got shape {arr.shape}")


class GOT10kTracker(_ToolkitTracker):  # type: ignore[misc]
    """An mfv2 tracker behind the GOT-10k toolkit's ``Tracker`` interface.

    Args:
        tracker: an object with ``init(frame, box)`` / ``update(frame) -> (ok, box)`` on BGR frames;
            ``None`` builds an :class:`mfv2.tracking.Tracker` from the options below.
        name: the result folder name the toolkit uses.
        backend, model, checkpoint, precision, graph, threads, preset: as ``mfv2 track`` (no model:
            the shipped demo model; ``preset`` defaults to the GOT-10k settings).
        deterministic: tell the toolkit one repetition is enough (true for mfv2 on one machine).
    """

    def __init__(self, tracker: Any = None, *, name: str = "mfv2", backend: str = "onnxruntime",
                 model: str | None = None, checkpoint: str | None = None, precision: str = "fp32",
                 graph: str = "auto", threads: int | None = None, preset: str = "got10k",
                 deterministic: bool = True) -> None:
        super().__init__(name=name, is_deterministic=deterministic)
        if tracker is None:
            from mfv2.tracking import Tracker

            if model is None and checkpoint is None:
                from mfv2.assets import demo_model_for

                checkpoint = str(demo_model_for("got10k", "give model= (an export directory) or checkpoint="))
            tracker = Tracker.create(backend, model=model, checkpoint=checkpoint, config=preset,
                                     precision=precision, graph=graph, threads=threads)  # type: ignore[arg-type]
        self.tracker = tracker

    def init(self, image: Any, box: Sequence[float]) -> None:
        """Start on the first frame from ``box`` ``[x, y, w, h]``."""
        self.tracker.init(pil_to_bgr(image), tuple(float(v) for v in box))

    def update(self, image: Any) -> np.ndarray:
        """The box ``[x, y, w, h]`` (float64) in ``image``."""
        _, box = self.tracker.update(pil_to_bgr(image))
        return np.asarray(box, dtype=np.float64)
