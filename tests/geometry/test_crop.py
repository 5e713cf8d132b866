"""mfv2.geometry.crop against hand-computed cases and a line-by-line transcription of the official code."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from mfv2.artifacts import IMAGENET_MEAN, IMAGENET_STD
from mfv2.errors import ShapeError
from mfv2.geometry.crop import crop_size, map_box_back, preprocess, sample_target


def _frame(h: int = 100, w: int = 100) -> np.ndarray:
    """A frame whose pixel (y, x) holds (y, x, (x + y) % 256), so every crop shows where it came from."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy, xx, (xx + yy) % 256], axis=-1).astype(np.uint8)


def _official_sample_target(im: np.ndarray, box, factor: float, out: int):
    """The official sample_target, transcribed (padding via copyMakeBorder, right/bottom pad x2 - W + 1)."""
    x, y, w, h = box
    crop_sz = math.ceil(math.sqrt(w * h) * factor)
    x1 = round(x + 0.5 * w - crop_sz * 0.5)
    x2 = x1 + crop_sz
    y1 = round(y + 0.5 * h - crop_sz * 0.5)
    y2 = y1 + crop_sz
    x1_pad, y1_pad = max(0, -x1), max(0, -y1)
    x2_pad, y2_pad = max(x2 - im.shape[1] + 1, 0), max(y2 - im.shape[0] + 1, 0)
    crop = im[y1 + y1_pad : y2 - y2_pad, x1 + x1_pad : x2 - x2_pad, :]
    padded = cv2.copyMakeBorder(crop, y1_pad, y2_pad, x1_pad, x2_pad, cv2.BORDER_CONSTANT)
    return cv2.resize(padded, (out, out)), out / crop_sz


def test_crop_inside_frame_is_a_plain_window():
    frame = _frame()
    crop = sample_target(frame, (40, 40, 10, 10), 2.0, 20)  # side ceil(10 * 2) = 20, corner round(45 - 10) = 35
    assert crop.window == (35, 35, 20)
    assert crop.resize_factor == 1.0
    np.testing.assert_array_equal(crop.image, frame[35:55, 35:55])


def test_crop_pads_left_and_top_with_zeros():
    frame = _frame()
    crop = sample_target(frame, (0, 0, 10, 10), 4.0, 40)  # side 40, corner round(5 - 20) = -15
    assert crop.window == (-15, -15, 40)
    assert not crop.image[:15].any() and not crop.image[:, :15].any()
    np.testing.assert_array_equal(crop.image[15:, 15:], frame[0:25, 0:25])


def test_crop_right_bottom_padding_drops_the_last_column_and_row_as_the_official_code():
    frame = _frame()
    crop = sample_target(frame, (90, 90, 10, 10), 2.0, 20)  # window 85..104; official pads x2 - W + 1 = 6 px
    img = crop.image
    np.testing.assert_array_equal(img[:14, :14], frame[85:99, 85:99])
    assert not img[14:].any() and not img[:, 14:].any()  # frame column/row 99 is padding, not image


def test_crop_ending_exactly_at_the_border_still_loses_the_last_column():
    frame = _frame()
    crop = sample_target(frame, (85, 10, 10, 10), 1.5, 15)  # side 15, x1 = round(90 - 7.5) = 82 (banker's), x2 = 97
    assert crop.window == (82, 8, 15)
    np.testing.assert_array_equal(crop.image, frame[8:23, 82:97])
    crop = sample_target(frame, (90, 10, 10, 10), 1.0, 10)  # x1 = 90, x2 = 100 = W: official pads one column
    np.testing.assert_array_equal(crop.image[:, :9], frame[10:20, 90:99])
    assert not crop.image[:, 9].any()


@pytest.mark.parametrize("x, corner", [(2.5, 2), (3.5, 4), (4.5, 4)])  # Python's round: half to even
def test_crop_corner_uses_bankers_rounding(x, corner):
    # centre x + 5, side 10 -> corner round(x) exactly on .5
    crop = sample_target(_frame(), (x, 20.0, 10.0, 10.0), 1.0, 10)
    assert crop.window[0] == corner


