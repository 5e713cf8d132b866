"""One-pass evaluation (OPE): run a tracker over a dataset, write result files, score them, plot them.

Results use the pytracking layout: ``<results>/<seq>.txt`` (one ``x y w h`` box per frame, the first
the ground truth) and ``<seq>_time.txt`` (seconds per frame: ``init`` for frame 1, ``update`` after;
image decoding is not timed). Every file is written atomically, so an interrupted run leaves only
finished sequences and a second run resumes by skipping them. The same files come from one process,
from ``workers`` processes (:func:`run_parallel`, each with its own model and its share of the CPU
threads) or from shards run anywhere (:func:`shard_names`: every N-th sequence), so shards written
into one folder are scored together as one run. Scores come from
:mod:`mfv2.evaluation.metrics` (success AUC over 21 thresholds with ``IoU > t``, precision@20 px,
normalised precision@0.2, per sequence then averaged; GOT-10k AO/SR pooled over frames) with the
conventions and fixes documented there.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.datasets import (
    Dataset, TrackingSequence, open_dataset, read_boxes, read_got10k_result, read_times, write_result,
)  # fmt: skip
from mfv2.evaluation.metrics import (
    IOU_THRESHOLDS,
    PIXEL_THRESHOLDS,
    evaluate_got10k,
    evaluate_sequences,
)
from mfv2.errors import ConfigError
from mfv2.fileio import atomic_write_bytes

__all__ = [
    "track_sequence",
    "run_dataset",
    "TrackerSpec",
    "run_parallel",
    "parse_shard",
    "shard_names",
    "worker_threads",
    "finished",
    "evaluate_results",
    "plot_curves",
    "format_eval_table",
    "IOU_CONVENTION",
]

logger = logging.getLogger(__name__)

#: IoU convention per dataset kind: inclusive pixels for the MATLAB-era toolkits, continuous for
#: GOT-10k and for our synthetic clips (whose boxes are continuous 0-based coordinates).
IOU_CONVENTION: dict[str, str] = {
    "lasot": "inclusive", "otb": "inclusive", "uav123": "inclusive", "trackingnet": "inclusive",
    "got10k": "continuous", "synthetic": "continuous", "vot": "continuous",
}  # fmt: skip


def track_sequence(tracker: Any, seq: TrackingSequence) -> tuple[np.ndarray, np.ndarray]:
    """Run ``tracker`` (the OpenCV tracker API) over one sequence, starting from its first box.

    Returns:
        ``(N, 4)`` xywh boxes (row 0 the initial box) and ``(N,)`` seconds per frame (init, then updates).
    """
    init = seq.init_box
    if not (np.isfinite(init).all() and init[2] > 0 and init[3] > 0):
        raise ConfigError(f"sequence {seq.name}: first-frame box {init.tolist()} is not a valid x,y,w,h")
    boxes = np.zeros((len(seq), 4), dtype=np.float64)
    times = np.zeros(len(seq), dtype=np.float64)
    frame = seq.frame(0)
    t0 = time.perf_counter()
    tracker.init(frame, tuple(float(v) for v in init))
    times[0] = time.perf_counter() - t0
    boxes[0] = init
    for i in range(1, len(seq)):
        frame = seq.frame(i)
        t0 = time.perf_counter()
        _, box = tracker.update(frame)
        times[i] = time.perf_counter() - t0
        boxes[i] = box
    return boxes, times


def finished(results_dir: str | os.PathLike[str], seq: TrackingSequence) -> bool:
    """Whether ``seq`` has a complete result file (one box per frame) in ``results_dir``."""
    path = Path(results_dir) / f"{seq.name}.txt"
    if not path.is_file():
        return False
    try:
        return read_boxes(path).shape[0] == len(seq)
    except ConfigError:
        return False


def run_dataset(
    make_tracker: Callable[[], Any],
    dataset: Dataset,
    results_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    progress: bool = False,
    names: Sequence[str] | None = None,
) -> list[str]:
    """Track every sequence of ``dataset`` (or those in ``names``) and write its result files.

    Args:
        make_tracker: returns a fresh tracker (``init``/``update``) for each sequence.
        dataset: the sequences (see :func:`mfv2.datasets.open_dataset`).
        results_dir: where ``<seq>.txt`` and ``<seq>_time.txt`` go.
        resume: skip sequences whose result file is complete.
        progress: show a tqdm bar on stderr.
        names: only these sequences (e.g. :func:`shard_names`), in this order.

    Returns:
        The names of the sequences run now (skipped ones excluded).
    """
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = _todo(dataset, out, resume, names)
    loop: Sequence[str] = todo
    if progress:
        from tqdm import tqdm

        loop = tqdm(todo, desc="sequences", unit="seq")
    for name in loop:
        seq = dataset[name]
        boxes, times = track_sequence(make_tracker(), seq)
        write_result(out, name, boxes, times)
        logger.debug("%s: %d frames, %.1f FPS", name, len(seq), len(seq) / max(times.sum(), 1e-9))
    return list(todo)


def _todo(dataset: Dataset, out: Path, resume: bool, names: Sequence[str] | None) -> list[str]:
    wanted = list(dataset.names if names is None else names)
    unknown = [n for n in wanted if n not in dataset]
    if unknown:
        raise ConfigError(f"no sequence {unknown[0]!r} in {dataset.root}")
    todo = [n for n in wanted if not (resume and finished(out, dataset[n]))]
    if len(todo) < len(wanted):
        logger.info("resuming: %d of %d sequences already have results in %s", len(wanted) - len(todo),
                    len(wanted), out)
    return todo


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) as ``(I, N)``.

    Raises:
        ConfigError: not of that form.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"--shard expects I/N with 1 <= I <= N, such as 1/4; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_names(names: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """Shard ``I`` of ``N``: every N-th name starting with the I-th (1-based), so the N shards of one
    list are disjoint, cover it, and differ in size by at most one."""
    if shard is None:
        return list(names)
    index, count = shard
    return list(names[index - 1 :: count])


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_threads(workers: int, threads: int | None = None) -> int:
    """Runtime threads per worker process: ``threads`` if given, else the usable cores divided among
    ``workers`` (at least 1), so that workers x threads fits the machine.

    Raises:
        ConfigError: ``workers`` or ``threads`` below 1.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    cores = _cores()
    if threads is None:
        return max(1, cores // workers)
    if workers * threads > cores:
        logger.warning("%d workers x %d threads exceed the %d usable cores; they will slow each other down",
                       workers, threads, cores)
    return threads


@dataclass(frozen=True)
class TrackerSpec:
    """What to track with, as plain values, so that each worker process can build its own tracker.

    ``artifact`` is an export directory or a checkpoint (``None`` with a ``baseline``); ``preset``
    names the tracker settings (``None``: the dataset's own); ``variant`` is a checkpoint's
    architecture (``None``: detect).
    """

    backend: str = "onnxruntime"
    artifact: str | None = None
    precision: str = "fp32"
    graph: str = "auto"
    threads: int | None = None
    variant: str | None = None
    preset: str | None = None
    baseline: str | None = None

    def preset_for(self, kind: str) -> str:
        """The tracker settings used on a dataset ``kind``: ``preset``, else the dataset's own."""
        if self.baseline:
            return self.baseline
        return self.preset or {"uav123": "uav", "vot": "vot20"}.get(kind, kind)

    def open(self, kind: str) -> tuple[Any, Callable[[], Any], str]:
        """Load the model once: ``(runner or None, make_tracker, preset)``; the caller closes the runner."""
        if self.baseline:
            from mfv2.evaluation.baselines import baseline_factory

            if self.threads is not None:
                import cv2

                cv2.setNumThreads(self.threads)
            return None, baseline_factory(self.baseline), self.baseline
        from mfv2.config import TrackerConfig
        from mfv2.runtimes import load_backend
        from mfv2.tracking import Tracker

        options: dict[str, Any] = {"variant": self.variant} if self.variant else {}
        runner = load_backend(self.backend, self.artifact, precision=self.precision, threads=self.threads,
                              graph=self.graph, **options)  # type: ignore[arg-type]
        try:
            preset = self.preset_for(kind)
            config = TrackerConfig.preset(preset, runner.manifest.model)
        except BaseException:
            runner.close()
            raise
        return runner, (lambda: Tracker(runner, config)), preset


_WORKER: dict[str, Any] = {}


def _worker_init(spec: TrackerSpec, root: str, kind: str, results_dir: str) -> None:
    _WORKER.update(zip(("runner", "make", "preset"), spec.open(kind)))
    _WORKER.update(dataset=open_dataset(root, kind), out=Path(results_dir))


def _worker_track(name: str) -> tuple[str, int, float]:
    seq = _WORKER["dataset"][name]
    boxes, times = track_sequence(_WORKER["make"](), seq)
    write_result(_WORKER["out"], name, boxes, times)
    return name, len(seq), float(times.sum())


def run_parallel(
    spec: TrackerSpec,
    dataset: Dataset,
    results_dir: str | os.PathLike[str],
    *,
    workers: int,
    resume: bool = True,
    progress: bool = False,
    names: Sequence[str] | None = None,
) -> list[str]:
    """:func:`run_dataset` in ``workers`` processes, each loading ``spec`` once and tracking whole
    sequences; the result files are the same as one process writes with the same ``spec``.

    Workers are spawned (not forked: runtime thread pools do not survive a fork) and re-open the
    dataset from ``dataset.root``. Give ``spec.threads`` (see :func:`worker_threads`).

    Returns:
        The names of the sequences run now, in the dataset's order.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = _todo(dataset, out, resume, names)
    if not todo:
        return []
    context = multiprocessing.get_context("spawn")
    count = min(workers, len(todo))
    logger.info("tracking %d sequences in %d processes, %s runtime thread(s) each", len(todo), count,
                spec.threads or "default")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="sequences", unit="seq")
    with ProcessPoolExecutor(count, mp_context=context, initializer=_worker_init,
                             initargs=(spec, str(dataset.root), dataset.name, str(out))) as pool:
        futures = [pool.submit(_worker_track, n) for n in todo]
        try:
            for fut in as_completed(futures):
                name, frames, seconds = fut.result()
                logger.debug("%s: %d frames, %.1f FPS", name, frames, frames / max(seconds, 1e-9))
                if bar is not None:
                    bar.update()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
    return todo


def _result_runs(d: Path, seq: TrackingSequence) -> list[np.ndarray] | None:
    """The complete results of ``seq`` in ``d``: ``<seq>.txt``, else every repetition of the GOT-10k
    toolkit's layout ``<seq>/<seq>_00r.txt``; None when there is none of full length."""
    if finished(d, seq):
        return [read_boxes(d / f"{seq.name}.txt")]
    if not (d / seq.name / f"{seq.name}_001.txt").is_file():
        return None
    try:
        runs = read_got10k_result(d, seq.name)
    except ConfigError:
        return None
    return runs if all(r.shape[0] == len(seq) for r in runs) else None


def _has_ground_truth(seq: TrackingSequence) -> bool:
    return len(seq) > 1 and bool(np.isfinite(seq.gt[1:]).all(axis=1).any())


def evaluate_results(
    dataset: Dataset, results_dir: str | os.PathLike[str], *, kind: str | None = None, exclude_invalid: bool = False,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score the result files of ``results_dir`` against ``dataset`` (or its sequences in ``names``).

    Each sequence's result is ``<seq>.txt``, or the GOT-10k toolkit's ``<seq>/<seq>_001.txt`` (its
    repetitions all count towards AO/SR; the first one is scored by the OPE metrics).

    Returns:
        A JSON-ready dict: ``auc``, ``precision``, ``norm_precision``, ``op50``, ``op75`` (percent),
        ``sequences``, ``frames``, ``fps`` (frames / summed tracker time), ``curves``,
        ``per_sequence`` (each with its scores, ``mean_iou`` and ``fps``), and for GOT-10k
        ``ao``, ``sr50``, ``sr75`` pooled over frames.

    Raises:
        ConfigError: result files missing, or the dataset has no ground truth past frame 1
        (GOT-10k test, TrackingNet TEST: submit the result files to their servers instead).
    """
    kind = kind or dataset.name
    seqs = list(dataset) if names is None else [dataset[n] for n in names]
    if not seqs:
        raise ConfigError("no sequences to score")
    if not any(_has_ground_truth(s) for s in seqs):
        raise ConfigError(
            f"{dataset.root} has ground truth for the first frame only; the result files in {results_dir} are "
            "for the dataset's evaluation server"
        )
    d = Path(results_dir)
    runs = {s.name: _result_runs(d, s) for s in seqs}
    missing = [n for n, r in runs.items() if r is None]
    if missing:
        raise ConfigError(f"{len(missing)} sequences have no complete result in {results_dir} (e.g. {missing[0]}); "
                          "run 'mfv2 eval' without --no-run to track them")  # fmt: skip
    preds = {n: r[0] for n, r in runs.items() if r is not None}
    ope = evaluate_sequences(preds, {s.name: s.gt for s in seqs}, {s.name: s.visible for s in seqs},
                             iou=IOU_CONVENTION.get(kind, "inclusive"), exclude_invalid=exclude_invalid)  # type: ignore[arg-type]
    summary = ope.to_dict()
    total_frames, total_time = 0, 0.0
    for s in seqs:
        tpath = d / f"{s.name}_time.txt" if (d / f"{s.name}.txt").is_file() else d / s.name / f"{s.name}_time.txt"
        per = summary["per_sequence"][s.name]
        if tpath.is_file():
            t = read_times(tpath).reshape(len(s), -1)[:, 0]
            per["fps"] = len(s) / t.sum() if t.sum() > 0 else None
            total_frames, total_time = total_frames + len(s), total_time + float(t.sum())
    summary["fps"] = total_frames / total_time if total_time > 0 else None
    summary["sequences"] = summary.pop("num_sequences")
    summary["frames"] = summary.pop("num_frames")
    summary["dataset"] = {"kind": kind, "root": str(dataset.root)}
    summary["results_dir"] = str(d)
    if kind == "got10k":
        covers = {s.name: s.cover for s in seqs if s.cover is not None}
        bounds = {s.name: s.image_size for s in seqs if s.image_size is not None}
        got = evaluate_got10k({n: r for n, r in runs.items() if r is not None}, {s.name: s.gt for s in seqs},
                              covers or None, bounds=bounds or None)
        summary.update(ao=got.ao, sr50=got.sr50, sr75=got.sr75)
        for name, v in got.per_sequence.items():
            summary["per_sequence"][name].update(ao=v["ao"], sr50=v["sr50"], sr75=v["sr75"])
    return summary


def _fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def format_eval_table(summaries: Mapping[str, Mapping[str, Any]], *, markdown: bool = False) -> str:
    """One row per result set: AUC, precision, normalised precision, OP50/OP75, (AO/SR), FPS."""
    got = any("ao" in s for s in summaries.values())
    header = ["Results", "AUC", "P@20", "NP@0.2", "OP50", "OP75", *(["AO", "SR0.5", "SR0.75"] if got else []), "FPS", "Seqs"]
    body = [
        [label, *(_fmt(s.get(k)) for k in ("auc", "precision", "norm_precision", "op50", "op75")),
         *((_fmt(s.get(k)) for k in ("ao", "sr50", "sr75")) if got else ()), _fmt(s.get("fps")), str(s.get("sequences"))]
        for label, s in summaries.items()
    ]  # fmt: skip
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
    else:
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines) + "\n"


def plot_curves(path: str | os.PathLike[str], summaries: Mapping[str, Mapping[str, Any]], *, title: str = "") -> Path:
    """Success and precision plots (PNG) of several result sets, legends carrying AUC and P@20.

    Raises:
        ConfigError: matplotlib is missing or there is nothing to plot.
    """
    if not summaries:
        raise ConfigError("no result sets to plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError('plots need matplotlib; install it with: pip install "mfv2[bench]"') from e
    fig, (ax_s, ax_p) = plt.subplots(1, 2, figsize=(11, 4.5))
    order = sorted(summaries, key=lambda k: -(summaries[k].get("auc") or 0.0))
    for label in order:
        s = summaries[label]
        ax_s.plot(IOU_THRESHOLDS, np.asarray(s["curves"]["success"]) * 100, label=f"{label} [{s['auc']:.1f}]")
        ax_p.plot(PIXEL_THRESHOLDS, np.asarray(s["curves"]["precision"]) * 100, label=f"{label} [{s['precision']:.1f}]")
    ax_s.set(xlabel="overlap threshold", ylabel="success rate (%)", title="Success plot (AUC)", xlim=(0, 1), ylim=(0, 100))
    ax_p.set(xlabel="location error threshold (px)", ylabel="precision (%)", title="Precision plot (P@20)",
             xlim=(0, 50), ylim=(0, 100))  # fmt: skip
    for ax in (ax_s, ax_p):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left" if ax is ax_s else "lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
