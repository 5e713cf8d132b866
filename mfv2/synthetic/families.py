"""Named, seeded clip families: presets of :class:`~mfv2.synthetic.clip.SyntheticConfig`.

A tracker trained on one generator learns the generator. The families vary what a tracker must not
depend on: the background (photographs, procedural noise, blocks, stripes, flat colour), the target
(patterns, photo patches, flat colour, a piece of the background), the camera (pan and zoom), the
image (lighting change, blur, JPEG artefacts) and the company (look-alike distractors, clutter,
occluders, leaving the frame).

Two families are **held out**: no training stage may use them (the ``synthetic`` dataset of :mod:`mfv2.datasets`
refuses them), so they measure what the demo model does on clips it has never seen. ``cells`` uses a
texture kind (Voronoi mosaics) that no training family draws; ``unseen_photos`` is a textured box
moving smoothly over a textured background cut from photographs no training family uses
(:data:`~mfv2.synthetic.textures.HELD_OUT_PHOTOS`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from mfv2.errors import ConfigError
from mfv2.synthetic.clip import SyntheticConfig, SyntheticSequence

__all__ = ["Family", "FAMILIES", "TRAINING_FAMILIES", "HELD_OUT_FAMILIES", "family_config", "family_sequences"]


@dataclass(frozen=True)
class Family:
    """A named preset: ``overrides`` of :class:`SyntheticConfig`, and whether training may use it."""

    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    held_out: bool = False


_COMMON: Final = {"height": 240, "width": 320}

FAMILIES: Final[dict[str, Family]] = {f.name: f for f in (
    Family("photo", "photo backgrounds, photo or pattern targets, a look-alike, an occluder (the original clips)",
           {"backgrounds": "photo"}),
    Family("noise", "procedural noise backgrounds with pattern patches, pattern targets",
           {"backgrounds": "procedural", "targets": "pattern"}),
    Family("blocks", "backgrounds of coloured blocks, photo-patch targets, two clutter objects",
           {"backgrounds": "blocks", "targets": "photo", "clutter": 2}),
    Family("stripes", "striped backgrounds, pattern targets, camera drift",
           {"backgrounds": "stripes", "targets": "pattern", "camera_drift": 1.5}),
    Family("flat", "flat-colour backgrounds and flat-colour targets with two look-alikes",
           {"backgrounds": "flat", "targets": "flat", "distractors": 2}),
    Family("camouflage", "targets cut from their own photo background",
           {"backgrounds": "photo", "targets": "camouflage", "distractors": 0}),
    Family("camera", "a camera that pans fast and zooms 2x",
           {"backgrounds": "photo", "zoom": 2.0, "camera_drift": 3.0, "occlusion": False}),
    Family("degraded", "lighting change 2x, blur up to sigma 2, JPEG quality 30",
           {"backgrounds": "photo", "lighting": 2.0, "blur": 2.0, "jpeg_quality": 30}),
    Family("crowd", "three look-alikes, three clutter objects, occluders, leaving the frame",
           {"backgrounds": "procedural", "distractors": 3, "clutter": 3, "out_of_view": True}),
    # Held out: never trained on.
    Family("cells", "Voronoi-mosaic backgrounds and targets (a texture no training family has), "
           "camera drift, lighting change", {"backgrounds": "cells", "targets": "cells", "lighting": 1.5,
                                              "camera_drift": 1.0}, held_out=True),
    Family("unseen_photos", "a textured box moving smoothly over a textured background, both cut from "
           "photos no training family uses", {"backgrounds": "unseen_photo", "targets": "unseen_photo",
                                              "shape": "rect", "distractors": 0, "occlusion": False,
                                              "max_speed": 0.012}, held_out=True),
)}
TRAINING_FAMILIES: Final = tuple(n for n, f in FAMILIES.items() if not f.held_out)
HELD_OUT_FAMILIES: Final = tuple(n for n, f in FAMILIES.items() if f.held_out)


def family_config(family: str, *, seed: int = 0, num_frames: int = 100, **overrides: Any) -> SyntheticConfig:
    """The config of one clip of ``family`` (240 x 320 frames unless ``overrides`` say otherwise).

    Raises:
        ConfigError: an unknown family or a bad override.
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown clip family {family!r}; known: {', '.join(FAMILIES)}")
    data = {**_COMMON, **FAMILIES[family].overrides, **overrides, "seed": seed, "num_frames": num_frames}
    return SyntheticConfig.from_dict(data)


def family_sequences(name: str, num_sequences: int, num_frames: int = 100, seed: int = 0,
                     **overrides: Any) -> list[SyntheticSequence]:
    """``num_sequences`` clips ``<name>-<k>`` of family ``name``; clip k's seed derives from ``(seed, name, k)``,
    so families with equal seeds still differ.

    Raises:
        ConfigError: an unknown family, a bad count or override.
    """
    if not isinstance(num_sequences, int) or num_sequences < 1:
        raise ConfigError(f"num_sequences must be an integer >= 1, got {num_sequences!r}")
    tag = zlib.crc32(name.encode())
    return [
        SyntheticSequence(family_config(name, seed=int(np.random.SeedSequence([seed, tag, k]).generate_state(1)[0]),
                                        num_frames=num_frames, name=f"{name}-{k}", **overrides))
        for k in range(1, num_sequences + 1)
    ]
