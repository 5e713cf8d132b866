"""MultiTracker: every target of a batched run equals a single-target Tracker on the same frames."""

from __future__ import annotations

import numpy as np
import pytest

from mfv2.config import TrackerConfig
from mfv2.errors import ConfigError, ShapeError, UnknownNameError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FRAMES = 14


@pytest.fixture(scope="module")
def clip():
    from mfv2.synthetic import make_sequence

    seq = make_sequence(num_frames=FRAMES, seed=5, height=120, width=160, backgrounds="procedural")
    return [seq.frame(i) for i in range(FRAMES)], tuple(float(v) for v in seq.boxes[0])


@pytest.fixture(scope="module")
def batch_exports(tmp_path_factory, tiny_dynamic_export):
    """The tiny model (seed 0, as ``tiny_export``) with a fixed batch of 8 and with a dynamic batch, fp32 ONNX + IR."""
    from mfv2.exporters import export

    fixed8 = export(None, tmp_path_factory.mktemp("batch") / "fixed8", variant="tiny", batch=8, openvino=("fp32",), seed=0)
    return {"fixed8": fixed8, "dynamic": tiny_dynamic_export}


@pytest.fixture(scope="module")
def config(tiny_model):
    # Online templates every 3 frames, so that the short clip swaps templates several times per target.
    return TrackerConfig.for_model(tiny_model.config).replace(update_interval=3)


def _boxes(first, n):
    x, y, w, h = first
    return [(x + (17 * i) % 60 - 20, y + (11 * i) % 40 - 15, w * (1 + 0.1 * (i % 3)), h) for i in range(n)]


def _schedule(n):
    """Target i: (added on frame, removed on frame): staggered adds, some removed mid-clip and one added after."""
    plan = {i: (i % 4, FRAMES if i % 3 else 9) for i in range(n)}
    if n > 1:
        plan[n] = (10, FRAMES)  # added after the removals (takes a freed row of a fixed batch)
    return plan


def _run_multi(tracker, frames, boxes, plan):
    ids, got = {}, {i: [] for i in plan}
    for f, frame in enumerate(frames):
        for i, (_, gone) in plan.items():
            if gone == f and i in ids:
                tracker.remove(ids.pop(i))
        results = tracker.update(frame)
        assert set(results) == set(ids.values())
        for i, tid in ids.items():
            got[i].append(results[tid])
        for i, (start, _) in plan.items():
            if start == f:
                ids[i] = tracker.add(frame, boxes[i])
    return got


def _run_single(runner, config, frames, box, start, stop):
    from mfv2.tracking import Tracker

    tracker = Tracker(runner, config)
    tracker.init(frames[start], box)
    out = []
    for f in range(start + 1, stop):
        ok, bbox = tracker.update(frames[f])
        out.append((ok, bbox, tracker.score))
    return out


