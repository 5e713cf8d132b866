"""Tracking-benchmark readers (LaSOT, GOT-10k, TrackingNet, OTB100, UAV123, VOT) and result files.

A reader turns a dataset folder into a :class:`Dataset`, a lazily loaded list of
:class:`TrackingSequence` (frame paths, ``(N, 4)`` xywh ground truth with NaN rows where a frame is
not annotated, visibility flags). Frames are found by sorting the image files present (numerically
by the digits in their names), so 0- and 1-based numbering both work. Annotation files may be comma,
tab or space separated. ``open_dataset(root)`` recognises the layout; our synthetic generator writes
the LaSOT layout. Result files use the pytracking layout (``<seq>.txt``, ``<seq>_time.txt``) or the
GOT-10k submission layout (``<seq>/<seq>_001.txt``); every write is atomic.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.errors import ConfigError, ShapeError
from mfv2.fileio import atomic_write_text
from mfv2.registry import Registry

__all__ = [
    "TrackingSequence", "Dataset", "open_dataset", "detect_layout", "dataset_kinds",
    "read_boxes", "write_boxes", "read_times", "write_times", "read_results", "write_result",
    "read_got10k_result", "write_got10k_result",
]  # fmt: skip

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_SPLIT = re.compile(r"[,\s]+")
_DIGITS = re.compile(r"(\d+)")

FrameRanges = Mapping[str, tuple[int, int]]


@dataclass(frozen=True, eq=False)
class TrackingSequence:
    """One annotated video.

    Attributes:
        name: sequence name, unique within the dataset (e.g. ``airplane-1``).
        dataset: dataset kind (``lasot``, ``got10k``, ...).
        frame_paths: the N frames in order.
        gt: ``(N, 4)`` float64 xywh in pixels, raw as stored; NaN rows where not annotated.
        visible: ``(N,)`` bool, False where the target is absent, fully occluded, out of view or
            the frame has no annotation.
        cover: ``(N,)`` GOT-10k visible-ratio class 0..8, else None.
        image_size: ``(width, height)`` when the dataset states it (GOT-10k ``meta_info.ini``).
    """

    name: str
    dataset: str
    frame_paths: list[Path]
    gt: np.ndarray
    visible: np.ndarray
    cover: np.ndarray | None = None
    image_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def init_box(self) -> np.ndarray:
        """The first-frame xywh box the tracker starts from."""
        return self.gt[0]


class Dataset:
    """Sequences of one dataset folder, each loaded (and cached) when first asked for."""

    def __init__(self, name: str, root: Path, names: list[str],
                 load: Callable[[str], TrackingSequence]) -> None:
        self.name, self.root, self.names = name, root, list(names)
        self._load = load
        self._cache: dict[str, TrackingSequence] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[TrackingSequence]:
        return (self[n] for n in self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, key: int | str) -> TrackingSequence:
        name = self.names[key] if isinstance(key, int) else key
        if name not in self._cache:
            if name not in self.names:
                raise KeyError(f"no sequence {name!r} in {self.name} at {self.root}")
            self._cache[name] = self._load(name)
        return self._cache[name]

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, root={str(self.root)!r}, sequences={len(self)})"


# ---------------------------------------------------------------------------- text files


def _read_text(path: Path, what: str) -> str:
    """The text of an annotation or result file; a binary or unreadable file is a one-line ConfigError."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a text file (byte {e.start} is not UTF-8): expected a {what}") from e
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e


def _tokens(path: Path, what: str) -> list[list[str]]:
    if not path.is_file():
        raise ConfigError(f"{path} not found: {what}")
    rows = []
    for line in _read_text(path, what).splitlines():
        line = line.strip().strip(",")
        if line:
            rows.append(_SPLIT.split(line))
    return rows


def _read_table(path: Path, what: str, ncols: int = 4) -> np.ndarray:
    rows = _tokens(path, what)
    for i, r in enumerate(rows):
        if len(r) != ncols:
            raise ConfigError(f"{path}: line {i + 1} does not hold {ncols} numbers (x, y, w, h)")
    try:
        return np.array(rows, dtype=np.float64).reshape(-1, ncols)  # parses "nan", "NaN"
    except ValueError as e:
        raise ConfigError(f"{path}: not a table of numbers ({e})") from e


