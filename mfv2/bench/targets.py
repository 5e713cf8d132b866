"""Targets x FPS: one batched :class:`~mfv2.tracking.MultiTracker` against N independent trackers, same run.

For each backend, precision, thread count and number of targets N, the same clip is tracked three
times, interleaved round by round so that a drifting load hits all alike: by a MultiTracker on a
dynamic-batch export (one search forward of N rows per frame), by a MultiTracker on a fixed-batch
export of the largest N (every frame runs the whole batch, the free rows padding, as TensorRT and
other fixed-shape graphs do), and by N :class:`Tracker` objects, each with its own runner on the
batch-1 export (N forwards per frame), as a user without batching would run them. Each N gives one
row per batch layout (``batch``: ``"dynamic"`` or the fixed size), both against the same
independent timing. Reported: frames per second, milliseconds per frame and per target, and the
speed-up (independent time / batched time).

The exports (seeded random weights) live in this module's own cache folders: the shared export
cache (:func:`mfv2.runtimes.cached_export`) takes neither a batch layout nor a seed yet.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.errors import ConfigError

__all__ = ["bench_targets", "format_targets", "TARGET_PATHS"]

log = logging.getLogger(__name__)

#: (backend, precision) pairs timed by default (the issue's S rows: fp32 and the int8 split graphs).
TARGET_PATHS: tuple[tuple[str, str], ...] = (("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                                             ("openvino", "fp32"), ("openvino", "int8"))
_SEED = 0


def _exports(variant: str, paths: Sequence[tuple[str, str]], cache: Path, fixed: int) -> dict[str, Path]:
    """The batch-1, the dynamic-batch and the ``fixed``-batch export of ``variant`` (seeded random
    weights), made once per exporter."""
    from mfv2 import __version__
    from mfv2.artifacts import MANIFEST_NAME, exporter_fingerprint, file_precision
    from mfv2.exporters import export

    onnx = tuple(dict.fromkeys(["fp32", *(p for b, p in paths if b == "onnxruntime" and p != "fp32")]))
    ov = tuple(dict.fromkeys(file_precision(p) for b, p in paths if b == "openvino"))
    out = {}
    for name, batch in (("single", 1), ("dynamic", "dynamic"), ("fixed", fixed)):
        d = cache / f"{variant}-seed{_SEED}-batch{batch}-{'_'.join(onnx)}-ov{'_'.join(ov) or '-'}-{__version__}-{exporter_fingerprint()}"
        if not (d / MANIFEST_NAME).is_file():
            log.info("exporting %s at batch %s into %s", variant, batch, d)
            export(None, d, variant=variant, batch=batch, precisions=onnx, openvino=ov, seed=_SEED, overwrite=True, skip_failed=True)
        out[name] = d
    return out


def _load1() -> float | None:
    from mfv2.bench.envinfo import load_average

    load = load_average()
    return load[0] if load else None


def _clip(frames: int, n: int) -> tuple[list[np.ndarray], list[tuple[float, float, float, float]]]:
    from mfv2.synthetic import make_sequence

    seq = make_sequence(num_frames=frames, seed=3, height=360, width=480, backgrounds="procedural")
    x, y, w, h = (float(v) for v in seq.boxes[0])
    boxes = [(min(max(x + (37 * i) % 160 - 80, 0.0), 480 - w), min(max(y + (23 * i) % 100 - 50, 0.0), 360 - h), w, h)
             for i in range(n)]
    return [seq.frame(i) for i in range(frames)], boxes


def _time_batched(runner: Any, frames: list[np.ndarray], boxes: list[Any], warmup: int) -> float:
    from mfv2.tracking import MultiTracker

    tracker = MultiTracker(runner)
    for b in boxes:
        tracker.add(frames[0], b)
    for f in frames[1:1 + warmup]:
        tracker.update(f)
    start = time.perf_counter_ns()
    for f in frames[1 + warmup:]:
        tracker.update(f)
    seconds = (time.perf_counter_ns() - start) / 1e9
    for tid in tracker.targets:
        tracker.remove(tid)
    return seconds


def _time_independent(runners: list[Any], frames: list[np.ndarray], boxes: list[Any], warmup: int) -> float:
    from mfv2.tracking import Tracker

    trackers = [Tracker(r) for r in runners]
    for t, b in zip(trackers, boxes):
        t.init(frames[0], b)
    for f in frames[1:1 + warmup]:
        for t in trackers:
            t.update(f)
    start = time.perf_counter_ns()
    for f in frames[1 + warmup:]:
        for t in trackers:
            t.update(f)
    return (time.perf_counter_ns() - start) / 1e9


def bench_targets(
    variant: str = "S",
    *,
    targets: Sequence[int] = (1, 2, 4, 8),
    paths: Sequence[tuple[str, str]] = TARGET_PATHS,
    threads: Sequence[int | None] = (None,),
    frames: int = 40,
    warmup: int = 3,
    rounds: int = 2,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Time batched against independent tracking for every path, thread count and number of targets.

    Returns:
        ``{"env": ..., "rows": [...]}``; each row has ``backend``, ``precision``, ``threads``,
        ``targets``, ``batch`` (``"dynamic"`` or the fixed batch, padded), ``frames`` (timed, per round), ``batched_fps``/``independent_fps`` (frames per
        second, all targets), ``batched_ms``/``independent_ms`` (per frame), ``*_ms_per_target``,
        ``speedup`` (independent / batched time) and ``load_before``/``load_after`` (1-minute load).
    """
    from mfv2.bench.envinfo import capture_env
    from mfv2.fileio import cache_dir as default_cache
    from mfv2.runtimes import load_backend

    if not targets or any(n < 1 for n in targets):
        raise ConfigError(f"--targets takes positive counts, e.g. 1,2,4,8; got {list(targets)}")
    if frames < warmup + 2:
        raise ConfigError(f"frames ({frames}) must exceed the warm-up ({warmup}) by at least 2")
    cache = Path(cache_dir) if cache_dir is not None else default_cache("bench")
    cache.mkdir(parents=True, exist_ok=True)
    fixed = max(targets)
    exports = _exports(variant, paths, cache, fixed)
    clip, boxes = _clip(frames, fixed)
    timed = frames - 1 - warmup
    rows = []
    for backend, precision in paths:
        for th in threads:
            batched = {layout: load_backend(backend, exports[key], precision=precision, threads=th)
                       for layout, key in (("dynamic", "dynamic"), (fixed, "fixed"))}  # fmt: skip
            singles = [load_backend(backend, exports["single"], precision=precision, threads=th) for _ in range(fixed)]
            try:
                for n in targets:
                    load_before = _load1()
                    tb = dict.fromkeys(batched, 0.0)
                    ti = 0.0
                    for _ in range(rounds):
                        for layout, runner in batched.items():
                            tb[layout] += _time_batched(runner, clip, boxes[:n], warmup)
                        ti += _time_independent(singles[:n], clip, boxes[:n], warmup)
                    count = timed * rounds
                    load_after = _load1()
                    for layout, t in tb.items():
                        rows.append({
                            "variant": variant, "backend": backend, "precision": precision, "threads": th, "targets": n,
                            "batch": layout, "frames": timed, "rounds": rounds,
                            "batched_fps": count / t, "independent_fps": count / ti,
                            "batched_ms": t / count * 1e3, "independent_ms": ti / count * 1e3,
                            "batched_ms_per_target": t / count / n * 1e3, "independent_ms_per_target": ti / count / n * 1e3,
                            "speedup": ti / t, "load_before": load_before, "load_after": load_after,
                        })  # fmt: skip
                        log.info("%s %s threads %s, %d targets, batch %s: batched %.1f ms, independent %.1f ms per frame (x%.2f)",
                                 backend, precision, th, n, layout, rows[-1]["batched_ms"], rows[-1]["independent_ms"], rows[-1]["speedup"])
            finally:
                for r in [*batched.values(), *singles]:
                    r.close()
    return {"env": capture_env(), "rows": rows}


def format_targets(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`bench_targets` rows."""
    head = f"{'backend':<12} {'prec':<5} {'thr':>3} {'N':>3} {'batch':>7} {'batched fps':>11} {'indep. fps':>10} " \
           f"{'ms/target b':>11} {'ms/target i':>11} {'speed-up':>8} {'load':>5}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['backend']:<12} {r['precision']:<5} {r['threads'] or '-':>3} {r['targets']:>3} {r['batch']:>7} "
                     f"{r['batched_fps']:>11.2f} {r['independent_fps']:>10.2f} {r['batched_ms_per_target']:>11.1f} "
                     f"{r['independent_ms_per_target']:>11.1f} {r['speedup']:>7.2f}x {r['load_before'] or 0:>5.1f}")
    return "\n".join(lines)
