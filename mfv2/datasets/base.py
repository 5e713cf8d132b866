"""What every reader returns and the text files they share.

A reader turns a dataset folder into a :class:`Dataset`, a lazily loaded list of
:class:`TrackingSequence` (frames, ``(N, 4)`` xywh ground truth with NaN rows where a frame is not
annotated, visibility flags). Evaluation iterates the sequences; training's sampler asks for
:meth:`Dataset.sequence_info` (boxes and visibility) and :meth:`Dataset.frames` (RGB) by index.
Frames are found by sorting the image files present (numerically by the digits in their names), so
0- and 1-based numbering both work. Annotation files may be comma, tab or space separated.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.errors import ConfigError
from mfv2.fileio import IMAGE_SUFFIXES, natural_key

__all__ = ["TrackingSequence", "SequenceInfo", "Dataset", "read_boxes", "read_flags", "natural_key", "box_lines", "flag_lines",
           "write_frames", "write_generator_meta"]

_SPLIT = re.compile(r"[,\s]+")
_DIGITS = re.compile(r"(\d+)")
_CACHED_SEQUENCES = 64  # loaded sequences kept per dataset (frame lists of long videos are large)

FrameRanges = Mapping[str, tuple[int, int]]


@dataclass(frozen=True, eq=False)
class TrackingSequence:
    """One annotated video.

    Attributes:
        name: sequence name, unique within the dataset (e.g. ``airplane-1``).
        dataset: dataset kind (``lasot``, ``got10k``, ...).
        frame_paths: the N frames in order (empty for clips rendered in memory).
        gt: ``(N, 4)`` float64 xywh in pixels, raw as stored; NaN rows where not annotated.
        visible: ``(N,)`` bool, False where the target is absent, fully occluded, out of view or
            the frame has no annotation.
        cover: ``(N,)`` GOT-10k visible-ratio class 0..8, else None.
        image_size: ``(width, height)`` when the dataset states it (GOT-10k ``meta_info.ini``).
        render: frame ``i`` as BGR uint8 for clips without files.
    """

    name: str
    dataset: str
    frame_paths: list[Path]
    gt: np.ndarray
    visible: np.ndarray
    cover: np.ndarray | None = None
    image_size: tuple[int, int] | None = None
    render: Callable[[int], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.gt) if self.render is not None else len(self.frame_paths)

    @property
    def init_box(self) -> np.ndarray:
        """The first-frame xywh box the tracker starts from."""
        return self.gt[0]

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as OpenCV's BGR uint8 ``H x W x 3``; an unreadable file is a ConfigError."""
        if self.render is not None:
            return self.render(i)
        import cv2

        path = self.frame_paths[i]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ConfigError(f"cannot read image {path}; check the file or re-extract the dataset")
        return img


@dataclass(frozen=True)
class SequenceInfo:
    """Ground truth for training: ``boxes`` (N, 4) float32 xywh pixels, ``visible`` (N,) bool (positive size too)."""

    boxes: np.ndarray
    visible: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


class Dataset:
    """Sequences of one dataset, each loaded when first asked for (the last few stay cached).

    ``is_video`` False marks image datasets (COCO): every sequence is one frame.
    """

    def __init__(self, name: str, root: Path | None, names: Sequence[str],
                 load: Callable[[str], TrackingSequence], *, is_video: bool = True) -> None:  # fmt: skip
        self.name, self.root, self.names, self.is_video = name, root, list(names), is_video
        self._load = load
        # (kind, root, options) of open_dataset, set by it: how a pickled copy opens the dataset again
        self.source: tuple[str, Path | None, dict[str, Any]] | None = None
        self._cache: OrderedDict[str, TrackingSequence] = OrderedDict()
        self._info: dict[int, SequenceInfo] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[TrackingSequence]:
        return (self[n] for n in self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, key: int | str) -> TrackingSequence:
        name = self.names[key] if isinstance(key, int) else key
        seq = self._cache.get(name)
        if seq is None:
            if name not in self.names:
                raise KeyError(f"no sequence {name!r} in {self.name} at {self.root}")
            seq = self._cache[name] = self._load(name)
            if len(self._cache) > _CACHED_SEQUENCES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(name)
        return seq

    def sequence_name(self, index: int) -> str:
        """The name of sequence ``index``."""
        return self.names[index]

    def sequence_info(self, index: int) -> SequenceInfo:
        """Training's ground truth of sequence ``index``: visible also needs a positive box size."""
        info = self._info.get(index)
        if info is None:
            seq = self[index]
            boxes = np.asarray(seq.gt, dtype=np.float32)
            visible = seq.visible & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
            info = self._info[index] = SequenceInfo(boxes, visible)
        return info

    def frames(self, index: int, frame_ids: Sequence[int]) -> list[np.ndarray]:
        """Decoded RGB frames (the network's colour order) of sequence ``index``; a repeated id is decoded once."""
        import cv2

        seq = self[index]
        decoded: dict[int, np.ndarray] = {}
        for f in frame_ids:
            if f not in decoded:
                decoded[f] = cv2.cvtColor(seq.frame(int(f)), cv2.COLOR_BGR2RGB)
        return [decoded[f] for f in frame_ids]

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get how to open the dataset again (readers load through closures, which do
        # not pickle), not the loaded sequences.
        state = {**self.__dict__, "_cache": OrderedDict(), "_info": {}}
        if self.source is not None:
            del state["_load"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_load" not in state:
            from mfv2.datasets.registry import open_dataset

            kind, root, options = state["source"]
            self._load = open_dataset(root, kind, **options)._load

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, root={str(self.root)!r}, sequences={len(self)})"


# ---------------------------------------------------------------------------- text files


def read_text(path: Path, what: str) -> str:
    """The text of an annotation or result file; a binary or unreadable file is a one-line ConfigError."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a text file (byte {e.start} is not UTF-8): expected a {what}") from e
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e


def tokens(path: Path, what: str) -> list[list[str]]:
    """The non-empty lines of a text file, split at commas and white space."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: {what}")
    rows = []
    for line in read_text(path, what).splitlines():
        line = line.strip().strip(",")
        if line:
            rows.append(_SPLIT.split(line))
    return rows


