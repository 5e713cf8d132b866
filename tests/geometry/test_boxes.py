"""mfv2.geometry.boxes: conversions (round trips, hand cases), the one IoU in each layout and pixel
convention against hand-computed values, NaN / empty / negative boxes, and clipping."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mfv2.errors import ConfigError, ShapeError
from mfv2.geometry import boxes as B

FORMATS = ("xywh", "cxcywh", "xyxy")


def _random_xywh(n: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(-50, 300, (n, 2)), rng.uniform(1, 120, (n, 2))], axis=1)


def _scalar_iou(a: list[float], b: list[float]) -> float:
    """Continuous IoU of two xywh boxes, written out for one pair."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - w * h
    return w * h / union if union > 0 else 0.0


# --- conversions ------------------------------------------------------------------------------------


def test_conversions_hand_case() -> None:
    xywh = np.array([1.0, 2.0, 4.0, 6.0])
    np.testing.assert_array_equal(B.xywh_to_cxcywh(xywh), [3.0, 5.0, 4.0, 6.0])
    np.testing.assert_array_equal(B.xywh_to_xyxy(xywh), [1.0, 2.0, 5.0, 8.0])
    np.testing.assert_array_equal(B.cxcywh_to_xyxy([3.0, 5.0, 4.0, 6.0]), [1.0, 2.0, 5.0, 8.0])
    np.testing.assert_array_equal(B.cxcywh_to_xywh([3.0, 5.0, 4.0, 6.0]), xywh)
    np.testing.assert_array_equal(B.xyxy_to_xywh([1.0, 2.0, 5.0, 8.0]), xywh)
    np.testing.assert_array_equal(B.xyxy_to_cxcywh([1.0, 2.0, 5.0, 8.0]), [3.0, 5.0, 4.0, 6.0])
    # An inverted corner box keeps its negative size (callers decide what that means).
    np.testing.assert_array_equal(B.xyxy_to_xywh([5.0, 2.0, 1.0, 8.0]), [5.0, 2.0, -4.0, 6.0])


@pytest.mark.parametrize("src", FORMATS)
@pytest.mark.parametrize("dst", FORMATS)
def test_conversions_round_trip(src: str, dst: str) -> None:
    boxes = B.convert_boxes(_random_xywh(), "xywh", src)  # type: ignore[arg-type]
    there = B.convert_boxes(boxes, src, dst)  # type: ignore[arg-type]
    back = B.convert_boxes(there, dst, src)  # type: ignore[arg-type]
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-12)
    assert there.dtype == np.float64 and there.shape == boxes.shape


def test_conversions_keep_leading_dimensions() -> None:
    boxes = _random_xywh(12).reshape(3, 4, 4)
    out = B.xywh_to_cxcywh(boxes)
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out.reshape(-1, 4), B.xywh_to_cxcywh(boxes.reshape(-1, 4)))


def test_conversions_reject_bad_shapes_and_formats() -> None:
    with pytest.raises(ShapeError, match=r"\(\.\.\., 4\)"):
        B.xywh_to_xyxy(np.zeros((2, 3)))
    with pytest.raises(ConfigError, match="unknown box format 'xywhn'.*xywh, cxcywh, xyxy"):
        B.convert_boxes(np.zeros((1, 4)), "xywhn", "xyxy")  # type: ignore[arg-type]


# --- IoU ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["continuous", "inclusive"])
def test_iou_hand_cases_xywh(convention: str) -> None:
    a = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [3, 4, 5, 6]]
    b = [[5, 5, 10, 10], [2, 2, 4, 4], [10, 0, 10, 10], [0, 0, 10, 10], [0, 5, 10, 10], [3, 4, 5, 6]]
    # overlap 5x5 of 175; 4x4 inside 10x10; touching at x = 10; identical; half shifted down
    want = [25 / 175, 16 / 100, 0.0, 1.0, 50 / 150, 1.0]
    got = B.box_iou(a, b, convention=convention)  # type: ignore[arg-type]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert got.dtype == np.float64 and got.shape == (6,)


