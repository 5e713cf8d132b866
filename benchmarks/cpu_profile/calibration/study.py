"""Which calibration crops let NNCF's int8 keep the demo model's boxes (issue #23, the 95 % agreement target).

Records the crops the fp32 tracker (ONNX Runtime, full graph) feeds the network on 16 synthetic clips of
60 frames (``mfv2 eval --synthetic`` clips, seed 0; every third frame: 315 crops), quantizes the demo
model's full graph with NNCF (TRANSFORMER model type, heads unquantized, as the exporter) from each
calibration set below, and reports on those 315 crops the share whose OpenVINO int8 box keeps IoU >= 0.9
(and >= 0.95) with the fp32 box, and the mean IoU. Calibration sets:

* ``one clip, centred, 32``: the exporter before 2026-12-08: 32 consecutive frames of one synthetic clip,
  each search crop around the previous true box;
* ``one clip, centred, 256``: the same, 256 frames;
* ``N clips, jittered``: :func:`mfv2.exporters.validate.calibration_crops` (one crop from each of N clips,
  cut around a box moved and rescaled like a tracker's estimate), N = 32 (the exporter's default) and 64,
  with NNCF's default activation range estimator or with min/max ranges (what the exporter now asks for);
* ``tracker crops, 312``: crops the fp32 tracker itself fed on 16 other clips (seed 77), the distribution
  the measurement uses, as an upper reference;
* the 32-clip set with NNCF's SmoothQuant off.

Usage: .venv/bin/python benchmarks/cpu_profile/calibration/study.py OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mfv2._openvino import import_nncf, import_openvino
from mfv2.assets import demo_checkpoint
from mfv2.bench.envinfo import cpu_isa
from mfv2.exporters.validate import calibration_crops, make_samples
from mfv2.geometry.boxes import iou_continuous
from mfv2.models.factory import build_model
from mfv2.runtimes import cached_export, load_backend
from mfv2.synthetic import benchmark_sequences
from mfv2.tracking.replay import record_inputs

HEADS = [".*box_head.*", ".*score_head.*"]


def _tracker_crops(runner: Any, clips: int, frames: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Every full-graph input the tracker feeds on ``clips`` clips: its templates and each search crop."""
    feeds = []
    for seq in benchmark_sequences(clips, frames, seed=seed):
        rec = record_inputs(runner, [seq.frame(i) for i in range(len(seq))], seq.boxes[0])
        for i, search in enumerate(rec.searches):
            template, online = rec.templates[max(k for k in rec.templates if k <= i)]
            feeds.append({"template": template, "online_template": online, "search": search})
    return feeds


def _xywh(b: np.ndarray) -> np.ndarray:
    cx, cy, w, h = np.asarray(b, dtype=np.float64).reshape(-1, 4)[0]
    return np.array([[cx - w / 2, cy - h / 2, w, h]])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    args = p.parse_args()
    ov, nncf = import_openvino(), import_nncf()
    export = cached_export(demo_checkpoint())
    model = build_model(checkpoint=demo_checkpoint())
    runner = load_backend("onnxruntime", export, precision="fp32", threads=1, graph="full")
    tracker_cfg = runner.manifest.tracker
    evaluation = _tracker_crops(runner, 16, 60, seed=0)[::3]
    tracker_cal = _tracker_crops(runner, 16, 40, seed=77)[::2]
    core = ov.Core()
    fp32 = core.compile_model(str(export / "model.onnx"), "CPU", {"INFERENCE_NUM_THREADS": 1})
    reference = [np.asarray(fp32(f)[0]) for f in evaluation]

    def one_clip(n: int) -> list[dict[str, np.ndarray]]:
        return [s.feeds for s in make_samples(model.config, tracker_cfg, random=0, crops=n, seed=1)]

    def clips(n: int) -> list[dict[str, np.ndarray]]:
        return calibration_crops(model.config, tracker_cfg, batch=1, count=n, frames=None, seed=0)

    aqp = nncf.quantization.advanced_parameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    no_sq = {"advanced_parameters": aqp.AdvancedQuantizationParameters(smooth_quant_alphas=aqp.AdvancedSmoothQuantParameters(matmul=-1))}
    minmax = {"advanced_parameters": aqp.AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)}
    sets = {"one clip, centred, 32 (before)": (one_clip(32), {}), "one clip, centred, 256": (one_clip(256), {}),
            "32 clips, jittered, NNCF's default ranges": (clips(32), {}),
            "32 clips, jittered, SmoothQuant off": (clips(32), no_sq),
            "32 clips, jittered, min/max ranges (the exporter's)": (clips(32), minmax),
            "64 clips, jittered, NNCF's default ranges": (clips(64), {}), "64 clips, jittered, min/max ranges": (clips(64), minmax),
            "tracker crops, 312, NNCF's default ranges": (tracker_cal, {})}  # fmt: skip
    names = [i.get_any_name() for i in ov.convert_model(str(export / "model.onnx")).inputs]
    rows = []
    for label, (data, extra) in sets.items():
        quantized = nncf.quantize(ov.convert_model(str(export / "model.onnx")), nncf.Dataset(data, lambda f: {n: f[n] for n in names}),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data),
                                  ignored_scope=nncf.IgnoredScope(patterns=HEADS, validate=False), **extra)  # fmt: skip
        net = core.compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": 1})
        iou = np.array([iou_continuous(_xywh(net(f)[0]), _xywh(r))[0] for f, r in zip(evaluation, reference)])
        rows.append({"calibration": label, "crops": len(data), "iou_ge_0.9": float((iou >= 0.9).mean()),
                     "iou_ge_0.95": float((iou >= 0.95).mean()), "mean_iou": float(iou.mean())})  # fmt: skip
        print(rows[-1], flush=True)
    report = {"isa": cpu_isa(), "load": [round(x, 2) for x in os.getloadavg()], "model": "demo, full graph, OpenVINO int8",
              "evaluation_crops": len(evaluation), "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study.json").write_text(json.dumps(report, indent=1))
    lines = [f"# NNCF calibration sets, demo model, {len(evaluation)} crops the fp32 tracker fed ({report['isa']})", "",
             "| calibration | crops | box IoU >= 0.9 with fp32 | IoU >= 0.95 | mean IoU |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['calibration']} | {r['crops']} | {100 * r['iou_ge_0.9']:.1f} % | {100 * r['iou_ge_0.95']:.1f} % | {r['mean_iou']:.4f} |"
              for r in rows]  # fmt: skip
    (args.out / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    runner.close()


if __name__ == "__main__":
    main()
