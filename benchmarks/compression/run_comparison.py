"""Reproduce benchmarks/compression: four ways to make MixFormerV2 cheaper, from one teacher, side by side.

From one trained 4-block teacher (route ``ct_demo``, stage ``teacher``) and the same data budget per
route (3 epochs x 1600 synthetic samples), it trains

* ``pmdp``: MixFormerV2's own progressive depth pruning 4 -> 2 blocks (``route_pmdp_demo.yaml`` here);
* ``compresstracker``: CompressTracker replacement training of a 2-block student (route ``ct_demo``);
* ``lowres``: the teacher's network at template 32 / search 64, fine-tuned on the task losses only
  (route ``lr_demo`` without the distillation terms);
* ``loretrack``: the same student with QKV-KD and Disc-KD (route ``lr_demo``);

then tracks held-out synthetic clips (``benchmark_sequences(8, 150, seed=2026)``; training uses clips
of seed 11) for the OPE success AUC, and times every model and the S-scale architectures they stand
for with ``mfv2 bench`` (model only, split graphs, ONNX Runtime and OpenVINO fp32, 2 threads).

    .venv/bin/python benchmarks/compression/run_comparison.py teacher --work runs/compression
    .venv/bin/python benchmarks/compression/run_comparison.py train --work runs/compression --routes pmdp,compresstracker
    .venv/bin/python benchmarks/compression/run_comparison.py train --work runs/compression --routes lowres,loretrack
    .venv/bin/python benchmarks/compression/run_comparison.py eval --work runs/compression
    .venv/bin/python benchmarks/compression/run_comparison.py bench --work runs/compression
    .venv/bin/python benchmarks/compression/run_comparison.py bench-s --work runs/compression
    .venv/bin/python benchmarks/compression/run_comparison.py report --work runs/compression
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EVAL_SEQUENCES, EVAL_FRAMES, EVAL_SEED = 8, 150, 2026
CROPS, CROP_SEED = 512, 12  # held-out crops (the routes' validation clips) for the teacher-agreement IoU
ROUTES: dict[str, tuple[str, list[str]]] = {
    "pmdp": (str(HERE / "route_pmdp_demo.yaml"), []),
    "compresstracker": ("ct_demo", []),
    "lowres": ("lr_demo", ["objective.options.qkv=0", "objective.options.disc=0"]),
    "loretrack": ("lr_demo", []),
}
DESCRIPTIONS = {
    "teacher": "the 4-block teacher (template 48 / search 96), 8 x 1600 samples of ground-truth training",
    "teacher@64": "the teacher's weights at template 32 / search 64, not fine-tuned (reference)",
    "pmdp": "progressive depth pruning 4 -> 2 blocks (MixFormerV2's own reduction)",
    "compresstracker": "CompressTracker replacement training, 2-block student",
    "lowres": "plain low resolution (search 64), task losses only",
    "loretrack": "LoReTrack (search 64), task losses + 0.01 QKV-KD + 0.01 Disc-KD",
}
# S-scale architectures the routes stand for: (row, variant or ModelConfig fields relative to S).
S_SCALE = {
    "S (PMDP route)": {},
    "S4 (CompressTracker of S8, before MLP reduction)": {"name": "S4", "mlp_ratio": 4.0},
    "S-192 (LoReTrack)": {"name": "S-192", "template_size": 96, "search_size": 192},
    "S-160 (LoReTrack)": {"name": "S-160", "template_size": 80, "search_size": 160},
    "S-128 (LoReTrack)": {"name": "S-128", "template_size": 64, "search_size": 128},
}
BENCH_ARGS = ["--backends", "onnxruntime,openvino", "--precisions", "fp32", "--threads", "2", "--mode", "model",
              "--graphs", "split", "--rounds", "2"]
# The S-scale rows also at one thread: on a busy machine two threads wait on each other (the spread is large).
S_BENCH_ARGS = [a if a != "2" else "1,2" for a in BENCH_ARGS[:-1]] + ["3"]

log = logging.getLogger("compression")


def _teacher(work: Path) -> Path:
    return work / "teacher" / "01_teacher" / "final.pt"


def _model(work: Path, name: str) -> Path:
    if name == "teacher":
        return _teacher(work)
    if name == "teacher@64":
        return work / "teacher_at_64.pt"
    return work / name / "final.pt"


def cmd_teacher(work: Path) -> None:
    from mfv2.training.routes import load_route, run_route

    run_route(load_route("ct_demo"), work / "teacher", stop_after="teacher", progress=False)


def cmd_train(work: Path, names: list[str]) -> None:
    from mfv2.training.routes import load_route, run_route

    for name in names:
        route, overrides = ROUTES[name]
        start = time.perf_counter()
        run_route(load_route(route), work / name, overrides=overrides, given={"teacher": _teacher(work)}, progress=False)
        (work / name / "seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")


def _teacher_at_64(work: Path) -> Path:
    from mfv2.models import MixFormerV2, build_model, save_native
    from mfv2.training.loretrack import init_lowres_from_teacher, lowres_config

    teacher = build_model(None, _teacher(work))
    student = MixFormerV2(lowres_config(teacher.config, 64, 32, name="demo-T4-64"))
    init_lowres_from_teacher(student, teacher)
    return save_native(student.state_dict(), student.config, _model(work, "teacher@64"), {"init": "teacher, not trained"})


def _crop_ious(work: Path) -> dict[str, dict[str, float]]:
    """Mean IoU of each model's box with the ground truth and with the teacher's box on held-out crops.

    Crops are cut at the teacher's size (template 48 / search 96, factor 4.5, the training jitter) and
    resized for the low-resolution models, as :class:`~mfv2.training.loretrack.LoReTrackObjective` does.
    """
    import numpy as np
    import torch

    from mfv2.models import build_model
    from mfv2.training.data import ProcessingSettings, TrackingProcessing, TrackingSampler, build_dataset
    from mfv2.training.loretrack import resize_crops
    from mfv2.training.losses import box_iou, cxcywh_to_xyxy, xywh_to_xyxy

    settings = ProcessingSettings(template_size=48, search_size=96, search_factor=4.5, search_scale_jitter=0.25,
                                  search_centre_jitter=1.5)
    data = build_dataset("synthetic", num_sequences=16, seed=CROP_SEED, num_frames=300)
    sampler = TrackingSampler([data], [1.0], TrackingProcessing(settings, augment=False), samples_per_epoch=CROPS,
                              max_gap=100, seed=CROP_SEED)
    items = [sampler[i] for i in range(CROPS)]
    batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in ("template", "online_template", "search", "search_box")}
    gt = xywh_to_xyxy(batch["search_box"]).clamp(0, 1)
    boxes = {}
    with torch.no_grad():
        for name in DESCRIPTIONS:
            model = build_model(None, _model(work, name))
            c = model.config
            out = model(resize_crops(batch["template"], c.template_size),
                        resize_crops(batch["online_template"], c.template_size), resize_crops(batch["search"], c.search_size))
            boxes[name] = cxcywh_to_xyxy(out["pred_boxes"])
    return {name: {"crop_iou": box_iou(b, gt)[0].mean().item(), "teacher_iou": box_iou(b, boxes["teacher"])[0].mean().item()}
            for name, b in boxes.items()}


def cmd_eval(work: Path) -> None:
    import numpy as np

    from mfv2.benchmarks.metrics import evaluate_sequences
    from mfv2.config import TrackerConfig
    from mfv2.runtimes import load_backend
    from mfv2.synthetic import benchmark_sequences
    from mfv2.tracking import Tracker

    _teacher_at_64(work)
    crops = _crop_ious(work)
    seqs = benchmark_sequences(EVAL_SEQUENCES, EVAL_FRAMES, EVAL_SEED)
    gts = {s.name: s.boxes for s in seqs}
    results = {}
    for name in DESCRIPTIONS:
        preds = {}
        for seq in seqs:
            tracker = Tracker(load_backend("torch", _model(work, name), threads=1), TrackerConfig())
            tracker.init(seq.frame(0), seq.boxes[0])
            preds[seq.name] = np.array([seq.boxes[0], *(tracker.update(seq.frame(i))[1] for i in range(1, len(seq)))])
        r = evaluate_sequences(preds, gts, {s.name: s.visible for s in seqs})
        results[name] = {"auc": r.auc, "precision": r.precision, "norm_precision": r.norm_precision, **crops[name]}
        log.info("%s: AUC %.1f %%, crop IoU %.3f, teacher IoU %.3f", name, r.auc, crops[name]["crop_iou"],
                 crops[name]["teacher_iou"])
    static = evaluate_sequences({s.name: np.repeat(s.boxes[:1], len(s), axis=0) for s in seqs}, gts,
                                {s.name: s.visible for s in seqs})
    results["static"] = {"auc": static.auc, "precision": static.precision, "norm_precision": static.norm_precision}
    (work / "eval.json").write_text(json.dumps(results, indent=2))


def _bench(model_dir: Path, out: Path, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "mfv2", "bench", "--model", str(model_dir), *args, "--json", str(out)]
    log.info("%s", " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def cmd_bench(work: Path, s_scale: bool) -> None:
    """Export and time the trained models, or (``s_scale``) the S-scale architectures with random weights."""
    from mfv2.config import VARIANTS
    from mfv2.export import export

    exports, bench = work / "exports", work / "bench"
    exports.mkdir(parents=True, exist_ok=True)
    bench.mkdir(parents=True, exist_ok=True)
    for name in () if s_scale else DESCRIPTIONS:
        key = name.replace("@", "_at_")
        if not (exports / key).is_dir():
            export(_model(work, name), exports / key, simplify="onnxsim")
        if not (bench / f"{key}.json").is_file():
            _bench(exports / key, bench / f"{key}.json", BENCH_ARGS)
    for i, (row, fields) in enumerate(S_SCALE.items() if s_scale else ()):
        key = f"s_scale_{i}"
        if not (exports / key).is_dir():
            export(None, exports / key, variant=VARIANTS.get("S").replace(**fields), simplify="onnxsim")
        if not (bench / f"{key}.json").is_file():
            _bench(exports / key, bench / f"{key}.json", S_BENCH_ARGS)


def _speed(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text())
    rows = {f"{r['backend']}_t{r['threads']}": r for r in report["results"] if r["status"] == "ok" and r["backend"] != "torch"}
    out: dict[str, Any] = {f"{b}_ms": rows[b]["median_ms"] for b in rows}
    out.update({f"{b}_min_ms": rows[b]["min_ms"] for b in rows})
    out["gflops"] = next(iter(rows.values()))["gflops_per_frame"] if rows else None
    out["load_average"] = report["env"].get("load_average")
    return out


def cmd_report(work: Path, out_dir: Path) -> None:
    from mfv2.models.checkpoint import read_checkpoint

    accuracy = json.loads((work / "eval.json").read_text())
    models = []
    for name, text in DESCRIPTIONS.items():
        cfg = read_checkpoint(_model(work, name)).config
        seconds = work / name / "seconds.txt"
        models.append({"name": name, "description": text, "config": cfg.to_dict(), **accuracy[name],
                       "train_seconds": int(seconds.read_text()) if seconds.is_file() else None,
                       "speed": _speed(work / "bench" / f"{name.replace('@', '_at_')}.json")})
    static = accuracy["static"]
    s_scale = [{"name": row, "config": {"name": "S", **fields},
                "speed": _speed(work / "bench" / f"s_scale_{i}.json")} for i, (row, fields) in enumerate(S_SCALE.items())]
    env = json.loads((work / "bench" / "s_scale_0.json").read_text())["env"]
    result = {"machine": {"cpu": env["cpu"]["model"], "cores": os.cpu_count(), "note": "shared, heavily loaded"},
              "eval": {"sequences": EVAL_SEQUENCES, "frames": EVAL_FRAMES, "seed": EVAL_SEED, "backend": "torch"},
              "train_budget": "3 epochs x 1600 samples (batch 16) per route, synthetic clips of seed 11",
              "bench_args": BENCH_ARGS, "s_scale_bench_args": S_BENCH_ARGS, "models": models, "static_box": static, "s_scale": s_scale}
    for name, text in (("results.json", json.dumps(result, indent=2) + "\n"), ("results.md", _markdown(result))):
        tmp = out_dir / f"{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
        log.info("wrote %s", out_dir / name)


def _ms(speed: dict[str, Any], backend: str) -> str:
    if f"{backend}_ms" not in speed:
        return "-"
    return f"{speed[f'{backend}_ms']:.2f} ({speed[f'{backend}_min_ms']:.2f})"


def _markdown(result: dict[str, Any]) -> str:
    """The tables of ``results.json`` as Markdown."""
    e = result["eval"]
    lines = [
        "# Compression routes side by side (generated by run_comparison.py report)",
        "",
        f"Accuracy: OPE on {e['sequences']} held-out synthetic clips of {e['frames']} frames "
        f"(`benchmark_sequences({e['sequences']}, {e['frames']}, seed={e['seed']})`), {e['backend']} backend. "
        f"Training: {result['train_budget']}. Speed: `mfv2 bench {' '.join(result['bench_args'])}`, median ms per "
        f"search frame (minimum in brackets), on {result['machine']['cpu']}, {result['machine']['note']}.",
        "",
        f"Crop IoU: mean IoU with the ground truth on {CROPS} held-out crops; teacher IoU: mean IoU with the "
        "teacher's box on the same crops (how much of the teacher's function survives).",
        "",
        "| model | blocks | template/search | AUC % | Prec % | NPrec % | crop IoU | teacher IoU | GFLOPs | ORT fp32 ms | OpenVINO fp32 ms | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in result["models"]:
        c, sp = m["config"], m["speed"]
        flops = f"{sp['gflops']:.3f}" if sp.get("gflops") is not None else "-"
        lines.append(f"| {m['name']}: {m['description']} | {c['depth']} | {c['template_size']}/{c['search_size']} | "
                     f"{m['auc']:.1f} | {m['precision']:.1f} | {m['norm_precision']:.1f} | "
                     f"{m['crop_iou']:.3f} | {m['teacher_iou']:.3f} | {flops} | "
                     f"{_ms(sp, 'onnxruntime_t2')} | {_ms(sp, 'openvino_t2')} | {m['train_seconds'] or '-'} |")
    st = result["static_box"]
    lines.append(f"| static box (reference: the first-frame box on every frame) | - | - | {st['auc']:.1f} | "
                 f"{st['precision']:.1f} | {st['norm_precision']:.1f} | - | - | - | - | - | - |")
    lines += ["", f"S-scale architectures (random weights; speed does not depend on the weights), "
              f"`mfv2 bench {' '.join(result['s_scale_bench_args'])}`; 'vs S' is S's minimum time divided by the row's "
              "(ONNX Runtime, one thread):", "",
              "| architecture | GFLOPs | ORT 1 thread ms | ORT 2 threads ms | OpenVINO 1 thread ms | OpenVINO 2 threads ms | vs S |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    base = result["s_scale"][0]["speed"].get("onnxruntime_t1_min_ms")
    for m in result["s_scale"]:
        sp = m["speed"]
        flops = f"{sp['gflops']:.2f}" if sp.get("gflops") is not None else "-"
        ratio = f"{base / sp['onnxruntime_t1_min_ms']:.2f}x" if base and sp.get("onnxruntime_t1_min_ms") else "-"
        lines.append(f"| {m['name']} | {flops} | {_ms(sp, 'onnxruntime_t1')} | {_ms(sp, 'onnxruntime_t2')} | "
                     f"{_ms(sp, 'openvino_t1')} | {_ms(sp, 'openvino_t2')} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["teacher", "train", "eval", "bench", "bench-s", "report"])
    p.add_argument("--work", type=Path, default=Path("runs/compression"), help="run folder")
    p.add_argument("--routes", default=",".join(ROUTES), help="routes to train, comma-separated")
    p.add_argument("--out", type=Path, default=HERE, help="where results.json goes")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)  # one intra-op thread trains several times faster on a busy 2-core machine
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "teacher":
        cmd_teacher(args.work)
    elif args.step == "train":
        cmd_train(args.work, [r for r in args.routes.split(",") if r])
    elif args.step == "eval":
        cmd_eval(args.work)
    elif args.step in ("bench", "bench-s"):
        cmd_bench(args.work, s_scale=args.step == "bench-s")
    else:
        cmd_report(args.work, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
