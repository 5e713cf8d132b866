"""Training dataset readers: one interface over GOT-10k, LaSOT, TrackingNet, COCO and synthetic clips.

A reader lists sequences; for sequence ``i`` it gives the ground truth (:class:`SequenceInfo`: boxes
``(x, y, w, h)`` in pixels and a visibility mask) and decodes frames as **RGB** uint8 ``H x W x 3`` (the
network's colour order; the official pipeline decodes RGB too). Image datasets (COCO) expose each
annotation as a one-frame sequence with ``is_video = False``. Readers are cheap to construct (folder
listings only) and read each sequence's annotation files once, on first use.

Readers are registered by name in :data:`DATASETS`; :func:`build_dataset` makes one from a config
mapping and turns a wrong option into a :class:`~mfv2.errors.ConfigError` listing the valid ones.
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mfv2.errors import ConfigError
from mfv2.registry import Registry

__all__ = [
    "SequenceInfo",
    "TrackingDataset",
    "DATASETS",
    "build_dataset",
    "read_image_rgb",
    "read_boxes",
    "Got10k",
    "Lasot",
    "TrackingNet",
    "GOT10K_SPLIT_FILES",
]


@dataclass(frozen=True)
class SequenceInfo:
    """Ground truth of one sequence: ``boxes`` (N, 4) float32 xywh pixels, ``visible`` (N,) bool."""

    boxes: np.ndarray
    visible: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def read_image_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3); an unreadable file is a :class:`ConfigError`."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ConfigError(f"cannot read image {path}; check that the dataset is complete and not corrupted")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_boxes(path: Path) -> np.ndarray:
    """Boxes (N, 4) float32 from a text file with one ``x,y,w,h`` line per frame (comma, tab or space)."""
    if not path.is_file():
        raise ConfigError(f"missing annotation file {path}; expected one 'x,y,w,h' line per frame")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.replace(",", " ").replace("\t", " ").split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError as e:
            raise ConfigError(f"{path}:{n}: expected 4 numbers 'x,y,w,h', got {line!r}") from e
        if len(values) != 4:
            raise ConfigError(f"{path}:{n}: expected 4 numbers 'x,y,w,h', got {len(values)}")
        rows.append(values)
    if not rows:
        raise ConfigError(f"annotation file {path} is empty")
    return np.asarray(rows, dtype=np.float32)


def _read_flags(path: Path, n: int) -> np.ndarray:
    """Integer flags (one per frame) from a label file, one per line or one comma-separated line."""
    if not path.is_file():
        raise ConfigError(f"missing label file {path}; expected {n} per-frame values")
    text = path.read_text().replace(",", " ")
    try:
        values = np.asarray([int(float(v)) for v in text.split()], dtype=np.int64)
    except ValueError as e:
        raise ConfigError(f"{path} must hold integer per-frame flags: {e}") from e
    if len(values) != n:
        raise ConfigError(f"{path} has {len(values)} values but the sequence has {n} boxes")
    return values


def _valid(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] > 0) & (boxes[:, 3] > 0)


class TrackingDataset(ABC):
    """A list of sequences with ground truth and frames (RGB uint8)."""

    name: str = "dataset"
    is_video: bool = True

    def __init__(self) -> None:
        self._info_cache: dict[int, SequenceInfo] = {}

    @abstractmethod
    def __len__(self) -> int:
        """Number of sequences."""

    @abstractmethod
    def sequence_name(self, index: int) -> str:
        """A readable identifier of sequence ``index``."""

    @abstractmethod
    def _load_info(self, index: int) -> SequenceInfo: ...

    @abstractmethod
    def _frame(self, index: int, frame_id: int) -> np.ndarray: ...

    def sequence_info(self, index: int) -> SequenceInfo:
        """Ground truth of sequence ``index``, read once and cached."""
        info = self._info_cache.get(index)
        if info is None:
            info = self._info_cache[index] = self._load_info(index)
        return info

    def frames(self, index: int, frame_ids: Sequence[int]) -> list[np.ndarray]:
        """Decoded RGB frames; a frame id repeated is decoded once."""
        decoded: dict[int, np.ndarray] = {}
        for f in frame_ids:
            if f not in decoded:
                decoded[f] = self._frame(index, int(f))
        return [decoded[f] for f in frame_ids]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} sequences)"


DATASETS: Registry[type[TrackingDataset]] = Registry("training dataset")


def build_dataset(name: str, **options: Any) -> TrackingDataset:
    """Construct the reader registered as ``name`` with keyword ``options`` (checked against its signature)."""
    cls = DATASETS.get(name)
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; valid: {', '.join(valid)}")
    missing = [p for p, v in params.items() if p != "self" and v.default is inspect.Parameter.empty and p not in options]
    if missing:
        raise ConfigError(f"dataset {name!r} needs option(s) {', '.join(missing)}")
    return cls(**options)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ConfigError(f"{what}: folder {path} does not exist")
    return path


# Split name -> pytracking's index file (one 0-based index into list.txt per line).
GOT10K_SPLIT_FILES = {
    "vot-train": "got10k_vot_train_split.txt",
    "vot-val": "got10k_vot_val_split.txt",
    "train": "got10k_train_split.txt",
    "val": "got10k_val_split.txt",
}


@DATASETS.register("got10k")
class Got10k(TrackingDataset):
    """GOT-10k training set: ``<root>/train/list.txt`` and ``GOT-10k_Train_XXXXXX/{00000001.jpg, ...}``.

    Splits follow the official index files: ``vot-train`` (7086), ``vot-val`` (1249), ``train`` (7934),
    ``val`` (1401) select sequences by 0-based index into ``list.txt``; ``train-full`` is every sequence.
    The index files come from pytracking (``ltr/data_specs``, GPL-3.0) and are not shipped with mfv2:
    copy them into ``split_dir`` (or next to ``list.txt``) or name one with ``split_file``.
    Visible = not absent, ``cover.label > 0`` and positive size.
    """

    name = "got10k"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train-full",
        split_file: str | os.PathLike[str] | None = None,
        split_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        base = _require_dir(Path(root), "GOT-10k root")
        self.root = base / "train" if (base / "train" / "list.txt").is_file() else base
        listing = self.root / "list.txt"
        if not listing.is_file():
            raise ConfigError(
                f"GOT-10k: {listing} not found; expected the GOT-10k root holding train/list.txt and the "
                "GOT-10k_Train_* sequence folders"
            )
        names = [line.strip().split(",")[0] for line in listing.read_text().splitlines() if line.strip()]
        if split == "train-full":
            self.sequences = names
        elif split in GOT10K_SPLIT_FILES:
            self.sequences = [names[i] for i in self._split_indices(split, split_file, split_dir, len(names))]
        else:
            raise ConfigError(f"unknown GOT-10k split {split!r}; choose from train-full, {', '.join(GOT10K_SPLIT_FILES)}")
        self.split = split

    def _split_indices(self, split: str, split_file: Any, split_dir: Any, count: int) -> list[int]:
        fname = GOT10K_SPLIT_FILES[split]
        path = Path(split_file) if split_file else (Path(split_dir) if split_dir else self.root) / fname
        if not path.is_file():
            raise ConfigError(
                f"GOT-10k split {split!r} needs the index file {path}; copy {fname} from pytracking's "
                "ltr/data_specs (not shipped: GPL-3.0) there, pass split_file, or use split: train-full"
            )
        try:
            indices = [int(v) for v in path.read_text().split()]
        except ValueError as e:
            raise ConfigError(f"{path} must hold one integer index per line: {e}") from e
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            raise ConfigError(f"{path}: index {bad[0]} is outside list.txt ({count} sequences); wrong split file?")
        return indices

    def __len__(self) -> int:
        return len(self.sequences)

    def sequence_name(self, index: int) -> str:
        return self.sequences[index]

    def _load_info(self, index: int) -> SequenceInfo:
        folder = self.root / self.sequences[index]
        boxes = read_boxes(folder / "groundtruth.txt")
        absent = _read_flags(folder / "absence.label", len(boxes))
        cover = _read_flags(folder / "cover.label", len(boxes))
        return SequenceInfo(boxes, (absent == 0) & (cover > 0) & _valid(boxes))

    def _frame(self, index: int, frame_id: int) -> np.ndarray:
        return read_image_rgb(self.root / self.sequences[index] / f"{frame_id + 1:08d}.jpg")


@DATASETS.register("lasot")
class Lasot(TrackingDataset):
    """LaSOT: ``<root>/<class>/<class>-<n>/{img/00000001.jpg, groundtruth.txt, full_occlusion.txt, out_of_view.txt}``.

    ``split: train`` keeps the 1120 training sequences: the names in ``split_file``, else in
    ``<root>/training_set.txt``, else every sequence not in ``<root>/testing_set.txt`` (the lists of the
    LaSOT toolkit). ``split: all`` keeps every sequence found. Visible = not fully occluded, not out of view,
    positive size.
    """

    name = "lasot"

    def __init__(
        self, root: str | os.PathLike[str], split: str = "train", split_file: str | os.PathLike[str] | None = None
    ) -> None:
        super().__init__()
        self.root = _require_dir(Path(root), "LaSOT root")
        found = sorted(
            (p.name for c in self.root.iterdir() if c.is_dir() for p in c.iterdir() if (p / "groundtruth.txt").is_file()),
            key=lambda n: (n.rsplit("-", 1)[0], int(n.rsplit("-", 1)[1]) if n.rsplit("-", 1)[-1].isdigit() else 0),
        )
        if not found:
            raise ConfigError(
                f"LaSOT: no sequences under {self.root}; expected <class>/<class>-<n>/groundtruth.txt folders"
            )
        if split == "all":
            self.sequences = found
        elif split == "train":
            self.sequences = self._train_names(found, split_file)
        else:
            raise ConfigError(f"unknown LaSOT split {split!r}; choose train or all")

    def _train_names(self, found: list[str], split_file: Any) -> list[str]:
        def names(path: Path) -> list[str]:
            return [n.strip() for n in path.read_text().replace(",", "\n").splitlines() if n.strip()]

        train = Path(split_file) if split_file else self.root / "training_set.txt"
        if train.is_file():
            wanted = set(names(train))
            missing = sorted(wanted - set(found))
            if missing:
                raise ConfigError(f"LaSOT: {len(missing)} sequences of {train} are missing under {self.root}, e.g. {missing[0]}")
            return [n for n in found if n in wanted]
        if split_file:
            raise ConfigError(f"LaSOT split file {train} does not exist")
        test = self.root / "testing_set.txt"
        if test.is_file():
            excluded = set(names(test))
            return [n for n in found if n not in excluded]
        raise ConfigError(
            f"LaSOT split 'train' needs {self.root / 'training_set.txt'} or testing_set.txt (from the LaSOT "
            "toolkit) or split_file; or use split: all"
        )

    def __len__(self) -> int:
        return len(self.sequences)

    def sequence_name(self, index: int) -> str:
        return self.sequences[index]

    def _folder(self, index: int) -> Path:
        name = self.sequences[index]
        return self.root / name.rsplit("-", 1)[0] / name

    def _load_info(self, index: int) -> SequenceInfo:
        folder = self._folder(index)
        boxes = read_boxes(folder / "groundtruth.txt")
        occluded = _read_flags(folder / "full_occlusion.txt", len(boxes))
        out_of_view = _read_flags(folder / "out_of_view.txt", len(boxes))
        return SequenceInfo(boxes, (occluded == 0) & (out_of_view == 0) & _valid(boxes))

    def _frame(self, index: int, frame_id: int) -> np.ndarray:
        return read_image_rgb(self._folder(index) / "img" / f"{frame_id + 1:08d}.jpg")


@DATASETS.register("trackingnet")
class TrackingNet(TrackingDataset):
    """TrackingNet training chunks: ``<root>/TRAIN_<k>/anno/<video>.txt`` and ``frames/<video>/<i>.jpg`` (0-based).

    ``sets`` picks the chunks (default all twelve, ``TRAIN_0`` .. ``TRAIN_11``); each must exist.
    Visible = positive size.
    """

    name = "trackingnet"

    def __init__(self, root: str | os.PathLike[str], sets: Sequence[int] = tuple(range(12))) -> None:
        super().__init__()
        self.root = _require_dir(Path(root), "TrackingNet root")
        self.sequences: list[tuple[int, str]] = []
        for k in sets:
            anno = self.root / f"TRAIN_{k}" / "anno"
            if not anno.is_dir():
                raise ConfigError(
                    f"TrackingNet: {anno} not found; expected TRAIN_{k}/anno and TRAIN_{k}/frames under {self.root} "
                    "(set 'sets' to the chunks you have, e.g. [0, 1, 2])"
                )
            self.sequences += [(int(k), p.stem) for p in sorted(anno.glob("*.txt"))]
        if not self.sequences:
            raise ConfigError(f"TrackingNet: no anno/*.txt files in TRAIN_{{{', '.join(map(str, sets))}}} under {self.root}")

    def __len__(self) -> int:
        return len(self.sequences)

    def sequence_name(self, index: int) -> str:
        k, vid = self.sequences[index]
        return f"TRAIN_{k}/{vid}"

    def _load_info(self, index: int) -> SequenceInfo:
        k, vid = self.sequences[index]
        boxes = read_boxes(self.root / f"TRAIN_{k}" / "anno" / f"{vid}.txt")
        return SequenceInfo(boxes, _valid(boxes))

    def _frame(self, index: int, frame_id: int) -> np.ndarray:
        k, vid = self.sequences[index]
        return read_image_rgb(self.root / f"TRAIN_{k}" / "frames" / vid / f"{frame_id}.jpg")
