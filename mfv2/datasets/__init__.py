"""Tracking datasets: one reader per layout, one registry, result files.

Evaluation (``mfv2 eval``) and training's sampler both read sequences from here: :func:`open_dataset`
(a folder, its layout recognised or named) and :func:`build_dataset` (training's config entries).
Each layout module (``lasot``, ``got10k``, ``trackingnet``, ``otb``, ``uav123``, ``vot``, ``coco``,
``synthetic``) registers its reader by being imported below.
"""

from mfv2.datasets import coco, got10k, lasot, otb, stills, synthetic, trackingnet, uav123, vot  # noqa: F401  (register)
from mfv2.datasets.base import Dataset, SequenceInfo, TrackingSequence, natural_key, read_boxes, read_flags
from mfv2.datasets.registry import DATASETS, build_dataset, dataset_kinds, detect_layout, open_dataset
from mfv2.datasets.results import (
    read_got10k_result,
    read_results,
    read_times,
    write_boxes,
    write_got10k_result,
    write_result,
    write_times,
)

__all__ = [
    "Dataset", "SequenceInfo", "TrackingSequence", "DATASETS", "open_dataset", "build_dataset", "detect_layout",
    "dataset_kinds", "read_boxes", "read_flags", "natural_key", "write_boxes", "read_times", "write_times",
    "read_results", "write_result", "read_got10k_result", "write_got10k_result",
]  # fmt: skip
