"""Tracker result files: the pytracking layout (``<seq>.txt``, ``<seq>_time.txt``) and the GOT-10k
submission layout (``<seq>/<seq>_001.txt``, ``<seq>/<seq>_time.txt``); every write is atomic."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.datasets.base import read_boxes, tokens
from mfv2.errors import ConfigError, ShapeError
from mfv2.fileio import atomic_write_text

__all__ = ["write_boxes", "read_times", "write_times", "read_results", "write_result", "read_got10k_result",
           "write_got10k_result"]  # fmt: skip

logger = logging.getLogger(__name__)


def _format(rows: np.ndarray, delimiter: str, fmt: str) -> str:
    return "".join(
        delimiter.join(fmt % v if np.isfinite(v) else "nan" for v in row) + "\n" for row in rows
    )


def write_boxes(path: str | os.PathLike[str], boxes: Any, *, delimiter: str = "\t",
                fmt: str = "%.3f") -> Path:
    """Atomically write ``(N, 4)`` boxes, one per line (``fmt="%d"`` truncates as pytracking)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ShapeError(f"expected (N, 4) xywh boxes for {path}, got shape {arr.shape}")
    return atomic_write_text(path, _format(arr, delimiter, fmt))


def read_times(path: str | os.PathLike[str]) -> np.ndarray:
    """Read per-frame seconds: ``(N,)``, or ``(N, R)`` when the file holds R repetitions."""
    rows = tokens(Path(path), "time file with one value per frame")
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
