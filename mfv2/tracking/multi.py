"""Several targets in one forward pass: every live target's search crop goes through one batched call.

Each target is a :class:`~mfv2.tracking.tracker.TargetState`, the same per-target loop
:class:`~mfv2.tracking.Tracker` runs (crop, pre-processing, post-processing, online-template
schedule, lost flag), so a target tracked here gets the boxes and scores a single tracker gets on the
same frames. Per frame the runner sees one batch of search crops; a target's templates are encoded
(and its rows of the bound template keys/values rewritten) only when they change.

Batch rows: with a fixed-batch export (``mfv2 export --batch N``) targets occupy rows of the N-row
batch and free rows are padding whose outputs are ignored, so at most N targets are live at once
(adding one more raises :class:`~mfv2.errors.ConfigError`). With a dynamic-batch export
(``--batch dynamic``, ONNX Runtime and OpenVINO) or the torch backend the batch is exactly the live
targets; it grows on :meth:`~MultiTracker.add` up to ``max_targets`` (default: no limit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np

from mfv2.config import TrackerConfig
from mfv2.errors import ConfigError, ShapeError, UnknownNameError
from mfv2.geometry.boxes import Box
from mfv2.geometry.crop import Crop
from mfv2.runtimes import ModelRunner, load_backend
from mfv2.runtimes.base import GraphMode
from mfv2.tracking.tracker import TargetState, as_bgr, check_box

__all__ = ["MultiTracker", "TargetResult"]

log = logging.getLogger(__name__)


class TargetResult(NamedTuple):
    """One target's outcome on one frame: ``ok`` (tracked, not lost), its box (x, y, w, h) and score."""

    ok: bool
    bbox: Box
    score: float