@pytest.mark.parametrize(
    "box, factor, out",
    [
        ((40.3, 20.7, 17.2, 33.9), 4.5, 64),
        ((-8.0, 70.0, 30.0, 40.0), 2.0, 32),
        ((80.5, 85.2, 25.0, 25.0), 5.0, 288 // 4),
        ((0.2, 0.3, 0.4, 0.6), 2.0, 32),  # a tiny box: side ceil(0.49 * 2) = 1
        ((10.0, 10.0, 200.0, 150.0), 4.5, 64),  # crop far larger than the frame
    ],
)
def test_crop_matches_official_transcription(box, factor, out):
    frame = _frame(97, 131)
    ref, ref_factor = _official_sample_target(frame, box, factor, out)
    crop = sample_target(frame, box, factor, out)
    np.testing.assert_array_equal(crop.image, ref)
    assert crop.resize_factor == pytest.approx(ref_factor)
    assert crop.window[2] == crop_size(box, factor)


@pytest.mark.parametrize("box", [(10, 10, 0, 5), (10, 10, 5, -1), (10, float("nan"), 5, 5), (10, 10, float("inf"), 5)])
def test_crop_rejects_boxes_without_area(box):
    with pytest.raises(ShapeError, match="cannot crop"):
        sample_target(_frame(), box, 2.0, 16)


def test_crop_of_a_sub_pixel_box_is_one_pixel():
    crop = sample_target(_frame(), (10.2, 20.7, 0.01, 0.02), 2.0, 8)  # side ceil(0.028) = 1
    assert crop.window == (10, 20, 1)  # corners round(9.705), round(20.21)
    np.testing.assert_array_equal(crop.image, np.broadcast_to(_frame()[20, 10], (8, 8, 3)))


def test_map_box_back_hand_case():
    # search 64 px from a 128 px crop (factor 0.5): a centred box of a quarter side is 32 px,
    # centred on the previous centre (110, 110).
    box = map_box_back((0.5, 0.5, 0.25, 0.25), (100, 100, 20, 20), 0.5, 64)
    assert box == pytest.approx((94.0, 94.0, 32.0, 32.0))
    box = map_box_back((0.75, 0.25, 0.5, 0.125), (0, 0, 40, 20), 2.0, 64)  # crop 32 px around (20, 10)
    assert box == pytest.approx((20 + 8 - 8, 10 - 8 - 2, 16.0, 4.0))


def test_map_box_back_then_crop_round_trip():
    """A box predicted where the search crop shows it maps back to where it is in the frame."""
    prev, factor, size = (50.0, 40.0, 20.0, 30.0), 4.0, 128
    crop = sample_target(_frame(200, 200), prev, factor, size)
    x1, y1, side = crop.window
    target = (61.0, 47.0, 12.0, 18.0)
    # normalised cxcywh of target inside the crop; the crop corner is rounded, map_box_back ignores that offset
    centre_offset = (x1 + side / 2 - (prev[0] + prev[2] / 2), y1 + side / 2 - (prev[1] + prev[3] / 2))
    pred = [(target[0] + target[2] / 2 - x1 - centre_offset[0]) / side, (target[1] + target[3] / 2 - y1 - centre_offset[1]) / side,
            target[2] / side, target[3] / side]
    assert map_box_back(pred, prev, crop.resize_factor, size) == pytest.approx(target)


def test_preprocess_is_rgb_imagenet_normalised():
    crop = np.zeros((4, 4, 3), np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 10, 128, 250  # B, G, R
    x = preprocess(crop, IMAGENET_MEAN, IMAGENET_STD)
    assert x.shape == (1, 3, 4, 4) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    for channel, value in enumerate((250, 128, 10)):  # R, G, B
        want = (value / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        np.testing.assert_allclose(x[0, channel], want, rtol=1e-6)
