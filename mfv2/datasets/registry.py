"""The one dataset registry: a reader per layout, chosen by name or recognised from the folder.

Each layout module registers its reader ``reader(root, *, <options>, frame_ranges) -> Dataset`` in
:data:`DATASETS`. :func:`open_dataset` checks the options against the reader's signature, so a
misspelt option is an error that lists the valid ones instead of being ignored.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from mfv2.datasets.base import Dataset, subdirs
from mfv2.errors import ConfigError
from mfv2.registry import Registry

__all__ = ["DATASETS", "open_dataset", "build_dataset", "detect_layout", "dataset_kinds"]

logger = logging.getLogger(__name__)

DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset kind")
_ALIASES = {"got-10k": "got10k", "otb100": "otb", "otb2015": "otb", "uav": "uav123"}
# What training reads when its config names no split: the training part of each benchmark.
_TRAINING_SPLITS = {"got10k": "train", "lasot": "train", "trackingnet": "train"}


def dataset_kinds() -> list[str]:
    """The dataset kinds :func:`open_dataset` accepts."""
    return DATASETS.names()


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Guess the dataset kind of a folder from its layout.

    Raises:
        ConfigError: not a folder, or no known layout.
    """
    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"dataset root {r} is not a directory")
    kids = subdirs(r)
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
    seqs = [d for c in kids for d in [c, *subdirs(c)] if (d / "img").is_dir()]
    if seqs:  # mfv2.synthetic writes the LaSOT layout plus synthetic.json per sequence
        return "synthetic" if (seqs[0] / "synthetic.json").is_file() else "lasot"
    raise ConfigError(
        f"cannot tell the dataset layout of {r}: expected LaSOT (<cls>/<cls>-<n>/img/), GOT-10k "
        f"(list.txt), TrackingNet (anno/, frames/), OTB (<Seq>/groundtruth_rect.txt), UAV123 "
        f"(data_seq/, anno/) or VOT (list.txt, <seq>/sequence); pass kind= to say which"
    )


# Kinds rendered in memory, opened without a root: synthetic clips and still-image pairs.
_IN_MEMORY: Final = ("synthetic", "stills")


def _checked(kind: str, reader: Callable[..., Dataset], options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(reader).parameters
    valid = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for dataset {kind!r}; valid: root, {', '.join(valid)}")
    return options


def open_dataset(root: str | os.PathLike[str] | None, kind: str | None = None, **options: Any) -> Dataset:
    """Open a dataset as a lazily loaded list of sequences.

    Args:
        root: dataset folder (for GOT-10k/TrackingNet either the root or one split folder); None only
            for ``synthetic`` clips rendered in memory.
        kind: ``lasot``, ``got10k``, ``trackingnet``, ``otb``, ``uav123``, ``vot``, ``coco`` or
            ``synthetic`` (LaSOT layout on disk, or in memory without ``root``); None detects it.
        options: the reader's options (an option given as None takes its default), e.g. ``split``
            (GOT-10k ``train|val|test``, TrackingNet ``TEST|TRAIN_<i>|train``, LaSOT
            ``test|train|all``) and ``frame_ranges`` (sequence name -> inclusive ``(first, last)``
            frame numbers as in the file names, for sequences that use part of their folder).

    Raises:
        ConfigError: missing folder or file, malformed annotation, unknown layout or option.
        UnknownNameError: unknown ``kind``.
    """
    given = {k: v for k, v in options.items() if v is not None}
    if root is None:
        if kind not in _IN_MEMORY:
            raise ConfigError(f"dataset {kind or ''} needs a root folder".replace("  ", " "))
        ds = DATASETS.get(kind)(None, **_checked(kind, DATASETS.get(kind), given))
        ds.source = (kind, None, given)
        return ds
    r = Path(root)
    if not r.is_dir():
        raise ConfigError(f"dataset root {r} is not a directory")
    k = detect_layout(r) if kind is None else _ALIASES.get(kind.lower(), kind.lower())
    reader = DATASETS.get(k)
    ds = reader(r, **_checked(k, reader, given))
    ds.source = (k, r, given)
    logger.debug("opened %s at %s: %d sequences", ds.name, ds.root, len(ds))
    return ds


def build_dataset(name: str, **options: Any) -> Dataset:
    """Training's entry: :func:`open_dataset` with ``root`` among the options and the training split
    of each benchmark by default (GOT-10k and TrackingNet ``train``, LaSOT ``train``)."""
    root = options.pop("root", None)
    _checked(name, DATASETS.get(name), {k: v for k, v in options.items() if v is not None})
    if root is None and name not in _IN_MEMORY:
        raise ConfigError(f"dataset {name!r} needs option(s) root")
    default = _TRAINING_SPLITS.get(name)
    if default and options.get("split") is None:
        options["split"] = default
    return open_dataset(root, name, **options)