def test_iou_inclusive_and_continuous_agree_and_match_a_scalar_reference() -> None:
    a, b = _random_xywh(seed=1), _random_xywh(seed=2)
    b[:50] = a[:50] + np.array([3.0, -2.0, 1.0, 0.5])  # plenty of overlapping pairs
    want = [_scalar_iou(x, y) for x, y in zip(a.tolist(), b.tolist())]
    np.testing.assert_allclose(B.iou_continuous(a, b), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(B.iou_inclusive(a, b), want, rtol=1e-12, atol=1e-15)
    assert (B.iou_continuous(a, b) > 0).sum() >= 50


def test_iou_cxcywh_normalised_hand_case() -> None:
    ref = np.array([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]], dtype=np.float32)
    moved = np.array([[0.5, 0.5, 0.2, 0.2], [0.55, 0.5, 0.2, 0.2]], dtype=np.float32)
    # second row: overlap 0.15 x 0.2 = 0.03 of union 0.04 + 0.04 - 0.03 = 0.05
    np.testing.assert_allclose(B.box_iou(ref, moved, fmt="cxcywh"), [1.0, 0.6], rtol=1e-6)


def test_iou_xyxy_hand_case() -> None:
    np.testing.assert_allclose(B.box_iou([0, 0, 2, 2], [1, 1, 3, 3], fmt="xyxy"), [1 / 7])


@pytest.mark.parametrize("fmt", FORMATS)
def test_iou_is_the_same_in_every_layout(fmt: str) -> None:
    a, b = _random_xywh(seed=3), _random_xywh(seed=3) + 7.0
    want = B.box_iou(a, b)
    got = B.box_iou(B.convert_boxes(a, "xywh", fmt), B.convert_boxes(b, "xywh", fmt), fmt=fmt)  # type: ignore[arg-type]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_iou_nan_empty_and_negative_boxes() -> None:
    a = np.array([[np.nan, 0, 10, 10], [0, 0, 0, 0], [0, 0, 0, 5], [5, 5, -4, -4], [5, 5, -4, 4], [0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [0, 0, 0, 0], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, np.nan, 1]])
    with np.errstate(invalid="ignore"):
        for convention in ("continuous", "inclusive"):
            got = B.box_iou(a, b, convention=convention)  # type: ignore[arg-type]
            # NaN stays visible; an empty union (two empty boxes, even equal ones) is 0; an empty or
            # negative box overlaps nothing.
            np.testing.assert_array_equal(np.isnan(got), [True, False, False, False, False, True])
            np.testing.assert_array_equal(got[1:5], [0.0, 0.0, 0.0, 0.0])
        # callers that count a NaN box as a miss (parity gates, bench fidelity, GOT-10k AO) do this
        np.testing.assert_array_equal(np.nan_to_num(B.box_iou(a, b), nan=0.0), np.zeros(6))


def test_iou_stays_in_unit_interval_for_rounded_equal_boxes() -> None:
    # (0.1 + 0.2) - 0.1 > 0.2 in floating point: the raw ratio would exceed 1 by an ulp.
    box = [[0.1, 0.1, 0.2, 0.2]]
    assert B.box_iou(box, box)[0] == 1.0


def test_iou_single_boxes_and_shape_errors() -> None:
    assert B.box_iou([0, 0, 10, 10], [5, 0, 10, 10]).tolist() == [50 / 150]
    with pytest.raises(ShapeError, match=r"boxes1: expected \(N, 4\) xywh boxes"):
        B.box_iou(np.ones((3, 5)), np.ones((3, 5)))
    with pytest.raises(ShapeError, match="differ in length: 2 vs 3"):
        B.box_iou(np.ones((2, 4)), np.ones((3, 4)))
    with pytest.raises(ConfigError, match="pixel convention"):
        B.box_iou(np.ones((1, 4)), np.ones((1, 4)), convention="area")  # type: ignore[arg-type]
    assert B.box_iou(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)


