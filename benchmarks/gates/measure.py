"""Parity figures of healthy exports across models, weights and clips: where the low-precision gates sit.

Exports the tiny, demo, S and B models over several seeds (random weights and the synthetic clips
their parity crops come from) at every ONNX and OpenVINO precision with ``skip_failed=True``, and
records every artifact's figures. For the dynamic int8 ONNX graph it also runs the reference
evaluator with AVX2's saturating integer products (:mod:`mfv2.exporters.isa`), for the shipped 7-bit
weights and for the former 8-bit ones, so a host with AVX-512 VNNI measures what an AVX2 host
computes. For the trained demo model it adds the tracker-level agreement: each path tracks clips
closed-loop and is compared frame by frame with the fp32 ONNX Runtime tracker.

Run from the repository root (about 15 minutes on 2 cores)::

    .venv/bin/python benchmarks/gates/measure.py --out benchmarks/gates
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.artifacts import load_manifest
from mfv2.assets import demo_checkpoint
from mfv2.bench.envinfo import cpu_isa
from mfv2.exporters import _PARITY_CROPS, _PARITY_RANDOM, _load_model, export
from mfv2.exporters import quantize
from mfv2.exporters.isa import run_as_avx2
from mfv2.exporters.validate import MIN_BOX_SIDE, TOLERANCES, box_iou, make_samples, torch_reference

# (label, checkpoint or None for seeded random weights, variant, seed)
CASES: list[tuple[str, str | None, str | None, int]] = [
    *[(f"tiny seed {s}", None, "tiny", s) for s in (0, 1, 2)],
    *[(f"demo inputs {s}", "demo", None, s) for s in (0, 1, 2, 3)],
    *[(f"S seed {s}", None, "S", s) for s in (0, 1)],
    ("B seed 0", None, "B", 0),
]
EMULATE = ("tiny", "demo")  # S and B: the reference evaluator's numpy products take over 30 minutes per case
FIGURES = ("crop_boxes", "crop_score", "iou_mean", "iou_fraction", "boxes", "score")


def _avx2_figures(path: Path, samples: list[Any], refs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    worst = {"crop_boxes": 0.0, "boxes": 0.0}
    ious = []
    for s, r in zip(samples, refs):
        out = run_as_avx2(path, s.feeds)
        err = float(np.abs(out["boxes"].astype(np.float64) - r["boxes"]).max())
        worst["boxes"] = max(worst["boxes"], err)
        if s.kind == "crop":
            worst["crop_boxes"] = max(worst["crop_boxes"], err)
            keep = np.all(r["boxes"][:, 2:] >= MIN_BOX_SIDE, axis=1)  # as the gate: no degenerate reference boxes
            ious.append(box_iou(out["boxes"][keep], r["boxes"][keep]))
    values = np.concatenate(ious)
    return {**worst, "iou_mean": float(np.mean(values)) if values.size else float("nan")}


def _tracker_agreement(export_dir: Path, clips: int, frames: int) -> list[dict[str, Any]]:
    from mfv2.runtimes import available_backends, load_backend
    from mfv2.synthetic import make_sequence
    from mfv2.tracking import Tracker

    paths = [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8"), ("openvino", "fp32"),
             ("openvino", "fp16"), ("openvino", "int8"), ("openvino", "bf16")]  # fmt: skip
    installed = set(available_backends())
    rows = []
    for seed in range(100, 100 + clips):
        seq = make_sequence(num_frames=frames, seed=seed)
        clip = [seq.frame(i) for i in range(len(seq))]
        tracks = {}
        for backend, precision in paths:
            if backend not in installed:
                continue
            with load_backend(backend, export_dir, precision=precision, graph="split") as runner:
                t = Tracker(runner, runner.manifest.tracker)
                t.init(clip[0], seq.boxes[0])
                tracks[(backend, precision)] = np.array([seq.boxes[0]] + [t.update(f)[1] for f in clip[1:]])
        ref = tracks[("onnxruntime", "fp32")]

        def xywh_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return box_iou(np.c_[a[:, :2] + a[:, 2:] / 2, a[:, 2:]], np.c_[b[:, :2] + b[:, 2:] / 2, b[:, 2:]])

        for (backend, precision), boxes in tracks.items():
            iou = xywh_iou(boxes[1:], ref[1:])
            gt = xywh_iou(boxes[1:], seq.boxes[1:])
            rows.append({"clip": seed, "backend": backend, "precision": precision, "iou_mean": float(iou.mean()),
                         "iou_ge_0.5": float(np.mean(iou >= 0.5)), "iou_ge_0.9": float(np.mean(iou >= 0.9)),
                         "gt_iou_mean": float(gt.mean())})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/gates")
    parser.add_argument("--cases", default="", help="comma-separated label prefixes to run (default all)")
    parser.add_argument("--clips", type=int, default=4, help="clips of the tracker-level check (demo model)")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--markdown-only", action="store_true", help="rewrite gates.md from gates.json")
    args = parser.parse_args()
    if args.markdown_only:
        _save(Path(args.out), json.loads((Path(args.out) / "gates.json").read_text()))
        return
    out = Path(args.out)
    wanted = [c for c in args.cases.split(",") if c]
    results: dict[str, Any] = {"isa": cpu_isa(), "cases": [], "avx2": [], "tracker": []}
    for label, ckpt, variant, seed in CASES:
        if wanted and not any(label.startswith(w) for w in wanted):
            continue
        source = demo_checkpoint() if ckpt == "demo" else None
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            d = export(source, Path(tmp) / "e", variant=variant, precisions=("fp32", "fp16", "int8"),
                       openvino=("fp32", "fp16", "int8"), seed=seed, skip_failed=True)  # fmt: skip
            m = load_manifest(d)
            for a in m.artifacts:
                results["cases"].append({"case": label, "file": a.file, "format": a.format, "precision": a.precision,
                                         "graph": a.graph, "status": "ok", **a.parity})  # fmt: skip
            for r in m.rejected:
                results["cases"].append({"case": label, "file": r["file"], "format": r["format"], "precision": r["precision"],
                                         "graph": r["graph"], "status": "rejected: " + "; ".join(r["failed"]), **r["parity"]})  # fmt: skip
            if label.split()[0] in EMULATE:
                model, _ = _load_model(source, variant, seed)
                samples = make_samples(model.config, m.tracker, random=_PARITY_RANDOM, crops=_PARITY_CROPS, seed=seed)
                refs = torch_reference(model, samples)
                old = Path(tmp) / "model.int8-dynamic.8bit.onnx"
                quantize.REDUCE_RANGE = False
                try:
                    quantize.to_int8_dynamic(d / "model.onnx", old)
                finally:
                    quantize.REDUCE_RANGE = True
                for scheme, path in (("7-bit weights (shipped)", d / "model.int8-dynamic.onnx"), ("8-bit weights (before)", old)):
                    results["avx2"].append({"case": label, "scheme": scheme, **_avx2_figures(path, samples, refs)})
            if ckpt == "demo" and seed == 0:
                results["tracker"] = _tracker_agreement(d, args.clips, args.frames)
        print(f"{label}: {time.perf_counter() - t0:.0f} s", flush=True)
        _save(out, results)  # after every case: a long run keeps what it measured
    print(_markdown(results))


def _save(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gates.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "gates.md").write_text(_markdown(results))


def _markdown(results: dict[str, Any]) -> str:
    lines = [f"Measured on: {results['isa']}", "", "## Export gates: worst figure over healthy exports", "",
             "| format | precision | graphs (healthy + rejected) | crop boxes max | crop score max | mean IoU min | IoU>=0.9 min | random-input boxes max | gate (boxes / score / mean IoU / IoU>=0.9) | rejected |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    keys = sorted({(r["format"], r["precision"]) for r in results["cases"]})
    for fmt, prec in keys:
        rows = [r for r in results["cases"] if (r["format"], r["precision"]) == (fmt, prec)]

        def worst(key: str, fn: Any) -> str:
            vals = [r[key] for r in rows if key in r and r["status"] == "ok"]
            return f"{fn(vals):.3g}" if vals else "n/a"
        tol = TOLERANCES[(fmt, prec)]
        gate = f"{tol.boxes:g} / {tol.score:g} / {tol.iou_mean:g} / {tol.iou_fraction:g} ({tol.samples})"
        rejected = sum(r["status"] != "ok" for r in rows)
        lines.append(f"| {fmt} | {prec} | {len(rows)} | {worst('crop_boxes', max)} | {worst('crop_score', max)} | "
                     f"{worst('iou_mean', min)} | {worst('iou_fraction', min)} | {worst('boxes', max)} | {gate} | {rejected} |")  # fmt: skip
    lines += ["", "## Per case (full graph)", "", "| case | file | status | crop boxes | crop score | mean IoU | IoU>=0.9 | random-input boxes |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["cases"]:
        if r["graph"] != "full":
            continue
        cells = [f"{r[k]:.3g}" if k in r else "n/a" for k in ("crop_boxes", "crop_score", "iou_mean", "iou_fraction", "boxes")]
        lines.append(f"| {r['case']} | {r['file']} | {r['status']} | " + " | ".join(cells) + " |")
    lines += ["", "## Dynamic int8 ONNX as an AVX2 host computes it (reference evaluator, saturating pair sums)", "",
              "| case | weights | crop boxes max | mean IoU | all-sample boxes max (random inputs included) |", "|---|---|---|---|---|"]  # fmt: skip
    for r in results["avx2"]:
        lines.append(f"| {r['case']} | {r['scheme']} | {r['crop_boxes']:.3g} | {r['iou_mean']:.3f} | {r['boxes']:.3g} |")
    if results["tracker"]:
        lines += ["", "## Tracker-level agreement, demo model, closed loop against the fp32 ONNX Runtime tracker", "",
                  "| backend | precision | clips | mean IoU vs fp32 (min over clips) | frames IoU>=0.5 | frames IoU>=0.9 | IoU vs ground truth |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for key in sorted({(r["backend"], r["precision"]) for r in results["tracker"]}):
            rows = [r for r in results["tracker"] if (r["backend"], r["precision"]) == key]
            lines.append(f"| {key[0]} | {key[1]} | {len(rows)} | {np.mean([r['iou_mean'] for r in rows]):.3f} "
                         f"({min(r['iou_mean'] for r in rows):.3f}) | {np.mean([r['iou_ge_0.5'] for r in rows]):.2f} | "
                         f"{np.mean([r['iou_ge_0.9'] for r in rows]):.2f} | {np.mean([r['gt_iou_mean'] for r in rows]):.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
