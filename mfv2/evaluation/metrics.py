"""One-pass evaluation (OPE) accuracy metrics: IoU, centre errors, success/precision, GOT-10k AO.

Boxes are ``(x, y, w, h)`` in pixels, raw as the datasets store them (no re-basing). Two IoU
conventions are offered (:mod:`mfv2.geometry.boxes`, re-exported here): *inclusive* pixels (OTB,
LaSOT, UAV, pytracking: ``x2 = x + w - 1`` and ``+1`` on each intersection side) and *continuous*
(got10k, pysot: ``x2 = x + w``). The -1 and +1 cancel, so both give the same IoU; they differ only
by got10k's optional clipping to the image (and the same holds for the centre ``xy + (wh - 1) / 2``
in distances).

Scores follow pytracking: the first frame is set to the ground truth, zero-size or non-finite
predictions repeat the previous one, success counts ``IoU > t`` (strict) over the 21 thresholds
``0, 0.05, .., 1``, AUC is the mean of those 21 values, precision counts ``error <= t`` (0..50 px,
score at 20 px) and normalised precision the same on centres divided by the ground-truth size
(0..0.5, score at 0.2). Curves are averaged over sequences with equal weight.

Deliberate fixes of official quirks (spec/official_mixformerv2.md §7.10), so our numbers may
differ from the official scripts by these effects only:

1. Exact thresholds. The official ``np.arange(0, 1.05, 0.05)`` gave 0.7500000000000001 (NumPy
   of the time), so the lookup of OP75 at 0.75 never matched. We use ``np.arange(21) / 20``,
   every value the correctly rounded multiple of 0.05 (``np.linspace(0, 1, 21)`` is off by one
   ulp at 0.15, 0.3, ..); OP50, OP75, P@20 px and NP@0.2 are looked up by exact equality.
2. Invalid frames are never precise. A frame whose ground truth has ``w <= 0``, ``h <= 0`` or a
   non-finite value, or whose target is not visible, gets IoU -1 (a failure at every threshold)
   and centre error and normalised centre error ``+inf``. The official code stores -1 for the
   normalised error (and for the UAV centre error), and ``-1 <= t`` counted those frames as
   precise.
3. A sequence the tracker fails entirely is kept in the average with score 0; the LaSOT MATLAB
   toolkit silently drops sequences whose success curve sums to about 0.

By default the denominator is the full sequence length, so invalid frames count as failures;
``exclude_invalid=True`` divides by the number of valid frames instead. Scalar scores are reported
in percent, curves as fractions in [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from mfv2.errors import ConfigError, ShapeError
from mfv2.geometry.boxes import (
    PixelConvention,
    as_box_pair,
    as_boxes,
    clip_boxes_got10k,
    iou_continuous,
    iou_inclusive,
)

__all__ = [
    "IOU_THRESHOLDS", "PIXEL_THRESHOLDS", "NORM_THRESHOLDS", "IouMode",
    "iou_inclusive", "iou_continuous", "clip_boxes_got10k",
    "center_error", "normalized_center_error",
    "SequenceErrors", "sequence_errors", "success_curve", "precision_curve",
    "OPEResult", "evaluate_sequences", "GOT10kResult", "evaluate_got10k",
    "PairedDifference", "paired_difference",
]  # fmt: skip

logger = logging.getLogger(__name__)

IOU_THRESHOLDS: Final[np.ndarray] = np.arange(21) / 20  # 0, 0.05, .., 1; [15] == 0.75 exactly
PIXEL_THRESHOLDS: Final[np.ndarray] = np.arange(51, dtype=np.float64)  # 0..50 px
NORM_THRESHOLDS: Final[np.ndarray] = np.arange(51) / 100  # 0, 0.01, .., 0.5; [20] == 0.2

IouMode = PixelConvention


def _centers(boxes: np.ndarray) -> np.ndarray:
    return boxes[:, :2] + (boxes[:, 2:] - 1.0) / 2.0


def center_error(pred: Any, gt: Any) -> np.ndarray:
    """Euclidean distance in pixels between box centres ``xy + (wh - 1) / 2``; ``(N,)`` float64."""
    p, g = as_box_pair(pred, gt)
    return np.linalg.norm(_centers(p) - _centers(g), axis=1)


def normalized_center_error(pred: Any, gt: Any) -> np.ndarray:
    """Centre distance after dividing both centres' x by the GT width and y by the GT height.

    Returns ``(N,)`` float64; ``inf``/NaN where the GT size is zero or NaN (callers mask those).
    """
    p, g = as_box_pair(pred, gt)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (_centers(p) - _centers(g)) / g[:, 2:]
    return np.linalg.norm(d, axis=1)


@dataclass(frozen=True, eq=False)
class SequenceErrors:
    """Per-frame errors of one sequence, invalid frames already set to failures.

    Attributes:
        iou: ``(N,)`` IoU, -1 on invalid frames.
        center_error: ``(N,)`` pixels, ``inf`` on invalid frames.
        norm_center_error: ``(N,)`` normalised units, ``inf`` on invalid frames.
        valid: ``(N,)`` bool, GT has finite positive size and the target is visible.
    """

    iou: np.ndarray
    center_error: np.ndarray
    norm_center_error: np.ndarray
    valid: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.iou.shape[0])


def _fill_predictions(pred: np.ndarray) -> np.ndarray:
    """Repeat the previous box where a prediction is non-finite or has ``w <= 0`` or ``h <= 0``."""
    bad = ~np.isfinite(pred).all(axis=1) | (pred[:, 2] <= 0) | (pred[:, 3] <= 0)
    if not bad[1:].any():
        return pred
    out = pred.copy()
    for i in np.flatnonzero(bad):
        if i > 0:
            out[i] = out[i - 1]
    return out


def sequence_errors(pred: Any, gt: Any, visible: Any | None = None, *, iou: IouMode = "inclusive",
                    init_from_gt: bool = True) -> SequenceErrors:
    """Per-frame IoU and centre errors of one sequence, following pytracking with our fixes.

    Args:
        pred: ``(N, 4)`` predicted xywh boxes.
        gt: ``(N, 4)`` ground-truth xywh boxes; NaN rows mean "no annotation".
        visible: optional ``(N,)`` bool, False where the target is absent/occluded/out of view.
        iou: ``"inclusive"`` (LaSOT/OTB/UAV) or ``"continuous"`` (got10k) IoU.
        init_from_gt: set frame 0 to the ground truth, as every OPE toolkit does.

    Raises:
        ShapeError: arrays of the wrong shape or of different lengths.
    """
    if iou not in ("inclusive", "continuous"):
        raise ConfigError(f"unknown IoU convention {iou!r}; use 'inclusive' or 'continuous'")
    p = as_boxes(pred, "predictions").copy()
    g = as_boxes(gt, "ground truth")
    if p.shape[0] != g.shape[0]:
        raise ShapeError(f"{p.shape[0]} predicted boxes for {g.shape[0]} ground-truth frames")
    if p.shape[0] == 0:
        raise ShapeError("empty sequence: no frames to evaluate")
    if init_from_gt:
        p[0] = g[0]
    p = _fill_predictions(p)
    valid = np.isfinite(g).all(axis=1) & (g[:, 2] > 0) & (g[:, 3] > 0)
    if visible is not None:
        vis = np.asarray(visible, dtype=bool).reshape(-1)
        if vis.shape[0] != g.shape[0]:
            raise ShapeError(f"visible has {vis.shape[0]} flags for {g.shape[0]} frames")
        valid &= vis
    with np.errstate(invalid="ignore"):
        ious = iou_inclusive(p, g) if iou == "inclusive" else iou_continuous(p, g)
        ce = center_error(p, g)
        nce = normalized_center_error(p, g)
    # A NaN result (only from a NaN first box) is a failure; invalid frames fail everywhere.
    ious = np.where(np.isnan(ious), 0.0, np.where(valid, ious, -1.0))
    ce = np.where(np.isnan(ce) | ~valid, np.inf, ce)
    nce = np.where(np.isnan(nce) | ~valid, np.inf, nce)
    return SequenceErrors(iou=ious, center_error=ce, norm_center_error=nce, valid=valid)


def success_curve(ious: Any, thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """Fraction of the given frames with ``IoU > t`` (strict) for each threshold; NaN if empty."""
    x = np.asarray(ious, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return np.full(len(thresholds), np.nan)
    return (x[:, None] > np.asarray(thresholds)[None, :]).mean(axis=0)


def precision_curve(errors: Any, thresholds: np.ndarray = PIXEL_THRESHOLDS) -> np.ndarray:
    """Fraction of the given frames with ``error <= t`` for each threshold; NaN if empty."""
    x = np.asarray(errors, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return np.full(len(thresholds), np.nan)
    return (x[:, None] <= np.asarray(thresholds)[None, :]).mean(axis=0)


def _at(curve: np.ndarray, thresholds: np.ndarray, value: float) -> float:
    """The curve's value at an exact threshold (the official float lookup failed for 0.75)."""
    idx = np.flatnonzero(thresholds == value)
    if idx.size != 1:
        raise ValueError(f"threshold {value!r} is not exactly one of the thresholds")
    return float(curve[idx[0]])