def _read_flags(path: Path, n: int) -> np.ndarray:
    """One integer per frame, on one comma-separated line (LaSOT) or one per line (GOT-10k)."""
    flat = [t for r in _tokens(path, "label file") for t in r]
    try:
        vals = np.array([int(float(t)) for t in flat], dtype=np.int64)
    except ValueError as e:
        raise ConfigError(f"{path}: expected integer labels ({e})") from e
    if vals.shape[0] != n:
        raise ConfigError(f"{path}: {vals.shape[0]} labels for {n} frames")
    return vals


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in _DIGITS.split(name)]


def _list_frames(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f"{folder} not found: {what}")
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.name.lower().endswith(IMAGE_SUFFIXES)]
    if not names:
        raise ConfigError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): {what}")
    return [folder / n for n in sorted(names, key=_natural)]


def _frame_number(path: Path) -> int:
    digits = _DIGITS.findall(path.stem)
    if not digits:
        raise ConfigError(f"{path}: frame name has no number, cannot apply a frame range")
    return int(digits[-1])


def _assemble(name: str, kind: str, frames: list[Path], gt: np.ndarray, gt_path: Path,
              frame_range: tuple[int, int] | None, *, hidden: np.ndarray | None = None,
              cover: np.ndarray | None = None, image_size: tuple[int, int] | None = None,
              ) -> TrackingSequence:
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
                          f"in {gt_path}{hint}")
    visible = np.isfinite(gt).all(axis=1)
    if hidden is not None:
        visible &= ~hidden
    return TrackingSequence(name=name, dataset=kind, frame_paths=frames, gt=gt, visible=visible,
                            cover=cover, image_size=image_size)


# ------------------------------------------------------------------------------- readers

_READERS: Registry[Callable[..., Dataset]] = Registry("dataset kind")
_ALIASES = {"got-10k": "got10k", "otb100": "otb", "otb2015": "otb", "uav": "uav123"}


def _subdirs(p: Path) -> list[Path]:
    return sorted((c for c in p.iterdir() if c.is_dir()), key=lambda c: _natural(c.name))


@_READERS.register("lasot")
def _lasot(root: Path, *, kind: str = "lasot", frame_ranges: FrameRanges, **_: Any) -> Dataset:
    need = "a LaSOT sequence folder needs img/ and groundtruth.txt"
    is_seq = lambda d: (d / "img").is_dir() or (d / "groundtruth.txt").is_file()  # noqa: E731
    seqs: dict[str, Path] = {}
    for c in _subdirs(root):
        for d in [c] if is_seq(c) else _subdirs(c):
            if is_seq(d):
                seqs[d.name] = d
    if not seqs:
        raise ConfigError(f"no LaSOT sequence under {root}: expected "
                          f"<root>/<class>/<class>-<n>/img/ and groundtruth.txt")
    names = list(seqs)
    if (root / "testing_set.txt").is_file():
        names = [r[0] for r in _tokens(root / "testing_set.txt", "")]
        missing = [n for n in names if n not in seqs]
        if missing:
            raise ConfigError(f"{root / 'testing_set.txt'} lists {missing[0]} but {root} has no "
                              f"such sequence folder ({len(missing)} missing)")

    def load(name: str) -> TrackingSequence:
        d = seqs[name]
        gt = _read_table(d / "groundtruth.txt", need)
        frames = _list_frames(d / "img", need)
        hidden = np.zeros(len(frames), dtype=bool)
        for label in ("full_occlusion.txt", "out_of_view.txt"):
            if (d / label).is_file():
                hidden |= _read_flags(d / label, len(frames)) > 0
        return _assemble(name, kind, frames, gt, d / "groundtruth.txt",
                         frame_ranges.get(name), hidden=hidden)

    return Dataset(kind, root, names, load)


@_READERS.register("synthetic")
def _synthetic(root: Path, **opts: Any) -> Dataset:
    """Clips from ``mfv2.synthetic``, written in the LaSOT layout."""
    return _lasot(root, kind="synthetic", **opts)