def _compare(got, want):
    assert len(got) == len(want) > 0
    for (ok, bbox, score), (ok_ref, bbox_ref, score_ref) in zip(got, want):
        assert ok == ok_ref
        np.testing.assert_allclose(bbox, bbox_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(score, score_ref, rtol=0, atol=1e-5)


def _runners(backend, layout, tiny_model, tiny_export, batch_exports):
    from mfv2.runtimes import load_backend

    if backend == "torch":
        return load_backend("torch", tiny_model), load_backend("torch", tiny_model)
    return load_backend(backend, batch_exports[layout]), load_backend(backend, tiny_export)


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("backend,layout", [("torch", "dynamic"), ("onnxruntime", "fixed8"), ("onnxruntime", "dynamic"),
                                            ("openvino", "fixed8"), ("openvino", "dynamic")])
def test_batched_targets_equal_single_trackers(backend, layout, n, clip, config, tiny_model, tiny_export, batch_exports):
    from mfv2.tracking import MultiTracker

    frames, first = clip
    plan = _schedule(n)
    boxes = _boxes(first, max(plan) + 1)
    multi_runner, single_runner = _runners(backend, layout, tiny_model, tiny_export, batch_exports)
    with multi_runner, single_runner:
        tracker = MultiTracker(multi_runner, config)
        got = _run_multi(tracker, frames, boxes, plan)
        if layout == "fixed8" and n == 8:  # all 8 rows were live by frame 3: the target added on frame 10 took a freed one
            assert multi_runner.rows == 8 and len(tracker) == 6 and len(got[n]) == FRAMES - 11
        for i, (start, stop) in plan.items():  # the late target too: its boxes, not only its membership
            _compare(got[i], _run_single(single_runner, config, frames, boxes[i], start, stop))


def test_two_targets_with_the_same_box_are_tracked_apart(clip, config, tiny_model):
    from mfv2.runtimes import load_backend
    from mfv2.tracking import MultiTracker

    frames, first = clip
    with load_backend("torch", tiny_model) as runner, load_backend("torch", tiny_model) as single:
        tracker = MultiTracker(runner, config)
        a, b = tracker.add(frames[0], first), tracker.add(frames[0], first)
        assert a != b
        got = {a: [], b: []}
        for frame in frames[1:]:
            for tid, result in tracker.update(frame).items():
                got[tid].append(result)
        want = _run_single(single, config, frames, first, 0, FRAMES)
        _compare(got[a], want)
        _compare(got[b], want)
        tracker.remove(a)
        assert tracker.targets == [b]
        assert set(tracker.update(frames[0])) == {b}


def test_target_leaving_the_frame(clip, config, tiny_model):
    """A box partly outside is tracked (clipped into the frame, as alone); one wholly outside is refused."""
    from mfv2.runtimes import load_backend
    from mfv2.tracking import MultiTracker

    frames, first = clip
    height, width = frames[0].shape[:2]
    edge = (width - 12.0, -6.0, 30.0, 20.0)  # over the top-right corner
    with load_backend("torch", tiny_model) as runner, load_backend("torch", tiny_model) as single:
        tracker = MultiTracker(runner, config)
        inside, corner = tracker.add(frames[0], first), tracker.add(frames[0], edge)
        with pytest.raises(ConfigError, match="outside the 160x120 frame"):
            tracker.add(frames[0], (width + 5.0, 10.0, 20.0, 20.0))
        assert tracker.targets == [inside, corner] and runner.rows == 2
        got = {inside: [], corner: []}
        for frame in frames[1:]:
            for tid, result in tracker.update(frame).items():
                x, y, w, h = result.bbox
                assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
                got[tid].append(result)
        _compare(got[corner], _run_single(single, config, frames, edge, 0, FRAMES))
        _compare(got[inside], _run_single(single, config, frames, first, 0, FRAMES))


def _exit_clip(frames, first):
    """The clip's frames with a textured square that moves right by 12 px a frame and leaves the frame on frame 4."""
    square = np.indices((24, 24)).sum(axis=0) % 6 < 3
    out = []
    for f, frame in enumerate(frames):
        img = frame.copy()
        x = 110 + 12 * f
        visible = square[:, : max(0, min(24, img.shape[1] - x))]
        img[70:94, x : x + visible.shape[1]][visible] = (250, 250, 250)
        out.append(img)
    return out, (110.0, 70.0, 24.0, 24.0)


def test_target_moving_out_of_the_frame_during_the_clip(clip, config, tiny_model):
    """The exiting target reports lost or a box clipped into the frame; the others are tracked as if alone."""
    from mfv2.runtimes import load_backend
    from mfv2.tracking import MultiTracker

    frames, first = _exit_clip(*clip)
    height, width = frames[0].shape[:2]
    others = _boxes(clip[1], 2)
    with load_backend("torch", tiny_model) as runner, load_backend("torch", tiny_model) as single:
        tracker = MultiTracker(runner, config)
        ids = [tracker.add(frames[0], b) for b in (first, *others)]
        got = {tid: [] for tid in ids}
        for frame in frames[1:]:
            for tid, result in tracker.update(frame).items():
                got[tid].append(result)
        for ok, (x, y, w, h), _score in got[ids[0]]:
            assert not ok or (0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 0 and h > 0)
        for tid, box in zip(ids, (first, *others)):
            _compare(got[tid], _run_single(single, config, frames, box, 0, FRAMES))


def test_remove_unknown_id(config, tiny_model, clip):
    from mfv2.runtimes import load_backend
    from mfv2.tracking import MultiTracker

    frames, first = clip
    with load_backend("torch", tiny_model) as runner:
        tracker = MultiTracker(runner, config)
        with pytest.raises(UnknownNameError, match=r"no target 3 to remove \(live targets: none\)"):
            tracker.remove(3)
        tid = tracker.add(frames[0], first)
        tracker.remove(tid)
        with pytest.raises(KeyError, match=rf"no target {tid} to remove"):  # removed twice
            tracker.remove(tid)
        assert tracker.update(frames[1]) == {} and len(tracker) == 0


def test_capacity_of_a_fixed_batch(batch_exports, clip, config):
    from mfv2.runtimes import load_backend
    from mfv2.tracking import MultiTracker

    frames, first = clip
    with load_backend("onnxruntime", batch_exports["fixed8"]) as runner:
        tracker = MultiTracker(runner, config)
        ids = [tracker.add(frames[0], b) for b in _boxes(first, 8)]
        with pytest.raises(ConfigError, match="8 are live and the export's fixed batch holds 8; remove one first"):
            tracker.add(frames[0], first)
        assert tracker.targets == ids
        tracker.remove(ids[2])
        new = tracker.add(frames[0], first)
        assert new == 8 and len(tracker.update(frames[1])) == 8
    with pytest.raises(ConfigError, match="max_targets 9 exceeds the export's fixed batch 8"):
        MultiTracker(load_backend("onnxruntime", batch_exports["fixed8"]), config, max_targets=9)


def test_dynamic_batch_grows_up_to_max_targets(batch_exports, clip, config):
    from mfv2.runtimes import load_backend
    from mfv2.tracking import MultiTracker

    frames, first = clip
    with MultiTracker(load_backend("openvino", batch_exports["dynamic"]), config, max_targets=2) as tracker:
        tracker._owns_runner = True
        tracker.add(frames[0], first)
        tracker.add(frames[0], first)
        assert tracker.runner.rows == 2
        with pytest.raises(ConfigError, match="2 are live and max_targets holds 2"):
            tracker.add(frames[0], first)
        tracker.remove(0)
        assert tracker.runner.rows == 1 and list(tracker.update(frames[1])) == [1]


def test_frame_size_and_settings_checked(config, tiny_model, clip):
    from mfv2.runtimes import load_backend
    from mfv2.tracking import MultiTracker

    frames, first = clip
    with load_backend("torch", tiny_model) as runner:
        with pytest.raises(ConfigError, match="online_size 1"):
            MultiTracker(runner, config.replace(online_size=2))
        tracker = MultiTracker(runner, config)
        tracker.add(frames[0], first)
        with pytest.raises(ShapeError, match="frame size changed from 160x120 to 80x60"):
            tracker.update(frames[1][:60, :80])
        with pytest.raises(ShapeError, match="frame size changed"):
            tracker.add(frames[1][:60, :80], first)
