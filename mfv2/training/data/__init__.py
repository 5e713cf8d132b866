"""Training data: dataset readers -> frame sampler -> processing (crops, jitter, augmentation)."""

from mfv2.training.data.coco import Coco
from mfv2.training.data.datasets import (
    DATASETS,
    Got10k,
    Lasot,
    SequenceInfo,
    TrackingDataset,
    TrackingNet,
    build_dataset,
)
from mfv2.training.data.processing import ProcessingSettings, TrackingProcessing, crop_around, jitter_box
from mfv2.training.data.sampler import TrackingSampler, causal_frame_ids, sample_ids, trident_frame_ids
from mfv2.training.data.synthetic import SyntheticDataset

__all__ = [
    "DATASETS",
    "build_dataset",
    "SequenceInfo",
    "TrackingDataset",
    "Got10k",
    "Lasot",
    "TrackingNet",
    "Coco",
    "SyntheticDataset",
    "ProcessingSettings",
    "TrackingProcessing",
    "crop_around",
    "jitter_box",
    "TrackingSampler",
    "sample_ids",
    "causal_frame_ids",
    "trident_frame_ids",
]
