"""VOT: ``list.txt``, ``<seq>/sequence``, ``color/00000001.jpg``, ``groundtruth.txt`` and per-frame
``*.tag`` files; and VOT regions (rectangles, polygons, masks) as the ``(x, y, w, h)`` boxes mfv2 tracks.

mfv2 follows one axis-aligned box, so a polygon becomes the bounding box of its vertices and a mask
the bounding box of its set pixels (pixel ``(c, r)`` covering ``[c, c+1) x [r, r+1)``); a special
region (``0``, ``1``, ... or NaNs: unknown, failure, empty) has no box. The text forms are those of
VOT ``groundtruth.txt`` files: ``x,y,w,h``; ``x1,y1,x2,y2,...`` (three or more points); and
``m<x0>,<y0>,<w>,<h>,<run lengths>`` (zeros and ones alternating, zeros first, row by row).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
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
    read_text,
    subdirs,
    tokens,
    write_frames,
)
from mfv2.datasets.registry import DATASETS
from mfv2.errors import ConfigError

if TYPE_CHECKING:
    from mfv2.synthetic import SyntheticSequence

__all__ = ["write_synthetic", "read_vot", "polygon_box", "mask_box", "parse_region"]

Box = tuple[float, float, float, float]


def polygon_box(points: Sequence[Sequence[float]]) -> Box | None:
    """Bounding box of polygon vertices ``[(x, y), ...]``; None when any coordinate is not finite."""
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if arr.size == 0 or not np.isfinite(arr).all():
        return None
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))


def mask_box(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Box | None:
    """Bounding box of the non-zero pixels of a ``(H, W)`` mask placed at ``offset`` ``(x, y)``; None if empty."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ConfigError(f"a mask region is a 2-D array, got shape {m.shape}")
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    x, y = offset[0] + cols[0], offset[1] + rows[0]
    return (float(x), float(y), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))


def _decode_mask(values: list[int]) -> tuple[np.ndarray, tuple[int, int]]:
    x0, y0, w, h = values[:4]
    flat = np.zeros(w * h, dtype=np.uint8)
    pos = 0
    for k, run in enumerate(values[4:]):
        if k % 2:
            flat[pos : pos + run] = 1
        pos += run
    if pos > w * h:
        raise ConfigError(f"mask run lengths cover {pos} pixels of a {w}x{h} mask")
    return flat.reshape(h, w), (x0, y0)


def parse_region(text: str) -> Box | None:
    """One VOT region in text form as an ``(x, y, w, h)`` box, or None for a special/empty region.

    Raises:
        ConfigError: not a region (wrong count of numbers, or not numbers).
    """
    s = text.strip()
    try:
        if s.startswith("m"):
            mask, offset = _decode_mask([int(v) for v in s[1:].split(",")])
            return mask_box(mask, offset)
        values = [float(v) for v in s.replace("\t", ",").split(",") if v.strip()]
    except ValueError as e:
        raise ConfigError(f"not a VOT region: {s[:60]!r} ({e})") from e
    if len(values) == 1 or (values and not all(math.isfinite(v) for v in values)):
        return None
    if len(values) == 4:
        return (values[0], values[1], values[2], values[3])
    if len(values) >= 6 and len(values) % 2 == 0:
        return polygon_box(list(zip(values[::2], values[1::2])))
    raise ConfigError(f"not a VOT region: {s[:60]!r} holds {len(values)} numbers (4 for a rectangle, "
                      "an even count >= 6 for a polygon, or 'm...' for a mask)")


def _vot_base(root: Path) -> Path:
    return root / "sequences" if (root / "sequences" / "list.txt").is_file() else root


@DATASETS.register("vot")
def read_vot(root: Path, *, frame_ranges: FrameRanges | None = None) -> Dataset:
    """VOT sequences (a workspace or its ``sequences`` folder): ``list.txt``, ``<seq>/sequence``,
    ``color/``, ``groundtruth.txt``; polygons and masks become their bounding boxes, special regions
    NaN rows; frames tagged ``full_occlusion`` or ``out_of_view`` (as ``mfv2 synth --layout vot``
    writes) are not visible."""
    ranges = dict(frame_ranges or {})
    base = _vot_base(root)
    need = "a VOT sequence folder needs color/ (or the channel in its sequence file) and groundtruth.txt"
    if (base / "list.txt").is_file():
        names = [r[0] for r in tokens(base / "list.txt", "")]
    else:
        names = [d.name for d in subdirs(base) if (d / "sequence").is_file()]
    if not names:
        raise ConfigError(f"no VOT sequence in {base}: expected list.txt and <seq>/sequence, "
                          f"<seq>/color/00000001.jpg, <seq>/groundtruth.txt")  # fmt: skip

    def load(name: str) -> TrackingSequence:
        d = base / name
        folder = d / "color"
        meta = d / "sequence"
        if meta.is_file():
            m = re.search(r"^channels\.color\s*=\s*(.+)$", read_text(meta, "VOT sequence file"), re.MULTILINE)
            if m:
                folder = (d / m.group(1).strip()).parent
        frames = list_frames(folder, need)
        gt_path = d / "groundtruth.txt"
        if not gt_path.is_file():
            raise ConfigError(f"{gt_path} not found: {need}")
        rows = []
        for i, line in enumerate(read_text(gt_path, need).splitlines()):
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
                hidden |= read_flags(d / tag, len(frames)) > 0
        return assemble(name, "vot", frames, gt, gt_path, ranges.get(name), hidden=hidden)

    return Dataset("vot", base, names, load)


def write_synthetic(seqs: list[SyntheticSequence], root: Path, ext: str) -> None:
    """The clips as VOT sequences: ``list.txt``, ``<seq>/sequence``, ``color/``, groundtruth and tags."""
    for s in seqs:
        d = root / s.name
        write_frames(s, d / "color", "%08d", ext)
        (d / "groundtruth.txt").write_text(box_lines(s.boxes))
        (d / "full_occlusion.tag").write_text(flag_lines(s.full_occlusion))
        (d / "out_of_view.tag").write_text(flag_lines(s.out_of_view))
        c = s.config
        (d / "sequence").write_text(
            f"channels.color=color/%08d{ext}\nformat=default\nfps=30\n"
            f"width={c.width}\nheight={c.height}\nlength={len(s)}\nname={s.name}\n"
        )
    (root / "list.txt").write_text("".join(s.name + "\n" for s in seqs))
