"""Tracking datasets: one reader per layout, the layout registry and results-file I/O.

Training's sampler and evaluation both read sequences from here (:func:`open_dataset`).
"""

from mfv2.datasets.base import (
    Dataset,
    TrackingSequence,
    dataset_kinds,
    detect_layout,
    open_dataset,
    read_boxes,
    read_got10k_result,
    read_results,
    read_times,
    write_boxes,
    write_got10k_result,
    write_result,
    write_times,
)
from mfv2.datasets import base as _base

__all__ = list(_base.__all__)