class MultiTracker:
    """Follows several targets with one batched search forward per frame.

    Args:
        runner: a :class:`~mfv2.runtimes.ModelRunner` of a fixed-batch or dynamic-batch export (or torch).
        config: tracker settings shared by every target; ``None`` takes the model's recorded ones.
            ``online_size`` must be 1 (every row of a batch takes the same number of templates).
        max_targets: with a dynamic batch, the most targets live at once (default: no limit); with a
            fixed batch it may only lower the batch's capacity.

    Attributes:
        capacity: the most targets live at once (``None``: no limit).
        frames: :meth:`update` calls since the first target was added.
    """

    def __init__(self, runner: ModelRunner, config: TrackerConfig | None = None, *, max_targets: int | None = None) -> None:
        self.runner = runner
        self.config = config if config is not None else runner.manifest.tracker
        if self.config.online_size != 1:
            raise ConfigError(
                f"MultiTracker keeps one online template per target (online_size 1), got online_size {self.config.online_size}: "
                "the targets of a batch must take the same number of templates"
            )
        if runner.online_templates not in (None, 1):
            raise ConfigError(f"MultiTracker needs a model that takes one online template; this {runner.backend} model takes {runner.online_templates}")
        if max_targets is not None and max_targets < 1:
            raise ConfigError(f"max_targets must be >= 1, got {max_targets}")
        if runner.batch is not None and max_targets is not None and max_targets > runner.batch:
            raise ConfigError(f"max_targets {max_targets} exceeds the export's fixed batch {runner.batch}; export with --batch {max_targets} or --batch dynamic")
        self.capacity = max_targets if max_targets is not None else runner.batch
        self._owns_runner = False
        self._targets: dict[int, TargetState] = {}
        self._rows: dict[int, int] = {}  # target id -> batch row
        self._next_id = 0
        self._size: tuple[int, int] | None = None
        self._search = np.zeros((0, 3, runner.search_size, runner.search_size), np.float32)
        self.frames = 0

    @classmethod
    def create(
        cls,
        backend: str = "onnxruntime",
        *,
        model: Any = None,
        config: TrackerConfig | str | None = None,
        precision: str = "fp32",
        threads: int | None = None,
        graph: GraphMode = "auto",
        max_targets: int | None = None,
        **options: Any,
    ) -> MultiTracker:
        """Load ``model`` (an export directory; for ``torch`` also a model, or ``variant=``) on ``backend``
        and wrap it in a multi-target tracker that owns it; the other arguments as :meth:`Tracker.create`."""
        runner = load_backend(backend, model, precision=precision, threads=threads, graph=graph, **options)
        try:
            if isinstance(config, str):
                config = TrackerConfig.preset(config, runner.manifest.model)
            tracker = cls(runner, config, max_targets=max_targets)
        except BaseException:
            runner.close()
            raise
        tracker._owns_runner = True
        return tracker

    # Targets ---------------------------------------------------------------------------------

    def add(self, frame: np.ndarray, bbox: Sequence[float]) -> int:
        """Start tracking the target in ``bbox`` (x, y, w, h pixels) of ``frame`` (uint8 BGR); returns its id.

        Ids count up from 0 and are never reused. Two targets may share a box (each is tracked on its own).

        Raises:
            ConfigError: a box that is not finite, has no area or lies outside the frame; or the
                tracker is full (:attr:`capacity` targets live). ShapeError: a frame of another size
                than the live targets' frames.
        """
        image = self._frame(frame)
        height, width = image.shape[:2]
        box = check_box(bbox, width, height)
        if self.capacity is not None and len(self._targets) >= self.capacity:
            where = "the export's fixed batch" if self.runner.batch == self.capacity else "max_targets"
            raise ConfigError(
                f"cannot add a target: {len(self._targets)} are live and {where} holds {self.capacity}; remove one first, "
                "or export with a larger --batch (or --batch dynamic)"
            )
        target = TargetState.from_manifest(self.config, self.runner.manifest)  # the family's template policy too
        target.init(image, box)
        row = self._free_row()
        self.runner.set_templates(target.template, target.online, rows=[row])
        target_id, self._next_id = self._next_id, self._next_id + 1
        self._targets[target_id], self._rows[target_id] = target, row
        self._size = (height, width)
        return target_id

    def remove(self, target_id: int) -> None:
        """Stop tracking ``target_id``; its batch row is freed (a dynamic batch shrinks).

        Raises:
            UnknownNameError: no live target has this id.
        """
        if target_id not in self._targets:
            live = ", ".join(map(str, self._targets)) or "none"
            raise UnknownNameError(f"no target {target_id!r} to remove (live targets: {live})")
        row = self._rows.pop(target_id)
        del self._targets[target_id]
        self.runner.drop_rows([row])
        if self.runner.batch is None:  # the rows after it moved up
            self._rows = {t: r - (r > row) for t, r in self._rows.items()}
        if not self._targets:
            self._size = None

    def update(self, frame: np.ndarray) -> dict[int, TargetResult]:
        """Track every live target into ``frame`` with one batched forward.

        Returns:
            ``{target_id: (ok, (x, y, w, h), score)}`` per live target, as :meth:`Tracker.update`
            and :attr:`Tracker.score` give them for that target alone; ``{}`` with no target.

        Raises:
            ShapeError: a frame of another size than the one the targets were added on.
        """
        image = self._frame(frame)
        if not self._targets:
            return {}
        rows = self.runner.rows
        if self._search.shape[0] != rows:
            self._search = np.zeros((rows, *self._search.shape[1:]), np.float32)
        crops: dict[int, Crop] = {}
        for tid, target in self._targets.items():
            crops[tid] = crop = target.crop(image)
            target.normalize(crop.image, out=self._search[self._rows[tid]])
        boxes, scores = self.runner.predict(self._search)
        results: dict[int, TargetResult] = {}
        changed: list[int] = []
        for tid, target in self._targets.items():
            row = self._rows[tid]
            ok = target.post(crops[tid], boxes[row], float(scores[row]), self.runner.backend)
            results[tid] = TargetResult(ok, target.box, target.score)
            if target.update_templates(image):
                changed.append(tid)
        if changed:
            self.runner.set_templates(np.concatenate([self._targets[t].template for t in changed]),
                                      np.concatenate([self._targets[t].online for t in changed]),
                                      rows=[self._rows[t] for t in changed])
        self.frames += 1
        return results

    # Views -----------------------------------------------------------------------------------

    @property
    def targets(self) -> list[int]:
        """Ids of the live targets, in the order they were added."""
        return list(self._targets)

    def box(self, target_id: int) -> Box:
        """The current box (x, y, w, h) of ``target_id``."""
        return self._get(target_id).box

    def score(self, target_id: int) -> float:
        """The last score of ``target_id`` (1.0 right after :meth:`add`)."""
        return self._get(target_id).score

    def __len__(self) -> int:
        return len(self._targets)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._targets))

    def __contains__(self, target_id: object) -> bool:
        return target_id in self._targets

    # Internals -------------------------------------------------------------------------------

    def _get(self, target_id: int) -> TargetState:
        try:
            return self._targets[target_id]
        except KeyError:
            raise UnknownNameError(f"no target {target_id!r} (live targets: {', '.join(map(str, self._targets)) or 'none'})") from None

    def _frame(self, frame: np.ndarray) -> np.ndarray:
        image = as_bgr(frame)
        size = image.shape[:2]
        if self._size is not None and size != self._size:
            raise ShapeError(
                f"frame size changed from {self._size[1]}x{self._size[0]} to {size[1]}x{size[0]} while targets are live; "
                "remove them (or make a new MultiTracker) for a new video"
            )
        return image

    def _free_row(self) -> int:
        if self.runner.batch is None:
            return len(self._targets)
        used = set(self._rows.values())
        return next(r for r in range(self.runner.batch) if r not in used)

    def close(self) -> None:
        """Release the runner if this tracker created it (:meth:`create`)."""
        if self._owns_runner:
            self.runner.close()

    def __enter__(self) -> MultiTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MultiTracker({self.runner!r}, targets={len(self._targets)}, capacity={self.capacity})"
