"""Synthetic clips (:mod:`mfv2.synthetic`, the generator shared with evaluation) as a training dataset."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from mfv2.errors import ConfigError
from mfv2.training.data.datasets import DATASETS, SequenceInfo, TrackingDataset

__all__ = ["SyntheticDataset", "sequence_seed"]


def sequence_seed(base_seed: int, index: int) -> int:
    """The generator seed of clip ``index``, derived from ``base_seed`` (independent streams per clip)."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


@DATASETS.register("synthetic")
class SyntheticDataset(TrackingDataset):
    """``num_sequences`` deterministic clips; frames are rendered on demand and converted BGR -> RGB.

    Use different ``seed`` values for training and held-out validation sets. The remaining options
    are fields of :class:`mfv2.synthetic.SyntheticConfig`.
    """

    name = "synthetic"

    def __init__(
        self,
        num_sequences: int = 16,
        seed: int = 0,
        num_frames: int = 100,
        height: int = 240,
        width: int = 320,
        occlusion: bool = True,
        distractors: int = 1,
        clutter: int = 0,
        out_of_view: bool = False,
        backgrounds: str = "auto",
    ) -> None:
        super().__init__()
        if num_sequences < 1 or num_frames < 1:
            raise ConfigError("synthetic dataset: num_sequences and num_frames must be >= 1")
        self.num_sequences = num_sequences
        self.seed = seed
        self.options: dict[str, Any] = dict(
            num_frames=num_frames, height=height, width=width, occlusion=occlusion, distractors=distractors,
            clutter=clutter, out_of_view=out_of_view, backgrounds=backgrounds,
        )
        self._clips: dict[int, Any] = {}

    def _clip(self, index: int) -> Any:
        clip = self._clips.get(index)
        if clip is None:
            from mfv2.synthetic import make_sequence

            clip = self._clips[index] = make_sequence(seed=sequence_seed(self.seed, index), **self.options)
        return clip

    def __len__(self) -> int:
        return self.num_sequences

    def sequence_name(self, index: int) -> str:
        return str(self._clip(index).name)

    def _load_info(self, index: int) -> SequenceInfo:
        clip = self._clip(index)
        boxes = np.asarray(clip.boxes, dtype=np.float32).reshape(-1, 4)
        visible = np.asarray(clip.visible, dtype=bool) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        return SequenceInfo(boxes, visible)

    def _frame(self, index: int, frame_id: int) -> np.ndarray:
        return cv2.cvtColor(self._clip(index).frame(frame_id), cv2.COLOR_BGR2RGB)

    def __getstate__(self) -> dict[str, Any]:
        # Rendered clips stay in the process that made them; DataLoader workers rebuild their own.
        state = self.__dict__.copy()
        state["_clips"] = {}
        return state
