"""mfv2 as a VOT-toolkit tracker: a TraX server and a class for the toolkit's ``python`` protocol.

TraX (``protocol = traxpython``, ``command = mfv2.integrations.vot``): the toolkit starts
``python -m mfv2.integrations.vot``, which talks to it through ``trax.Server`` from ``vot-trax``. The
tracker options come from the command line or, since ``trackers.ini`` runs a bare module, from the
environment variable ``MFV2_VOT_ARGS`` (``env_MFV2_VOT_ARGS = --backend openvino --model DIR``).
``mfv2 vot-config`` prints a ready section.

Python (``protocol = python``, ``command = mfv2.integrations.vot:VOTTracker``, ``arg_model = DIR``,
...): the toolkit imports :class:`VOTTracker` in a worker process of its own interpreter and calls
``init(frame_path, (region, properties))`` / ``update(frame_path)``.

Either way the tracker receives the initial region and reports an axis-aligned rectangle and its
confidence (the tracker's score, a probability) for every frame. mfv2 follows one box, so an
initial polygon becomes the bounding box of its vertices and a mask the bounding box of its pixels
(:mod:`mfv2.datasets.vot`). This module is not named ``vot`` at the top level, so the
toolkit's own ``import vot`` is unaffected.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mfv2.artifacts.formats import GRAPH_MODES, PRECISIONS
from mfv2.datasets.vot import Box, mask_box, polygon_box
from mfv2.errors import ConfigError, Mfv2Error
from mfv2.runtimes import BACKENDS

__all__ = ["VOTTracker", "region_box", "serve", "main", "get_parser", "trackers_ini", "vot_overlaps", "vot_accuracy",
           "ENV_ARGS"]

#: Environment variable holding the TraX entry point's options when the command line has none.
ENV_ARGS = "MFV2_VOT_ARGS"


def get_parser() -> argparse.ArgumentParser:
    """Options of the TraX entry point (the same names as ``mfv2 track``)."""
    p = argparse.ArgumentParser(prog="python -m mfv2.integrations.vot",
                                description="mfv2 tracker for the VOT toolkit (TraX server on stdin/stdout)")
    p.add_argument("--backend", default="onnxruntime",
                   help=f"{', '.join(BACKENDS.names())}, a plugin backend, or auto (default onnxruntime)")
    p.add_argument("--model", help="export directory (default: the shipped demo model)")
    p.add_argument("--checkpoint", help="checkpoint instead of --model")
    p.add_argument("--variant", help="architecture of --checkpoint (default: detect)")
    p.add_argument("--precision", default="fp32", choices=(*PRECISIONS, "auto"), help="default fp32")
    p.add_argument("--graph", default="auto", choices=GRAPH_MODES)
    p.add_argument("--threads", type=int, help="runtime threads")
    p.add_argument("--preset", default="vot20", help="tracker settings (default vot20)")
    return p


def _read_frame(frame: Any) -> np.ndarray:
    """A frame the toolkit hands over (a path, a channel dict, or an RGB array) as BGR uint8."""
    if isinstance(frame, dict):
        if "color" not in frame:
            raise ConfigError(f"the tracker reads the color channel; got channels {sorted(frame)}")
        frame = frame["color"]
    if isinstance(frame, (str, os.PathLike)):
        img = cv2.imread(str(frame), cv2.IMREAD_COLOR)
        if img is None:
            raise ConfigError(f"cannot read image {frame}")
        return img
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return cv2.cvtColor(arr.astype(np.uint8), cv2.COLOR_RGB2BGR)  # the toolkit's arrays are RGB
    return arr.astype(np.uint8)


def region_box(region: Any) -> Box:
    """The ``(x, y, w, h)`` box of an initial region: a TraX region (rectangle, polygon, mask) or the
    python protocol's encoding (a 4-tuple, a list of ``(x, y)`` points, or a 2-D mask).

    Raises:
        ConfigError: an empty or unknown region.
    """
    kind = getattr(region, "type", None)
    box: Box | None
    if kind == "rectangle":
        box = tuple(float(v) for v in region.bounds())  # type: ignore[assignment]
    elif kind == "polygon":
        box = polygon_box([region.get(i) for i in range(region.size())])
    elif kind == "mask":
        box = mask_box(region.array(), region.offset())
    elif isinstance(region, (tuple, list)) and len(region) == 4 and all(np.isscalar(v) for v in region):
        box = tuple(float(v) for v in region)  # type: ignore[assignment]
    elif isinstance(region, list) and region and all(isinstance(p, tuple) and len(p) == 2 for p in region):
        box = polygon_box(region)
    elif np.asarray(region).ndim == 2:
        box = mask_box(np.asarray(region))
    else:
        raise ConfigError(f"unsupported VOT region {region!r}")
    if box is None or box[2] <= 0 or box[3] <= 0:
        raise ConfigError(f"the initial region {region!r} is empty; mfv2 needs a box to start from")
    return box


def _make_tracker(backend: str = "onnxruntime", model: str | None = None, checkpoint: str | None = None,
                  variant: str | None = None, precision: str = "fp32", graph: str = "auto",
                  threads: int | str | None = None, preset: str = "vot20") -> Any:
    from mfv2.tracking import Tracker

    if model is None and checkpoint is None:
        from mfv2.assets import demo_model_for

        checkpoint = str(demo_model_for("vot", "give the model: --model EXPORT_DIR or --checkpoint CHECKPOINT"))
    options = {"variant": variant} if variant else {}
    return Tracker.create(backend, model=model, checkpoint=checkpoint, config=preset, precision=precision,
                          threads=int(threads) if threads not in (None, "") else None,
                          graph=graph,  # type: ignore[arg-type]
                          **options)


class VOTTracker:
    """The VOT toolkit's ``python`` protocol tracker: ``trackers.ini`` ``arg_*`` keys are its arguments.

    Args:
        backend, model, checkpoint, variant, precision, graph, threads, preset: as ``mfv2 track``
            (strings are accepted, as ``trackers.ini`` gives them); no model means the demo model.
    """

    multiobject = False

    def __init__(self, backend: str = "onnxruntime", model: str | None = None, checkpoint: str | None = None,
                 variant: str | None = None, precision: str = "fp32", graph: str = "auto",
                 threads: int | str | None = None, preset: str = "vot20") -> None:
        self.tracker = _make_tracker(backend, model, checkpoint, variant, precision, graph, threads, preset)

    def init(self, frame: Any, new: Any, properties: dict[str, Any] | None = None
             ) -> tuple[tuple[float, float, float, float], dict[str, float]]:
        """Start on ``frame`` (a path) from ``new`` = ``(region, properties)`` or a region; returns the box."""
        region = new[0] if isinstance(new, tuple) and len(new) == 2 and isinstance(new[1], dict) else new
        box = region_box(region)
        self.tracker.init(_read_frame(frame), box)
        return box, {"confidence": 1.0}

    def update(self, frame: Any, new: Any = None, properties: dict[str, Any] | None = None
               ) -> tuple[tuple[float, float, float, float], dict[str, float]]:
        """Track into ``frame``; returns ``((x, y, w, h), {"confidence": score})``."""
        _, box = self.tracker.update(_read_frame(frame))
        return tuple(float(v) for v in box), {"confidence": float(self.tracker.score)}  # type: ignore[return-value]


def _trax() -> Any:
    try:
        import trax
    except ImportError as e:
        from mfv2.errors import BackendUnavailableError

        raise BackendUnavailableError('the VOT integration needs vot-trax: pip install "mfv2[vot]"') from e
    return trax


def serve(tracker: Any) -> None:
    """Answer one TraX session (the toolkit on stdin/stdout) with ``tracker`` (``init``/``update``/``score``).

    Raises:
        BackendUnavailableError: ``vot-trax`` is not installed.
    """
    trax = _trax()
    formats = [trax.Region.RECTANGLE, trax.Region.POLYGON, trax.Region.MASK]
    with trax.Server(formats, [trax.Image.PATH], tracker_name="mfv2", tracker_family="MixFormerV2") as server:
        while True:
            request = server.wait()
            if request.type == trax.TraxStatus.QUIT:
                break
            frame = _read_frame(request.image["color"].path())
            if request.type == trax.TraxStatus.INITIALIZE:
                box = region_box(request.objects[0][0])
                tracker.init(frame, box)
                score = 1.0
            else:
                _, box = tracker.update(frame)
                score = float(tracker.score)
            reply = trax.Rectangle.create(*(float(v) for v in box))
            server.status([(reply, {"confidence": score})])


def vot_overlaps(pred: Any, gt: Any, image_size: tuple[int, int]) -> np.ndarray:
    """Per-frame overlaps of rectangles as the VOT toolkit counts them, from mfv2's inclusive IoU.

    The toolkit rasterises regions: each of ``x, y, w, h`` is rounded to an integer (half to even),
    a box covers the pixels ``x .. x+w-1`` and only pixels inside the ``(width, height)`` image
    count. Rounding and clipping the boxes that way and taking
    :func:`mfv2.geometry.boxes.iou_inclusive` gives the same numbers; two empty regions overlap 1,
    as in the toolkit. NaN rows (special regions) overlap 0.

    Args:
        pred, gt: ``(N, 4)`` xywh boxes.
        image_size: ``(width, height)``.
    """
    from mfv2.geometry.boxes import iou_inclusive

    width, height = image_size

    def pixels(boxes: Any) -> tuple[np.ndarray, np.ndarray]:
        b = np.round(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        x1, y1 = np.maximum(b[:, 0], 0), np.maximum(b[:, 1], 0)
        x2, y2 = np.minimum(b[:, 0] + b[:, 2] - 1, width - 1), np.minimum(b[:, 1] + b[:, 3] - 1, height - 1)
        out = np.stack([x1, y1, x2 - x1 + 1, y2 - y1 + 1], axis=1)
        empty = ~np.isfinite(out).all(axis=1) | (out[:, 2] <= 0) | (out[:, 3] <= 0)
        out[empty] = 0.0
        return out, empty

    (p, p_empty), (g, g_empty) = pixels(pred), pixels(gt)
    with np.errstate(invalid="ignore"):
        iou = iou_inclusive(p, g)
    return np.where(p_empty & g_empty, 1.0, np.where(p_empty | g_empty, 0.0, iou))


def vot_accuracy(preds: Mapping[str, Any], gts: Mapping[str, Any], image_sizes: Mapping[str, tuple[int, int]],
                 *, burnin: int = 10) -> float:
    """The VOT toolkit's ``average_accuracy`` of one unsupervised run, from :func:`vot_overlaps`.

    Per sequence, the mean overlap over frames from ``burnin`` on (frame 0 is the initialisation; the
    toolkit's default skips 10) where the ground truth is known; sequences are then averaged with
    weights equal to their lengths, as the toolkit's default (``weighted: true``) does.
    """
    total, frames = 0.0, 0
    for name, gt in gts.items():
        g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        overlaps = vot_overlaps(preds[name], g, image_sizes[name])
        keep = np.asarray(np.isfinite(g).all(axis=1), dtype=bool)
        keep[: max(burnin, 1)] = False
        if burnin == 0:  # the toolkit then counts the initialisation frame, as overlap 0
            overlaps[0], keep[0] = 0.0, True
        total += float(overlaps[keep].mean()) * len(g) if keep.any() else 0.0
        frames += len(g)
    return total / frames


def trackers_ini(name: str, *, protocol: str = "traxpython", options: Sequence[str] = (),
                 python: str | None = None, paths: Sequence[str] = (), timeout: int = 120,
                 label: str | None = None) -> str:
    """A ``trackers.ini`` section that runs mfv2 with the tracker ``options`` (as :func:`get_parser` takes).

    Args:
        name: the tracker identifier (letters, digits, ``-``, ``_``).
        protocol: ``traxpython`` (a process of ``python`` speaking TraX) or ``python`` (the toolkit's
            own interpreter imports :class:`VOTTracker`; ``python`` and ``paths`` do not apply, so mfv2
            must be importable there).
        python: interpreter of the TraX process (default: the toolkit's).
        paths: folders put on its ``PYTHONPATH`` (a checkout of mfv2 that is not installed).
        timeout: seconds the toolkit waits for each reply (the first includes loading the model).
        label: the name reports show.

    Raises:
        ConfigError: a bad identifier or protocol.
    """
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ConfigError(f"tracker name {name!r} may hold only letters, digits, '-' and '_' (a VOT identifier)")
    lines = [f"[{name}]", f"label = {label or name}"]
    if protocol == "traxpython":
        lines += ["protocol = traxpython", "command = mfv2.integrations.vot",
                  f"env_{ENV_ARGS} = {shlex.join(options)}", f"timeout = {timeout}"]
        if paths:
            lines.append(f"paths = {os.pathsep.join(paths)}")
        if python:
            lines.append(f"python = {python}")
    elif protocol == "python":
        args = get_parser().parse_args(list(options))
        lines += ["protocol = python", "command = mfv2.integrations.vot:VOTTracker", f"timeout = {timeout}"]
        lines += [f"arg_{k} = {v}" for k, v in vars(args).items() if v is not None]
    else:
        raise ConfigError(f"protocol must be traxpython or python, got {protocol!r}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """The TraX entry point: options from ``argv``, else ``sys.argv``, else ``$MFV2_VOT_ARGS``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list and os.environ.get(ENV_ARGS):
        args_list = shlex.split(os.environ[ENV_ARGS])
    args = get_parser().parse_args(args_list)
    try:
        _trax()  # before loading a model
        if args.model is not None and not Path(args.model).exists():
            raise ConfigError(f"--model {args.model} does not exist")
        tracker = _make_tracker(args.backend, args.model, args.checkpoint, args.variant, args.precision,
                                args.graph, args.threads, args.preset)
        serve(tracker)
    except Mfv2Error as e:  # stdout belongs to TraX: errors go to stderr, which the toolkit logs
        print(f"mfv2: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
