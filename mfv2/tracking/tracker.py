"""The online tracker behind the OpenCV tracker API, the same loop for every backend and model family.

Per frame, as the official tracker does: crop the search region around the previous box, run the
network, map the box back around the previous centre, clip it into the frame; keep the best-scoring
crop (score > 0.5) as the candidate online template and swap it in every ``update_interval`` frames,
reverting to the first template when no frame qualified. Unlike the official code, ``online_size`` > 1
works (templates are appended, then replaced oldest first).

What differs between model families comes from the manifest and its
:class:`~mfv2.artifacts.families.RuntimeFamily`: the normalisation (``mean``/``std``), the crop factors
(the recorded tracker settings: 2 and 4 for MVT), the post-processing (inside ``runner.predict``: MVT's
Hann window and decode) and the template policy (``none`` for MVT: the first template stays).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from mfv2.artifacts import Manifest, TemplatePolicy, runtime_family
from mfv2.config import TrackerConfig
from mfv2.errors import ConfigError, Mfv2Error, ShapeError
from mfv2.geometry.boxes import Box, clip_box
from mfv2.geometry.crop import Crop, Normalize, map_box_back, sample_target
from mfv2.runtimes import ModelRunner, load_backend
from mfv2.runtimes.base import GraphMode

__all__ = ["Tracker", "TargetState", "STAGES", "as_bgr", "check_box"]

log = logging.getLogger(__name__)

#: Timed stages of :meth:`Tracker.update`; ``template`` is the online-template work.
STAGES = ("crop", "preprocess", "infer", "postprocess", "template")


def as_bgr(frame: Any) -> np.ndarray:
    """A frame as (H, W, 3) uint8 BGR.

    Grayscale (H, W) or (H, W, 1) frames are expanded to three channels and BGRA frames lose their
    alpha; anything else that is not uint8 BGR raises :class:`ShapeError`.
    """
    if not isinstance(frame, np.ndarray):
        raise ShapeError(f"a frame must be a NumPy uint8 (H, W, 3) BGR image, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ShapeError(f"frames must be uint8 BGR as cv2 reads them, got dtype {frame.dtype}; convert with frame.astype(np.uint8)")
    if frame.size == 0:
        raise ShapeError(f"empty frame of shape {frame.shape}")
    channels = 1 if frame.ndim == 2 else frame.shape[2] if frame.ndim == 3 else -1
    if channels == 3:
        return frame
    if channels == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    raise ShapeError(f"frames must be (H, W, 3) BGR (or grayscale / BGRA), got shape {frame.shape}")


def check_box(bbox: Sequence[float], width: int, height: int) -> Box:
    """Validate an ``(x, y, w, h)`` box for a ``width`` x ``height`` frame: finite, positive size, overlapping it."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"a box is four numbers x, y, w, h; got {bbox!r}") from e
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ConfigError(f"box {x:g},{y:g},{w:g},{h:g} must be finite with width and height > 0")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ConfigError(f"box {x:g},{y:g},{w:g},{h:g} lies outside the {width}x{height} frame")
    return (x, y, w, h)


