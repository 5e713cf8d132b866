"""UAV123: ``<root>/data_seq/<subset>/<seq>/000001.jpg`` and ``anno/<subset>/<seq>.txt``."""

from __future__ import annotations

import re
from pathlib import Path

from mfv2.datasets.base import Dataset, FrameRanges, TrackingSequence, assemble, list_frames, natural_key, read_table
from mfv2.datasets.registry import DATASETS
from mfv2.errors import ConfigError

__all__ = ["read_uav123"]


@DATASETS.register("uav123")
def read_uav123(root: Path, *, subset: str = "UAV123", frame_ranges: FrameRanges | None = None) -> Dataset:
    """UAV123 (or ``subset`` UAV20L); split sequences (``bird1_1``) share a folder and need ``frame_ranges``."""
    ranges = dict(frame_ranges or {})
    anno, data = (root / top / subset if (root / top / subset).is_dir() else root / top for top in ("anno", "data_seq"))
    if not anno.is_dir() or not data.is_dir():
        raise ConfigError(f"{anno} not found: UAV123 needs data_seq/{subset}/<seq>/ and anno/{subset}/<seq>.txt")
    names = sorted((p.stem for p in anno.glob("*.txt")), key=natural_key)
    if not names:
        raise ConfigError(f"no <seq>.txt annotation in {anno}")

    def load(name: str) -> TrackingSequence:
        folder = data / name
        if not folder.is_dir():  # split sequences (bird1_1) share the folder bird1
            folder = data / re.sub(r"_\d+$", "", name)
            if folder.name != name and name not in ranges:
                raise ConfigError(f"{name}: no folder {data / name}; it is part of {folder}, "
                                  f"pass frame_ranges={{{name!r}: (first, last)}}")  # fmt: skip
        gt_path = anno / f"{name}.txt"
        frames = list_frames(folder, "UAV123 frames data_seq/<subset>/<seq>/000001.jpg")
        return assemble(name, "uav123", frames, read_table(gt_path, ""), gt_path, ranges.get(name))

    return Dataset("uav123", root, names, load)