def _scores(success: np.ndarray, prec: np.ndarray, norm: np.ndarray) -> dict[str, float]:
    return {
        "auc": float(np.mean(success)) * 100.0,
        "precision": _at(prec, PIXEL_THRESHOLDS, 20.0) * 100.0,
        "norm_precision": _at(norm, NORM_THRESHOLDS, 0.2) * 100.0,
        "op50": _at(success, IOU_THRESHOLDS, 0.5) * 100.0,
        "op75": _at(success, IOU_THRESHOLDS, 0.75) * 100.0,
    }


@dataclass(frozen=True, eq=False)
class OPEResult:
    """OPE scores over a set of sequences; scalars in percent, curves as fractions.

    ``per_sequence`` maps each name to its own ``auc, precision, norm_precision, op50, op75``
    (percent), ``mean_iou`` (over valid frames, fraction), ``num_frames`` and ``num_valid``.
    """

    auc: float
    precision: float
    norm_precision: float
    op50: float
    op75: float
    success_curve: np.ndarray
    precision_curve: np.ndarray
    norm_precision_curve: np.ndarray
    per_sequence: dict[str, dict[str, float]] = field(default_factory=dict)
    iou: str = "inclusive"
    exclude_invalid: bool = False

    @property
    def num_sequences(self) -> int:
        return len(self.per_sequence)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: scores, thresholds, curves and per-sequence scores."""
        keys = ("auc", "precision", "norm_precision", "op50", "op75", "iou", "exclude_invalid")
        return {
            **{k: getattr(self, k) for k in keys},
            "num_sequences": self.num_sequences,
            "num_frames": int(sum(s["num_frames"] for s in self.per_sequence.values())),
            "curves": {
                "iou_thresholds": IOU_THRESHOLDS.tolist(),
                "success": self.success_curve.tolist(),
                "pixel_thresholds": PIXEL_THRESHOLDS.tolist(),
                "precision": self.precision_curve.tolist(),
                "norm_thresholds": NORM_THRESHOLDS.tolist(),
                "norm_precision": self.norm_precision_curve.tolist(),
            },
            "per_sequence": {k: dict(v) for k, v in self.per_sequence.items()},
        }


def _check_names(preds: Mapping[str, Any], gts: Mapping[str, Any]) -> None:
    missing = [n for n in gts if n not in preds]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ConfigError(f"no predictions for {len(missing)} of {len(gts)} sequences "
                          f"({', '.join(missing[:5])}{more}); run the tracker on them or pass "
                          f"a subset of gts")


def evaluate_sequences(preds: Mapping[str, Any], gts: Mapping[str, Any],
                       visible: Mapping[str, Any] | None = None, *, iou: IouMode = "inclusive",
                       exclude_invalid: bool = False) -> OPEResult:
    """OPE success/precision over many sequences, each weighted equally.

    Args:
        preds: name -> ``(N, 4)`` predicted xywh boxes; must cover every name in ``gts``.
        gts: name -> ``(N, 4)`` ground-truth xywh boxes (NaN rows = no annotation).
        visible: optional name -> ``(N,)`` bool visibility flags.
        iou: IoU convention, ``"inclusive"`` (LaSOT/OTB/UAV) or ``"continuous"``.
        exclude_invalid: divide by the number of valid frames instead of the sequence length;
            a sequence without valid frames then drops out of the average.

    Raises:
        ConfigError: ``gts`` is empty or some sequence has no prediction.
        ShapeError: a prediction and its ground truth differ in length.
    """
    if not gts:
        raise ConfigError("no sequences to evaluate")
    _check_names(preds, gts)
    per_seq: dict[str, dict[str, float]] = {}
    curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for name, gt in gts.items():
        vis = None if visible is None else visible.get(name)
        try:
            err = sequence_errors(preds[name], gt, vis, iou=iou)
        except ShapeError as e:
            raise ShapeError(f"sequence {name!r}: {e}") from e
        keep = err.valid if exclude_invalid else slice(None)
        s = success_curve(err.iou[keep])
        p = precision_curve(err.center_error[keep], PIXEL_THRESHOLDS)
        n = precision_curve(err.norm_center_error[keep], NORM_THRESHOLDS)
        num_valid = int(err.valid.sum())
        mean_iou = float(err.iou[err.valid].mean()) if num_valid else float("nan")
        if np.isnan(s).any():
            logger.warning("sequence %s has no valid frame; left out of the average", name)
            per_seq[name] = dict.fromkeys(_scores(s, p, n), float("nan"))
        else:
            per_seq[name] = _scores(s, p, n)
            curves.append((s, p, n))
        per_seq[name].update(mean_iou=mean_iou, num_frames=err.num_frames, num_valid=num_valid)
    if not curves:
        raise ConfigError("no sequence has a valid frame; nothing to average")
    s_mean, p_mean, n_mean = (np.mean(np.stack(c), axis=0) for c in zip(*curves))
    return OPEResult(**_scores(s_mean, p_mean, n_mean), success_curve=s_mean,
                     precision_curve=p_mean, norm_precision_curve=n_mean, per_sequence=per_seq,
                     iou=iou, exclude_invalid=exclude_invalid)


@dataclass(frozen=True, eq=False)
class GOT10kResult:
    """GOT-10k scores pooled over all kept frames (frame-weighted), in percent.

    ``per_sequence`` maps each name to its own ``ao, sr50, sr75`` (percent) and ``num_frames``;
    their plain mean is *not* the pooled AO when sequences differ in length.
    """

    ao: float
    sr50: float
    sr75: float
    num_frames: int
    per_sequence: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the scores and per-sequence scores."""
        return {
            **{k: getattr(self, k) for k in ("ao", "sr50", "sr75", "num_frames")},
            "num_sequences": len(self.per_sequence),
            "per_sequence": {k: dict(v) for k, v in self.per_sequence.items()},
        }


