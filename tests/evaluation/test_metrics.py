"""OPE metrics against hand-computed cases and a deliberately naive re-derivation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mfv2.evaluation import metrics as M
from mfv2.errors import ConfigError, ShapeError

# ----------------------------------------------------------------- hand-computed cases


def test_thresholds_are_exact() -> None:
    assert len(M.IOU_THRESHOLDS) == 21 and M.IOU_THRESHOLDS[15] == 0.75
    assert M.IOU_THRESHOLDS[10] == 0.5 and M.IOU_THRESHOLDS[-1] == 1.0
    assert [float(t) for t in M.IOU_THRESHOLDS] == [k / 20 for k in range(21)]
    assert M.PIXEL_THRESHOLDS[20] == 20.0 and len(M.PIXEL_THRESHOLDS) == 51
    assert M.NORM_THRESHOLDS[20] == 0.2 and M.NORM_THRESHOLDS[-1] == 0.5


def test_iou_by_hand_both_conventions() -> None:
    a = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4], [0, 0, 10, 10], [3, 3, 2, 2]]
    b = [[5, 5, 10, 10], [10, 0, 10, 10], [0, 0, 4, 3], [0, 0, 10, 10], [0, 0, 10, 10]]
    # 5x5 overlap of two 100-px boxes: 25 / 175; touching boxes: 0; 12 / 16; identical;
    # contained 2x2 in 10x10: 4 / 100.
    want = [25 / 175, 0.0, 0.75, 1.0, 0.04]
    np.testing.assert_allclose(M.iou_inclusive(a, b), want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(M.iou_continuous(a, b), want, rtol=0, atol=1e-15)
    # Inclusive pixels x..x+w-1 vs continuous [x, x+w): the +1 and -1 cancel in the overlap.
    assert M.iou_inclusive([[0, 0, 1, 1]], [[1, 0, 1, 1]])[0] == 0.0


def test_iou_continuous_clips_like_got10k() -> None:
    gt = [[0, 0, 10, 10], [10, 0, 10, 10]]
    pred = [[-5, 0, 10, 10], [15, 0, 10, 10]]
    # Unclipped: 50 / 150 both. Clipped to a 20x20 image: the left box is shifted to x=0
    # (IoU 1), the right one cut to (15, 0, 5, 10): 50 / (50 + 100 - 50).
    np.testing.assert_allclose(M.iou_continuous(pred, gt), [1 / 3, 1 / 3])
    np.testing.assert_allclose(M.iou_continuous(pred, gt, bound=(20, 20)), [1.0, 0.5])
    np.testing.assert_array_equal(M.clip_boxes_got10k(pred, (20, 20)),
                                  [[0, 0, 10, 10], [15, 0, 5, 10]])


def test_center_errors_by_hand() -> None:
    pred, gt = [[0, 0, 10, 10]], [[3, 4, 10, 20]]
    # centres (4.5, 4.5) and (7.5, 13.5): offset (3, 9); normalised by (10, 20): (0.3, 0.45)
    assert M.center_error(pred, gt)[0] == pytest.approx(math.sqrt(90))
    assert M.normalized_center_error(pred, gt)[0] == pytest.approx(math.sqrt(0.2925))


def test_three_frame_sequence_with_invalid_frame() -> None:
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 10]], float)
    pred = np.array([[50, 50, 3, 3], [5, 0, 10, 10], [0, 0, 10, 10]], float)
    err = M.sequence_errors(pred, gt)
    np.testing.assert_allclose(err.iou, [1.0, 1 / 3, -1.0])  # frame 0 forced to GT
    np.testing.assert_allclose(err.center_error, [0.0, 5.0, np.inf])
    np.testing.assert_allclose(err.norm_center_error, [0.0, 0.5, np.inf])
    np.testing.assert_array_equal(err.valid, [True, True, False])

    res = M.evaluate_sequences({"s": pred}, {"s": gt})
    # IoU 1 succeeds for t < 1, IoU 1/3 for t <= 0.3 (7 thresholds), the invalid frame never.
    want = np.array([2 / 3] * 7 + [1 / 3] * 13 + [0.0])
    np.testing.assert_allclose(res.success_curve, want)
    assert res.auc == pytest.approx(100 * 3 / 7)
    assert res.precision == pytest.approx(100 * 2 / 3)
    assert res.norm_precision == pytest.approx(100 / 3)
    assert res.op50 == pytest.approx(100 / 3) and res.op75 == pytest.approx(100 / 3)

    ex = M.evaluate_sequences({"s": pred}, {"s": gt}, exclude_invalid=True)
    assert ex.auc == pytest.approx(100 * (7 + 6.5) / 21)
    assert ex.precision == pytest.approx(100.0) and ex.norm_precision == pytest.approx(50.0)


def test_op75_at_exactly_075_and_strict_threshold() -> None:
    gt = np.array([[0, 0, 4, 4]] * 3, float)
    # frame 1: IoU exactly 0.75 (12 / 16) is not > 0.75; frame 2: IoU 0.8125 (13/16) is.
    pred = np.array([[0, 0, 4, 4], [0, 0, 4, 3], [0, 0, 4, 3.25]])
    res = M.evaluate_sequences({"s": pred}, {"s": gt})
    s = res.success_curve
    assert s[14] == pytest.approx(1.0)  # t = 0.7: all three
    assert s[15] == pytest.approx(2 / 3)  # t = 0.75: the exact 0.75 fails, 0.8125 succeeds
    assert np.isfinite(res.op75) and res.op75 == pytest.approx(100 * 2 / 3)
    assert s[0] == 1.0 and s[20] == 0.0  # IoU 1 is not > 1
    assert M.success_curve([0.0, 1.0])[0] == 0.5  # IoU 0 never succeeds, even at t = 0


def test_invalid_frames_are_not_precise_quirk_fix() -> None:
    # UAV-style NaN row and a LaSOT-style invisible frame, with a perfect prediction on both:
    # the official scripts stored -1 and counted them as precise; here they fail.
    gt = np.array([[10, 10, 20, 20], [np.nan] * 4, [10, 10, 20, 20]])
    pred = gt.copy()
    pred[1] = [10, 10, 20, 20]
    res = M.evaluate_sequences({"s": pred}, {"s": gt}, {"s": [True, True, False]})
    assert res.precision == pytest.approx(100 / 3)
    assert res.norm_precision == pytest.approx(100 / 3)
    assert res.precision_curve[-1] == pytest.approx(1 / 3)  # not even at 50 px
    assert res.per_sequence["s"]["num_valid"] == 1


def test_bad_predictions_repeat_previous_box() -> None:
    gt = np.array([[0, 0, 10, 10]] * 4, float)
    pred = np.array([[0, 0, 10, 10], [2, 0, 10, 10], [0, 0, 0, 5], [np.nan, 0, 10, 10]])
    err = M.sequence_errors(pred, gt)
    np.testing.assert_allclose(err.iou, [1.0, 80 / 120, 80 / 120, 80 / 120])


def test_errors_and_validation() -> None:
    gt = np.zeros((3, 4)) + 5
    with pytest.raises(ShapeError, match="'a'.*2 predicted boxes for 3"):
        M.evaluate_sequences({"a": np.ones((2, 4))}, {"a": gt})
    with pytest.raises(ConfigError, match="no predictions for 1 of 2 sequences.*b"):
        M.evaluate_sequences({"a": gt}, {"a": gt, "b": gt})
    with pytest.raises(ShapeError, match=r"\(N, 4\)"):
        M.iou_inclusive(np.ones((3, 5)), np.ones((3, 5)))
    with pytest.raises(ConfigError, match="IoU convention"):
        M.sequence_errors(gt, gt, iou="area")  # type: ignore[arg-type]


def test_all_invalid_sequence_with_exclude_invalid_drops_out() -> None:
    good = np.array([[0, 0, 10, 10]] * 2, float)
    bad = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    res = M.evaluate_sequences({"g": good, "b": bad}, {"g": good, "b": bad},
                               {"g": [True, True], "b": [False, False]}, exclude_invalid=True)
    assert res.op50 == pytest.approx(100.0) and math.isnan(res.per_sequence["b"]["auc"])
    full = M.evaluate_sequences({"g": good, "b": bad}, {"g": good, "b": bad},
                                {"g": [True, True], "b": [False, False]})
    assert full.op50 == pytest.approx(50.0)  # kept with score 0 (LaSOT MATLAB would drop it)
    d = json.loads(json.dumps(full.to_dict()))
    assert d["num_sequences"] == 2 and d["num_frames"] == 4 and len(d["curves"]["success"]) == 21


# ------------------------------------------------------------ independent re-derivation


def _pixel_iou(a: list[float], b: list[float]) -> float:
    """IoU by counting pixels of integer boxes on a grid (inclusive pixels x..x+w-1)."""
    grid_a = np.zeros((80, 80), bool)
    grid_b = np.zeros((80, 80), bool)
    grid_a[int(a[1]):int(a[1] + a[3]), int(a[0]):int(a[0] + a[2])] = True
    grid_b[int(b[1]):int(b[1] + b[3]), int(b[0]):int(b[0] + b[2])] = True
    return (grid_a & grid_b).sum() / (grid_a | grid_b).sum()


def _naive_ope(preds, gts, vis):  # type: ignore[no-untyped-def]
    """Per-frame loops in plain Python, written from the spec without looking at metrics.py."""
    succ, prec, norm = [0.0] * 21, [0.0] * 51, [0.0] * 51
    for name in gts:
        gt, p = gts[name].tolist(), [list(r) for r in preds[name].tolist()]
        n = len(gt)
        p[0] = list(gt[0])
        for i in range(1, n):
            if any(math.isnan(v) for v in p[i]) or p[i][2] <= 0 or p[i][3] <= 0:
                p[i] = list(p[i - 1])
        ious, errs, nerrs = [], [], []
        for i in range(n):
            g, q = gt[i], p[i]
            ok = all(not math.isnan(v) for v in g) and g[2] > 0 and g[3] > 0 and vis[name][i]
            if not ok:
                ious.append(-1.0), errs.append(math.inf), nerrs.append(math.inf)
                continue
            iw = max(0.0, min(q[0] + q[2] - 1, g[0] + g[2] - 1) - max(q[0], g[0]) + 1)
            ih = max(0.0, min(q[1] + q[3] - 1, g[1] + g[3] - 1) - max(q[1], g[1]) + 1)
            inter = iw * ih
            ious.append(inter / (q[2] * q[3] + g[2] * g[3] - inter))
            dx = (q[0] + (q[2] - 1) / 2) - (g[0] + (g[2] - 1) / 2)
            dy = (q[1] + (q[3] - 1) / 2) - (g[1] + (g[3] - 1) / 2)
            errs.append(math.hypot(dx, dy))
            nerrs.append(math.hypot(dx / g[2], dy / g[3]))
        for k in range(21):
            succ[k] += sum(1 for x in ious if x > k / 20) / n / len(gts)
        for k in range(51):
            prec[k] += sum(1 for e in errs if e <= k) / n / len(gts)
            norm[k] += sum(1 for e in nerrs if e <= k / 100) / n / len(gts)
    return sum(succ) / 21 * 100, prec[20] * 100, norm[20] * 100, succ[10] * 100, succ[15] * 100


def _random_sequences(rng: np.random.Generator, nseq: int = 6):  # type: ignore[no-untyped-def]
    preds, gts, vis = {}, {}, {}
    for s in range(nseq):
        n = int(rng.integers(5, 40))
        xy = rng.integers(0, 40, (n, 2))
        gt = np.hstack([xy, rng.integers(1, 25, (n, 2))]).astype(float)
        pred = gt + rng.integers(-6, 7, (n, 4))
        pred[rng.random(n) < 0.1, 2] = 0  # zero-size predictions
        pred[rng.random(n) < 0.05] = np.nan
        gt[rng.random(n) < 0.1] = np.nan  # UAV-style absent rows
        gt[rng.random(n) < 0.05, 3] = 0
        gt[0] = [5, 5, 10, 10]
        preds[f"s{s}"], gts[f"s{s}"], vis[f"s{s}"] = pred, gt, rng.random(n) > 0.1
    return preds, gts, vis


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ope_matches_naive_loop(seed: int) -> None:
    preds, gts, vis = _random_sequences(np.random.default_rng(seed))
    res = M.evaluate_sequences(preds, gts, vis)
    want = _naive_ope(preds, gts, vis)
    got = (res.auc, res.precision, res.norm_precision, res.op50, res.op75)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    seq_aucs = [v["auc"] for v in res.per_sequence.values()]
    assert res.auc == pytest.approx(np.mean(seq_aucs))  # mean of per-sequence AUCs


def test_iou_matches_pixel_counting() -> None:
    rng = np.random.default_rng(7)
    a = np.hstack([rng.integers(0, 40, (200, 2)), rng.integers(1, 30, (200, 2))]).astype(float)
    b = np.hstack([rng.integers(0, 40, (200, 2)), rng.integers(1, 30, (200, 2))]).astype(float)
    want = [_pixel_iou(x, y) for x, y in zip(a.tolist(), b.tolist())]
    np.testing.assert_allclose(M.iou_inclusive(a, b), want, rtol=1e-12)
    assert sum(w > 0 for w in want) > 50  # the sample exercises overlaps, not just misses


# ------------------------------------------------------------------------------ GOT-10k


def test_got10k_pooled_differs_from_sequence_mean() -> None:
    gt_a = np.array([[0, 0, 10, 10]] * 11, float)  # 10 scored frames, all IoU 1
    gt_b = np.array([[0, 0, 10, 10]] * 3, float)  # 2 scored frames, both IoU 0
    pred_b = gt_b.copy()
    pred_b[1:] = [50, 50, 10, 10]
    res = M.evaluate_got10k({"a": gt_a, "b": pred_b}, {"a": gt_a, "b": gt_b})
    assert res.num_frames == 12
    assert res.ao == pytest.approx(100 * 10 / 12) and res.sr50 == pytest.approx(100 * 10 / 12)
    seq_mean = np.mean([v["ao"] for v in res.per_sequence.values()])
    assert seq_mean == pytest.approx(50.0) and abs(res.ao - seq_mean) > 30


def test_got10k_skips_frame0_and_absent_frames_and_pools_repetitions() -> None:
    gt = np.array([[0, 0, 10, 10]] * 4, float)
    cover = np.array([8, 8, 0, 3])
    good = gt.copy()
    good[0] = [90, 90, 1, 1]  # frame 0 ignored even if wrong
    half = gt.copy()
    half[1:] = [5, 0, 10, 10]  # continuous IoU 50 / 150
    res = M.evaluate_got10k({"s": [good, half]}, {"s": gt}, {"s": cover})
    assert res.num_frames == 4  # 2 kept frames x 2 repetitions
    assert res.ao == pytest.approx(100 * (1 + 1 + 1 / 3 + 1 / 3) / 4)
    assert res.sr50 == pytest.approx(50.0) and res.sr75 == pytest.approx(50.0)
    nan_pred = gt.copy()
    nan_pred[1] = np.nan
    assert M.evaluate_got10k({"s": nan_pred}, {"s": gt}, {"s": cover}).ao == pytest.approx(50.0)


def test_got10k_matches_naive_loop() -> None:
    rng = np.random.default_rng(3)
    preds, gts, covers, bounds = {}, {}, {}, {}
    for s in range(5):
        n = int(rng.integers(3, 30))
        gts[s] = np.hstack([rng.uniform(0, 50, (n, 2)), rng.uniform(1, 30, (n, 2))])
        preds[s] = gts[s] + rng.uniform(-8, 8, (n, 4))
        covers[s] = rng.integers(0, 9, n)
        bounds[s] = (60, 55)
    res = M.evaluate_got10k(preds, gts, covers, bounds=bounds)
    ious = []
    for s in gts:
        w_img, h_img = bounds[s]
        for i in range(1, len(gts[s])):
            if covers[s][i] == 0:
                continue
            boxes = []
            for x, y, w, h in (preds[s][i], gts[s][i]):
                x, y = min(max(x, 0), w_img), min(max(y, 0), h_img)
                boxes.append((x, y, min(max(w, 0), w_img - x), min(max(h, 0), h_img - y)))
            (x1, y1, w1, h1), (x2, y2, w2, h2) = boxes
            iw = max(0.0, min(x1 + w1, x2 + w2) - max(x1, x2))
            ih = max(0.0, min(y1 + h1, y2 + h2) - max(y1, y2))
            union = w1 * h1 + w2 * h2 - iw * ih
            ious.append(iw * ih / union if union > 0 else 0.0)
    assert res.num_frames == len(ious)
    assert res.ao == pytest.approx(100 * np.mean(ious), rel=1e-12)
    assert res.sr50 == pytest.approx(100 * np.mean([x > 0.5 for x in ious]))
    assert res.sr75 == pytest.approx(100 * np.mean([x > 0.75 for x in ious]))
    assert json.loads(json.dumps(res.to_dict()))["num_sequences"] == 5


def test_paired_difference_against_a_hand_computation():
    from mfv2.evaluation.metrics import paired_difference

    p = paired_difference([50.0, 40.0, 30.0, 20.0], [45.0, 42.0, 30.0, 10.0])  # differences 5, -2, 0, 10
    d = np.array([5.0, -2.0, 0.0, 10.0])
    assert p.mean == pytest.approx(3.25) and p.clips == 4 and (p.better, p.worse) == (2, 1)
    assert p.se == pytest.approx(np.sqrt(((d - 3.25) ** 2).sum() / 3) / 2)
    assert np.isnan(paired_difference([1.0], [0.0]).se)
    with pytest.raises(ShapeError, match="equal-length"):
        paired_difference([[1.0, 2.0]], [[0.0, 1.0]])
