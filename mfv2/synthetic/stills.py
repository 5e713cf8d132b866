"""Still-image pairs from real photographs, the way the official pipeline uses COCO: one image, one box.

Each pair is a crop of one of the bundled scikit-image photographs (random zoom, flip, tint) with a crop
of another photograph pasted into it at a random box (rectangular, elliptical or rounded, antialiased
edges). The training sampler takes the template and the search region from this one frame with its
usual jitter (the ``stills`` dataset of :mod:`mfv2.datasets` serves them as one-frame sequences). Only the
training photos (:data:`~mfv2.synthetic.textures.PHOTO_NAMES`) are used; the held-out photos never are.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from mfv2.errors import ConfigError
from mfv2.synthetic import textures as tx

__all__ = ["still_pair"]

TEXTURE_SIZE: Final = 128


def still_pair(seed: int, *, height: int = 240, width: int = 320) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``seed``: BGR uint8 ``(height, width, 3)``, the target box ``(4,)`` xywh float64 pixels, and the
    target's coverage mask ``(height, width)`` float64 in [0, 1] (1 where the pasted object is opaque).

    Raises:
        ConfigError: scikit-image is missing, or the frame is smaller than 48 x 48.
    """
    if height < 48 or width < 48:
        raise ConfigError(f"still pairs need frames of at least 48 x 48, got {width} x {height}")
    if not tx.photos_available():
        raise ConfigError("still-image pairs need scikit-image's photos: pip install 'mfv2[synth]'")
    rng = np.random.default_rng(np.random.SeedSequence([0x5711, seed]))
    name = tx.PHOTO_NAMES[int(rng.integers(len(tx.PHOTO_NAMES)))]
    img = tx.photo_crop(rng, tx.load_photo(name), height, width, zoom=rng.uniform(1, 2.5))
    img = tx.tint(img, rng.uniform(0.8, 1.2, 3))
    tex, _ = tx.photo_patch(rng, TEXTURE_SIZE)
    shape = ("rect", "ellipse", "rounded")[int(rng.integers(3))]
    side = min(height, width)
    area = rng.uniform(0.08, 0.4) * side
    aspect = math.sqrt(rng.uniform(0.5, 2.0))
    w, h = min(area * aspect, 0.6 * width), min(area / aspect, 0.6 * height)
    box = np.array([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h])
    box = np.round(box, 2)
    levels = tx.rgba_mipmaps(tex, shape)
    tx.composite(img, levels, box)
    alpha = np.zeros((height, width, 3), dtype=np.uint8)
    tx.composite(alpha, tx.rgba_mipmaps(np.full_like(tex, 255), shape), box)
    return img, box, alpha[..., 0] / 255.0
