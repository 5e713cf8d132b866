"""The synthetic benchmark written in the layouts of the common toolkits: LaSOT, GOT-10k, OTB and VOT.

Every layout holds the same clips (:func:`mfv2.synthetic.benchmark_sequences`) and the same boxes,
so a result scored by one toolkit can be compared with another's. What each writes:

- ``lasot``: :func:`mfv2.synthetic.write_benchmark` (``synthetic/<seq>/img/``, ``testing_set.txt``).
- ``got10k``: ``val/list.txt`` and ``val/<seq>/00000001.jpg``, ``groundtruth.txt`` (``x,y,w,h``),
  ``absence.label`` (1: out of view), ``cover.label`` (0: not visible, else ``ceil(8 * visible
  fraction)`` of the target box, as GOT-10k's 0..8 classes), ``cut_by_image.label`` and
  ``meta_info.ini`` with ``resolution: (W, H)``, which the got10k toolkit reads.
- ``otb``: ``<Seq>/img/0001.jpg`` and ``groundtruth_rect.txt``.
- ``vot``: ``list.txt`` and ``<seq>/sequence`` (``key=value``: ``channels.color=color/%08d.jpg``,
  width, height, length, fps), ``color/00000001.jpg``, ``groundtruth.txt`` (rectangles
  ``x,y,w,h``) and per-frame tags ``full_occlusion.tag`` / ``out_of_view.tag`` (one 0/1 per line).
  Write it into a VOT workspace as ``<workspace>/sequences``.

Boxes are the generator's (0-based, continuous, 1/100 px); on out-of-view frames they are the true,
mostly outside box in every layout, and the flags say the target is not visible.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np

from mfv2.errors import ConfigError, Mfv2Error
from mfv2.fileio import atomic_dir
from mfv2.synthetic import IMAGE_EXTS, SyntheticSequence, benchmark_sequences, write_benchmark

__all__ = ["LAYOUTS", "write_layout", "cover_labels"]

LAYOUTS: Final = ("lasot", "got10k", "otb", "vot")


def _num(v: float) -> str:
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def _box_lines(boxes: np.ndarray) -> str:
    return "".join(",".join(_num(v) for v in b) + "\n" for b in boxes)


def _flag_lines(flags: Any) -> str:
    return "".join(f"{int(v)}\n" for v in np.asarray(flags).astype(int))


def _write_frames(seq: SyntheticSequence, folder: Path, pattern: str, ext: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    for i in range(len(seq)):
        path = folder / (pattern % (i + 1) + ext)
        try:
            ok = cv2.imwrite(str(path), seq.frame(i), params)
        except cv2.error as e:
            raise Mfv2Error(f"OpenCV could not write {path}: {e}") from e
        if not ok:
            raise Mfv2Error(f"OpenCV could not write {path}")


def cover_labels(seq: SyntheticSequence) -> np.ndarray:
    """GOT-10k ``cover.label`` classes of a clip: 0 where the target is not visible, else
    ``ceil(8 * f)`` (1..8) with ``f`` the fraction of the true target box inside the frame and not
    under the occluder."""
    geo, occ = seq._geo, seq._occ  # the true (unclipped) target and occluder boxes
    w, h = seq.config.width, seq.config.height
    x0, y0 = np.clip(geo[:, 0], 0, w), np.clip(geo[:, 1], 0, h)
    x1, y1 = np.clip(geo[:, 0] + geo[:, 2], 0, w), np.clip(geo[:, 1] + geo[:, 3], 0, h)
    inside = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    ix = np.minimum(inside[:, 0] + inside[:, 2], occ[:, 0] + occ[:, 2]) - np.maximum(inside[:, 0], occ[:, 0])
    iy = np.minimum(inside[:, 1] + inside[:, 3], occ[:, 1] + occ[:, 3]) - np.maximum(inside[:, 1], occ[:, 1])
    hidden = np.nan_to_num(np.clip(ix, 0, None) * np.clip(iy, 0, None))
    frac = (inside[:, 2] * inside[:, 3] - hidden) / (geo[:, 2] * geo[:, 3])
    cover = np.clip(np.ceil(np.clip(frac, 0.0, 1.0) * 8 - 1e-9), 1, 8).astype(int)
    return np.where(seq.visible, cover, 0)


def _got10k(seqs: list[SyntheticSequence], root: Path, ext: str) -> None:
    base = root / "val"
    for s in seqs:
        d = base / s.name
        _write_frames(s, d, "%08d", ext)
        (d / "groundtruth.txt").write_text(_box_lines(s.boxes))
        (d / "absence.label").write_text(_flag_lines(s.out_of_view))
        (d / "cover.label").write_text(_flag_lines(cover_labels(s)))
        g, c = s._geo, s.config
        cut = (g[:, 0] < 0) | (g[:, 1] < 0) | (g[:, 0] + g[:, 2] > c.width) | (g[:, 1] + g[:, 3] > c.height)
        (d / "cut_by_image.label").write_text(_flag_lines(cut))
        (d / "meta_info.ini").write_text(
            "[METAINFO]\n"
            f"object_class: {s.description}\n"
            f"resolution: ({c.width}, {c.height})\n"
            "anno_fps: 30Hz\n"
        )
    (base / "list.txt").write_text("".join(s.name + "\n" for s in seqs))


def _otb(seqs: list[SyntheticSequence], root: Path, ext: str) -> None:
    for s in seqs:
        d = root / s.name
        _write_frames(s, d / "img", "%04d", ext)
        (d / "groundtruth_rect.txt").write_text(_box_lines(s.boxes))


def _vot(seqs: list[SyntheticSequence], root: Path, ext: str) -> None:
    for s in seqs:
        d = root / s.name
        _write_frames(s, d / "color", "%08d", ext)
        (d / "groundtruth.txt").write_text(_box_lines(s.boxes))
        (d / "full_occlusion.tag").write_text(_flag_lines(s.full_occlusion))
        (d / "out_of_view.tag").write_text(_flag_lines(s.out_of_view))
        c = s.config
        (d / "sequence").write_text(
            f"channels.color=color/%08d{ext}\nformat=default\nfps=30\n"
            f"width={c.width}\nheight={c.height}\nlength={len(s)}\nname={s.name}\n"
        )
    (root / "list.txt").write_text("".join(s.name + "\n" for s in seqs))


_WRITERS: dict[str, Callable[[list[SyntheticSequence], Path, str], None]] = {
    "got10k": _got10k, "otb": _otb, "vot": _vot,
}  # fmt: skip


def write_layout(out_dir: str | os.PathLike[str], layout: str = "lasot", *, num_sequences: int = 8,
                 num_frames: int = 300, seed: int = 0, ext: str = ".jpg", overwrite: bool = False,
                 **config_overrides: Any) -> Path:
    """Write the synthetic benchmark in ``layout`` (see the module docstring) atomically.

    Args:
        out_dir: the dataset folder (for ``vot``: a workspace's ``sequences`` folder).
        layout: ``lasot``, ``got10k``, ``otb`` or ``vot``.
        num_sequences, num_frames, seed: as :func:`mfv2.synthetic.benchmark_sequences`.
        ext: ``.jpg`` or ``.png`` (the VOT and got10k toolkits expect ``.jpg``).
        overwrite: replace a non-empty ``out_dir``.
        config_overrides: :class:`~mfv2.synthetic.SyntheticConfig` fields.

    Returns:
        The resolved ``out_dir``.

    Raises:
        ConfigError: unknown layout or extension, bad config, or ``out_dir`` not empty.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if ext.lower() not in IMAGE_EXTS:
        raise ConfigError(f"image extension {ext!r} is not supported; use one of {', '.join(IMAGE_EXTS)}")
    if layout == "lasot":
        return write_benchmark(out_dir, num_sequences=num_sequences, num_frames=num_frames, seed=seed,
                               ext=ext, overwrite=overwrite, **config_overrides)
    seqs = benchmark_sequences(num_sequences, num_frames, seed, **config_overrides)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        _WRITERS[layout](seqs, tmp, ext.lower())
    return Path(out_dir).resolve()