class TargetState:
    """One target's part of the loop: its templates, online-template schedule, box, score and lost flag.

    :class:`Tracker` drives one of these and :class:`~mfv2.tracking.multi.MultiTracker` one per
    target, so both follow a target through exactly the same steps; the network call is theirs.
    Templates and crops are (1, 3, S, S) float32 as the graphs take them.

    Attributes:
        box: the current box (x, y, w, h). score: the last score (1.0 after :meth:`init`).
        ok: whether the last frame was tracked (score >= ``lost_threshold`` and finite outputs).
        template, online: the templates the network sees now (``online`` (1, 3, Z, Z), or
            (1, K, 3, Z, Z) with ``online_size`` > 1).
        frames, nonfinite_frames: frames tracked since :meth:`init`, and those with non-finite outputs.
    """

    def __init__(self, config: TrackerConfig, *, template_size: int, search_size: int,
                 mean: Sequence[float], std: Sequence[float], template_policy: TemplatePolicy = "online") -> None:
        self.config = config
        self.template_policy = template_policy
        self.template_size, self.search_size = template_size, search_size
        self.normalize = Normalize(mean, std)
        self.box: Box = (0.0, 0.0, 0.0, 0.0)
        self.size = (0, 0)
        self.score, self.ok = 0.0, False
        self.frames = self.nonfinite_frames = 0

    @classmethod
    def from_manifest(cls, config: TrackerConfig, manifest: Manifest) -> TargetState:
        """A target of the model ``manifest`` describes: its crop sizes, normalisation and family's template policy."""
        m = manifest.model
        return cls(config, template_size=m.template_size, search_size=m.search_size, mean=manifest.mean,
                   std=manifest.std, template_policy=runtime_family(manifest.family).template_policy)

    def init(self, image: np.ndarray, box: Box) -> None:
        """Start on ``box`` of ``image`` (BGR, checked by the caller)."""
        cfg = self.config
        self.template = self.normalize(sample_target(image, box, cfg.template_factor, self.template_size).image)
        self._online: list[np.ndarray] = [self.template]
        self.online = self.template
        self._best = self.template
        self._max_score = -1.0
        self._forget = 0
        self.size = image.shape[:2]
        self.box, self.score, self.ok = box, 1.0, True
        self.frames = self.nonfinite_frames = 0

    def crop(self, image: np.ndarray) -> Crop:
        """The search region around the current box."""
        return sample_target(image, self.box, self.config.search_factor, self.search_size)

    def post(self, crop: Crop, box_cxcywh: Any, score: float, backend: str) -> bool:
        """Take the network's box ((4,) cx, cy, w, h in the crop) and score for this frame; returns ``ok``."""
        cfg = self.config
        finite = math.isfinite(score) and bool(np.isfinite(box_cxcywh).all())
        if finite:
            height, width = self.size
            self.box = clip_box(map_box_back(box_cxcywh, self.box, crop.resize_factor, self.search_size), height, width, cfg.clip_margin)
        else:
            self.nonfinite_frames += 1
            if self.nonfinite_frames == 1:
                log.warning("the %s model returned non-finite outputs; the frame is reported lost", backend)
            score = 0.0
        self.score = score
        self.frames += 1
        self.ok = finite and score >= cfg.lost_threshold
        return self.ok

    def update_templates(self, image: np.ndarray) -> bool:
        """Keep the best confident crop (cut at the new box); every ``update_interval`` frames make it an
        online template (policy ``online``; ``none`` keeps the first one). Returns whether the templates
        the network sees changed."""
        cfg = self.config
        if self.template_policy == "none":
            return False
        self._max_score *= cfg.max_score_decay
        if self.score > cfg.update_threshold and self.score > self._max_score:
            crop = sample_target(image, self.box, cfg.template_factor, self.template_size)
            self._best = self.normalize(crop.image)
            self._max_score = self.score
        if self.frames % cfg.update_interval:
            return False
        previous = list(self._online)
        if cfg.online_size == 1:
            self._online = [self._best]
        elif len(self._online) < cfg.online_size:
            self._online.append(self._best)
        else:
            self._online[self._forget] = self._best
            self._forget = (self._forget + 1) % cfg.online_size
        self._max_score = -1.0
        self._best = self.template
        if all(a is b for a, b in zip(previous, self._online)) and len(previous) == len(self._online):
            return False
        self.online = self._online[0] if len(self._online) == 1 else np.stack(self._online, axis=1)
        return True


