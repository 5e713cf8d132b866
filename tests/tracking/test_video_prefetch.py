"""Background decode: frames in order, errors where they happened, the thread gone after every exit."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from mfv2.errors import ConfigError
from mfv2.tracking.video import FrameSource, prefetch


def _decoders() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mfv2-decode"]


def test_prefetch_keeps_order_and_runs_ahead():
    made: list[int] = []

    def items():
        for i in range(50):
            made.append(i)
            yield i

    gen = prefetch(items(), depth=3)
    assert next(gen) == 0
    time.sleep(0.2)
    assert 3 <= len(made) <= 5  # the queue is bounded: depth ahead, plus the one being put
    assert [0, *gen] == list(range(50))
    assert not _decoders()


def test_prefetch_raises_the_error_after_the_frames_before_it():
    def items():
        yield from (1, 2)
        raise ConfigError("frame 3 is corrupt")

    got = []
    with pytest.raises(ConfigError, match="frame 3 is corrupt"):
        for x in prefetch(items(), depth=2):
            got.append(x)
    assert got == [1, 2] and not _decoders()


def test_leaving_early_stops_the_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    gen = prefetch(endless(), depth=2)
    with pytest.raises(KeyboardInterrupt):  # as Ctrl-C inside the tracking loop
        for x in gen:
            if x == 5:
                raise KeyboardInterrupt
    gen.close()
    assert not _decoders()
    with pytest.raises(ConfigError, match="depth"):
        next(prefetch([1], depth=0))


def _video(path, n=12, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), i * 20, np.uint8))
    writer.release()
    return path


def test_frame_source_prefetch_equals_direct_decode(tmp_path):
    video = _video(tmp_path / "v.mp4")
    with FrameSource(video, prefetch=0) as direct:
        want = [f.copy() for f in direct]
    with FrameSource(video) as source:
        assert source.prefetch > 0
        got = list(source)
    assert len(got) == len(want) == 12 and all(np.array_equal(a, b) for a, b in zip(got, want))
    # close() in the middle of a read stops the decoder before the capture goes.
    source = FrameSource(video)
    frames = iter(source)
    next(frames)
    source.close()
    assert not _decoders()
    with pytest.raises(ConfigError, match="prefetch"):
        FrameSource(video, prefetch=-1)