def _got_split_dir(root: Path, split: str | None) -> Path:
    if (root / "list.txt").is_file() or any((c / "groundtruth.txt").is_file()
                                            for c in _subdirs(root)):
        return root
    present = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    if split is None:
        split = present[0] if len(present) == 1 else "val" if "val" in present else None
    if split is None or not (root / split).is_dir():
        raise ConfigError(f"no GOT-10k split {split or ''} under {root}: expected "
                          f"<root>/<train|val|test>/list.txt (present: {present or 'none'})")
    return root / split


def _resolution(path: Path) -> tuple[int, int] | None:
    if not path.is_file():
        return None
    m = re.search(r"resolution\s*[:=]\s*\(?\s*(\d+)\s*,\s*(\d+)", _read_text(path, "meta_info.ini"))
    return (int(m.group(1)), int(m.group(2))) if m else None


@_READERS.register("got10k")
def _got10k(root: Path, *, split: str | None = None, frame_ranges: FrameRanges,
            **_: Any) -> Dataset:
    base = _got_split_dir(root, split)
    need = "a GOT-10k sequence folder needs its frames and groundtruth.txt"
    if (base / "list.txt").is_file():
        names = [r[0] for r in _tokens(base / "list.txt", "")]
    else:
        names = [d.name for d in _subdirs(base) if (d / "groundtruth.txt").is_file()]
    if not names:
        raise ConfigError(f"no GOT-10k sequence in {base}: expected list.txt and "
                          f"<seq>/00000001.jpg + groundtruth.txt")

    def load(name: str) -> TrackingSequence:
        d = base / name
        frames = _list_frames(d, need)
        gt = _read_table(d / "groundtruth.txt", need)
        n = len(frames)
        cover = _read_flags(d / "cover.label", n) if (d / "cover.label").is_file() else None
        hidden = np.zeros(n, dtype=bool)
        if (d / "absence.label").is_file():
            hidden = _read_flags(d / "absence.label", n) > 0
        if cover is not None:
            hidden = hidden | (cover == 0)
        return _assemble(name, "got10k", frames, gt, d / "groundtruth.txt",
                         frame_ranges.get(name), hidden=hidden, cover=cover,
                         image_size=_resolution(d / "meta_info.ini"))

    return Dataset("got10k", base, names, load)


def _vot_base(root: Path) -> Path:
    return root / "sequences" if (root / "sequences" / "list.txt").is_file() else root


@_READERS.register("vot")
def _vot(root: Path, *, frame_ranges: FrameRanges, **_: Any) -> Dataset:
    """VOT sequences (a workspace or its ``sequences`` folder): ``list.txt``, ``<seq>/sequence``,
    ``color/``, ``groundtruth.txt``; polygons and masks become their bounding boxes, special regions
    NaN rows (see :mod:`mfv2.datasets.vot_regions`); frames tagged ``full_occlusion`` or
    ``out_of_view`` (as ``mfv2 synth --layout vot`` writes) are not visible."""
    from mfv2.datasets.vot_regions import parse_region

    base = _vot_base(root)
    need = "a VOT sequence folder needs color/ (or the channel in its sequence file) and groundtruth.txt"
    if (base / "list.txt").is_file():
        names = [r[0] for r in _tokens(base / "list.txt", "")]
    else:
        names = [d.name for d in _subdirs(base) if (d / "sequence").is_file()]
    if not names:
        raise ConfigError(f"no VOT sequence in {base}: expected list.txt and <seq>/sequence, "
                          f"<seq>/color/00000001.jpg, <seq>/groundtruth.txt")

    def load(name: str) -> TrackingSequence:
        d = base / name
        folder = d / "color"
        meta = d / "sequence"
        if meta.is_file():
            m = re.search(r"^channels\.color\s*=\s*(.+)$", _read_text(meta, "VOT sequence file"), re.MULTILINE)
            if m:
                folder = (d / m.group(1).strip()).parent
        frames = _list_frames(folder, need)
        gt_path = d / "groundtruth.txt"
        if not gt_path.is_file():
            raise ConfigError(f"{gt_path} not found: {need}")
        rows = []
        for i, line in enumerate(_read_text(gt_path, need).splitlines()):
            if line.strip():
                try:
                    box = parse_region(line)
                except ConfigError as e:
                    raise ConfigError(f"{gt_path}: line {i + 1}: {e}") from e
                rows.append(box if box is not None else (np.nan,) * 4)
        gt = np.array(rows, dtype=np.float64).reshape(-1, 4)
        hidden = np.zeros(len(frames), dtype=bool)
        for tag in ("full_occlusion.tag", "out_of_view.tag"):
            if (d / tag).is_file():
                hidden |= _read_flags(d / tag, len(frames)) > 0
        return _assemble(name, "vot", frames, gt, gt_path, frame_ranges.get(name), hidden=hidden)

    return Dataset("vot", base, names, load)


