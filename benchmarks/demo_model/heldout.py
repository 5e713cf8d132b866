"""Held-out evaluation of the demo model against a static box and OpenCV's MIL, KCF and CSRT.

Families: the held-out ones (``cells``, ``unseen_photos``: no training stage ever saw them) and held-out
seeds of every training family (``family_sequences(name, clips, frames, seed=SEED)``; the training
datasets draw their clips from other seeds by another derivation). Per family and tracker: AUC and
precision at 20 px (OPE, :mod:`mfv2.evaluation.metrics`), and per-clip AUC differences to MIL (mean and
standard error). For the demo model also how well its score separates frames with IoU > 0.5 from the
rest (ROC AUC) and the lost threshold that separates them best (Youden's J), on the held-out families.

KCF and CSRT need opencv-contrib-python, which cannot share an environment with opencv-python: they
run in a subprocess of ``--contrib-python`` (a venv with opencv-contrib-python-headless, numpy,
scikit-image and PyYAML, and this repository on PYTHONPATH), which renders the same clips itself.
Results are cached per (tracker, family) under ``--cache``, so a rerun only tracks what is missing.

    python benchmarks/demo_model/heldout.py --checkpoint runs/demo_families/final.pt \\
        --old mfv2/assets/mixformerv2_demo_s.pt --contrib-python .venv-contrib/bin/python \\
        --cache runs/heldout --out benchmarks/demo_model/heldout.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.evaluation.metrics import (IOU_THRESHOLDS, PIXEL_THRESHOLDS, paired_difference, precision_curve, sequence_errors,
                                     success_curve)
from mfv2.synthetic import FAMILIES, HELD_OUT_FAMILIES, TRAINING_FAMILIES, family_sequences

SEED = 2026  # held-out seed of the training families (training uses 11, validation 12)
CONTRIB = ("kcf", "csrt")


def _clips(family: str, clips: int, frames: int) -> list[Any]:
    return family_sequences(family, clips, frames, seed=SEED)


def _make(tracker: str, checkpoint: str | None) -> Any:
    if tracker in ("static", "mil", "kcf", "csrt"):
        from mfv2.evaluation.baselines import baseline_factory

        return baseline_factory(tracker)()
    import torch

    from mfv2 import Tracker, load_backend

    torch.set_num_threads(1)
    return Tracker(load_backend("torch", checkpoint, threads=1))  # the tracker settings the model records


def track_family(trackers: dict[str, str | None], family: str, clips: int, frames: int) -> dict[str, Any]:
    """Boxes (and scores, for a model) of each tracker (name -> checkpoint or None) on every clip of ``family``;
    each clip is rendered once for all of them."""
    out: dict[str, Any] = {t: {"boxes": [], "scores": [], "seconds": 0.0} for t in trackers}
    for seq in _clips(family, clips, frames):
        imgs = [seq.frame(i) for i in range(len(seq))]
        for name, checkpoint in trackers.items():
            t = _make(name, checkpoint)
            start = time.perf_counter()
            t.init(imgs[0], tuple(float(v) for v in seq.boxes[0]))
            boxes, scores = [list(map(float, seq.boxes[0]))], [1.0]
            for img in imgs[1:]:
                _, box = t.update(img)
                boxes.append([float(v) for v in box])
                scores.append(float(getattr(t, "score", 1.0)))
            out[name]["seconds"] += time.perf_counter() - start
            out[name]["boxes"].append(boxes)
            out[name]["scores"].append(scores)
    return out


def _path(cache: Path, tracker: str, family: str, args: argparse.Namespace) -> Path:
    return cache / f"{tracker}__{family}__{args.clips}x{args.frames}.json"


def _run_missing(cache: Path, trackers: dict[str, str | None], family: str, args: argparse.Namespace) -> None:
    """Track and cache every tracker of ``trackers`` that has no cached result for ``family``."""
    missing = {t: c for t, c in trackers.items() if not _path(cache, t, family, args).is_file()}
    contrib = [t for t in missing if t in CONTRIB and not args.worker]
    if contrib:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
        subprocess.run([args.contrib_python, __file__, "--worker", ",".join(contrib), "--family", family,
                        "--clips", str(args.clips), "--frames", str(args.frames), "--cache", str(cache)],
                       check=True, env=env)
    local = {t: c for t, c in missing.items() if t not in contrib}
    if local:
        for name, result in track_family(local, family, args.clips, args.frames).items():
            path = _path(cache, name, family, args)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            os.replace(tmp, path)


def _per_clip(result: dict[str, Any], seqs: list[Any]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per-clip AUC and P@20 (percent), and per-clip per-frame IoU."""
    aucs, precs, ious = [], [], []
    for boxes, seq in zip(result["boxes"], seqs):
        err = sequence_errors(np.asarray(boxes), seq.boxes, seq.visible)
        aucs.append(float(np.mean(success_curve(err.iou, IOU_THRESHOLDS))) * 100)
        precs.append(float(precision_curve(err.center_error, PIXEL_THRESHOLDS)[20]) * 100)
        ious.append(err.iou)
    return np.asarray(aucs), np.asarray(precs), ious


def _roc(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float, float, float]:
    """ROC AUC of ``scores`` for ``positive`` (Mann-Whitney U), and the Youden-best threshold with its TPR/FPR."""
    from scipy.stats import mannwhitneyu

    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan"), float("nan"), float("nan"), float("nan")
    auc = float(mannwhitneyu(pos, neg).statistic) / (len(pos) * len(neg))
    grid = np.arange(1, 20) / 20
    tpr = np.array([(pos >= t).mean() for t in grid])
    fpr = np.array([(neg >= t).mean() for t in grid])
    k = int(np.argmax(tpr - fpr))
    return auc, float(grid[k]), float(tpr[k]), float(fpr[k])


