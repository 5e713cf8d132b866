"""Frame sources (video file, camera, stream URL, image folder) and an annotated video sink.

Sources yield OpenCV frames, (H, W, 3) uint8 BGR. Image folders are read in natural name order
(``2.jpg`` before ``10.jpg``; zero-padded names sort the same either way). Anything unreadable is a
one-line :class:`~mfv2.errors.ConfigError` naming the source.

Frames are decoded on a background thread into a small bounded queue (:func:`prefetch`), so decoding
the next frame overlaps the tracker's work on this one: OpenCV's decoders and the runtimes release the
GIL. Order is kept, a decoding error is raised in the consumer at the frame where it happened, and
leaving the loop early (``break``, an exception, Ctrl-C) or :meth:`FrameSource.close` stops and joins
the thread before the capture is released.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import cv2
import numpy as np

from mfv2.errors import ConfigError
from mfv2.fileio import IMAGE_SUFFIXES, PendingFile, natural_key

__all__ = ["FrameSource", "VideoSink", "draw_box", "prefetch", "IMAGE_SUFFIXES", "natural_key", "PREFETCH"]

log = logging.getLogger(__name__)

PREFETCH = 4  # frames decoded ahead by default (a 1080p BGR frame is 6 MB)
_T = TypeVar("_T")
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[_T], depth: int = PREFETCH) -> Generator[_T, None, None]:
    """Yield ``items`` in order while a background thread produces up to ``depth`` of them ahead.

    An exception raised by ``items`` is re-raised here, after the items before it. Closing this
    generator (or leaving a ``for`` loop over it through an exception) stops the thread and joins it.

    Raises:
        ConfigError: ``depth`` < 1.
    """
    if depth < 1:
        raise ConfigError(f"prefetch depth must be >= 1, got {depth}")
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            put(_Failed(e))
            return
        put(_END)

    thread = threading.Thread(target=work, name="mfv2-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class FrameSource:
    """Frames of a video file, a camera index, a stream URL or a folder of images.

    Args:
        source: a path (video file, image file or folder), a camera index (``0`` or ``"0"``) or a URL
            (``rtsp://...``, ``http://...``).
        prefetch: frames decoded ahead on a background thread (0: decode in the caller's thread).

    Attributes:
        kind: ``"video"``, ``"camera"``, ``"stream"`` or ``"images"``.
        fps: frames per second the source reports (``None`` if unknown, e.g. image folders).
        length: number of frames if known (exact for images, the container's count for videos).
    """

    def __init__(self, source: str | int | os.PathLike[str], *, prefetch: int = PREFETCH) -> None:
        if prefetch < 0:
            raise ConfigError(f"prefetch must be >= 0 frames, got {prefetch}")
        self.name = str(source)
        self.prefetch = prefetch
        self._reader: Generator[np.ndarray, None, None] | None = None
        self.fps: float | None = None
        self.length: int | None = None
        self._capture: Any = None
        self._first: np.ndarray | None = None
        self._files: list[Path] = []
        text = str(source)
        if isinstance(source, int) or text.isdigit():
            self.kind = "camera"
            self._open_capture(int(text), f"camera {text} cannot be opened; check the index and that it is free")
        elif "://" in text:
            self.kind = "stream"
            self._open_capture(text, f"cannot open the stream {text}; check the URL and that OpenCV has FFmpeg")
        else:
            path = Path(source)
            if not path.exists():
                raise ConfigError(f"{path} does not exist; SRC is a video file, a folder of images, a camera index or a stream URL")
            if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
                self.kind = "images"
                self._files = self._list_images(path)
                self.length = len(self._files)
            else:
                self.kind = "video"
                self._open_capture(str(path), f"cannot open the video {path}; it is not a format OpenCV can read")

    @staticmethod
    def _list_images(path: Path) -> list[Path]:
        if path.is_file():
            return [path]
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                       key=lambda p: natural_key(p.name.lower()))
        if not files:
            raise ConfigError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files

    def _open_capture(self, target: str | int, message: str) -> None:
        capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            raise ConfigError(message)
        ok, frame = capture.read()
        if not ok or frame is None:
            capture.release()
            raise ConfigError(f"{self.name} opened but gave no frame; the file may be empty or corrupt")
        self._capture, self._first = capture, frame
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.length = count if self.kind == "video" and count > 0 else None

    def __iter__(self) -> Iterator[np.ndarray]:
        if not self.prefetch:
            return self._frames()
        if self._reader is not None:
            self._reader.close()
        self._reader = prefetch(self._frames(), self.prefetch)
        return self._reader

    def _frames(self) -> Iterator[np.ndarray]:
        if self.kind == "images":
            for path in self._files:
                frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if frame is None:
                    raise ConfigError(f"cannot read the image {path}; it is corrupt or not an image")
                yield frame
            return
        if self._first is None:
            raise ConfigError(f"{self.name} was already read; open it again")
        frame, self._first = self._first, None
        while frame is not None:
            yield frame
            ok, frame = self._capture.read()
            if not ok:
                frame = None

    def close(self) -> None:
        """Stop the decoding thread (if any), then release the capture (idempotent)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def draw_box(frame: np.ndarray, box: Sequence[float] | None, score: float | None = None, ok: bool = True) -> np.ndarray:
    """A copy of ``frame`` with the box (green, 2 px) and its score, or a red "target lost" note."""
    out = frame.copy()
    if box is not None and ok:
        x, y, w, h = (int(round(v)) for v in box)
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 255, 0), 2)
        if score is not None:
            cv2.putText(out, f"{score:.2f}", (x, max(y - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1, cv2.LINE_AA)
    elif not ok:
        label = "target lost" + (f" ({score:.2f})" if score is not None else "")
        cv2.putText(out, label, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 255), 2, cv2.LINE_AA)
    return out


class VideoSink:
    """Writes annotated frames to an mp4 file (codec mp4v), atomically.

    Frames go to a uniquely named temporary file beside ``path`` that replaces ``path`` on
    :meth:`close`; if the sink is left through an exception, the temporary file is deleted and
    ``path`` is untouched. The target is checked when the sink is created, before any frame.

    Raises:
        ConfigError: ``path`` is a folder, or its folder is missing or not writable.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float = 30.0) -> None:
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 30.0
        # OpenCV picks the container from the file name, so the temporary name keeps the suffix.
        self._pending = PendingFile(self.path, suffix=f".partial{self.path.suffix or '.mp4'}")
        self._tmp = self._pending.tmp
        self._writer: Any = None

    def write(self, frame: np.ndarray, box: Sequence[float] | None = None, score: float | None = None, ok: bool = True) -> None:
        """Append ``frame`` with the box and score drawn on it."""
        if self._writer is None:
            height, width = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                self._writer = None
                raise ConfigError(f"cannot write {self.path}: this OpenCV build has no mp4v encoder for {self.path.suffix or 'mp4'}")
        self._writer.write(draw_box(frame, box, score, ok))

    def close(self) -> None:
        """Finish the file and move it to :attr:`path` (nothing is written if no frame came)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            self._pending.commit()
        else:
            self._pending.discard()

    def discard(self) -> None:
        """Drop what was written; :attr:`path` is left as it was."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._pending.discard()

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
