"""Atomic file and folder writes: build under a temporary name beside the target, then rename.

A reader sees the previous target or the finished new one, never a half-written file; a writer that
fails leaves the previous target (or none) and no temporary files. Temporary names are hidden
(``.<name>.<8 hex>.tmp``) and live in the target's folder, so the final ``os.replace`` stays on one
filesystem and is atomic.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from mfv2.errors import ConfigError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_dir"]


def _hidden(path: Path, ending: str) -> Path:
    """A unique hidden name beside ``path``: ``.<name>.<8 hex><ending>``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{ending}")


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, suffix: str | None = None, sidecars: Sequence[str] = ()
) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer; it becomes ``path`` when the block succeeds.

    If the block raises, the temporary file and its sidecars are removed and ``path`` is left as it
    was. The temporary file is not created beforehand, so a writer that writes nothing makes the
    rename fail; the parent folder is not created either.

    Args:
        path: the final file.
        suffix: ending of the temporary name, for writers that choose the format from it (``.onnx``,
            ``.xml``); ``.tmp`` by default.
        sidecars: suffixes of files the writer puts beside the temporary one (``.bin`` next to an
            OpenVINO ``.xml``); each is renamed onto ``path.with_suffix(s)`` before ``path`` itself.
    """
    p = Path(path)
    tmp = _hidden(p, suffix or ".tmp")
    try:
        yield tmp
        for s in sidecars:
            os.replace(tmp.with_suffix(s), p.with_suffix(s))
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
        for s in sidecars:
            tmp.with_suffix(s).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically, creating the parent folder; returns ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically, creating the parent folder; returns ``path``."""
    return atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out`` that replaces ``out`` when the block succeeds.

    An existing ``out`` is moved aside, and deleted only once the new folder is in place; if that
    rename fails it is put back. If the block fails, the temporary folder is deleted and ``out`` is
    untouched. The parent folder is created.

    Raises:
        ConfigError: ``out`` exists and is not a folder, or is a non-empty folder and ``overwrite``
            is False.
    """
    target = Path(out).resolve()
    if target.exists():
        if not target.is_dir():
            raise ConfigError(f"{target} exists and is not a directory")
        if not overwrite and any(target.iterdir()):
            raise ConfigError(f"{target} exists and is not empty; pass overwrite=True (--overwrite) or pick a new path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden(target, ".tmp")
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = _hidden(target, ".old")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