def read_table(path: Path, what: str, ncols: int = 4) -> np.ndarray:
    """``(N, ncols)`` float64 numbers, one row per line (``nan`` allowed)."""
    rows = tokens(path, what)
    for i, r in enumerate(rows):
        if len(r) != ncols:
            raise ConfigError(f"{path}: line {i + 1} does not hold {ncols} numbers (x, y, w, h)")
    try:
        return np.array(rows, dtype=np.float64).reshape(-1, ncols)  # parses "nan", "NaN"
    except ValueError as e:
        raise ConfigError(f"{path}: not a table of numbers ({e})") from e


def read_boxes(path: str | os.PathLike[str]) -> np.ndarray:
    """Read ``(N, 4)`` xywh boxes, one per line, separated by tabs, commas or spaces (annotations and results)."""
    return read_table(Path(path), "file with one x,y,w,h box per line")


def read_flags(path: Path, n: int) -> np.ndarray:
    """One integer per frame, on one comma-separated line (LaSOT) or one per line (GOT-10k, VOT tags)."""
    flat = [t for r in tokens(path, "label file") for t in r]
    try:
        vals = np.array([int(float(t)) for t in flat], dtype=np.int64)
    except ValueError as e:
        raise ConfigError(f"{path}: expected integer labels ({e})") from e
    if vals.shape[0] != n:
        raise ConfigError(f"{path}: {vals.shape[0]} labels for {n} frames")
    return vals


def subdirs(p: Path) -> list[Path]:
    """The folders in ``p``, naturally sorted."""
    return sorted((c for c in p.iterdir() if c.is_dir()), key=lambda c: natural_key(c.name))


def list_frames(folder: Path, what: str) -> list[Path]:
    """The image files of ``folder``, naturally sorted."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} not found: {what}")
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.name.lower().endswith(IMAGE_SUFFIXES)]
    if not names:
        raise ConfigError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): {what}")
    return [folder / n for n in sorted(names, key=natural_key)]


def _frame_number(path: Path) -> int:
    digits = _DIGITS.findall(path.stem)
    if not digits:
        raise ConfigError(f"{path}: frame name has no number, cannot apply a frame range")
    return int(digits[-1])


def assemble(name: str, kind: str, frames: list[Path], gt: np.ndarray, gt_path: Path,
             frame_range: tuple[int, int] | None, *, hidden: np.ndarray | None = None,
             cover: np.ndarray | None = None, image_size: tuple[int, int] | None = None,
             ) -> TrackingSequence:  # fmt: skip
    """Apply an optional frame range, pad first-frame-only annotations, check lengths."""
    if frame_range is not None:
        first, last = frame_range
        idx = [i for i, f in enumerate(frames) if first <= _frame_number(f) <= last]
        if not idx:
            raise ConfigError(f"{name}: no frame numbered {first}..{last} in {frames[0].parent}")
        if gt.shape[0] == len(frames):
            gt = gt[idx]
        hidden = None if hidden is None else hidden[idx]
        cover = None if cover is None else cover[idx]
        frames = [frames[i] for i in idx]
    n = len(frames)
    if gt.shape[0] == 1 and n > 1:  # test splits annotate only the first frame
        gt = np.vstack([gt, np.full((n - 1, 4), np.nan)])
    if gt.shape[0] != n:
        hint = "; pass frame_ranges={%r: (first, last)}" % name if frame_range is None else ""
        raise ConfigError(f"{name}: {n} frames in {frames[0].parent} but {gt.shape[0]} boxes "
                          f"in {gt_path}{hint}")  # fmt: skip
    visible = np.isfinite(gt).all(axis=1)
    if hidden is not None:
        visible &= ~hidden
    return TrackingSequence(name=name, dataset=kind, frame_paths=frames, gt=gt, visible=visible,
                            cover=cover, image_size=image_size)  # fmt: skip


# ---------------------------------------------------------------------- writing (synthetic clips)


def _num(v: float) -> str:
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def box_lines(boxes: np.ndarray) -> str:
    """``x,y,w,h`` lines, numbers as short as they round-trip."""
    return "".join(",".join(_num(v) for v in b) + "\n" for b in boxes)


def flag_lines(flags: Any) -> str:
    """One 0/1 (or integer) per line."""
    return "".join(f"{int(v)}\n" for v in np.asarray(flags).astype(int))


def write_frames(frames: Any, folder: Path, pattern: str, ext: str) -> None:
    """Write ``frames`` (a sequence with ``len`` and ``frame(i)``, BGR) as ``folder/<pattern % (i + 1)><ext>``."""
    import cv2

    from mfv2.errors import Mfv2Error

    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    for i in range(len(frames)):
        path = folder / (pattern % (i + 1) + ext)
        try:
            ok = cv2.imwrite(str(path), frames.frame(i), params)
        except cv2.error as e:
            raise Mfv2Error(f"OpenCV could not write {path}: {e}") from e
        if not ok:
            raise Mfv2Error(f"OpenCV could not write {path}")


def write_generator_meta(clip: Any, folder: Path) -> None:
    """``folder/synthetic.json``: the generator, its version and the clip's config (marks a synthetic clip)."""
    import json

    from mfv2 import __version__

    meta = {"generator": "mfv2.synthetic", "version": __version__, "name": clip.name, "config": clip.config.to_dict()}
    (folder / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