@_READERS.register("trackingnet")
def _trackingnet(root: Path, *, split: str | None = None, frame_ranges: FrameRanges,
                 **_: Any) -> Dataset:
    base = root if (root / "anno").is_dir() else root / (split or "TEST")
    if not (base / "anno").is_dir() or not (base / "frames").is_dir():
        raise ConfigError(f"{base / 'anno'} not found: a TrackingNet split needs anno/<vid>.txt "
                          f"and frames/<vid>/0.jpg")
    names = sorted((p.stem for p in (base / "anno").glob("*.txt")), key=_natural)

    def load(name: str) -> TrackingSequence:
        gt_path = base / "anno" / f"{name}.txt"
        frames = _list_frames(base / "frames" / name, "TrackingNet frames/<vid>/<i>.jpg")
        return _assemble(name, "trackingnet", frames, _read_table(gt_path, ""), gt_path,
                         frame_ranges.get(name))

    return Dataset("trackingnet", base, names, load)


@_READERS.register("otb")
def _otb(root: Path, *, frame_ranges: FrameRanges, **_: Any) -> Dataset:
    need = "an OTB sequence folder needs img/ and groundtruth_rect.txt"
    annos: dict[str, tuple[Path, Path]] = {}
    for d in _subdirs(root):
        for gt_path in sorted(d.glob("groundtruth_rect*.txt")):
            m = re.fullmatch(r"groundtruth_rect(?:\.(\d+))?\.txt", gt_path.name)
            if m:  # groundtruth_rect.2.txt marks the second target: name <Seq>_2
                annos[d.name if m.group(1) is None else f"{d.name}_{m.group(1)}"] = (d, gt_path)
    if not annos:
        raise ConfigError(f"no OTB sequence under {root}: expected <root>/<Seq>/img/ and "
                          f"groundtruth_rect.txt")

    def load(name: str) -> TrackingSequence:
        d, gt_path = annos[name]
        frames = _list_frames(d / "img", need)
        return _assemble(name, "otb", frames, _read_table(gt_path, need), gt_path,
                         frame_ranges.get(name))

    return Dataset("otb", root, list(annos), load)


@_READERS.register("uav123")
def _uav123(root: Path, *, subset: str = "UAV123", frame_ranges: FrameRanges,
            **_: Any) -> Dataset:
    anno, data = (root / top / subset if (root / top / subset).is_dir() else root / top
                  for top in ("anno", "data_seq"))
    if not anno.is_dir() or not data.is_dir():
        raise ConfigError(f"{anno} not found: UAV123 needs data_seq/{subset}/<seq>/ and "
                          f"anno/{subset}/<seq>.txt")
    names = sorted((p.stem for p in anno.glob("*.txt")), key=_natural)
    if not names:
        raise ConfigError(f"no <seq>.txt annotation in {anno}")

    def load(name: str) -> TrackingSequence:
        folder = data / name
        if not folder.is_dir():  # split sequences (bird1_1) share the folder bird1
            folder = data / re.sub(r"_\d+$", "", name)
            if folder.name != name and name not in frame_ranges:
                raise ConfigError(f"{name}: no folder {data / name}; it is part of {folder}, "
                                  f"pass frame_ranges={{{name!r}: (first, last)}}")
        gt_path = anno / f"{name}.txt"
        frames = _list_frames(folder, "UAV123 frames data_seq/<subset>/<seq>/000001.jpg")
        return _assemble(name, "uav123", frames, _read_table(gt_path, ""), gt_path,
                         frame_ranges.get(name))

    return Dataset("uav123", root, names, load)