def test_iou_continuous_with_bound_clips_like_got10k() -> None:
    pred = np.array([[-10, 0, 20, 10], [15, 15, 10, 10]], float)
    gt = np.array([[0, 0, 10, 10], [15, 15, 5, 5]], float)
    np.testing.assert_allclose(B.iou_continuous(pred, gt), [0.5, 0.25])  # 100 of 200; 25 of 100
    # clipped to 20x20: (-10, 0, 20, 10) -> (0, 0, 20, 10) (shifted, not cut); (15, 15, 10, 10) -> 5x5
    np.testing.assert_array_equal(B.clip_boxes_got10k(pred, (20, 20)), [[0, 0, 20, 10], [15, 15, 5, 5]])
    np.testing.assert_allclose(B.iou_continuous(pred, gt, bound=(20, 20)), [0.5, 1.0])


def test_intersection_and_cut_hand_cases() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4], [np.nan] * 4], float)
    b = np.array([[5, 5, 10, 10], [10, 0, 5, 5], [1, 1, 2, 2], [0, 0, 1, 1]], float)
    got = B.box_intersection(a, b)
    np.testing.assert_array_equal(got[:3], [25, 0, 4])  # overlap 5x5; touching edges; contained
    assert np.isnan(got[3])
    rows = _random_xywh(50)
    inter = B.box_intersection(rows, rows[::-1])
    union = rows[:, 2] * rows[:, 3] + rows[::-1, 2] * rows[::-1, 3] - inter
    np.testing.assert_allclose(inter / union, B.box_iou(rows, rows[::-1]))
    # cut, not shifted (unlike got10k's clipping): the part inside a 20x20 image
    cut = B.cut_boxes([[-10, 0, 20, 10], [15, 15, 10, 10], [30, 30, 5, 5], [2, 3, 4, 5]], 20, 20)
    np.testing.assert_array_equal(cut, [[0, 0, 10, 10], [15, 15, 5, 5], [20, 20, 0, 0], [2, 3, 4, 5]])


# --- clipping to the frame (the tracker's) ----------------------------------------------------------


@pytest.mark.parametrize(
    "box, want",
    [
        ((20, 30, 40, 50), (20, 30, 40, 50)),  # inside: unchanged
        ((-5, 10, 20, 20), (0, 10, 15, 20)),  # left edge cut
        ((95, 95, 20, 20), (90, 90, 10, 10)),  # corner beyond the margin, sides at least 10
        ((50, 50, -4, -4), (50, 50, 10, 10)),  # negative size from an unclamped head
        ((-30, -30, 20, 20), (0, 0, 10, 10)),  # fully outside top-left
        ((0, 0, 300, 300), (0, 0, 100, 100)),  # larger than the frame
    ],
)
def test_clip_box_margin_cases(box: tuple[float, ...], want: tuple[float, ...]) -> None:
    assert B.clip_box(box, 100, 100, margin=10) == pytest.approx(want)


# --- the package ----------------------------------------------------------------------------------


def test_tracking_re_exports_the_geometry_names() -> None:
    import mfv2.geometry as G
    import mfv2.tracking as T

    for name in ("Crop", "crop_size", "sample_target", "map_box_back", "clip_box", "preprocess"):
        assert getattr(T, name) is getattr(G, name), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        G.nope  # noqa: B018


def test_boxes_import_only_the_floor() -> None:
    code = (
        "import json, sys, mfv2.geometry.boxes; "
        "print(json.dumps([sorted(m for m in sys.modules if m.startswith('mfv2')), 'cv2' in sys.modules, 'torch' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules, cv2_loaded, torch_loaded = json.loads(out)
    # what `import mfv2` itself loads, and nothing above the floor; crop (OpenCV) only on first use
    assert set(modules) - {"mfv2", "mfv2.geometry", "mfv2.geometry.boxes"} <= {"mfv2.errors", "mfv2.config", "mfv2.fileio", "mfv2.registry"}
    assert not cv2_loaded and not torch_loaded
