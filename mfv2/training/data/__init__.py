"""Training data: dataset readers (:mod:`mfv2.datasets`) -> frame sampler -> processing (crops, jitter, augmentation)."""

from mfv2.training.data.processing import ProcessingSettings, TrackingProcessing, crop_around, jitter_box
from mfv2.training.data.sampler import TrackingSampler, causal_frame_ids, sample_ids, trident_frame_ids

__all__ = [
    "ProcessingSettings",
    "TrackingProcessing",
    "crop_around",
    "jitter_box",
    "TrackingSampler",
    "sample_ids",
    "causal_frame_ids",
    "trident_frame_ids",
]