def dataset_kinds() -> list[str]:
    """The dataset kinds :func:`open_dataset` accepts."""
    return _READERS.names()


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Guess the dataset kind of a folder from its layout.

    Raises:
        ConfigError: not a folder, or no known layout.
    """
    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"dataset root {r} is not a directory")
    kids = _subdirs(r)
    if (r / "data_seq").is_dir() and (r / "anno").is_dir():
        return "uav123"
    if ((r / "anno").is_dir() and (r / "frames").is_dir()) or any(
        (c / "anno").is_dir() and (c / "frames").is_dir() for c in kids
    ):
        return "trackingnet"
    if (r / "sequences" / "list.txt").is_file() or any((c / "sequence").is_file() for c in kids):
        return "vot"
    if (r / "list.txt").is_file() or any((c / "list.txt").is_file() for c in kids) or any(
        (c / "absence.label").is_file() or (c / "cover.label").is_file() for c in kids
    ):
        return "got10k"
    if any(next(c.glob("groundtruth_rect*.txt"), None) for c in kids):
        return "otb"
    seqs = [d for c in kids for d in [c, *_subdirs(c)] if (d / "img").is_dir()]
    if seqs:  # mfv2.synthetic writes the LaSOT layout plus synthetic.json per sequence
        return "synthetic" if (seqs[0] / "synthetic.json").is_file() else "lasot"
    raise ConfigError(
        f"cannot tell the dataset layout of {r}: expected LaSOT (<cls>/<cls>-<n>/img/), GOT-10k "
        f"(list.txt), TrackingNet (anno/, frames/), OTB (<Seq>/groundtruth_rect.txt), UAV123 "
        f"(data_seq/, anno/) or VOT (list.txt, <seq>/sequence); pass kind= to say which"
    )


def open_dataset(root: str | os.PathLike[str], kind: str | None = None, *,
                 split: str | None = None, frame_ranges: FrameRanges | None = None) -> Dataset:
    """Open a dataset folder as a lazily loaded list of sequences.

    Args:
        root: dataset folder (for GOT-10k/TrackingNet either the root or one split folder).
        kind: ``lasot``, ``got10k``, ``trackingnet``, ``otb``, ``uav123``, ``vot`` or
            ``synthetic`` (LaSOT layout); None detects it.
        split: GOT-10k ``train|val|test`` (default: the only one, else ``val``), TrackingNet
            ``TEST``/``TRAIN_<i>`` (default ``TEST``).
        frame_ranges: sequence name -> inclusive ``(first, last)`` frame numbers as in the file
            names, for sequences that use only part of their folder (OTB David, UAV123 bird1_1).

    Raises:
        ConfigError: missing folder or file, malformed annotation, unknown layout.
        UnknownNameError: unknown ``kind``.
    """
    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"dataset root {r} is not a directory")
    k = detect_layout(r) if kind is None else _ALIASES.get(kind.lower(), kind.lower())
    ds = _READERS.get(k)(r, split=split, frame_ranges=dict(frame_ranges or {}))
    logger.debug("opened %s at %s: %d sequences", ds.name, ds.root, len(ds))
    return ds


# -------------------------------------------------------------------------- result files


def _format(rows: np.ndarray, delimiter: str, fmt: str) -> str:
    return "".join(
        delimiter.join(fmt % v if np.isfinite(v) else "nan" for v in row) + "\n" for row in rows
    )


def read_boxes(path: str | os.PathLike[str]) -> np.ndarray:
    """Read ``(N, 4)`` xywh boxes, one per line, separated by tabs, commas or spaces."""
    return _read_table(Path(path), "result file with one x,y,w,h box per line")


def write_boxes(path: str | os.PathLike[str], boxes: Any, *, delimiter: str = "\t",
                fmt: str = "%.3f") -> Path:
    """Atomically write ``(N, 4)`` boxes, one per line (``fmt="%d"`` truncates as pytracking)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ShapeError(f"expected (N, 4) xywh boxes for {path}, got shape {arr.shape}")
    return atomic_write_text(path, _format(arr, delimiter, fmt))


