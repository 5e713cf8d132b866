"""OTB100: ``<root>/<Seq>/img/0001.jpg`` and ``groundtruth_rect.txt`` (``groundtruth_rect.2.txt`` a second target)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from mfv2.datasets.base import (
    Dataset,
    FrameRanges,
    TrackingSequence,
    assemble,
    box_lines,
    list_frames,
    read_table,
    subdirs,
    write_frames,
)
from mfv2.datasets.registry import DATASETS
from mfv2.errors import ConfigError

if TYPE_CHECKING:
    from mfv2.synthetic import SyntheticSequence

__all__ = ["write_synthetic", "read_otb"]


@DATASETS.register("otb")
def read_otb(root: Path, *, frame_ranges: FrameRanges | None = None) -> Dataset:
    """OTB sequences; a second target of ``<Seq>`` is the sequence ``<Seq>_2``. Sequences that use part
    of their folder (David, Tiger1) need ``frame_ranges``."""
    ranges = dict(frame_ranges or {})
    need = "an OTB sequence folder needs img/ and groundtruth_rect.txt"
    annos: dict[str, tuple[Path, Path]] = {}
    for d in subdirs(root):
        for gt_path in sorted(d.glob("groundtruth_rect*.txt")):
            m = re.fullmatch(r"groundtruth_rect(?:\.(\d+))?\.txt", gt_path.name)
            if m:  # groundtruth_rect.2.txt marks the second target: name <Seq>_2
                annos[d.name if m.group(1) is None else f"{d.name}_{m.group(1)}"] = (d, gt_path)
    if not annos:
        raise ConfigError(f"no OTB sequence under {root}: expected <root>/<Seq>/img/ and groundtruth_rect.txt")

    def load(name: str) -> TrackingSequence:
        d, gt_path = annos[name]
        frames = list_frames(d / "img", need)
        return assemble(name, "otb", frames, read_table(gt_path, need), gt_path, ranges.get(name))

    return Dataset("otb", root, list(annos), load)


def write_synthetic(seqs: list[SyntheticSequence], root: Path, ext: str) -> None:
    """The clips in the OTB layout: ``<Seq>/img/0001.jpg`` and ``groundtruth_rect.txt``."""
    for s in seqs:
        d = root / s.name
        write_frames(s, d / "img", "%04d", ext)
        (d / "groundtruth_rect.txt").write_text(box_lines(s.boxes))
