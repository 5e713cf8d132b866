"""Same-input comparison: the inputs one tracker fed, replayed on another path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mfv2.geometry.boxes import iou_continuous
from mfv2.runtimes import load_backend
from mfv2.tracking import Tracker
from mfv2.tracking.replay import record_inputs, replay_inputs
from tests.tracking.test_tracker import model_files

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return model_files(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def clip():
    from mfv2.synthetic import make_sequence

    seq = make_sequence(num_frames=60, seed=5, height=360, width=480, backgrounds="procedural")
    return [seq.frame(i) for i in range(len(seq))], tuple(float(v) for v in seq.boxes[0])


class ShiftedBoxes:
    """A path that computes the same network plus a small seeded error on every box."""

    def __init__(self, runner, sigma: float) -> None:
        self._runner, self._rng, self._sigma = runner, np.random.default_rng(0), sigma
        self.manifest, self.backend, self.online_templates = runner.manifest, runner.backend, runner.online_templates

    def set_templates(self, *args, **kwargs) -> None:
        self._runner.set_templates(*args, **kwargs)

    def predict(self, search):
        boxes, scores = self._runner.predict(search)
        return boxes + self._rng.normal(0.0, self._sigma, boxes.shape).astype(boxes.dtype), scores


def test_the_recording_is_the_tracker_and_replays_to_its_own_boxes(export, clip) -> None:
    frames, box = clip
    with load_backend("onnxruntime", export, threads=1) as runner:
        # online-template updates every 10 frames, so the replay must switch templates where the tracker did
        config = dataclasses.replace(runner.manifest.tracker, update_interval=10, update_threshold=0.0)
        rec = record_inputs(runner, frames, box, config)
        tracker = Tracker(runner, config)
        tracker.init(frames[0], box)
        own = np.asarray([tracker.update(f)[1] for f in frames[1:]])
        np.testing.assert_array_equal(np.asarray(rec.boxes), own)
        assert len(rec.searches) == len(rec.windows) == len(frames) - 1 and sorted(rec.templates) == [0, 10, 20, 30, 40, 50]
        assert all(len(w) == 3 and all(isinstance(v, int) for v in w) for w in rec.windows)  # whole-pixel squares
        assert not np.array_equal(rec.templates[0][1], rec.templates[10][1])  # the online template changed
        np.testing.assert_array_equal(replay_inputs(runner, rec), own)


def test_a_small_error_parts_the_closed_loop_tracks_but_not_the_replayed_boxes(export, clip) -> None:
    frames, box = clip
    with load_backend("onnxruntime", export, threads=1) as runner:
        rec = record_inputs(runner, frames, box)
        shifted = ShiftedBoxes(runner, 1e-3)
        tracker = Tracker(shifted)
        tracker.init(frames[0], box)
        closed = np.asarray([tracker.update(f)[1] for f in frames[1:]])
        same = replay_inputs(shifted, rec)
    ref = np.asarray(rec.boxes)
    assert iou_continuous(same, ref).mean() > 0.97
    assert iou_continuous(same, ref).mean() > iou_continuous(closed, ref).mean()
    assert not np.allclose(same, ref)  # the error is there, on each box alone
