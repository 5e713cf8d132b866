"""Frame sampling (max interval, visibility, negatives) and processing (crops put the target where the box says)."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("torch")

from mfv2.datasets import Dataset, TrackingSequence  # noqa: E402
from mfv2.errors import Mfv2Error  # noqa: E402
from mfv2.training.data import (  # noqa: E402
    ProcessingSettings,
    TrackingProcessing,
    TrackingSampler,
    causal_frame_ids,
    crop_around,
    sample_ids,
    trident_frame_ids,
)
from mfv2.training.data.processing import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

RNG = np.random.default_rng


def _Boxes(visible: np.ndarray, box=(60.0, 40.0, 30.0, 20.0), size=(160, 200), is_video=True) -> Dataset:
    """In-memory video: a white rectangle (the target) on grey frames, visible where ``visible`` says."""
    box = np.array(box, np.float64)

    def render(frame_id: int) -> np.ndarray:
        img = np.full(size + (3,), 90, np.uint8)
        x, y, w, h = box.astype(int)
        img[y : y + h, x : x + w] = 255
        img[0, 0] = frame_id  # which frame this is, for the tests
        return img

    def load(name: str) -> TrackingSequence:
        return TrackingSequence(name, "boxes", [], np.tile(box, (len(visible), 1)), visible.copy(), render=render)

    return Dataset("boxes", None, ["boxes-0", "boxes-1"], load, is_video=is_video)


def test_sample_ids_window_and_visibility():
    visible = np.array([True, False, True, True, False])
    rng = RNG(0)
    draws = {sample_ids(visible, rng, 1, 4) for _ in range(50)}
    assert draws == {2, 3}
    assert sample_ids(visible, rng, 4, 5) is None
    assert {sample_ids(visible, rng, force_invisible=True) for _ in range(30)} == {1, 4}
    assert {sample_ids(visible, rng, 0, 2, allow_invisible=True) for _ in range(30)} == {0, 1}


def test_causal_sampler_respects_max_gap_and_visibility():
    rng = RNG(1)
    visible = rng.random(400) > 0.3
    gaps = []
    for _ in range(300):
        earlier, base, search = causal_frame_ids(visible, 20, rng)
        assert visible[[earlier, base, search]].all()
        assert earlier < base < search
        gaps += [base - earlier, search - base]
    # The gap only grows (by 5 per retry) when the first window has no visible frame; with 70 %
    # visible frames that is rare, so nearly every gap is within max_gap and none is far beyond it.
    assert max(gaps) <= 20 + 5 * 3 and np.mean(np.array(gaps) <= 20) > 0.98
    always = np.ones(400, bool)
    for _ in range(200):
        earlier, base, search = causal_frame_ids(always, 20, rng)
        assert 0 < base - earlier <= 20 and 0 < search - base < 20
    assert causal_frame_ids(np.zeros(50, bool), 20, rng) is None


def test_trident_extra_template_near_search():
    rng = RNG(2)
    visible = np.ones(300, bool)
    visible[::7] = False
    for _ in range(200):
        first, extra, search = trident_frame_ids(visible, 30, rng)
        assert visible[[first, extra, search]].all()
        if first >= search:
            assert search <= extra < search + 30
        else:
            assert search - 30 <= extra < search
    picks = [trident_frame_ids(visible, 30, rng, allow_invisible_extra=True)[1] for _ in range(400)]
    assert not visible[picks].all()  # trident_pro may use an invisible extra template


def _no_aug(**kw) -> ProcessingSettings:
    return ProcessingSettings(
        template_size=32, search_size=64, search_factor=4.0, search_scale_jitter=0.0, search_centre_jitter=0.0,
        grayscale_prob=0.0, joint_flip_prob=0.0, brightness_jitter=0.0, **kw,
    )


def _white_extent(img: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(img.min(axis=2) > 200)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_crop_puts_the_drawn_box_where_box_in_crop_says():
    img = np.zeros((300, 400, 3), np.uint8)
    box = np.array([120.0, 90.0, 40.0, 30.0])
    img[90:120, 120:160] = 255
    for factor, size, jitter in ((4.0, 128, (0, 0)), (2.0, 64, (7, -5)), (5.0, 288, (-10, 3))):
        centred_on = box + np.array([*jitter, 0, 0])
        crop = crop_around(img, centred_on, factor, size)
        x, y, w, h = crop.box_in_crop(box)
        x0, y0, x1, y1 = _white_extent(crop.image)
        assert abs(x0 - x) <= 1 and abs(y0 - y) <= 1 and abs(x1 - (x + w)) <= 1 and abs(y1 - (y + h)) <= 1
        side = np.ceil(np.sqrt(40 * 30) * factor)
        assert crop.scale == pytest.approx(size / side)


def test_crop_padding_mask_at_the_border():
    img = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_around(img, np.array([0.0, 40.0, 20.0, 20.0]), 4.0, 80)  # crop from x = -30 to 50
    assert crop.mask[:, :30].all() and not crop.mask[:, 32:].any()
    assert (crop.image[:, :29] == 0).all() and (crop.image[:, 32:] == 200).all()
    assert crop_around(img, np.array([10.0, 10.0, 0.0, 5.0]), 2.0, 32) is None  # empty box


def test_processing_targets_match_the_crops():
    proc = TrackingProcessing(_no_aug(), augment=False)
    frame = _Boxes(np.ones(30, bool)).frames(0, [1])[0]
    box = np.array([60.0, 40.0, 30.0, 20.0])
    out = proc([frame, frame], [box, box], frame, box, RNG(0))
    assert out["template"].shape == (3, 32, 32) and out["search"].shape == (3, 64, 64)
    for key, box_key in (("search", "search_box"), ("template", "template_box")):
        pixels = out[key].transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
        size = pixels.shape[0]
        x0, y0, x1, y1 = _white_extent((pixels * 255).round().astype(np.uint8))
        x, y, w, h = out[box_key] * size
        assert abs(x0 - x) <= 1 and abs(y0 - y) <= 1 and abs(x1 - x - w) <= 1 and abs(y1 - y - h) <= 1
        # no jitter: the target sits in the middle of the crop
        assert (x + w / 2) / size == pytest.approx(0.5, abs=0.02)


def test_joint_flip_moves_box_with_image():
    frame = _Boxes(np.ones(30, bool)).frames(0, [1])[0]
    box = np.array([20.0, 40.0, 30.0, 20.0])
    frame[:] = 90
    frame[40:60, 20:50] = 255
    settings = ProcessingSettings(template_size=32, search_size=64, search_factor=6.0, search_scale_jitter=0.0,
                                  search_centre_jitter=2.0, grayscale_prob=0.0, joint_flip_prob=1.0, brightness_jitter=0.0)
    out = TrackingProcessing(settings, augment=True)([frame, frame], [box, box], frame, box, RNG(3))
    pixels = out["search"].transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    x0, y0, x1, y1 = _white_extent((pixels * 255).round().astype(np.uint8))
    x, y, w, h = out["search_box"] * 64
    assert abs(x0 - x) <= 1 and abs(x1 - x - w) <= 1 and abs(y0 - y) <= 1


def test_processing_rejects_crops_that_are_all_padding():
    proc = TrackingProcessing(_no_aug(), augment=False)
    frame = np.zeros((50, 50, 3), np.uint8)
    far = np.array([500.0, 500.0, 4.0, 4.0])  # a box far outside the frame: nothing but padding
    assert proc([frame, frame], [far, far], frame, far, RNG(0)) is None


def _sampler(ds, **kw) -> TrackingSampler:
    return TrackingSampler([ds], [1.0], TrackingProcessing(_no_aug(), augment=False), samples_per_epoch=16, **kw)


def test_sampler_is_a_pure_function_of_seed_epoch_index():
    ds = _Boxes(np.ones(60, bool))

    def make():
        proc = TrackingProcessing(ProcessingSettings(template_size=32, search_size=64), augment=True)
        return TrackingSampler([ds], [1.0], proc, samples_per_epoch=16, max_gap=10)

    s = make()
    a, b = s[3], make()[3]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    s.set_epoch(1)
    assert any(not np.array_equal(a[k], s[3][k]) for k in ("search", "template", "online_template"))


def test_template_order():
    ds = _Boxes(np.ones(60, bool))
    for order in ("test", "official"):
        s = _sampler(ds, max_gap=10, template_order=order)
        s.processing = lambda t, tb, sf, sb, rng: {"ids": np.array([t[0][0, 0, 0], t[1][0, 0, 0], sf[0, 0, 0]])}
        for i in range(10):
            t, ot, srch = s[i]["ids"]
            assert (t < ot < srch) if order == "test" else (ot < t < srch)


def test_trident_negatives_have_label_zero_and_centre_box():
    visible = np.ones(60, bool)
    visible[40:] = False
    ds = _Boxes(visible, size=(80, 160))
    s = _sampler(ds, mode="trident", max_gap=10, pos_prob=0.5)
    seen = []
    s.processing = lambda t, tb, sf, sb, rng: (seen.append((sf[0, 0, 0], sb)), {})[1]
    labels = [float(s[i]["label"]) for i in range(16)]
    assert 0 < sum(labels) < 16
    for (frame_id, box), label in zip(seen, labels):
        if label == 0:
            assert frame_id >= 40  # an invisible frame of the same video
            np.testing.assert_allclose(box, [70, 35, 20, 10])  # 1/8 of the 160 x 80 frame, centred
        else:
            assert frame_id < 40


def test_sampler_gives_up_with_a_clear_error():
    s = _sampler(_Boxes(np.zeros(60, bool)), max_attempts=5)
    with pytest.raises(Mfv2Error, match="no usable training sample in 5 draws"):
        s[0]