def summarise(results: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    families: dict[str, Any] = {}
    pooled: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"demo": ([], []), "old": ([], [])}
    for family, by_tracker in results.items():
        seqs = _clips(family, args.clips, args.frames)
        rows: dict[str, Any] = {}
        mil_auc = _per_clip(by_tracker["mil"], seqs)[0] if "mil" in by_tracker else None
        for tracker, res in by_tracker.items():
            aucs, precs, ious = _per_clip(res, seqs)
            row: dict[str, Any] = {"auc": float(aucs.mean()), "precision": float(precs.mean()),
                                   "ms_per_frame": 1000 * res["seconds"] / (args.clips * (args.frames - 1))}
            if mil_auc is not None and tracker != "mil":
                p = paired_difference(aucs, mil_auc)
                row["vs_mil"] = {"mean": p.mean, "se": p.se, "better": p.better, "worse": p.worse}
            if tracker in ("demo", "old"):
                sc = np.concatenate([np.asarray(s)[1:] for s in res["scores"]])
                iou = np.concatenate([i[1:] for i in ious])
                auc, thr, tpr, fpr = _roc(sc, iou > 0.5)
                row["score_roc_auc"] = None if math.isnan(auc) else auc
                if family in HELD_OUT_FAMILIES:
                    pooled[tracker][0].append(sc)
                    pooled[tracker][1].append(iou > 0.5)
            rows[tracker] = row
        families[family] = {"held_out": FAMILIES[family].held_out, "trackers": rows}
    score: dict[str, Any] = {}
    for tracker, (scores, positive) in pooled.items():
        if scores and any(x.any() for x in positive):
            auc, thr, tpr, fpr = _roc(np.concatenate(scores), np.concatenate(positive))
            score[tracker] = {"roc_auc": auc, "best_threshold": thr, "tpr": tpr, "fpr": fpr,
                              "frames": int(sum(len(x) for x in scores)),
                              "positive": int(sum(int(x.sum()) for x in positive))}
    return {"label": args.label, "clips": args.clips, "frames": args.frames, "seed": SEED, "families": families,
            "score_on_held_out": score, "load": os.getloadavg()[0]}


def _markdown(summary: dict[str, Any]) -> str:
    names = {"demo": summary.get("label", "demo model"), "old": "shipped demo model", "static": "static box", "mil": "MIL",
             "kcf": "KCF", "csrt": "CSRT"}
    lines = [f"{summary['clips']} clips x {summary['frames']} frames per family (seed {summary['seed']}); "
             "AUC / P@20 in percent; vs MIL: mean per-clip AUC difference +- standard error (better/worse clips).", "",
             "| family | tracker | AUC | P@20 | vs MIL | score ROC AUC | ms/frame |", "|---|---|---|---|---|---|---|"]
    for family, f in summary["families"].items():
        label = f"**{family}** (held out)" if f["held_out"] else f"{family} (held-out seeds)"
        for tracker, r in f["trackers"].items():
            vs = r.get("vs_mil")
            vs_s = f"{vs['mean']:+.1f} +- {vs['se']:.1f} ({vs['better']}/{vs['worse']})" if vs else ""
            roc = "" if r.get("score_roc_auc") is None else f"{r['score_roc_auc']:.3f}"
            lines.append(f"| {label} | {names.get(tracker, tracker)} | {r['auc']:.1f} | {r['precision']:.1f} | "
                         f"{vs_s} | {roc} | {r['ms_per_frame']:.1f} |")
    for tracker, s in summary["score_on_held_out"].items():
        lines += ["", f"Score of the {names[tracker]} on the held-out families ({s['frames']} frames, "
                      f"{s['positive']} with IoU > 0.5): ROC AUC {s['roc_auc']:.3f}; best threshold "
                      f"{s['best_threshold']:.2f} (Youden's J: TPR {s['tpr']:.2f}, FPR {s['fpr']:.2f})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="the demo model to evaluate (tracker 'demo')")
    p.add_argument("--label", default="demo_families route output (not shipped)", help="what --checkpoint is, for the tables")
    p.add_argument("--old", help="a second model to compare (tracker 'old'), e.g. the shipped one")
    p.add_argument("--trackers", default="demo,old,static,mil,kcf,csrt")
    p.add_argument("--families", default=",".join(HELD_OUT_FAMILIES + TRAINING_FAMILIES))
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--cache", default="runs/heldout")
    p.add_argument("--contrib-python", default=".venv-contrib/bin/python")
    p.add_argument("--out", help="summary JSON (a Markdown table is written next to it)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--family", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.worker:
        _run_missing(cache, dict.fromkeys(args.worker.split(",")), args.family, args)
        return 0
    models = {"demo": args.checkpoint, "old": args.old}
    trackers = {t: models.get(t) for t in args.trackers.split(",") if t not in models or models[t]}
    results: dict[str, dict[str, Any]] = {}
    for family in args.families.split(","):
        t0 = time.perf_counter()
        _run_missing(cache, trackers, family, args)
        results[family] = {t: json.loads(_path(cache, t, family, args).read_text()) for t in trackers}
        print(f"{family:14s} {time.perf_counter() - t0:6.1f} s", file=sys.stderr, flush=True)
    if args.out:
        summary = summarise(results, args)
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
        Path(args.out).with_suffix(".md").write_text(_markdown(summary))
        print(_markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
