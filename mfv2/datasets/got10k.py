"""GOT-10k: ``<root>/<train|val|test>/list.txt`` and ``<seq>/{00000001.jpg, groundtruth.txt,
absence.label, cover.label, meta_info.ini}``.

Visible = not absent and ``cover.label > 0`` (and an annotated box). The training subsets of
pytracking (``vot-train`` 7086, ``vot-val`` 1249, ``train`` 7934, ``val`` 1401 sequences) select
sequences of the train split by 0-based index into its ``list.txt``; their index files come from
pytracking (``ltr/data_specs``, GPL-3.0) and are not shipped with mfv2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mfv2.datasets.base import (
    Dataset,
    FrameRanges,
    TrackingSequence,
    assemble,
    box_lines,
    flag_lines,
    list_frames,
    read_flags,
    read_table,
    read_text,
    subdirs,
    tokens,
    write_frames,
)
from mfv2.datasets.registry import DATASETS
from mfv2.errors import ConfigError
from mfv2.geometry.boxes import box_intersection, cut_boxes

if TYPE_CHECKING:
    from mfv2.synthetic import SyntheticSequence

__all__ = ["write_synthetic", "cover_labels", "read_got10k", "SUBSET_FILES"]

# Subset name -> pytracking's index file (one 0-based index into the train split's list.txt per line).
SUBSET_FILES = {
    "vot-train": "got10k_vot_train_split.txt",
    "vot-val": "got10k_vot_val_split.txt",
    "train": "got10k_train_split.txt",
    "val": "got10k_val_split.txt",
}
_SPLITS = ("train", "val", "test")
_NEED = "a GOT-10k sequence folder needs its frames and groundtruth.txt"


def _split_dir(root: Path, split: str | None) -> Path:
    if (root / "list.txt").is_file() or any((c / "groundtruth.txt").is_file() for c in subdirs(root)):
        return root
    present = [s for s in _SPLITS if (root / s).is_dir()]
    if split is None:
        split = present[0] if len(present) == 1 else "val" if "val" in present else None
    if split is None or not (root / split).is_dir():
        raise ConfigError(f"no GOT-10k split {split or ''} under {root}: expected "
                          f"<root>/<train|val|test>/list.txt (present: {present or 'none'})")  # fmt: skip
    return root / split


def _subset(base: Path, names: list[str], subset: str, split_file: str | None, split_dir: str | None) -> list[str]:
    if subset not in SUBSET_FILES:
        raise ConfigError(f"unknown GOT-10k subset {subset!r}; choose from {', '.join(SUBSET_FILES)}")
    fname = SUBSET_FILES[subset]
    path = Path(split_file) if split_file else (Path(split_dir) if split_dir else base) / fname
    if not path.is_file():
        raise ConfigError(
            f"GOT-10k subset {subset!r} needs the index file {path}; copy {fname} from pytracking's "
            "ltr/data_specs (not shipped: GPL-3.0) there, pass split_file, or leave subset out"
        )
    try:
        indices = [int(v) for v in read_text(path, "index file").split()]
    except ValueError as e:
        raise ConfigError(f"{path} must hold one integer index per line: {e}") from e
    bad = [i for i in indices if not 0 <= i < len(names)]
    if bad:
        raise ConfigError(f"{path}: index {bad[0]} is outside list.txt ({len(names)} sequences); wrong split file?")
    return [names[i] for i in indices]


def _resolution(path: Path) -> tuple[int, int] | None:
    if not path.is_file():
        return None
    m = re.search(r"resolution\s*[:=]\s*\(?\s*(\d+)\s*,\s*(\d+)", read_text(path, "meta_info.ini"))
    return (int(m.group(1)), int(m.group(2))) if m else None


@DATASETS.register("got10k")
def read_got10k(root: Path, *, split: str | None = None, subset: str | None = None, split_file: str | None = None,
                split_dir: str | None = None, frame_ranges: FrameRanges | None = None) -> Dataset:  # fmt: skip
    """GOT-10k sequences of one split folder.

    ``split``: ``train``, ``val`` or ``test`` under ``root`` (default: the only one present, else
    ``val``); ``root`` may be the split folder itself. ``subset`` (``vot-train``, ``vot-val``,
    ``train``, ``val``) keeps the sequences of a pytracking index file, found in ``split_dir`` or next
    to ``list.txt``, or named by ``split_file``.
    """
    ranges = dict(frame_ranges or {})
    if split is not None and split not in _SPLITS:
        raise ConfigError(f"unknown GOT-10k split {split!r}; choose {', '.join(_SPLITS)} (pytracking's training "
                          "subsets go in subset:, e.g. split: train, subset: vot-train)")
    base = _split_dir(root, split)
    if (base / "list.txt").is_file():
        names = [r[0] for r in tokens(base / "list.txt", "")]
    else:
        names = [d.name for d in subdirs(base) if (d / "groundtruth.txt").is_file()]
    if not names:
        raise ConfigError(f"no GOT-10k sequence in {base}: expected list.txt and <seq>/00000001.jpg + groundtruth.txt")
    if subset is not None:
        names = _subset(base, names, subset, split_file, split_dir)

    def load(name: str) -> TrackingSequence:
        d = base / name
        frames = list_frames(d, _NEED)
        gt = read_table(d / "groundtruth.txt", _NEED)
        n = len(frames)
        cover = read_flags(d / "cover.label", n) if (d / "cover.label").is_file() else None
        hidden = np.zeros(n, dtype=bool)
        if (d / "absence.label").is_file():
            hidden = read_flags(d / "absence.label", n) > 0
        if cover is not None:
            hidden = hidden | (cover == 0)
        return assemble(name, "got10k", frames, gt, d / "groundtruth.txt", ranges.get(name), hidden=hidden,
                        cover=cover, image_size=_resolution(d / "meta_info.ini"))  # fmt: skip

    return Dataset("got10k", base, names, load)


def cover_labels(seq: SyntheticSequence) -> np.ndarray:
    """GOT-10k ``cover.label`` classes of a clip: 0 where the target is not visible, else
    ``ceil(8 * f)`` (1..8) with ``f`` the fraction of the true target box inside the frame and not
    under the occluder."""
    geo, occ = seq._geo, seq._occ  # the true (unclipped) target and occluder boxes
    w, h = seq.config.width, seq.config.height
    inside = cut_boxes(geo, w, h)
    hidden = np.nan_to_num(box_intersection(inside, occ))
    frac = (inside[:, 2] * inside[:, 3] - hidden) / (geo[:, 2] * geo[:, 3])
    cover = np.clip(np.ceil(np.clip(frac, 0.0, 1.0) * 8 - 1e-9), 1, 8).astype(int)
    return np.where(seq.visible, cover, 0)


def write_synthetic(seqs: list[SyntheticSequence], root: Path, ext: str) -> None:
    """The clips as GOT-10k's val split: frames, groundtruth.txt, absence/cover/cut_by_image labels, meta_info.ini."""
    base = root / "val"
    for s in seqs:
        d = base / s.name
        write_frames(s, d, "%08d", ext)
        (d / "groundtruth.txt").write_text(box_lines(s.boxes))
        (d / "absence.label").write_text(flag_lines(s.out_of_view))
        (d / "cover.label").write_text(flag_lines(cover_labels(s)))
        g, c = s._geo, s.config
        cut = (g[:, 0] < 0) | (g[:, 1] < 0) | (g[:, 0] + g[:, 2] > c.width) | (g[:, 1] + g[:, 3] > c.height)
        (d / "cut_by_image.label").write_text(flag_lines(cut))
        (d / "meta_info.ini").write_text(
            "[METAINFO]\n"
            f"object_class: {s.description}\n"
            f"resolution: ({c.width}, {c.height})\n"
            "anno_fps: 30Hz\n"
        )
    (base / "list.txt").write_text("".join(s.name + "\n" for s in seqs))
