"""LaSOT: ``<root>/<class>/<class>-<n>/{img/00000001.jpg, groundtruth.txt, full_occlusion.txt, out_of_view.txt}``.

The LaSOT toolkit's lists pick the split: ``testing_set.txt`` (280 sequences) and
``training_set.txt`` (1120). Frames flagged fully occluded or out of view are not visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mfv2.datasets.base import (
    Dataset,
    FrameRanges,
    TrackingSequence,
    assemble,
    box_lines,
    list_frames,
    read_flags,
    read_table,
    subdirs,
    tokens,
    write_frames,
    write_generator_meta,
)
from mfv2.datasets.registry import DATASETS
from mfv2.errors import ConfigError

if TYPE_CHECKING:
    from mfv2.synthetic import SyntheticSequence

__all__ = ["read_lasot", "lasot_layout", "write_clip", "write_synthetic", "SPLITS"]

SPLITS = ("test", "train", "all")
_NEED = "a LaSOT sequence folder needs img/ and groundtruth.txt"


def _names(path: Path) -> list[str]:
    return [r[0] for r in tokens(path, "a list of sequence names")]


def _pick(root: Path, found: list[str], split: str | None, split_file: str | None) -> list[str]:
    """The sequences of ``split``: None is testing_set.txt when present, else every sequence."""
    if split not in (None, *SPLITS):
        raise ConfigError(f"unknown LaSOT split {split!r}; choose {', '.join(SPLITS)}")
    if split == "all":
        return found
    if split_file is not None and not Path(split_file).is_file():
        raise ConfigError(f"LaSOT split file {split_file} does not exist")
    listed = Path(split_file) if split_file else root / ("training_set.txt" if split == "train" else "testing_set.txt")
    if listed.is_file():
        wanted = _names(listed)
        missing = [n for n in wanted if n not in found]
        if missing:
            raise ConfigError(f"{listed} lists {missing[0]} but {root} has no such sequence folder ({len(missing)} missing)")
        return wanted if split != "train" else [n for n in found if n in set(wanted)]
    if split is None:
        return found
    if split == "train" and (root / "testing_set.txt").is_file():
        excluded = set(_names(root / "testing_set.txt"))
        return [n for n in found if n not in excluded]
    raise ConfigError(
        f"LaSOT split {split!r} needs {root / 'training_set.txt'} or testing_set.txt (from the LaSOT "
        "toolkit) or split_file; or use split: all"
    )


@DATASETS.register("lasot")
def read_lasot(root: Path, *, split: str | None = None, split_file: str | None = None,
               frame_ranges: FrameRanges | None = None) -> Dataset:  # fmt: skip
    """LaSOT sequences (``<class>/<class>-<n>/`` folders, or sequence folders directly under ``root``).

    ``split``: ``test`` (``testing_set.txt``), ``train`` (``training_set.txt``, else every sequence
    not in ``testing_set.txt``), ``all``; None is ``testing_set.txt`` when present, else all.
    ``split_file`` names the list to use instead.
    """
    return lasot_layout(root, "lasot", split, split_file, frame_ranges)


def lasot_layout(root: Path, kind: str, split: str | None, split_file: str | None,
                 frame_ranges: FrameRanges | None) -> Dataset:  # fmt: skip
    """The LaSOT layout read as dataset ``kind`` (our synthetic benchmark is written in it too)."""
    ranges = dict(frame_ranges or {})
    is_seq = lambda d: (d / "img").is_dir() or (d / "groundtruth.txt").is_file()  # noqa: E731
    seqs: dict[str, Path] = {}
    for c in subdirs(root):
        for d in [c] if is_seq(c) else subdirs(c):
            if is_seq(d):
                seqs[d.name] = d
    if not seqs:
        raise ConfigError(f"no LaSOT sequence under {root}: expected <root>/<class>/<class>-<n>/img/ and groundtruth.txt")
    names = _pick(root, list(seqs), split, split_file)

    def load(name: str) -> TrackingSequence:
        d = seqs[name]
        gt = read_table(d / "groundtruth.txt", _NEED)
        frames = list_frames(d / "img", _NEED)
        hidden = np.zeros(len(frames), dtype=bool)
        for label in ("full_occlusion.txt", "out_of_view.txt"):
            if (d / label).is_file():
                hidden |= read_flags(d / label, len(frames)) > 0
        return assemble(name, kind, frames, gt, d / "groundtruth.txt", ranges.get(name), hidden=hidden)

    return Dataset(kind, root, names, load)


def write_clip(clip: SyntheticSequence, folder: Path, ext: str) -> None:
    """One clip as a LaSOT sequence folder: ``img/00000001<ext>`` ..., ``groundtruth.txt``,
    ``full_occlusion.txt`` and ``out_of_view.txt`` (one comma-separated line of 0/1, as LaSOT's),
    ``nlp.txt`` and ``synthetic.json``."""
    write_frames(clip, folder / "img", "%08d", ext)
    (folder / "groundtruth.txt").write_text(box_lines(clip.boxes))
    for label, flags in (("full_occlusion.txt", clip.full_occlusion), ("out_of_view.txt", clip.out_of_view)):
        (folder / label).write_text(",".join("1" if f else "0" for f in flags) + "\n")
    (folder / "nlp.txt").write_text(clip.description + "\n")
    write_generator_meta(clip, folder)


def write_synthetic(seqs: list[SyntheticSequence], root: Path, ext: str) -> None:
    """The clips as a LaSOT class folder ``synthetic/synthetic-<k>/`` with ``testing_set.txt`` listing them."""
    for s in seqs:
        write_clip(s, root / "synthetic" / s.name, ext)
    (root / "testing_set.txt").write_text("".join(s.name + "\n" for s in seqs))
