"""Still-image pairs (:func:`mfv2.synthetic.stills.still_pair`): photo composites as one-frame sequences."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mfv2.datasets.base import Dataset, TrackingSequence
from mfv2.datasets.registry import DATASETS
from mfv2.errors import ConfigError

__all__ = ["read_stills"]


@DATASETS.register("stills")
def read_stills(root: Path | None, *, num_images: int = 1000, seed: int = 0, height: int = 240,
                width: int = 320) -> Dataset:
    """``num_images`` photo composites rendered on demand, image k from ``still_pair(seed + k)``; like COCO,
    each is a one-frame sequence (``is_video = False``), so the sampler cuts template and search from the
    same image with its jitter.
    """
    if root is not None:
        raise ConfigError("still-image pairs are rendered in memory; pass no root")
    if num_images < 1:
        raise ConfigError(f"stills dataset: num_images must be >= 1, got {num_images}")
    if height < 48 or width < 48:
        raise ConfigError(f"still pairs need frames of at least 48 x 48, got {width} x {height}")
    names = [f"still-{seed + k}" for k in range(num_images)]

    def load(name: str) -> TrackingSequence:
        from mfv2.synthetic.stills import still_pair

        k = int(name.rsplit("-", 1)[1])
        img, box, _ = still_pair(k, height=height, width=width)
        return TrackingSequence(name=name, dataset="stills", frame_paths=[], gt=box.reshape(1, 4),
                                visible=np.ones(1, dtype=bool), render=lambda i: img.copy())

    return Dataset("stills", None, names, load, is_video=False)
