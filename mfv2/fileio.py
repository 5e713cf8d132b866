"""Atomic file and folder writes (build under a temporary name beside the target, then rename), and
the file helpers every part shares: :func:`sha256`, :func:`read_json`, :func:`cache_dir`, the image
suffixes frame folders hold (:data:`IMAGE_SUFFIXES`) and the order they are read in (:func:`natural_key`).

A reader sees the previous target or the finished new one, never a half-written file; a writer that
fails leaves the previous target (or none) and no temporary files. Temporary names are hidden
(``.<name>.<8 hex>.tmp``) and live in the target's folder, so the final ``os.replace`` stays on one
filesystem and is atomic.

Output targets are checked before the work that fills them (:func:`check_output_file`,
:func:`check_output_dir`), and an OS error about the target (read-only filesystem, no permission,
a folder where a file should go, disk full) becomes a one-line :class:`~mfv2.errors.ConfigError`
naming it. While a temporary file or folder exists, SIGTERM (``timeout``, docker, systemd) raises
:class:`Terminated` in the main thread, so the same clean-up as for Ctrl-C runs; the process then
exits with status 143.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from mfv2.errors import ConfigError

__all__ = [
    "IMAGE_SUFFIXES",
    "natural_key",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_dir",
    "check_output_file",
    "check_output_dir",
    "output_error",
    "cleanup_on_terminate",
    "Terminated",
    "PendingFile",
    "sha256",
    "read_json",
    "cache_dir",
]

#: Image files a frame folder may hold (lower case; compare with ``suffix.lower()``).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders the digit runs of a name by value (``seq2`` before ``seq10``)."""
    return [int(t) if t.isdigit() else t for t in _DIGITS.split(name)]

# OS errors that say something about the output target rather than about the program.
_TARGET_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENOSPC, errno.EDQUOT,
     errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTEMPTY, errno.EXDEV, errno.ELOOP}
)


class Terminated(SystemExit):
    """Raised by the SIGTERM handler of :func:`cleanup_on_terminate`; exits with 128 + SIGTERM."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextlib.contextmanager
def cleanup_on_terminate() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` for the block, so ``finally`` clean-ups run as for Ctrl-C.

    Only the main thread can handle signals, and a handler someone else installed is left alone
    (nested blocks keep the outer one). Python delivers the signal between bytecodes, so a long
    native call (an ONNX simplification) finishes first.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _about_target(error: OSError, *prefixes: Path) -> bool:
    """True if ``error`` concerns the output (its temporary or final name), not an input the writer read."""
    if error.errno not in _TARGET_ERRNOS:
        return False
    names = [str(n) for n in (error.filename, error.filename2) if n is not None]
    return not names or any(n.startswith(str(p)) for n in names for p in prefixes)


def output_error(target: str | os.PathLike[str], error: OSError) -> ConfigError:
    """A one-line ConfigError for an OS error met while writing ``target``."""
    reason = error.strerror or str(error) or type(error).__name__
    name = Path(str(error.filename)).name if error.filename else ""
    # Name the file only if it is neither the target nor one of its temporary names.
    ours = name == Path(target).name or name.startswith((f".{Path(target).name}.", ".mfv2-probe."))
    where = "" if not name or ours else f" ({error.filename})"
    return ConfigError(f"cannot write {target}: {reason}{where}; choose another output path or fix its permissions")


def _probe(folder: Path, target: Path) -> None:
    """Create and delete a hidden file in ``folder``: the one honest test of "can I write here"
    (``os.access`` is wrong for root and for read-only mounts)."""
    probe = folder / f".mfv2-probe.{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise output_error(target, e) from e
    os.close(fd)
    probe.unlink(missing_ok=True)


def check_output_file(path: str | os.PathLike[str], *, create_parent: bool = False) -> Path:
    """Check that ``path`` can be written, before the work that produces it starts.

    Args:
        path: the file to be written.
        create_parent: create a missing parent folder (as :func:`atomic_write_text` does);
            otherwise a missing folder is an error.

    Raises:
        ConfigError: ``path`` is a folder, its folder is missing (and not created) or not writable.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"cannot write {p}: it is a folder; give a file name")
    parent = p.parent
    if not parent.is_dir():
        if parent.exists():
            raise ConfigError(f"cannot write {p}: {parent} is not a folder")
        if not create_parent:
            raise ConfigError(f"cannot write {p}: folder {parent} does not exist")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise output_error(p, e) from e
    _probe(parent, p)
    return p


