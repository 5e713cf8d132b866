"""``mfv2 track``: follow one target through a video file, camera, stream or image folder."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from mfv2.commands._common import add_model_options, add_runtime_options, backend_options, precision_of

HELP = "track one or several targets through a video file, camera, stream URL or image folder"
EXAMPLE = "mfv2 track clip.mp4 --backend onnxruntime --model exports/S --init 120,80,60,90 --output boxes.txt"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SRC", help="video file, folder of images (natural name order), camera index or stream URL")
    add_model_options(p, checkpoint_help="checkpoint; other backends than torch export it once into a cache (default "
                      "without --model: the shipped demo model, trained on synthetic clips only)",
                      variant_help="architecture (S, B, ...): of --checkpoint, or checked against --model (default: detect)")
    p.add_argument("--init", metavar="x,y,w,h", action="append",
                   help="target box in the first frame; repeat it for several targets, tracked in one batched forward "
                        "per frame (an export with --batch N or --batch dynamic, or torch); without it, draw the box "
                        "(needs a display)")
    p.add_argument("--multi", action="store_true",
                   help="with no --init: draw several boxes (Enter after each, Esc when done)")
    p.add_argument("--preset", help="official per-dataset tracker settings: lasot, got10k, trackingnet, vot20, otb, uav, ...")
    p.add_argument("--update-interval", type=int, metavar="N", help="frames between online-template updates")
    p.add_argument("--lost-threshold", type=float, metavar="P", help="score below which a frame counts as lost (default 0)")
    add_runtime_options(p, auto=True)
    p.add_argument("--output", metavar="boxes.txt",
                   help="one x,y,w,h line per frame, the first being the init box; with several targets one file each, "
                        "named by the target id: {id} in the name, else boxes_0.txt, boxes_1.txt, ...")
    p.add_argument("--jsonl", metavar="PATH",
                   help="one JSON line per frame: box, ok, score and stage timings in ms (several targets: one line "
                        "per target and frame, with its \"target\" id)")
    p.add_argument("--save-video", metavar="out.mp4", help="write the frames with the box drawn (mp4v)")
    p.add_argument("--show", action="store_true", help="display the frames while tracking (q or Esc stops)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (cameras and streams)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the check of the graph files against the SHA-256 in their manifest (graphs edited on purpose)")


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x,y,w,h"`` -> four floats; anything else is a one-line ConfigError."""
    from mfv2.errors import ConfigError

    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ConfigError(f"--init takes x,y,w,h (four comma-separated numbers, e.g. 120,80,60,90), got {text!r}")
    return values  # type: ignore[return-value]


def _model_source(args: argparse.Namespace) -> str:
    """The export folder or checkpoint to track with: the one given, else the shipped demo model."""
    from mfv2.assets import demo_model_for
    from mfv2.errors import ConfigError

    if args.model or args.checkpoint:
        return args.model or args.checkpoint
    if args.variant:
        raise ConfigError("--variant describes --checkpoint or --model; give one of them")
    return str(demo_model_for("track", "no model given and the demo model is not installed; pass --model DIR or --checkpoint CK"))


def _tracker_config(args: argparse.Namespace, runner: Any) -> Any:
    from mfv2.config import TrackerConfig, variant_config
    from mfv2.errors import ConfigError

    model = runner.manifest.model
    if args.variant and args.model and variant_config(args.variant).replace(name=model.name) != model:
        raise ConfigError(f"{args.model} holds MixFormerV2-{model.name} ({model.describe()}), not {args.variant}; drop --variant or pick the matching export")
    config = TrackerConfig.preset(args.preset, model) if args.preset else runner.manifest.tracker
    changes = {k: v for k, v in (("update_interval", args.update_interval), ("lost_threshold", args.lost_threshold)) if v is not None}
    return config.replace(**changes) if changes else config


