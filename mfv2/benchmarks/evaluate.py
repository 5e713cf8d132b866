"""One-pass evaluation (OPE): run a tracker over a dataset, write result files, score them, plot them.

Results use the pytracking layout: ``<results>/<seq>.txt`` (one ``x y w h`` box per frame, the first
the ground truth) and ``<seq>_time.txt`` (seconds per frame: ``init`` for frame 1, ``update`` after;
image decoding is not timed). Every file is written atomically, so an interrupted run leaves only
finished sequences and a second run resumes by skipping them. Scores come from
:mod:`mfv2.benchmarks.metrics` (success AUC over 21 thresholds with ``IoU > t``, precision@20 px,
normalised precision@0.2, per sequence then averaged; GOT-10k AO/SR pooled over frames) with the
conventions and fixes documented there.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.benchmarks.datasets import Dataset, TrackingSequence, read_boxes, read_times, write_result
from mfv2.benchmarks.metrics import (
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
    "got10k": "continuous", "synthetic": "continuous",
}  # fmt: skip


def _read_frame(path: Path) -> np.ndarray:
    import cv2

    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise ConfigError(f"cannot read image {path}; check the file or re-extract the dataset")
    return frame


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
    frame = _read_frame(seq.frame_paths[0])
    t0 = time.perf_counter()
    tracker.init(frame, tuple(float(v) for v in init))
    times[0] = time.perf_counter() - t0
    boxes[0] = init
    for i, path in enumerate(seq.frame_paths[1:], start=1):
        frame = _read_frame(path)
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
) -> list[str]:
    """Track every sequence of ``dataset`` and write its result files.

    Args:
        make_tracker: returns a fresh tracker (``init``/``update``) for each sequence.
        dataset: the sequences (see :func:`mfv2.benchmarks.datasets.open_dataset`).
        results_dir: where ``<seq>.txt`` and ``<seq>_time.txt`` go.
        resume: skip sequences whose result file is complete.
        progress: show a tqdm bar on stderr.

    Returns:
        The names of the sequences run now (skipped ones excluded).
    """
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = [n for n in dataset.names if not (resume and finished(out, dataset[n]))]
    if len(todo) < len(dataset):
        logger.info("resuming: %d of %d sequences already have results in %s", len(dataset) - len(todo), len(dataset), out)
    names: Sequence[str] = todo
    if progress:
        from tqdm import tqdm

        names = tqdm(todo, desc="sequences", unit="seq")
    for name in names:
        seq = dataset[name]
        boxes, times = track_sequence(make_tracker(), seq)
        write_result(out, name, boxes, times)
        logger.debug("%s: %d frames, %.1f FPS", name, len(seq), len(seq) / max(times.sum(), 1e-9))
    return list(todo)


def _has_ground_truth(seq: TrackingSequence) -> bool:
    return len(seq) > 1 and bool(np.isfinite(seq.gt[1:]).all(axis=1).any())


def evaluate_results(
    dataset: Dataset, results_dir: str | os.PathLike[str], *, kind: str | None = None, exclude_invalid: bool = False
) -> dict[str, Any]:
    """Score the result files of ``results_dir`` against ``dataset``.

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
    seqs = list(dataset)
    if not any(_has_ground_truth(s) for s in seqs):
        raise ConfigError(
            f"{dataset.root} has ground truth for the first frame only; the result files in {results_dir} are "
            "for the dataset's evaluation server"
        )
    missing = [s.name for s in seqs if not finished(results_dir, s)]
    if missing:
        raise ConfigError(f"{len(missing)} sequences have no complete result in {results_dir} (e.g. {missing[0]}); "
                          "run 'mfv2 eval' without --no-run to track them")  # fmt: skip
    d = Path(results_dir)
    preds = {s.name: read_boxes(d / f"{s.name}.txt") for s in seqs}
    ope = evaluate_sequences(preds, {s.name: s.gt for s in seqs}, {s.name: s.visible for s in seqs},
                             iou=IOU_CONVENTION.get(kind, "inclusive"), exclude_invalid=exclude_invalid)  # type: ignore[arg-type]
    summary = ope.to_dict()
    total_frames, total_time = 0, 0.0
    for s in seqs:
        tpath = d / f"{s.name}_time.txt"
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
        got = evaluate_got10k(preds, {s.name: s.gt for s in seqs}, covers or None, bounds=bounds or None)
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
