"""Writing synthetic clips to disk: one clip, or a benchmark in the LaSOT layout (atomic, like every writer)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import cv2

from mfv2.errors import ConfigError, Mfv2Error
from mfv2.fileio import atomic_dir
from mfv2.synthetic.clip import IMAGE_EXTS, SyntheticSequence, benchmark_sequences

__all__ = ["write_sequence", "write_benchmark"]


def _number(v: float) -> str:
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def _write_files(seq: SyntheticSequence, d: Path, layout: str, ext: str) -> None:
    from mfv2 import __version__

    img_dir = d / "img" if layout == "lasot" else d
    img_dir.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    for i in range(len(seq)):
        path = img_dir / f"{i + 1:08d}{ext}"
        try:
            ok = cv2.imwrite(str(path), seq.frame(i), params)
        except cv2.error as e:
            raise Mfv2Error(f"OpenCV could not write {path}: {e}") from e
        if not ok:
            raise Mfv2Error(f"OpenCV could not write {path}")
    (d / "groundtruth.txt").write_text("".join(",".join(map(_number, b)) + "\n" for b in seq.boxes))
    if layout == "lasot":
        for fname, flags in (("full_occlusion.txt", seq.full_occlusion), ("out_of_view.txt", seq.out_of_view)):
            (d / fname).write_text(",".join("1" if f else "0" for f in flags) + "\n")
        (d / "nlp.txt").write_text(seq.description + "\n")
    meta = {"generator": "mfv2.synthetic", "version": __version__, "name": seq.name, "config": seq.config.to_dict()}
    (d / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")


def _check_ext(ext: str) -> str:
    if ext.lower() not in IMAGE_EXTS:
        raise ConfigError(f"image extension {ext!r} is not supported; use one of {', '.join(IMAGE_EXTS)}")
    return ext.lower()


def write_sequence(seq: SyntheticSequence, out_dir: str | os.PathLike[str], *,
                   layout: Literal["lasot", "frames"] = "lasot", ext: str = ".jpg",
                   overwrite: bool = False) -> Path:
    """Write one clip atomically and return its directory.

    ``lasot``: ``img/00000001.jpg`` ..., ``groundtruth.txt`` (``x,y,w,h`` per line),
    ``full_occlusion.txt`` and ``out_of_view.txt`` (one line of 0/1), ``nlp.txt``; ``frames``: the
    images and ``groundtruth.txt`` directly in ``out_dir``. Both add ``synthetic.json`` (the config).

    Raises:
        ConfigError: bad layout or extension, or ``out_dir`` is not empty and ``overwrite`` is False.
    """
    if layout not in ("lasot", "frames"):
        raise ConfigError(f"layout must be 'lasot' or 'frames', got {layout!r}")
    ext = _check_ext(ext)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        _write_files(seq, tmp, layout, ext)
    return Path(out_dir).resolve()


def write_benchmark(out_dir: str | os.PathLike[str], *, num_sequences: int = 8, num_frames: int = 300,
                    seed: int = 0, ext: str = ".jpg", overwrite: bool = False, **config_overrides: Any) -> Path:
    """Write :func:`benchmark_sequences` in the LaSOT layout: ``synthetic/synthetic-<k>/`` and ``testing_set.txt``.

    Raises:
        ConfigError: as :func:`write_sequence`, or a bad config override.
    """
    ext = _check_ext(ext)
    seqs = benchmark_sequences(num_sequences, num_frames, seed, **config_overrides)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for s in seqs:
            _write_files(s, tmp / "synthetic" / s.name, "lasot", ext)
        (tmp / "testing_set.txt").write_text("".join(s.name + "\n" for s in seqs))
    return Path(out_dir).resolve()
