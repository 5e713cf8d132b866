"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from mfv2.geometry import boxes as geometry  # noqa: E402
from mfv2.training.losses import (  # noqa: E402
    box_iou,
    ciou_loss,
    cxcywh_to_xyxy,
    feature_mimic_loss,
    giou_loss,
    kl_distill_loss,
    l1_loss,
    resample_bins,
    score_bce_loss,
    xywh_to_xyxy,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_box_conversions():
    assert torch.allclose(cxcywh_to_xyxy(t([0.5, 0.5, 0.2, 0.4])), t([0.4, 0.3, 0.6, 0.7]))
    assert torch.allclose(xywh_to_xyxy(t([0.1, 0.2, 0.3, 0.4])), t([0.1, 0.2, 0.4, 0.6]))


def test_torch_boxes_follow_the_geometry_conventions():
    """The differentiable conversions and IoU give mfv2.geometry.boxes' numbers (IoU up to the epsilon)."""
    gen = torch.Generator().manual_seed(0)
    cxcywh = torch.cat([torch.rand(64, 2, generator=gen), 0.05 + 0.5 * torch.rand(64, 2, generator=gen)], 1).double()
    xywh = torch.cat([torch.rand(64, 2, generator=gen), 0.05 + 0.5 * torch.rand(64, 2, generator=gen)], 1).double()
    assert torch.equal(cxcywh_to_xyxy(cxcywh), torch.from_numpy(geometry.cxcywh_to_xyxy(cxcywh.numpy())))
    assert torch.equal(xywh_to_xyxy(xywh), torch.from_numpy(geometry.xywh_to_xyxy(xywh.numpy())))
    iou, _ = box_iou(cxcywh_to_xyxy(cxcywh), xywh_to_xyxy(xywh))
    want = geometry.box_iou(cxcywh.numpy(), geometry.convert_boxes(xywh.numpy(), "xywh", "cxcywh"), fmt="cxcywh")
    assert (want > 0).sum() > 10
    assert torch.allclose(iou, torch.from_numpy(want), rtol=0, atol=1e-5)


def test_l1_is_mean_absolute_error():
    assert l1_loss(t([0.1, 0.2, 0.3, 0.4]), t([0.2, 0.2, 0.5, 0.4])).item() == pytest.approx(0.075)


def test_giou_hand_computed():
    # Two 2x2 squares overlapping in a 1x1 square: IoU 1/7, enclosing 3x3 = 9, union 7.
    loss, iou = giou_loss(t([0, 0, 2, 2]), t([1, 1, 3, 3]))
    assert iou.item() == pytest.approx(1 / 7)
    assert loss.item() == pytest.approx(1 - (1 / 7 - (9 - 7) / 9))
    same, iou_same = giou_loss(t([0, 0, 1, 1]), t([0, 0, 1, 1]))
    assert same.item() == pytest.approx(0.0, abs=1e-6) and iou_same.item() == pytest.approx(1.0)


def test_ciou_hand_computed_without_alpha():
    # IoU 1/3 < 0.5 -> alpha = 0; same aspect -> v = 0; centres 1 apart; enclosing 3 x 2.
    loss, iou = ciou_loss(t([0, 0, 2, 2]), t([1, 0, 3, 2]))
    assert iou.item() == pytest.approx(1 / 3)
    assert loss.item() == pytest.approx(1 - (1 / 3 - 1 / 13), rel=1e-6)


def test_ciou_hand_computed_with_alpha():
    # pred 1x1, gt 1x1.2 sharing the top-left corner: IoU 1/1.2 > 0.5 so the aspect term counts.
    iou = 1 / 1.2
    rho2 = 0.1**2
    c2 = 1**2 + 1.2**2
    v = 4 / math.pi**2 * (math.atan(1 / 1.2) - math.atan(1.0)) ** 2
    alpha = v / (1 - iou + v)
    loss, _ = ciou_loss(t([0, 0, 1, 1]), t([0, 0, 1, 1.2]))
    assert loss.item() == pytest.approx(1 - (iou - rho2 / c2 - alpha * v), rel=1e-6)


def test_ciou_cannot_nan_on_degenerate_boxes():
    pred = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.6, 0.6, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    gt = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0]])
    for fn in (ciou_loss, giou_loss):
        loss, _ = fn(pred, gt)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
        pred.grad = None


def test_kl_zero_for_identical_distributions():
    logits = torch.randn(3, 16, dtype=torch.float64)
    probs = logits.softmax(-1)
    assert kl_distill_loss([logits] * 4, [probs] * 4).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_hand_computed_and_equal_to_batchmean_kldiv():
    teacher = t([0.5, 0.5])
    student = t([0.0, math.log(3.0)])  # softmax -> (0.25, 0.75)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_distill_loss([student], [teacher]).item() == pytest.approx(expected)
    s, p = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64).softmax(-1)
    official = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(s, -1), p)
    assert kl_distill_loss([s], [p]).item() == pytest.approx(official.item())


def test_resample_bins_keeps_mass_and_expectation():
    p72 = torch.rand(5, 72, dtype=torch.float64).softmax(-1)
    p96 = resample_bins(p72, 96)
    assert p96.shape == (5, 96)
    assert torch.allclose(p96.sum(-1), torch.ones(5, dtype=torch.float64))
    e72 = p72 @ (torch.arange(72, dtype=torch.float64) / 72)
    e96 = p96 @ (torch.arange(96, dtype=torch.float64) / 96)
    assert torch.allclose(e72, e96, atol=1e-12)  # upsampling never reaches past the last bin
    assert resample_bins(p72, 72) is p72


def test_resample_bins_hand_computed():
    delta = torch.zeros(1, 72, dtype=torch.float64)
    delta[0, 3] = 1.0  # coordinate 3/72 = 4/96 exactly
    assert resample_bins(delta, 96)[0].nonzero().flatten().tolist() == [4]
    delta = torch.zeros(1, 4, dtype=torch.float64)
    delta[0, 1] = 1.0  # coordinate 1/4 = 1.5 of 6 bins -> split half/half between bins 1 and 2
    assert resample_bins(delta, 6)[0].tolist() == pytest.approx([0, 0.5, 0.5, 0, 0, 0])


def test_kl_resamples_teacher_bins():
    teacher72 = torch.rand(2, 72, dtype=torch.float64).softmax(-1)
    student96 = resample_bins(teacher72, 96).clamp_min(1e-300).log()
    assert kl_distill_loss([student96], [teacher72]).item() == pytest.approx(0.0, abs=1e-9)


def test_feature_mimic_mse_on_matched_layers():
    student = [torch.full((1, 2, 3), float(i)) for i in range(4)]
    teacher = [torch.full((1, 2, 3), float(i) + 1) for i in range(12)]
    # pairs (1 -> 2), (3 -> 5): differences (1 - 3)^2 = 4 and (3 - 6)^2 = 9 -> mean 6.5
    assert feature_mimic_loss(student, teacher, [(1, 2), (3, 5)]).item() == pytest.approx(6.5)
    with pytest.raises(ValueError, match="at least one"):
        feature_mimic_loss(student, teacher, [])


def test_score_bce_hand_computed():
    loss = score_bce_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(math.log(2))