class _TextOut:
    """A text file written under a unique temporary name and published when the block succeeds.

    ``path=None`` writes nothing. The target is checked when this is created (before tracking starts
    when created early); see :class:`~mfv2.fileio.PendingFile`.
    """

    def __init__(self, path: str | None) -> None:
        from mfv2.fileio import PendingFile, output_error

        self._pending = PendingFile(path) if path else None
        self._file: IO[str] | None = None
        if self._pending is not None:
            try:
                self._file = open(self._pending.tmp, "w", encoding="utf-8")
            except OSError as e:
                self._pending.discard()
                raise output_error(self._pending.path, e) from e

    def line(self, text: str) -> None:
        if self._file is not None:
            try:
                self._file.write(text + "\n")
            except OSError as e:
                from mfv2.fileio import output_error

                raise output_error(self._pending.path if self._pending else "", e) from e

    def commit(self) -> None:
        """Close the file and move it to its final name."""
        if self._file is not None and self._pending is not None:
            try:
                self._file.close()
            except OSError as e:
                from mfv2.fileio import output_error

                self.discard()
                raise output_error(self._pending.path, e) from e
            self._file = None
            self._pending.commit()

    def discard(self) -> None:
        """Close and delete the temporary file; the final name is left as it was."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._pending is not None:
            self._pending.discard()

    def __enter__(self) -> _TextOut:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _window(title: str) -> str:
    """Open a display window, or explain why there is none."""
    import sys

    import cv2

    from mfv2.errors import ConfigError

    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    try:
        if headless:  # a GUI OpenCV would abort the process when it finds no screen
            raise cv2.error("no DISPLAY")
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise ConfigError(
            "no display: this OpenCV has no GUI (opencv-python-headless) or no screen is attached; "
            "pass --init x,y,w,h and drop --show, or install opencv-python"
        ) from e
    return title


def _select_box(frame: Any) -> tuple[float, float, float, float]:
    import cv2

    from mfv2.errors import ConfigError

    title = _window("mfv2: draw the target, then Enter")
    x, y, w, h = cv2.selectROI(title, frame, showCrosshair=True)
    cv2.destroyWindow(title)
    if w <= 0 or h <= 0:
        raise ConfigError("no box drawn; draw one with the mouse and press Enter, or pass --init x,y,w,h")
    return float(x), float(y), float(w), float(h)


def _box_text(box: Any) -> str:
    return ",".join(f"{v:.2f}" for v in box)


def target_outputs(path: str, count: int) -> list[str]:
    """The results file of each of ``count`` targets: ``{id}`` in ``path`` replaced, else ``_<id>`` before the suffix."""
    if "{id}" in path:
        return [path.replace("{id}", str(i)) for i in range(count)]
    p = Path(path)
    return [str(p.with_name(f"{p.stem}_{i}{p.suffix}")) for i in range(count)]


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before loading anything if an output cannot be written or two outputs (or the input) coincide."""
    from mfv2.errors import ConfigError
    from mfv2.fileio import check_output_file

    outputs = target_outputs(args.output, len(args.init)) if args.output and args.init and len(args.init) > 1 else [args.output]
    named = [(flag, path) for flag, path in (*(("--output", o) for o in outputs), ("--jsonl", args.jsonl),
                                             ("--save-video", args.save_video)) if path]
    seen: dict[Path, str] = {}
    source = Path(str(args.source))
    if source.exists():
        seen[source.resolve()] = "SRC"
    for flag, path in named:
        check_output_file(path)
        key = Path(path).resolve()
        if key in seen:
            raise ConfigError(f"{flag} {path} is the same file as {seen[key]}; give each output its own path")
        seen[key] = f"{flag} {path}"


