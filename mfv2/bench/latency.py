"""The latency harness: warm up, then time a callable for N iterations or T seconds.

Every backend is timed by this one loop, as OpenVINO's ``benchmark_app`` does it: the first call is
timed on its own (it includes lazy initialisation and is reported as ``first_ms``), ``warmup`` more
calls are discarded, then calls are timed one by one with :func:`time.perf_counter_ns` after an
optional device ``sync``. Percentiles interpolate linearly between order statistics (NumPy's
default); ``fps`` is the throughput of the timed loop, ``1000 / mean_ms``, never a mean of
per-call FPS (which is biased high).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mfv2.errors import ConfigError

__all__ = ["LatencyStats", "TrackerRun", "measure", "time_calls", "time_tracker", "summarize_stages"]

_NS_PER_MS = 1e6


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed calls, all times in milliseconds.

    Attributes:
        count: number of timed calls (warm-up excluded).
        first_ms: the very first call, timed separately (NaN if not recorded).
        median_ms: the 50th percentile (also ``p50_ms``).
        fps: calls per second of the timed loop, ``1000 / mean_ms``.
        total_s: wall time of the timed calls, seconds.
    """

    count: int
    first_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    std_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    fps: float
    total_s: float

    @property
    def p50_ms(self) -> float:
        return self.median_ms

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float] | np.ndarray, first_ms: float = float("nan")) -> LatencyStats:
        """Statistics of per-call times in milliseconds.

        Raises:
            ConfigError: no samples.
        """
        x = np.asarray(samples_ms, dtype=np.float64).reshape(-1)
        if x.size == 0:
            raise ConfigError("no timed samples: increase iters or duration")
        mean = float(x.mean())
        p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
        return cls(
            count=int(x.size),
            first_ms=float(first_ms),
            min_ms=float(x.min()),
            max_ms=float(x.max()),
            mean_ms=mean,
            std_ms=float(x.std()),
            median_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            fps=1000.0 / mean if mean > 0 else float("inf"),
            total_s=float(x.sum()) / 1000.0,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def time_calls(
    fn: Callable[[], Any],
    *,
    warmup: int = 10,
    iters: int | None = None,
    duration: float | None = None,
    sync: Callable[[], Any] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> tuple[float, np.ndarray]:
    """Time ``fn()`` call by call; the raw material of :func:`measure`.

    Args:
        fn: the work to time, called with no arguments.
        warmup: untimed calls after the first (timed) call.
        iters: stop after this many timed calls.
        duration: stop once the timed calls have taken this many seconds (at least one call runs).
            With both ``iters`` and ``duration`` the loop stops at whichever limit comes first.
        sync: called after each ``fn()`` before the clock is read (e.g. ``torch.cuda.synchronize``).
        clock: integer nanosecond clock (tests pass a fake one).

    Returns:
        The first call's time and the timed calls' times, in milliseconds.

    Raises:
        ConfigError: neither ``iters`` nor ``duration``, or a non-positive limit or negative warm-up.
    """
    if iters is None and duration is None:
        raise ConfigError("give iters or duration to bound the timed loop")
    if (iters is not None and iters < 1) or (duration is not None and duration <= 0) or warmup < 0:
        raise ConfigError(f"iters must be >= 1, duration > 0 and warmup >= 0 (got {iters}, {duration}, {warmup})")

    def once() -> int:
        t0 = clock()
        fn()
        if sync is not None:
            sync()
        return clock() - t0

    first = once()
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    budget = None if duration is None else int(duration * 1e9)
    samples: list[int] = []
    spent = 0
    while True:
        dt = once()
        samples.append(dt)
        spent += dt
        if (iters is not None and len(samples) >= iters) or (budget is not None and spent >= budget):
            break
    return first / _NS_PER_MS, np.asarray(samples, dtype=np.float64) / _NS_PER_MS


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 10,
    iters: int | None = None,
    duration: float | None = None,
    sync: Callable[[], Any] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> LatencyStats:
    """Time ``fn()`` as :func:`time_calls` does and summarise the calls as :class:`LatencyStats`."""
    first, samples = time_calls(fn, warmup=warmup, iters=iters, duration=duration, sync=sync, clock=clock)
    return LatencyStats.from_samples(samples, first)


def summarize_stages(timings: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per-stage summary of per-frame stage times given in seconds (a tracker's ``last_timings``).

    Returns:
        stage -> ``{"median_ms", "mean_ms", "share"}`` where ``share`` is the stage's fraction of the
        summed mean time of all stages; stages keep their first-seen order.
    """
    columns: dict[str, list[float]] = {}
    for frame in timings:
        for stage, seconds in frame.items():
            columns.setdefault(stage, []).append(float(seconds) * 1000.0)
    means = {k: float(np.mean(v)) for k, v in columns.items()}
    total = sum(means.values())
    return {
        k: {
            "median_ms": float(np.median(v)),
            "mean_ms": means[k],
            "share": means[k] / total if total > 0 else 0.0,
        }
        for k, v in columns.items()
    }


@dataclass
class TrackerRun:
    """One timed pass of a tracker over a clip.

    Attributes:
        boxes: ``(N, 4)`` xywh per frame, row 0 the initial box. scores: per frame, 1.0 at frame 0.
        samples_ms: wall time of each timed ``update()``; cpu_ms: its process CPU time.
        stages: the tracker's ``last_timings`` (seconds) of each timed frame, ``total`` left out.
        init_ms: the timed ``init()``; first_ms: the first ``update()`` of the warm-up pass.
    """

    boxes: np.ndarray
    scores: list[float]
    samples_ms: list[float]
    cpu_ms: list[float]
    stages: list[dict[str, float]]
    init_ms: float
    first_ms: float

    def stats(self) -> LatencyStats:
        return LatencyStats.from_samples(self.samples_ms, self.first_ms)


def time_tracker(tracker: Any, frame: Callable[[int], np.ndarray], count: int, init_box: Sequence[float] | np.ndarray, *,
                 warmup: int = 10) -> TrackerRun:  # fmt: skip
    """Time a tracker (the OpenCV tracker API) over ``count`` frames, ``frame(i)`` giving frame ``i``.

    A warm-up pass runs ``init`` and up to ``warmup`` updates first (only its first update is timed,
    as ``first_ms``); then the tracker starts again from ``init_box`` and every update is timed on the
    wall clock and on the process CPU clock. Getting a frame is not timed.
    """
    box0 = tuple(float(v) for v in init_box)
    tracker.init(frame(0), box0)
    first_ms = float("nan")
    for i in range(1, min(warmup + 1, count)):
        f = frame(i)
        t0 = time.perf_counter_ns()
        tracker.update(f)
        if i == 1:
            first_ms = (time.perf_counter_ns() - t0) / _NS_PER_MS
    f = frame(0)
    t0 = time.perf_counter_ns()
    tracker.init(f, box0)
    init_ms = (time.perf_counter_ns() - t0) / _NS_PER_MS
    boxes, scores, samples, cpu, stages = [list(box0)], [1.0], [], [], []
    for i in range(1, count):
        f = frame(i)
        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
        _, box = tracker.update(f)
        samples.append((time.perf_counter_ns() - t0) / _NS_PER_MS)
        cpu.append((time.process_time_ns() - c0) / _NS_PER_MS)
        boxes.append([float(v) for v in box])
        scores.append(float(tracker.score))
        stages.append({k: v for k, v in tracker.last_timings.items() if k != "total"})
    return TrackerRun(np.asarray(boxes, dtype=np.float64), scores, samples, cpu, stages, init_ms, first_ms)
