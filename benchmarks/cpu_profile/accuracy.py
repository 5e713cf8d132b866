"""Issue #23 accuracy target: the int8 tracker against the fp32 tracker on the demo model, N synthetic clips.

Runs the shipped demo model (exported once into the cache at fp32 + int8) as ONNX Runtime fp32 (the
reference), ONNX Runtime int8 (dynamic) and OpenVINO int8 over ``--clips`` synthetic clips of the
``mfv2 eval --synthetic`` family, and reports per path: OPE AUC (mean over clips) with its standard
error, the paired AUC difference against fp32 with its standard error, and the share of frames whose
box has IoU >= 0.9 with the fp32 tracker's box. The target: |AUC(int8) - AUC(fp32)| <= SE(fp32 AUC)
and >= 95 % of frames at IoU >= 0.9.

Usage: .venv/bin/python benchmarks/cpu_profile/accuracy.py OUT_DIR [--clips 64] [--frames 100]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from mfv2.assets import demo_checkpoint
from mfv2.bench.envinfo import cpu_isa
from mfv2.evaluation.metrics import paired_difference, sequence_errors, success_curve
from mfv2.geometry.boxes import iou_continuous
from mfv2.runtimes import cached_export, load_backend
from mfv2.synthetic import benchmark_sequences
from mfv2.tracking import Tracker

PATHS = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8"))


def _track(runner, frames: list[np.ndarray], init: np.ndarray) -> np.ndarray:  # noqa: ANN001
    tracker = Tracker(runner, runner.manifest.tracker)
    tracker.init(frames[0], tuple(float(v) for v in init))
    return np.asarray([init, *(tracker.update(f)[1] for f in frames[1:])], dtype=np.float64)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    export = cached_export(demo_checkpoint(), precisions=("int8",))
    runners = {path: load_backend(path[0], export, precision=path[1], threads=args.threads) for path in PATHS}
    auc: dict[tuple[str, str], list[float]] = {k: [] for k in PATHS}
    agree: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in PATHS}
    for seq in benchmark_sequences(args.clips, args.frames, seed=0):
        frames = [seq.frame(i) for i in range(len(seq))]
        boxes = {}
        for path, runner in runners.items():
            boxes[path] = _track(runner, frames, np.asarray(seq.boxes[0], dtype=np.float64))
            err = sequence_errors(boxes[path], seq.boxes, seq.visible)
            auc[path].append(float(np.mean(success_curve(err.iou[1:]))) * 100.0)
        for path in PATHS:
            agree[path].append(np.nan_to_num(iou_continuous(boxes[path][1:], boxes[PATHS[0]][1:]), nan=0.0))
    ref = np.asarray(auc[PATHS[0]])
    se_ref = float(ref.std(ddof=1) / np.sqrt(len(ref)))
    rows = []
    for path in PATHS:
        a = np.asarray(auc[path])
        d = paired_difference(a, ref)
        iou = np.concatenate(agree[path])
        rows.append({"backend": path[0], "precision": path[1], "auc": float(a.mean()),
                     "auc_se": float(a.std(ddof=1) / np.sqrt(len(a))), "auc_diff": d.mean,
                     "auc_diff_se": d.se if d.clips > 1 else 0.0,
                     "within_one_se": bool(abs(d.mean) <= se_ref), "iou_ge_0.9": float((iou >= 0.9).mean()),
                     "mean_iou_vs_fp32": float(iou.mean())})  # fmt: skip
    report = {"isa": cpu_isa(), "load": [round(x, 2) for x in os.getloadavg()], "clips": args.clips,
              "frames": args.frames, "threads": args.threads, "model": "demo (mfv2/assets/mixformerv2_demo_s.pt)",
              "reference": "onnxruntime fp32", "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(report, indent=1))
    lines = [f"# int8 vs fp32 tracker, demo model, {args.clips} synthetic clips x {args.frames} frames "
             f"({report['isa']}, load {report['load']})", "",
             "| path | AUC | AUC - fp32 (paired) | within 1 SE of fp32 | frames IoU >= 0.9 vs fp32 | mean IoU vs fp32 |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['backend']} {r['precision']} | {r['auc']:.2f} +- {r['auc_se']:.2f} | {r['auc_diff']:+.2f} +- "
                     f"{r['auc_diff_se']:.2f} | {'yes' if r['within_one_se'] else 'no'} | {100 * r['iou_ge_0.9']:.1f} % | "
                     f"{r['mean_iou_vs_fp32']:.3f} |")  # fmt: skip
    (args.out / "accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for r in runners.values():
        r.close()


if __name__ == "__main__":
    main()