def _ao_sr(ious: np.ndarray) -> dict[str, float]:
    if ious.size == 0:
        return dict.fromkeys(("ao", "sr50", "sr75"), float("nan"))
    return {"ao": float(ious.mean()) * 100.0, "sr50": float((ious > 0.5).mean()) * 100.0,
            "sr75": float((ious > 0.75).mean()) * 100.0}


def evaluate_got10k(preds: Mapping[str, Any], gts: Mapping[str, Any],
                    covers: Mapping[str, Any] | None = None, *,
                    bounds: Mapping[str, tuple[float, float] | None] | None = None,
                    ) -> GOT10kResult:
    """GOT-10k AO / SR0.5 / SR0.75 with IoUs pooled over every kept frame, as the toolkit does.

    Frame 0 (the initialisation) is skipped; of the rest, frames with ``cover > 0`` are kept (or,
    without ``covers``, frames whose GT has a finite positive size). IoU is continuous, clipped
    to the image when ``bounds`` gives its ``(width, height)``. A NaN prediction scores IoU 0.

    Args:
        preds: name -> ``(N, 4)`` boxes, or a list of such arrays (repetitions; all are pooled).
        gts: name -> ``(N, 4)`` ground truth.
        covers: optional name -> ``(N,)`` cover.label values (0 = absent .. 8 = fully visible).
        bounds: optional name -> image ``(width, height)`` (e.g. ``TrackingSequence.image_size``).

    Raises:
        ConfigError: ``gts`` is empty or some sequence has no prediction.
        ShapeError: a prediction and its ground truth differ in length.
    """
    if not gts:
        raise ConfigError("no sequences to evaluate")
    _check_names(preds, gts)
    pooled: list[np.ndarray] = []
    per_seq: dict[str, dict[str, float]] = {}
    for name, gt in gts.items():
        g = as_boxes(gt, f"{name}: ground truth")
        if covers is not None and name in covers:
            keep = np.asarray(covers[name]).reshape(-1) > 0
            if keep.shape[0] != g.shape[0]:
                raise ShapeError(f"{name}: {keep.shape[0]} cover labels for {g.shape[0]} frames")
        else:
            keep = np.isfinite(g).all(axis=1) & (g[:, 2] > 0) & (g[:, 3] > 0)
        keep[:1] = False  # frame 0 is the initialisation
        runs: Sequence[Any] = preds[name]
        if not isinstance(runs, (list, tuple)):
            runs = [runs]
        bound = None if bounds is None else bounds.get(name)
        seq_ious = []
        for run in runs:
            p = as_boxes(run, f"{name}: predictions")
            if p.shape[0] != g.shape[0]:
                raise ShapeError(f"{name}: {p.shape[0]} predicted boxes for {g.shape[0]} frames")
            with np.errstate(invalid="ignore"):
                ious = iou_continuous(p[keep], g[keep], bound=bound)
            seq_ious.append(np.nan_to_num(ious, nan=0.0))
        cat = np.concatenate(seq_ious)
        pooled.append(cat)
        per_seq[name] = {**_ao_sr(cat), "num_frames": int(cat.size)}
    all_ious = np.concatenate(pooled)
    if all_ious.size == 0:
        raise ConfigError("no frame left to evaluate after skipping frame 0 and absent frames")
    return GOT10kResult(**_ao_sr(all_ious), num_frames=int(all_ious.size), per_sequence=per_seq)


@dataclass(frozen=True)
class PairedDifference:
    """Per-clip differences ``a - b`` of one score (e.g. AUC) of two trackers on the same clips."""

    mean: float
    se: float  # standard error of the mean (NaN with fewer than two clips)
    better: int  # clips where a scored higher
    worse: int  # clips where b scored higher
    clips: int


def paired_difference(a: Any, b: Any) -> PairedDifference:
    """Mean, standard error and win/loss counts of the per-clip differences ``a - b`` (equal-length arrays)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ShapeError(f"paired scores must be two equal-length 1-D arrays of clips, got a difference of shape {d.shape}")
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return PairedDifference(float(d.mean()), se, int((d > 0).sum()), int((d < 0).sum()), int(d.size))
