"""One benchmark row, run inside its own process, and the model files the rows share.

:func:`prepare_artifacts` (parent process) finds or makes what a variant's rows load: a checkpoint for
the torch rows and an export directory for the others. :func:`run_row` (child process) loads one
backend, times it in model-only or tracker mode and reports its own peak resident memory.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mfv2.bench.config import BenchConfig
from mfv2.bench.latency import LatencyStats, summarize_stages, time_calls, time_tracker
from mfv2.config import FamilyConfig, ModelConfig, TrackerConfig, family_variant_config
from mfv2.errors import BackendUnavailableError, ConfigError, Mfv2Error
from mfv2.fileio import cache_dir

if TYPE_CHECKING:
    from mfv2.artifacts import Manifest

__all__ = ["Artifacts", "prepare_artifacts", "random_checkpoint", "rejected_status", "run_row", "peak_rss_mb", "CLIP_SIZE"]

logger = logging.getLogger(__name__)

CLIP_SIZE = (854, 480)  # width, height of the tracker-mode clip (480p)
_SEED = 0


@dataclass
class Artifacts:
    """What the rows of one variant load.

    Attributes:
        label: the variant name or export directory shown in the rows.
        config: the model architecture. update_interval: the tracker's template update interval.
        checkpoint: weights for the torch rows (None: torch rows cannot run).
        export_dir: export directory for the file backends (None: they cannot run).
        error: why the export failed, shown as the status of every row that needs it.
        note: a sentence for the report.
        manifest: the export directory's manifest (its ``rejected`` variants give their rows' status).
    """

    label: str
    config: FamilyConfig
    update_interval: int
    checkpoint: str | None = None
    export_dir: str | None = None
    error: str | None = None
    note: str = ""
    manifest: Manifest | None = None

    def spec(self, backend: str) -> dict[str, Any]:
        """The ``artifact`` a row of ``backend`` loads."""
        return {"artifact": self.checkpoint if backend == "torch" else self.export_dir}


def rejected_status(manifest: Manifest, backend: str, precision: str, graph: str) -> str | None:
    """The row status of a path whose files were left out of the export because they missed their
    parity gate (``export(skip_failed=True)``), or None when the backend has files to run."""
    from mfv2.artifacts import GRAPH_SETS
    from mfv2.runtimes.base import BACKENDS

    formats = getattr(BACKENDS.get(backend), "formats", ())
    graphs = GRAPH_SETS[graph]
    if any(manifest.find(g, precision, f) for f in formats for g in graphs):
        return None
    why = manifest.rejection(precision, formats)
    return f"exported, validation failed: {why}" if why else None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def random_checkpoint(variant: str, root: Path) -> Path:
    """``variant`` with seeded random weights, saved once as ``root/<variant>-seed0.pt`` (speed does not
    depend on the weights)."""
    path = root / f"{variant}-seed{_SEED}.pt"
    if path.is_file():
        return path
    import torch

    from mfv2.models import build_model, save_native

    root.mkdir(parents=True, exist_ok=True)
    cfg = family_variant_config(variant)
    torch.manual_seed(_SEED)
    model = build_model(cfg)
    weights = f"random, seed {_SEED}, for benchmarks only"
    peak = getattr(model, "peak_score_map", None)  # a family whose untrained score map is flat (MVT) sharpens it
    if peak is not None:
        peak()
        weights += "; score map sharpened (peak_score_map) so the parity gates compare real maxima"
    return save_native(model.state_dict(), cast(ModelConfig, cfg), path, meta={"weights": weights})  # any family's config


def _wanted_files(needed: Iterable[tuple[str, str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """ONNX and OpenVINO precisions to export for the (backend, precision) pairs of the rows."""
    from mfv2.artifacts import FORMATS, file_precision

    onnx, ov = {"fp32"}, set()
    for backend, precision in needed:
        if backend in ("onnxruntime", "tensorrt") and precision in ("fp16", "int8"):
            onnx.add(precision)
        if backend == "openvino":
            ov.add(file_precision(precision))
    return (tuple(p for p in FORMATS.get("onnx").precisions if p in onnx),
            tuple(p for p in FORMATS.get("openvino").precisions if p in ov))  # fmt: skip


def prepare_artifacts(variant: str, needed: set[tuple[str, str]], config: BenchConfig) -> Artifacts:
    """Find or make the checkpoint and the export directory that ``variant``'s rows load.

    ``variant`` is a variant name (random weights unless ``config.checkpoint``) or an export
    directory. Random checkpoints are kept in ``config.cache_dir`` (default the ``bench`` cache) and
    exports in the one export cache (:func:`mfv2.runtimes.cached_export`; in ``config.cache_dir`` when
    given), a low-precision variant that misses its gate left out so its rows say why. Failures become
    :attr:`Artifacts.error` so the rows show them instead of vanishing.
    """
    from mfv2.artifacts import load_manifest
    from mfv2.runtimes import cached_export

    if Path(variant).is_dir():
        manifest = load_manifest(variant)
        ckpt = config.checkpoint or manifest.source.get("checkpoint")
        ckpt = ckpt if ckpt and Path(ckpt).is_file() else None
        note = f"{variant}: exported model ({manifest.model.name}); torch rows use {ckpt or 'nothing (pass --checkpoint)'}"
        return Artifacts(variant, manifest.model, manifest.tracker.update_interval, ckpt, str(variant), note=note,
                         manifest=manifest)
    cfg = family_variant_config(variant)
    interval = TrackerConfig.for_model(cfg).update_interval
    root = Path(config.cache_dir) if config.cache_dir else cache_dir("bench")
    arts = Artifacts(variant, cfg, interval)
    if config.checkpoint and not Path(config.checkpoint).is_file():
        raise ConfigError(f"checkpoint {config.checkpoint} does not exist; pass an official or mfv2 checkpoint file")
    try:
        if config.checkpoint:
            ckpt = Path(config.checkpoint)
            arts.note = f"{variant}: weights from {ckpt}"
        else:
            ckpt = random_checkpoint(variant, root)
            arts.note = (f"{variant}: seeded random weights (speed does not depend on the weights; tracker boxes "
                         "are only compared across backends)")  # fmt: skip
        arts.checkpoint = str(ckpt)
    except (ImportError, Mfv2Error) as e:
        arts.error = f"no weights: {e}"
        return arts
    onnx, ov = _wanted_files(needed)
    if not any(b != "torch" for b, _ in needed):
        return arts
    try:
        out = cached_export(ckpt, precisions=onnx, openvino=ov, skip_failed=True, cache_dir=config.cache_dir)
        arts.export_dir = str(out)
        arts.manifest = load_manifest(out)
    except Exception as e:  # a failed export becomes the status of the rows that need it
        arts.error = f"export failed: {_one_line(e)}"
    return arts


# ------------------------------------------------------------------------------ child side


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Linux's ``VmHWM`` belongs to the process image, so a freshly started interpreter does not
    inherit its parent's peak (``ru_maxrss`` survives ``exec`` and would); elsewhere ``ru_maxrss``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _inputs(cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(_SEED)
    z, x = cfg.template_size, cfg.search_size
    return (
        rng.standard_normal((1, 3, z, z), dtype=np.float32),
        rng.standard_normal((1, 3, z, z), dtype=np.float32),
        rng.standard_normal((1, 3, x, x), dtype=np.float32),
    )


def _model_mode(runner: Any, spec: dict[str, Any]) -> dict[str, Any]:
    t, ot, s = _inputs(runner.manifest.model)
    runner.set_templates(t, ot)
    first, samples = time_calls(lambda: runner.predict(s), warmup=spec["warmup"], iters=spec["iters"],
                                duration=spec["duration"])  # fmt: skip
    boxes, _ = runner.predict(s)
    out: dict[str, Any] = {"samples_ms": samples.tolist(), "boxes": boxes.tolist(), "first_ms": first}
    out.update(LatencyStats.from_samples(samples, first).to_dict())
    # The same calls on the process CPU clock (every thread of this process): robust to other load.
    _, cpu = time_calls(lambda: runner.predict(s), warmup=0, iters=min(spec["iters"] or 30, 30), duration=3.0,
                        clock=time.process_time_ns)  # fmt: skip
    out["cpu_ms"] = float(np.median(cpu))
    if runner.graph == "split":
        _, tsamples = time_calls(lambda: runner.set_templates(t, ot), warmup=1, iters=10, duration=5.0)
        out["template_ms"] = float(np.median(tsamples))
    return out


def _tracker_mode(runner: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from mfv2.synthetic import make_sequence
    from mfv2.tracking import Tracker

    width, height = CLIP_SIZE
    seq = make_sequence(num_frames=spec["frames"], width=width, height=height, seed=_SEED, backgrounds="procedural")
    run = time_tracker(Tracker(runner, runner.manifest.tracker), seq.frame, len(seq), seq.boxes[0], warmup=spec["warmup"])
    out: dict[str, Any] = {"samples_ms": run.samples_ms, "boxes": run.boxes.tolist(), "init_ms": run.init_ms,
                           "frames": len(seq)}  # fmt: skip
    out.update(run.stats().to_dict())
    out["cpu_ms"] = float(np.median(run.cpu_ms))
    out["stages"] = summarize_stages(run.stages)
    return out


def _video_mode(runner: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """End to end on a video file: decode (background thread) + ``tracker.update()`` per frame.

    ``median_ms`` is the wall time from one frame's box to the next (decode wait included);
    ``update_ms`` the median time inside ``update()`` of the same frames and ``decode_ms`` the median
    decode time per frame of the file read alone, before the tracked pass.
    """
    from mfv2.tracking import FrameSource, Tracker

    limit = spec["frames"]
    decode: list[float] = []
    with FrameSource(spec["video"], prefetch=0) as source:
        frames = iter(source)
        while len(decode) < limit:
            t0 = time.perf_counter_ns()
            if next(frames, None) is None:
                break
            decode.append((time.perf_counter_ns() - t0) / 1e6)
    tracker = Tracker(runner, runner.manifest.tracker)
    samples, update, boxes = [], [], []
    with FrameSource(spec["video"]) as source:
        frames = iter(source)
        first = next(frames)
        h, w = first.shape[:2]
        box = (w * 0.4, h * 0.4, w * 0.2, h * 0.2)
        tracker.init(first, box)
        boxes.append(list(box))
        t_prev = time.perf_counter_ns()
        for i, frame in enumerate(frames, start=1):
            t0 = time.perf_counter_ns()
            _, b = tracker.update(frame)
            t1 = time.perf_counter_ns()
            if i > spec["warmup"]:
                samples.append((t1 - t_prev) / 1e6)
                update.append((t1 - t0) / 1e6)
            boxes.append([float(v) for v in b])
            t_prev = t1
            if i >= limit:
                break
    if not samples:
        raise ConfigError(f"{spec['video']} has too few frames for {spec['warmup']} warm-up frames; pass --warmup 0")
    out: dict[str, Any] = {"samples_ms": samples, "boxes": boxes, "frames": len(boxes), "video": spec["video"],
                           "size": f"{w}x{h}", "decode_ms": float(np.median(decode)), "update_ms": float(np.median(update))}  # fmt: skip
    out.update(LatencyStats.from_samples(samples).to_dict())
    return out


_MODE_RUNS = {"model": _model_mode, "tracker": _tracker_mode, "video": _video_mode}


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one row (in the current process) and return its JSON-ready result.

    Never raises for a backend or model problem: the result's ``status`` says what went wrong.
    """
    result: dict[str, Any] = {}
    load_1m = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        from mfv2.runtimes import load_backend

        if spec.get("artifact") is None:
            raise ConfigError(f"no model file for the {spec['backend']} backend (torch rows of an export directory need --checkpoint)")
        # torch options of a GPU row; a failed CUDA-graph capture fails the row rather than timing eager calls
        options = {k: spec[k] for k in ("device", "cuda_graph", "compile") if spec.get(k) is not None}
        if options.get("cuda_graph"):
            options["cuda_graph_fallback"] = False
        runner = load_backend(spec["backend"], spec["artifact"], precision=spec["precision"], threads=spec["threads"],
                              graph=spec["graph"], **options)  # fmt: skip
        try:
            if runner.graph != spec["graph"]:
                raise ConfigError(f"asked for the {spec['graph']} graph, the backend loaded {runner.graph}")
            result = _MODE_RUNS[spec["mode"]](runner, spec)
        finally:
            runner.close()
        result["status"] = "ok"
    except BackendUnavailableError as e:
        result = {"status": f"unavailable: {e}"}
    except Mfv2Error as e:
        result = {"status": f"failed: {e}"}
    except Exception as e:  # a runtime's own exception types: the row must report, not vanish
        logger.debug("row failed", exc_info=True)
        result = {"status": f"error: {_one_line(e)}"}
    result["peak_rss_mb"] = peak_rss_mb()
    result["load_1m"] = load_1m
    result["torch_loaded"] = "torch" in sys.modules
    return result