def run(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from mfv2.errors import ConfigError
    from mfv2.runtimes import load_backend
    from mfv2.tracking import FrameSource, Tracker, VideoSink, draw_box

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    init_boxes = [parse_box(b) for b in args.init or ()]
    if len(init_boxes) > 1 or args.multi:
        return _run_multi(args, init_boxes)
    init_box = init_boxes[0] if init_boxes else None
    _check_outputs(args)
    window = _window("mfv2 track") if args.show else None
    with FrameSource(args.source) as source, load_backend(
        args.backend, _model_source(args), precision=precision_of(args), threads=args.threads, graph=args.graph,
        verify_hashes=not args.no_verify, **backend_options(args),
    ) as runner:
        if runner.auto is not None:
            print(runner.auto.describe())
        tracker = Tracker(runner, _tracker_config(args, runner))
        frames = iter(source)
        first = next(frames, None)
        if first is None:
            raise ConfigError(f"{args.source} gave no frames")
        box = init_box if init_box is not None else _select_box(first)
        tracker.init(first, box)
        log.info("tracking %s with %r", args.source, runner)
        total = min(filter(None, (source.length, args.max_frames)), default=None)
        with _TextOut(args.output) as boxes_out, _TextOut(args.jsonl) as json_out, (
            VideoSink(args.save_video, source.fps or 30.0) if args.save_video else _NoSink()
        ) as sink, tqdm(total=total, unit="frame", disable=True if args.no_progress else None, dynamic_ncols=True) as bar:
            boxes_out.line(_box_text(box))
            json_out.line(json.dumps({"frame": 0, "box": list(box), "ok": True, "score": 1.0}))
            sink.write(first, box)
            bar.update(1)
            count, lost = 1, 0
            try:
                for frame in frames:
                    if args.max_frames is not None and count >= args.max_frames:
                        break
                    ok, box = tracker.update(frame)
                    lost += not ok
                    boxes_out.line(_box_text(box))
                    ms = {k: round(v * 1e3, 3) for k, v in tracker.last_timings.items()}
                    json_out.line(json.dumps({"frame": count, "box": [round(v, 3) for v in box], "ok": ok,
                                              "score": round(tracker.score, 5), "ms": ms}))
                    sink.write(frame, box, tracker.score, ok)
                    count += 1
                    bar.update(1)
                    if count % 10 == 0:
                        fps = tracker.frames / max(tracker.total_timings["total"], 1e-9)
                        bar.set_postfix_str(f"tracker loop {fps:.0f} fps", refresh=False)
                    if window is not None:
                        cv2.imshow(window, draw_box(frame, box, tracker.score, ok))
                        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                            break
            except KeyboardInterrupt:
                if source.kind not in ("camera", "stream"):
                    raise
                log.info("stopped after %d frames", count)
    if window is not None:
        cv2.destroyWindow(window)
    _summary(tracker, count, lost, args)
    return 0


def _select_boxes(frame: Any) -> list[tuple[float, float, float, float]]:
    import cv2

    from mfv2.errors import ConfigError

    title = _window("mfv2: draw each target, Enter after each, Esc when done")
    rois = cv2.selectROIs(title, frame, showCrosshair=True)
    cv2.destroyWindow(title)
    boxes = [tuple(float(v) for v in r) for r in rois if r[2] > 0 and r[3] > 0]
    if not boxes:
        raise ConfigError("no box drawn; draw the targets with the mouse (Enter after each, Esc when done), or pass --init x,y,w,h")
    return boxes  # type: ignore[return-value]


def draw_targets(frame: Any, results: dict[int, Any]) -> Any:
    """A copy of ``frame`` with every target's box, id and score (lost targets: red, at their last box)."""
    import cv2

    out = frame.copy()
    for tid, (ok, box, score) in results.items():
        x, y, w, h = (int(round(v)) for v in box)
        colour = (0, 255, 0) if ok else (0, 0, 255)
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2)
        cv2.putText(out, f"#{tid} {score:.2f}", (x, max(y - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return out


def _run_multi(args: argparse.Namespace, init_boxes: list[tuple[float, float, float, float]]) -> int:
    """Several targets: one MultiTracker, one batched forward per frame."""
    import time
    from contextlib import ExitStack

    import cv2
    from tqdm import tqdm

    from mfv2.errors import ConfigError
    from mfv2.runtimes import load_backend
    from mfv2.tracking import FrameSource, MultiTracker, VideoSink

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if not init_boxes and not args.show:
        raise ConfigError("--multi draws the boxes and needs --show; or pass several --init x,y,w,h")
    if init_boxes:
        _check_outputs(args)
    window = _window("mfv2 track") if args.show else None
    with FrameSource(args.source) as source, load_backend(
        args.backend, _model_source(args), precision=precision_of(args), threads=args.threads, graph=args.graph,
        verify_hashes=not args.no_verify, **backend_options(args),
    ) as runner:
        if runner.batch is not None and runner.batch < max(len(init_boxes), 2):
            raise ConfigError(
                f"{len(init_boxes) or 'several'} targets need a model with that batch: this export has a fixed batch of "
                f"{runner.batch}; export with --batch N (N >= the targets) or --batch dynamic, or use the torch backend"
            )
        tracker = MultiTracker(runner, _tracker_config(args, runner))
        frames = iter(source)
        first = next(frames, None)
        if first is None:
            raise ConfigError(f"{args.source} gave no frames")
        boxes = init_boxes or _select_boxes(first)
        if not init_boxes:
            args.init = [_box_text(b) for b in boxes]
            _check_outputs(args)
        ids = [tracker.add(first, b) for b in boxes]
        log.info("tracking %d targets in %s with %r", len(ids), args.source, runner)
        paths = target_outputs(args.output, len(ids)) if args.output else [None] * len(ids)
        total = min(filter(None, (source.length, args.max_frames)), default=None)
        with ExitStack() as stack:
            outs = {tid: stack.enter_context(_TextOut(p)) for tid, p in zip(ids, paths)}
            json_out = stack.enter_context(_TextOut(args.jsonl))
            sink: Any = stack.enter_context(VideoSink(args.save_video, source.fps or 30.0) if args.save_video else _NoSink())
            bar = stack.enter_context(tqdm(total=total, unit="frame", disable=True if args.no_progress else None, dynamic_ncols=True))
            results: dict[int, Any] = {tid: (True, tuple(b), 1.0) for tid, b in zip(ids, boxes)}
            count, lost, seconds = 0, 0, 0.0
            try:
                for frame in _chain(first, frames):
                    if args.max_frames is not None and count >= args.max_frames:
                        break
                    if count:
                        t0 = time.perf_counter()
                        results = dict(tracker.update(frame))
                        seconds += time.perf_counter() - t0
                    for tid, (ok, box, score) in results.items():
                        lost += not ok
                        outs[tid].line(_box_text(box))
                        json_out.line(json.dumps({"frame": count, "target": tid, "box": [round(v, 3) for v in box],
                                                  "ok": ok, "score": round(score, 5)}))
                    drawn = draw_targets(frame, results) if (window is not None or args.save_video) else None
                    if drawn is not None:
                        sink.write(drawn)
                    count += 1
                    bar.update(1)
                    if window is not None and drawn is not None:
                        cv2.imshow(window, drawn)
                        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                            break
            except KeyboardInterrupt:
                if source.kind not in ("camera", "stream"):
                    raise
                log.info("stopped after %d frames", count)
    if window is not None:
        cv2.destroyWindow(window)
    fps = (count - 1) / seconds if seconds > 0 else 0.0
    print(f"{count} frames, {len(ids)} targets, {lost} lost target-frames; tracker loop {fps:.1f} fps "
          f"({fps * len(ids):.1f} target-frames/s) on {args.backend}")
    for path in filter(None, paths):
        print(f"wrote boxes to {path}")
    for label, path in (("per-frame log", args.jsonl), ("video", args.save_video)):
        if path:
            print(f"wrote {label} to {path}")
    return 0


def _chain(first: Any, rest: Any) -> Any:
    yield first
    yield from rest


def _summary(tracker: Any, count: int, lost: int, args: argparse.Namespace) -> None:
    frames = max(tracker.frames, 1)
    stages = ", ".join(f"{k} {v / frames * 1e3:.2f}" for k, v in tracker.total_timings.items() if k != "total")
    fps = frames / max(tracker.total_timings.get("total", 0.0), 1e-9)
    runner = getattr(tracker, "runner", None)
    where = f"{runner.backend} {runner.precision}" if runner is not None else args.backend
    print(f"{count} frames, {lost} lost; tracker loop {fps:.1f} fps on {where} (ms per frame: {stages})")
    for label, path in (("boxes", args.output), ("per-frame log", args.jsonl), ("video", args.save_video)):
        if path:
            print(f"wrote {label} to {path}")
    if tracker.nonfinite_frames:
        log.warning("%d frames had non-finite network outputs (reported lost); the model or its precision is broken",
                    tracker.nonfinite_frames)


class _NoSink:
    """Stands in for a VideoSink when no video is written."""

    def write(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __enter__(self) -> _NoSink:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