def check_output_dir(path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Check that a folder ``path`` can be created or filled, before the work that fills it starts.

    The folder's missing parents are created (as :func:`atomic_dir` and the result writers do).

    Raises:
        ConfigError: ``path`` is a file, is non-empty and ``overwrite`` is False, or cannot be
            written (read-only filesystem, no permission).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"cannot write into {p}: it exists and is not a folder")
    if p.is_dir() and not overwrite and any(p.iterdir()):
        raise ConfigError(f"{p} exists and is not empty; pass --overwrite or pick a new path")
    folder = p if p.is_dir() else p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(p, e) from e
    _probe(folder, p)
    return p


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
    with cleanup_on_terminate():
        try:
            yield tmp
            for s in sidecars:
                os.replace(tmp.with_suffix(s), p.with_suffix(s))
            os.replace(tmp, p)
        except OSError as e:
            if _about_target(e, tmp.with_suffix(""), p):
                raise output_error(p, e) from e
            raise
        finally:
            tmp.unlink(missing_ok=True)
            for s in sidecars:
                tmp.with_suffix(s).unlink(missing_ok=True)


class PendingFile:
    """A file that a long run writes under a unique hidden name beside ``path`` and publishes at the end.

    For writers that keep a file open while they work (``mfv2 track`` outputs, annotated videos).
    Creating one checks the target (:func:`check_output_file`), so a bad output fails before the
    run. :meth:`commit` renames the temporary file onto ``path``; :meth:`discard`, or leaving a
    ``with`` block through an exception, deletes it. While it is pending SIGTERM raises
    :class:`Terminated` (see :func:`cleanup_on_terminate`).

    Attributes:
        path: the final file. tmp: where to write until :meth:`commit`.
    """

    def __init__(self, path: str | os.PathLike[str], *, suffix: str | None = None) -> None:
        self.path = check_output_file(path)
        self.tmp = _hidden(self.path, suffix or ".tmp")
        self._signals: contextlib.AbstractContextManager[None] | None = cleanup_on_terminate()
        self._signals.__enter__()

    def commit(self) -> Path:
        """Publish the temporary file as :attr:`path` (a writer that wrote nothing publishes nothing)."""
        try:
            if self.tmp.exists():
                os.replace(self.tmp, self.path)
        except OSError as e:
            raise output_error(self.path, e) from e
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        """Delete the temporary file; :attr:`path` is left as it was."""
        self.tmp.unlink(missing_ok=True)
        if self._signals is not None:
            signals, self._signals = self._signals, None
            signals.__exit__(None, None, None)

    def __enter__(self) -> PendingFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def __del__(self) -> None:
        # A writer that was never closed must not leave its temporary file behind.
        with contextlib.suppress(Exception):
            self.tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically, creating the parent folder; returns ``path``."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(p, e) from e
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
    tmp = _hidden(target, ".tmp")
    with cleanup_on_terminate():  # installed before the folder exists, so no SIGTERM can strand it
        try:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.mkdir()
            except OSError as e:
                raise output_error(target, e) from e
            yield tmp
            _swap_in(tmp, target)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if _about_target(e, tmp, target):
                raise output_error(target, e) from e
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _swap_in(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` onto ``target``, putting an old ``target`` back if that fails."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = _hidden(target, ".old")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | os.PathLike[str], what: str, fix: str) -> Any:
    """The parsed content of a JSON file; a missing, unreadable or invalid one is a one-line ConfigError.

    Args:
        path: the file.
        what: what the file is, for the message (``"benchmark report"``).
        fix: what the user should do, appended after ``;`` (``"pass a file written by 'mfv2 bench --json'"``).

    Raises:
        ConfigError: ``path`` does not exist, is a folder, cannot be read, or is not valid JSON.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} {p} does not exist; {fix}")
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a folder, not a file; {fix}")
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {p}: {e.strerror or e}; {fix}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {p} is not valid JSON (not UTF-8 text); {fix}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {p} is not valid JSON ({e}); {fix}") from e


def cache_dir(sub: str = "") -> Path:
    """mfv2's cache folder, or its sub-folder ``sub``: ``$MFV2_CACHE`` if set, else ``~/.cache/mfv2``.

    The folder is not created; writers create what they fill.
    """
    root = Path(os.environ.get("MFV2_CACHE") or Path.home() / ".cache" / "mfv2")
    return root / sub if sub else root
