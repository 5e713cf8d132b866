"""Same-input comparison of two paths: record the network inputs one tracker feeds, replay them on another.

Two trackers that run on their own (closed loop) drift apart once a single frame differs: the search
crop's corner is rounded to a whole pixel, so any difference, int8's or a perturbation of 1e-5, moves a
later crop by a pixel and the tracks separate (``benchmarks/cpu_profile/calibration/``). To judge a
low-precision path itself, :func:`record_inputs` runs the reference path's tracker loop once and keeps
every search crop and template it fed; :func:`replay_inputs` feeds exactly those to another path and
maps its predictions back with the reference's geometry, so the two box sequences differ only by what
the two networks compute on the same inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfv2.config import TrackerConfig
from mfv2.geometry.boxes import Box, clip_box
from mfv2.geometry.crop import map_box_back
from mfv2.tracking.tracker import TargetState, as_bgr, check_box

__all__ = ["RecordedInputs", "record_inputs", "replay_inputs"]


@dataclass
class RecordedInputs:
    """What a tracker fed its network on a clip, frame by frame (frames 1.. of the clip).

    ``searches[i]`` is the normalised search crop of frame ``i + 1``, cut around ``previous[i]`` (the
    box before that frame) at ``resize_factor[i]`` from the whole-pixel square ``windows[i]`` (x1, y1,
    side); ``templates`` maps a frame index to the templates set after that frame (0: at init).
    ``boxes`` are the recording path's own boxes.
    """

    size: tuple[int, int]
    search_size: int
    clip_margin: float
    searches: list[np.ndarray] = field(default_factory=list)
    previous: list[Box] = field(default_factory=list)
    resize_factor: list[float] = field(default_factory=list)
    windows: list[tuple[int, int, int]] = field(default_factory=list)
    templates: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    boxes: list[Box] = field(default_factory=list)


def record_inputs(runner: Any, clip: Sequence[np.ndarray], init_box: Sequence[float],
                  config: TrackerConfig | None = None) -> RecordedInputs:  # fmt: skip
    """Track ``clip`` from ``init_box`` with ``runner`` and keep its inputs; ``config`` as for
    :class:`~mfv2.tracking.Tracker` (default: the model's recorded settings), so the boxes are that tracker's."""
    state = TargetState.from_manifest(config or runner.manifest.tracker, runner.manifest)
    first = as_bgr(clip[0])
    state.init(first, check_box(init_box, first.shape[1], first.shape[0]))
    rec = RecordedInputs(size=state.size, search_size=state.search_size, clip_margin=state.config.clip_margin)
    rec.templates[0] = (state.template, state.online)
    runner.set_templates(state.template, state.online)
    for i in range(1, len(clip)):
        image = as_bgr(clip[i])
        crop = state.crop(image)
        search = state.normalize(crop.image)
        rec.searches.append(search)
        rec.previous.append(state.box)
        rec.resize_factor.append(float(crop.resize_factor))
        rec.windows.append(crop.window)
        boxes, scores = runner.predict(search)
        state.post(crop, boxes[0], float(scores[0]), runner.backend)
        rec.boxes.append(state.box)
        if state.update_templates(image):
            rec.templates[i] = (state.template, state.online)
            runner.set_templates(state.template, state.online)
    return rec


def replay_inputs(runner: Any, rec: RecordedInputs) -> np.ndarray:
    """``runner``'s boxes (N - 1, 4) for the recorded inputs, mapped back with the recording's geometry."""
    height, width = rec.size
    out = []
    for i, search in enumerate(rec.searches):
        if i in rec.templates:
            runner.set_templates(*rec.templates[i])
        boxes, _ = runner.predict(search)
        box = map_box_back(boxes[0], rec.previous[i], rec.resize_factor[i], rec.search_size)
        out.append(clip_box(box, height, width, rec.clip_margin))
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)