def read_times(path: str | os.PathLike[str]) -> np.ndarray:
    """Read per-frame seconds: ``(N,)``, or ``(N, R)`` when the file holds R repetitions."""
    rows = _tokens(Path(path), "time file with one value per frame")
    try:
        arr = np.array([[float(t) for t in r] for r in rows], dtype=np.float64)
    except ValueError as e:
        raise ConfigError(f"{path}: not a table of numbers ({e})") from e
    return arr[:, 0] if arr.ndim == 2 and arr.shape[1] == 1 else arr


def write_times(path: str | os.PathLike[str], times: Any, *, delimiter: str = "\t",
                fmt: str = "%.6f") -> Path:
    """Atomically write per-frame seconds, ``(N,)`` or ``(N, R)`` (one column per repetition)."""
    arr = np.asarray(times, dtype=np.float64)
    return atomic_write_text(path, _format(arr.reshape(arr.shape[0], -1), delimiter, fmt))


def write_result(results_dir: str | os.PathLike[str], name: str, boxes: Any,
                 times: Any | None = None, *, fmt: str = "%.3f") -> Path:
    """Write pytracking-style ``<dir>/<name>.txt`` (and ``<name>_time.txt``); returns its path."""
    d = Path(results_dir)
    if times is not None:
        write_times(d / f"{name}_time.txt", times)
    return write_boxes(d / f"{name}.txt", boxes, fmt=fmt)


def read_results(results_dir: str | os.PathLike[str], names: list[str]) -> dict[str, np.ndarray]:
    """Read ``<dir>/<name>.txt`` for each name; a missing file raises one ConfigError."""
    d = Path(results_dir)
    missing = [n for n in names if not (d / f"{n}.txt").is_file()]
    if missing:
        raise ConfigError(f"{d / (missing[0] + '.txt')} not found ({len(missing)} of "
                          f"{len(names)} result files missing); run the tracker on these sequences")
    return {n: read_boxes(d / f"{n}.txt") for n in names}


def write_got10k_result(results_dir: str | os.PathLike[str], name: str, boxes: Any,
                        times: Any | None = None, *, repetition: int = 1) -> Path:
    """Write the GOT-10k submission files ``<dir>/<name>/<name>_00r.txt`` and ``<name>_time.txt``.

    Boxes are comma-separated ``%.3f``; repetition r's times go to column r of the
    comma-separated time file (earlier columns are kept when they match).
    """
    if not 1 <= repetition <= 999:
        raise ConfigError(f"repetition must be 1..999, got {repetition}")
    d = Path(results_dir) / name
    if times is not None:
        t = np.asarray(times, dtype=np.float64).reshape(-1, 1)
        time_path = d / f"{name}_time.txt"
        if repetition > 1 and time_path.is_file():
            old = read_times(time_path)
            old = old.reshape(old.shape[0], -1)
            if old.shape[0] == t.shape[0] and old.shape[1] >= repetition - 1:
                t = np.hstack([old[:, : repetition - 1], t])
            else:
                logger.warning("%s lacks earlier repetitions; writing this run only", time_path)
        write_times(time_path, t, delimiter=",", fmt="%.8f")
    return write_boxes(d / f"{name}_{repetition:03d}.txt", boxes, delimiter=",", fmt="%.3f")


def read_got10k_result(results_dir: str | os.PathLike[str], name: str) -> list[np.ndarray]:
    """Read every repetition ``<dir>/<name>/<name>_00r.txt`` in order."""
    d = Path(results_dir) / name
    files = sorted(d.glob(f"{name}_[0-9][0-9][0-9].txt"))
    if not files:
        raise ConfigError(f"{d / (name + '_001.txt')} not found: a GOT-10k result is "
                          f"<dir>/<seq>/<seq>_001.txt")
    return [read_boxes(f) for f in files]
