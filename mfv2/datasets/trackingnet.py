"""TrackingNet: ``<root>/<TEST|TRAIN_<k>>/anno/<video>.txt`` and ``frames/<video>/<i>.jpg`` (0-based)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mfv2.datasets.base import Dataset, FrameRanges, TrackingSequence, assemble, list_frames, natural_key, read_table
from mfv2.datasets.registry import DATASETS
from mfv2.errors import ConfigError

__all__ = ["read_trackingnet"]

TRAIN_CHUNKS = tuple(range(12))


def _chunk_names(base: Path, chunk: str) -> list[str]:
    return [f"{chunk}/{p.stem}" for p in sorted((base / chunk / "anno").glob("*.txt"), key=lambda p: natural_key(p.stem))]


@DATASETS.register("trackingnet")
def read_trackingnet(root: Path, *, split: str | None = None, sets: Sequence[int] | None = None,
                     frame_ranges: FrameRanges | None = None) -> Dataset:  # fmt: skip
    """TrackingNet videos of one chunk, or of the training chunks.

    ``split``: ``TEST`` (default), ``TRAIN_<k>``, or ``train``: the chunks ``TRAIN_<k>`` for k in
    ``sets`` (default all twelve), each of which must exist, named ``TRAIN_<k>/<video>``. ``root``
    may be one chunk folder itself. Visible = an annotated box.
    """
    ranges = dict(frame_ranges or {})
    if split == "train" and not (root / "anno").is_dir():
        chunks = [f"TRAIN_{int(k)}" for k in (TRAIN_CHUNKS if sets is None else sets)]
        for chunk in chunks:
            if not (root / chunk / "anno").is_dir():
                raise ConfigError(f"TrackingNet: {root / chunk / 'anno'} not found; expected {chunk}/anno and {chunk}/frames "
                                  f"under {root} (set 'sets' to the chunks you have, e.g. [0, 1, 2])")  # fmt: skip
        names = [n for chunk in chunks for n in _chunk_names(root, chunk)]
        if not names:
            raise ConfigError(f"TrackingNet: no anno/*.txt files in {', '.join(chunks)} under {root}")
        base = root
    else:
        base = root if (root / "anno").is_dir() else root / (split or "TEST")
        if not (base / "anno").is_dir() or not (base / "frames").is_dir():
            raise ConfigError(f"{base / 'anno'} not found: a TrackingNet split needs anno/<vid>.txt and frames/<vid>/0.jpg")
        names = [n.split("/", 1)[1] for n in _chunk_names(base.parent, base.name)]

    def load(name: str) -> TrackingSequence:
        chunk, vid = name.split("/", 1) if "/" in name else ("", name)
        folder = base / chunk if chunk else base
        gt_path = folder / "anno" / f"{vid}.txt"
        frames = list_frames(folder / "frames" / vid, "TrackingNet frames/<vid>/<i>.jpg")
        return assemble(name, "trackingnet", frames, read_table(gt_path, ""), gt_path, ranges.get(name))

    return Dataset("trackingnet", base, names, load)