class Tracker:
    """Single-target tracker (any model family) with the OpenCV API (``init``, ``update``, ``getTrackingScore``).

    Args:
        runner: a :class:`~mfv2.runtimes.ModelRunner` (any backend) with batch 1 or a dynamic batch.
        config: tracker settings; ``None`` takes the ones recorded with the model.

    Attributes:
        score: confidence of the last frame, a probability (1.0 right after :meth:`init`).
        last_timings: seconds per stage of the last :meth:`update` (keys :data:`STAGES` and ``total``).
        total_timings: the same summed over all updates since :meth:`init`; ``frames`` counts them.
        nonfinite_frames: frames whose network output was NaN/inf (reported as lost, box kept).
    """

    def __init__(self, runner: ModelRunner, config: TrackerConfig | None = None) -> None:
        self.runner = runner
        self.config = config if config is not None else runner.manifest.tracker
        if runner.manifest.batch not in (1, None):
            raise ConfigError(
                f"the tracker follows one target but this model was exported for batch {runner.manifest.batch}; export with batch 1, "
                "or follow several targets with MultiTracker"
            )
        k = runner.online_templates
        if k is not None and k != 1:
            raise ConfigError(f"the tracker starts with one online template, but this {runner.backend} model takes {k}")
        if self.config.online_size > 1 and k is not None:
            raise ConfigError(
                f"online_size {self.config.online_size} needs a model that takes a growing number of online templates "
                f"(the torch backend); this {runner.backend} export takes {k}"
            )
        self._owns_runner = False
        self._target = TargetState.from_manifest(self.config, runner.manifest)
        self._state: Box | None = None
        self.score = 0.0
        self.last_timings: dict[str, float] = {}
        self.total_timings: dict[str, float] = {}

    @classmethod
    def create(
        cls,
        backend: str = "auto",
        *,
        model: Any = None,
        checkpoint: Any = None,
        config: TrackerConfig | str | None = None,
        precision: str | None = None,
        threads: int | None = None,
        graph: GraphMode = "auto",
        **options: Any,
    ) -> Tracker:
        """Load a model on ``backend`` and wrap it in a tracker that owns it.

        Args:
            backend: runtime backend name, or ``auto`` (default): the fastest CPU path of the export
                whose accuracy gate passed, measured once on this machine (:mod:`mfv2.runtimes.auto`).
            model: an export directory (or, for ``torch``, a ``MixFormerV2`` instance).
            checkpoint: a checkpoint file instead of ``model`` (exported on the fly for file backends).
            config: a :class:`TrackerConfig`, a preset name (``lasot``, ``got10k``, ...), or ``None`` for
                the model's recorded settings.
            precision: ``fp32``, ``fp16``, ``bf16``, ``int8`` or ``auto``; default ``auto`` with
                ``backend="auto"``, else ``fp32``.
            threads, graph, options: passed to :func:`~mfv2.runtimes.load_backend`.
        """
        if precision is None:
            precision = "auto" if backend == "auto" else "fp32"
        if model is not None and checkpoint is not None:
            raise ConfigError("give either model= (an export directory) or checkpoint=, not both")
        if model is None and checkpoint is None and not (backend == "torch" and "variant" in options):
            raise ConfigError(
                f"Tracker.create({backend!r}) needs a model: model=EXPORT_DIR (from 'mfv2 export') or "
                "checkpoint=FILE" + (", or variant= for random weights" if backend == "torch" else "")
            )
        runner = load_backend(backend, model if model is not None else checkpoint, precision=precision,
                              threads=threads, graph=graph, **options)
        try:
            if isinstance(config, str):
                config = TrackerConfig.preset(config, runner.manifest.model)
            tracker = cls(runner, config)
        except BaseException:
            runner.close()
            raise
        tracker._owns_runner = True
        return tracker

    # OpenCV API -------------------------------------------------------------------------------

    def init(self, frame: np.ndarray, bbox: Sequence[float]) -> None:
        """Start tracking the target in ``bbox`` (x, y, w, h pixels) of ``frame`` (uint8 BGR)."""
        image = as_bgr(frame)
        height, width = image.shape[:2]
        box = check_box(bbox, width, height)
        if min(width, height) < self.config.clip_margin:
            log.warning("the %dx%d frame is smaller than the %g px clip margin: boxes will span the whole frame "
                        "along its short side", width, height, self.config.clip_margin)
        self._target.init(image, box)
        self.runner.set_templates(self._target.template, self._target.online)
        self._state = box
        self.score = 1.0
        self.last_timings = {}
        self.total_timings = dict.fromkeys((*STAGES, "total"), 0.0)

    def update(self, frame: np.ndarray) -> tuple[bool, Box]:
        """Track the target into ``frame``.

        Returns:
            ``(ok, (x, y, w, h))``: ``ok`` is False when the score is below ``config.lost_threshold``
            or the network output was not finite (the box is then the previous one). The box always
            lies inside the frame; on frames smaller than ``config.clip_margin`` it spans the whole
            frame along the short side (see :func:`~mfv2.geometry.clip_box`).

        Raises:
            Mfv2Error: before :meth:`init`. ShapeError: a frame of another size than the first one.
        """
        if self._state is None:
            raise Mfv2Error("Tracker.update() called before init(); initialise with the first frame and box")
        image = as_bgr(frame)
        height, width = image.shape[:2]
        if (height, width) != self._target.size:
            size = self._target.size
            raise ShapeError(
                f"frame size changed from {size[1]}x{size[0]} to {width}x{height} after {self.frames} frames; "
                "call init() again for a new video"
            )
        target = self._target
        t0 = time.perf_counter_ns()
        crop = target.crop(image)
        t1 = time.perf_counter_ns()
        search = target.normalize(crop.image)
        t2 = time.perf_counter_ns()
        boxes, scores = self.runner.predict(search)
        t3 = time.perf_counter_ns()
        ok = target.post(crop, boxes[0], float(scores[0]), self.runner.backend)
        self._state, self.score = target.box, target.score
        t4 = time.perf_counter_ns()
        if target.update_templates(image):
            self.runner.set_templates(target.template, target.online)
        t5 = time.perf_counter_ns()
        self._record((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4))
        return ok, self._state

    def getTrackingScore(self) -> float:  # noqa: N802  (OpenCV's name)
        """Confidence of the last frame (OpenCV API)."""
        return self.score

    # Internals -------------------------------------------------------------------------------

    def _record(self, stages_ns: tuple[int, ...]) -> None:
        self.last_timings = {name: ns / 1e9 for name, ns in zip(STAGES, stages_ns)}
        self.last_timings["total"] = sum(stages_ns) / 1e9
        for name, seconds in self.last_timings.items():
            self.total_timings[name] += seconds

    @property
    def frames(self) -> int:
        """Frames tracked since :meth:`init`."""
        return self._target.frames

    @property
    def nonfinite_frames(self) -> int:
        """Frames whose network output was NaN/inf (reported as lost, box kept)."""
        return self._target.nonfinite_frames

    @property
    def box(self) -> Box | None:
        """The current box (x, y, w, h), ``None`` before :meth:`init`."""
        return self._state

    def close(self) -> None:
        """Release the runner if this tracker created it (:meth:`create`)."""
        if self._owns_runner:
            self.runner.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Tracker({self.runner!r}, {self.config!r})"
