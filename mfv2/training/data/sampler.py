"""Draws training samples (two templates + one search frame) from a mix of datasets.

As the official sampler does, a dataset is picked by its ratio (not its size), then a sequence that
has more than 6 visible frames and at least 20 frames (image datasets always qualify), then frames:

* ``causal`` (distillation stages 1-2): a visible base frame, a visible earlier template within
  ``max_gap`` of it and a visible later search frame within ``max_gap``; the gap grows by 5 per retry.
* ``trident`` / ``trident_pro`` (score stage): independent visible template and search frames, and an
  extra (online) template within ``max_gap`` of the search frame, on the template's side of it;
  ``trident_pro`` lets that extra template be an invisible frame. With probability ``1 - pos_prob``
  the search frame is replaced by a negative (label 0): an invisible frame of the same video with a
  centre box of 1/8 of the frame, else a random frame of another sequence with that sequence's box.

Every sample is a pure function of ``(seed, epoch, index)``, so workers, ranks and resumed runs draw
the same samples. Template roles: by default the earlier frame is the ``template`` and the later one
the ``online_template``, as at test time; ``template_order="official"`` reproduces the official
causal sampler, which swaps them (quirk 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from torch.utils.data import Dataset

from mfv2.datasets import Dataset as TrackingDataset
from mfv2.errors import ConfigError, Mfv2Error
from mfv2.training.data.processing import TrackingProcessing

__all__ = ["TrackingSampler", "sample_ids", "causal_frame_ids", "trident_frame_ids", "FrameMode", "MIN_LENGTH"]

FrameMode = Literal["causal", "trident", "trident_pro"]
MIN_VISIBLE = 7  # "more than 6 visible frames": 2 x (2 templates + 1 search)
MIN_LENGTH = 20
_GAP_STEP = 5
_FRAME_TRIES = 100


def sample_ids(
    visible: np.ndarray,
    rng: np.random.Generator,
    lo: int = 0,
    hi: int | None = None,
    *,
    allow_invisible: bool = False,
    force_invisible: bool = False,
) -> int | None:
    """A random frame index in ``[lo, hi)`` (clipped to the sequence) that is visible, or ``None``.

    ``allow_invisible`` accepts any frame; ``force_invisible`` only invisible ones.
    """
    n = len(visible)
    lo, hi = max(lo, 0), n if hi is None else min(hi, n)
    if hi <= lo:
        return None
    window = visible[lo:hi]
    if force_invisible:
        candidates = np.flatnonzero(~window)
    elif allow_invisible:
        candidates = np.arange(hi - lo)
    else:
        candidates = np.flatnonzero(window)
    if not len(candidates):
        return None
    return int(lo + candidates[rng.integers(len(candidates))])


def causal_frame_ids(visible: np.ndarray, max_gap: int, rng: np.random.Generator) -> tuple[int, int, int] | None:
    """``(earlier template, base template, search)`` of the causal sampler, or ``None`` after 100 tries.

    The earlier template lies in ``[base - max_gap - g, base)`` and the search in
    ``(base, base + max_gap + g)``, where ``g`` grows by 5 each retry (0 on the first try).
    """
    gap = 0
    for _ in range(_FRAME_TRIES):
        base = sample_ids(visible, rng, 1, len(visible) - 1)
        if base is None:
            return None
        earlier = sample_ids(visible, rng, base - max_gap - gap, base)
        if earlier is None:
            gap += _GAP_STEP
            continue
        search = sample_ids(visible, rng, base + 1, base + max_gap + gap)
        gap += _GAP_STEP
        if search is not None:
            return earlier, base, search
    return None


def trident_frame_ids(
    visible: np.ndarray, max_gap: int, rng: np.random.Generator, *, allow_invisible_extra: bool = False
) -> tuple[int, int, int] | None:
    """``(template, extra template, search)`` of the trident sampler, or ``None`` after 100 tries."""
    for _ in range(_FRAME_TRIES):
        first = sample_ids(visible, rng)
        search = sample_ids(visible, rng)
        if first is None or search is None:
            return None
        lo, hi = (search, search + max_gap) if first >= search else (search - max_gap, search)
        extra = sample_ids(visible, rng, lo, hi, allow_invisible=allow_invisible_extra)
        if extra is not None:
            return first, extra, search
    return None


class TrackingSampler(Dataset):
    """A map-style dataset of ``samples_per_epoch`` random samples drawn from ``datasets``.

    Args:
        datasets: the readers to mix.
        ratios: relative probability of each reader (the official configs use 1:1:1:1).
        processing: crops and augments the chosen frames.
        samples_per_epoch: the dataset length.
        mode: ``causal``, ``trident`` or ``trident_pro``.
        max_gap: the maximum frame interval (200 in the official configs).
        pos_prob: probability of a positive search frame in the trident modes.
        template_order: ``"test"`` (earlier frame = template) or ``"official"`` (causal roles swapped).
        seed: base seed; a sample depends only on (seed, epoch, index).
        max_attempts: draws before giving up on a sample (unusable sequences or crops).
    """

    def __init__(
        self,
        datasets: Sequence[TrackingDataset],
        ratios: Sequence[float],
        processing: TrackingProcessing,
        *,
        samples_per_epoch: int,
        mode: FrameMode = "causal",
        max_gap: int = 200,
        pos_prob: float = 0.5,
        template_order: Literal["test", "official"] = "test",
        seed: int = 0,
        max_attempts: int = 200,
    ) -> None:
        if not datasets or len(datasets) != len(ratios):
            raise ConfigError("the sampler needs at least one dataset and one ratio per dataset")
        if any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise ConfigError(f"dataset ratios must be >= 0 with a positive sum, got {list(ratios)}")
        if mode not in ("causal", "trident", "trident_pro"):
            raise ConfigError(f"unknown sampler mode {mode!r}; choose causal, trident or trident_pro")
        if template_order not in ("test", "official"):
            raise ConfigError(f"template_order must be 'test' or 'official', got {template_order!r}")
        if samples_per_epoch < 1 or max_gap < 1:
            raise ConfigError("samples_per_epoch and max_gap must be >= 1")
        self.datasets = list(datasets)
        self.probs = np.asarray(ratios, dtype=np.float64) / float(sum(ratios))
        self.processing = processing
        self.samples_per_epoch = samples_per_epoch
        self.mode = mode
        self.max_gap = max_gap
        self.pos_prob = pos_prob
        self.template_order = template_order
        self.seed = seed
        self.max_attempts = max_attempts
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's samples for plain indices (workers copy the dataset at iterator start;
        persistent workers keep their copy, so a loader with them passes ``(epoch, index)`` keys)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _pick_sequence(self, rng: np.random.Generator) -> tuple[TrackingDataset, int]:
        ds = self.datasets[int(rng.choice(len(self.datasets), p=self.probs))]
        return ds, int(rng.integers(len(ds)))

    def _usable(self, ds: TrackingDataset, visible: np.ndarray) -> bool:
        return not ds.is_video or (int(visible.sum()) >= MIN_VISIBLE and len(visible) >= MIN_LENGTH)

    def _frame_ids(self, ds: TrackingDataset, visible: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int] | None:
        """(template, online template, search) frame ids."""
        if not ds.is_video:
            return 0, 0, 0
        if self.mode == "causal":
            ids = causal_frame_ids(visible, self.max_gap, rng)
            if ids is None:
                return None
            earlier, base, search = ids
            return (base, earlier, search) if self.template_order == "official" else (earlier, base, search)
        return trident_frame_ids(visible, self.max_gap, rng, allow_invisible_extra=self.mode == "trident_pro")

    def _negative(
        self, ds: TrackingDataset, seq: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """A search frame without the target and the box the crop is centred on."""
        visible = ds.sequence_info(seq).visible
        if ds.is_video:
            frame_id = sample_ids(visible, rng, force_invisible=True)
            if frame_id is not None:
                frame = ds.frames(seq, [frame_id])[0]
                H, W = frame.shape[:2]
                return frame, np.array([W / 2 - W / 16, H / 2 - H / 16, W / 8, H / 8])
        other, other_seq = self._pick_sequence(rng)
        info = other.sequence_info(other_seq)
        frame_id = sample_ids(info.visible, rng)
        if frame_id is None:
            return None
        return other.frames(other_seq, [frame_id])[0], info.boxes[frame_id].astype(np.float64)

    def _draw(self, rng: np.random.Generator) -> dict[str, np.ndarray] | None:
        ds, seq = self._pick_sequence(rng)
        info = ds.sequence_info(seq)
        if not self._usable(ds, info.visible):
            return None
        ids = self._frame_ids(ds, info.visible, rng)
        if ids is None:
            return None
        t_id, ot_id, s_id = ids
        label = 1.0
        if self.mode != "causal" and rng.random() >= self.pos_prob:
            negative = self._negative(ds, seq, rng)
            if negative is None:
                return None
            templates = ds.frames(seq, [t_id, ot_id])
            search, search_box = negative
            label = 0.0
        else:
            *templates, search = ds.frames(seq, [t_id, ot_id, s_id])
            search_box = info.boxes[s_id]
        sample = self.processing(templates, [info.boxes[t_id], info.boxes[ot_id]], search, search_box, rng)
        if sample is not None:
            sample["label"] = np.array(label, dtype=np.float32)
        return sample

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, np.ndarray]:
        """Sample ``index`` of the current epoch, or of ``epoch`` for a key ``(epoch, index)``."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        for _ in range(self.max_attempts):
            sample = self._draw(rng)
            if sample is not None:
                return sample
        names = ", ".join(type(d).__name__ for d in self.datasets)
        raise Mfv2Error(
            f"no usable training sample in {self.max_attempts} draws from {names}; the sequences need > 6 visible "
            f"frames and >= {MIN_LENGTH} frames, and boxes of positive size"
        )
