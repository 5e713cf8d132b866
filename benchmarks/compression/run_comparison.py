"""Reproduce benchmarks/compression: four ways to make MixFormerV2 cheaper, from one teacher, side by side.

The teacher is the demo_families route's 4-block stage-1 model (``mfv2 distill --route demo_families
--stop-after stage1``: template 64 / search 128, search crops of 3.5 target sizes). From it, with the
teacher's data (the nine training families of :mod:`mfv2.synthetic.families`, seed 11, plus still pairs)
and the same budget per route (8 epochs x 4000 samples, 2 processes x 16), ``train`` runs

* ``pmdp``: MixFormerV2's own progressive depth pruning 4 -> 2 blocks (``route_pmdp_demo.yaml`` here);
* ``compresstracker``: CompressTracker replacement training of a 2-block student (route ``ct_demo``);
* ``lowres``: the teacher's network at template 48 / search 96, fine-tuned on the task losses only
  (route ``lr_demo`` without the distillation terms);
* ``loretrack``: the same student with QKV-KD and Disc-KD (route ``lr_demo``);

``eval`` tracks held-out clips as ``benchmarks/demo_model/heldout.py`` does (the held-out families
``cells`` and ``unseen_photos``, 64 clips each, and 8 clips of each of the nine training families from a
seed training never draws) with each model's own tracker settings, keeps per-clip AUCs and the paired
differences (mean, standard error, clips won) of every model against the teacher and of the pairs that
matter; tracked boxes are cached per family group and model, so a rerun (or a second process with
``--groups``) only tracks what is missing. ``bench`` / ``bench-s`` time the models and the S-scale
architectures they stand for with ``mfv2 bench``, and ``report`` writes results.json and results.md
beside this file.

    .venv/bin/python benchmarks/compression/run_comparison.py train --work runs/compression19 \
      --stage1 runs/demo_families/02_stage1/final.pt
    .venv/bin/python benchmarks/compression/run_comparison.py eval --work runs/compression19
    .venv/bin/python benchmarks/compression/run_comparison.py bench --work runs/compression19
    .venv/bin/python benchmarks/compression/run_comparison.py bench-s --work runs/compression19
    .venv/bin/python benchmarks/compression/run_comparison.py report --work runs/compression19
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mfv2.synthetic import TRAINING_FAMILIES

HERE = Path(__file__).resolve().parent
HELD_OUT_SEED = 2026  # benchmarks/demo_model/heldout.py's: training draws seed 11, validation 12
EVAL_FRAMES = 60
# family group -> (family, clips): the two held-out families, and held-out seeds of the training families
GROUPS: dict[str, list[tuple[str, int]]] = {
    "cells": [("cells", 64)],
    "unseen_photos": [("unseen_photos", 64)],
    "training_families": [(family, 8) for family in TRAINING_FAMILIES],
}
CROPS, CROP_SEED = 512, 12  # crops of the routes' validation clips (seed 12) for the crop-level IoUs
# name -> (route, --set overrides)
ROUTES: dict[str, tuple[str, list[str]]] = {
    "pmdp": (str(HERE / "route_pmdp_demo.yaml"), []),
    "compresstracker": ("ct_demo", []),
    "lowres": ("lr_demo", ["objective.options.qkv=0", "objective.options.disc=0"]),
    "loretrack": ("lr_demo", ["objective.options.qkv=0.01", "objective.options.disc=0.01"]),  # the paper's weights
    # the route's own KD weights, retuned so that the two terms have a share of the loss (#19 item 4)
    "loretrack_kd": ("lr_demo", []),
}
DESCRIPTIONS = {
    "teacher": "the model every route starts from (teacher.json names it; 4 Dec 2026: the demo_families route's stage 1)",
    "teacher@96": "the teacher's weights at template 48 / search 96, not fine-tuned (reference)",
    "pmdp": "progressive depth pruning 4 -> 2 blocks (MixFormerV2's own reduction)",
    "compresstracker": "CompressTracker replacement training, 2-block student",
    "lowres": "plain low resolution (search 96), task losses only",
    "loretrack": "LoReTrack (search 96), task losses + 0.01 QKV-KD + 0.01 Disc-KD (KL, T 4)",
    "loretrack_kd": "LoReTrack (search 96), task losses + 2.0 QKV-KD + 0.5 Disc-KD (KL, T 4): KD weights retuned",
}
# paired differences reported besides every model minus the teacher
PAIRS = (("loretrack", "lowres"), ("loretrack_kd", "lowres"), ("loretrack_kd", "loretrack"), ("compresstracker", "pmdp"),
         ("lowres", "pmdp"))
# S-scale architectures the routes stand for: (row, ModelConfig fields relative to S).
S_SCALE = {
    "S (PMDP route)": {},
    "S4 (CompressTracker of S8, before MLP reduction)": {"name": "S4", "mlp_ratio": 4.0},
    "S-192 (LoReTrack)": {"name": "S-192", "template_size": 96, "search_size": 192},
    "S-160 (LoReTrack)": {"name": "S-160", "template_size": 80, "search_size": 160},
    "S-128 (LoReTrack)": {"name": "S-128", "template_size": 64, "search_size": 128},
}
BENCH_ARGS = ["--backends", "onnxruntime,openvino", "--precisions", "fp32", "--threads", "1,2", "--mode", "model",
              "--graphs", "split", "--rounds", "3"]

log = logging.getLogger("compression")


def _model(work: Path, name: str) -> Path:
    if name == "teacher":
        return work / "teacher.pt"
    if name == "teacher@96":
        return work / "teacher_at_96.pt"
    return work / name / "final.pt"


def _present(work: Path) -> list[str]:
    """The models of this run folder: the teacher, its weights at 96, and every route trained in it."""
    return [n for n in DESCRIPTIONS if n not in ROUTES or _model(work, n).is_file()]


def _key(name: str) -> str:
    return name.replace("@", "_at_")


def cmd_train(work: Path, stage1: Path, names: list[str], nproc: int, lr_route: str = "lr_demo") -> None:
    """Train each route from the demo stage-1 model (``mfv2 distill --given stage1=...``, one process per core);
    ``lr_route`` replaces route lr_demo (a LoReTrack route whose student matches another teacher)."""
    from mfv2.fileio import atomic_path, atomic_write_text, sha256

    given = {"stage1": stage1}
    with atomic_path(_model(work, "teacher")) as tmp:
        shutil.copyfile(stage1, tmp)
    root = HERE.parents[1].resolve()  # the repository: a path inside it is recorded relative to it
    path = stage1.resolve()
    teacher = {"path": str(path.relative_to(root) if path.is_relative_to(root) else path), "sha256": sha256(stage1)}
    atomic_write_text(work / "teacher.json", json.dumps(teacher, indent=2) + "\n")
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    for name in names:
        route, overrides = ROUTES[name]
        route = lr_route if route == "lr_demo" else route
        cmd = [*launcher, "-m", "mfv2", "distill", "--route", route, "--output", str(work / name),
               *(f"--given={stage}={path}" for stage, path in given.items()), "--threads", "1" if nproc > 1 else "2",
               "--no-progress", *(f"--set={o}" for o in overrides)]
        log.info("%s", " ".join(cmd))
        started, load = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), os.getloadavg()
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        run = {"seconds": round(time.perf_counter() - start), "started": started, "processes": nproc,
               "niceness": os.nice(0), "load_average_before": load, "load_average_after": os.getloadavg(),
               "command": cmd}
        atomic_write_text(work / name / "run.json", json.dumps(run, indent=2) + "\n")


def _teacher_at_96(work: Path) -> Path:
    """The teacher's weights at template 48 / search 96 (new position tables), not trained."""
    from mfv2.models import MixFormerV2, build_model, save_native
    from mfv2.training.objectives.loretrack import init_lowres_from_teacher, lowres_config

    teacher = build_model(None, _model(work, "teacher"))
    student = MixFormerV2(lowres_config(teacher.config, 96, 48, name="demo-S4-96"))
    init_lowres_from_teacher(student, teacher)
    return save_native(student.state_dict(), student.config, _model(work, "teacher@96"), {"init": "teacher, not trained"})


def _crop_ious(work: Path, names: list[str]) -> dict[str, dict[str, float]]:
    """Mean IoU of each model's box with the ground truth and with the teacher's box on validation crops.

    Crops are cut as in training from the routes' validation clips (2 of each training family, seed 12)
    at the teacher's size and crop factor (template 64 / search 128, 3.5, the routes' jitter) and resized
    for the low-resolution models, as the ``loretrack`` objective does.
    """
    import numpy as np
    import torch

    from mfv2.datasets import build_dataset
    from mfv2.models import build_model
    from mfv2.training.data import ProcessingSettings, TrackingProcessing, TrackingSampler
    from mfv2.training.losses import box_iou, cxcywh_to_xyxy, xywh_to_xyxy
    from mfv2.training.objectives.loretrack import resize_crops

    t = build_model(None, _model(work, "teacher")).config
    settings = ProcessingSettings(template_size=t.template_size, search_size=t.search_size,
                                  search_factor=t.search_factor or 4.5, search_scale_jitter=0.5, search_centre_jitter=3.0)
    data = [build_dataset("synthetic", family=f, num_sequences=2, seed=CROP_SEED, num_frames=200) for f in TRAINING_FAMILIES]
    sampler = TrackingSampler(data, [1.0] * len(data), TrackingProcessing(settings, augment=False),
                              samples_per_epoch=CROPS, max_gap=100, seed=CROP_SEED)
    items = [sampler[i] for i in range(CROPS)]
    batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in ("template", "online_template", "search", "search_box")}
    gt = xywh_to_xyxy(batch["search_box"]).clamp(0, 1)
    boxes = {}
    with torch.no_grad():
        for name in ["teacher", *(n for n in names if n != "teacher")]:
            model = build_model(None, _model(work, name))
            c = model.config
            out = model(resize_crops(batch["template"], c.template_size),
                        resize_crops(batch["online_template"], c.template_size), resize_crops(batch["search"], c.search_size))
            boxes[name] = cxcywh_to_xyxy(out["pred_boxes"])
    return {name: {"crop_iou": box_iou(b, gt)[0].mean().item(), "teacher_iou": box_iou(b, boxes["teacher"])[0].mean().item()}
            for name, b in boxes.items()}


def paired(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Per-clip AUC of ``a`` minus ``b`` (clip -> AUC) over the clips both scored: mean, standard error, clips won/lost."""
    from mfv2.evaluation.metrics import paired_difference

    names = sorted(set(a) & set(b))
    p = paired_difference([a[n] for n in names], [b[n] for n in names])
    return {"mean": p.mean, "se": p.se, "wins": p.better, "losses": p.worse, "clips": p.clips}


def _clips(group: str, frames: int) -> list[Any]:
    from mfv2.synthetic import family_sequences

    return [seq for family, n in GROUPS[group] for seq in family_sequences(family, n, frames, seed=HELD_OUT_SEED)]


def _cache(work: Path, group: str, frames: int, name: str) -> Path:
    return work / "eval" / f"{group}_{frames}f" / f"{_key(name)}.json"


def _track_group(work: Path, group: str, frames: int, names: list[str]) -> None:
    """Track every clip of ``group`` with each model of ``names`` that has no cached boxes (torch backend,
    one thread, the model's own tracker settings); each clip is rendered once for all of them."""
    from mfv2.config import TrackerConfig
    from mfv2.fileio import atomic_write_text
    from mfv2.runtimes import load_backend
    from mfv2.tracking import Tracker

    missing = [n for n in names if not _cache(work, group, frames, n).is_file()]
    if not missing:
        return
    runners = {n: load_backend("torch", _model(work, n), threads=1) for n in missing}
    configs = {n: TrackerConfig.preset("synthetic", r.manifest.model) for n, r in runners.items()}
    out: dict[str, dict[str, Any]] = {n: {"boxes": {}, "seconds": 0.0, "tracker": configs[n].to_dict()} for n in missing}
    started = time.perf_counter()
    for seq in _clips(group, frames):
        imgs = [seq.frame(i) for i in range(len(seq))]
        for n in missing:
            t0 = time.perf_counter()
            tracker = Tracker(runners[n], configs[n])
            tracker.init(imgs[0], seq.boxes[0])
            boxes = [[float(v) for v in seq.boxes[0]], *([float(v) for v in tracker.update(img)[1]] for img in imgs[1:])]
            out[n]["seconds"] += time.perf_counter() - t0
            out[n]["boxes"][seq.name] = boxes
    for n, result in out.items():
        path = _cache(work, group, frames, n)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(result) + "\n")
    log.info("%s: %d models tracked in %.0f s", group, len(missing), time.perf_counter() - started)


def _score(work: Path, groups: list[str], frames: int, names: list[str]) -> dict[str, Any]:
    """AUC, precision and per-clip AUC of each model and the static box per group and over all groups,
    and the paired differences (every model minus the teacher, and ``PAIRS``)."""
    import numpy as np

    from mfv2.evaluation.evaluate import IOU_CONVENTION
    from mfv2.evaluation.metrics import evaluate_sequences

    seqs = {g: _clips(g, frames) for g in groups}
    preds = {n: {g: json.loads(_cache(work, g, frames, n).read_text())["boxes"] for g in groups} for n in names}
    preds["static"] = {g: {s.name: np.repeat(s.boxes[:1], len(s), axis=0) for s in seqs[g]} for g in groups}
    pairs = [(n, "teacher") for n in names if n != "teacher"] + [p for p in PAIRS if set(p) <= set(names)]
    out: dict[str, Any] = {}
    for g, clips in [*((g, seqs[g]) for g in groups), ("all", [s for g in groups for s in seqs[g]])]:
        gts, visible = {s.name: s.boxes for s in clips}, {s.name: s.visible for s in clips}
        models: dict[str, Any] = {}
        for n, by_group in preds.items():
            boxes = {k: np.asarray(v) for bg in by_group.values() for k, v in bg.items() if k in gts}
            r = evaluate_sequences(boxes, gts, visible, iou=IOU_CONVENTION["synthetic"])
            models[n] = {"auc": r.auc, "precision": r.precision, "norm_precision": r.norm_precision,
                         "per_clip": {k: round(v["auc"], 2) for k, v in r.per_sequence.items()}}
        diffs = {f"{a} - {b}": paired(models[a]["per_clip"], models[b]["per_clip"]) for a, b in pairs}
        out[g] = {"clips": len(clips), "models": models, "paired": diffs}
    return out


def cmd_eval(work: Path, frames: int = EVAL_FRAMES, groups: list[str] | None = None,
             models: list[str] | None = None) -> None:
    """Track the family groups with the models (all by default), then score every group whose boxes
    are cached for every model into eval.json."""
    from mfv2.fileio import atomic_write_text

    names = _present(work)
    if not _model(work, "teacher@96").is_file():
        _teacher_at_96(work)
    for group in groups or list(GROUPS):
        _track_group(work, group, frames, [m for m in models or names if m in names])  # routes not trained here skipped
    done = [g for g in GROUPS if all(_cache(work, g, frames, n).is_file() for n in names)]
    if not done:
        return
    results = {"frames": frames, "seed": HELD_OUT_SEED, "groups": {g: dict(GROUPS[g]) for g in done},
               "crops": _crop_ious(work, names),
               "seconds": {g: {n: json.loads(_cache(work, g, frames, n).read_text())["seconds"] for n in names} for g in done},
               "scores": _score(work, done, frames, names)}
    for g, s in results["scores"].items():
        for key, v in s["paired"].items():
            log.info("%s %s: %+.1f +- %.1f AUC per clip (better on %d of %d)", g, key, v["mean"], v["se"], v["wins"], v["clips"])
    atomic_write_text(work / "eval.json", json.dumps(results, indent=2, default=float) + "\n")


def _bench(model_dir: Path, out: Path, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "mfv2", "bench", "--model", str(model_dir), *args, "--json", str(out)]
    log.info("%s", " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def cmd_bench(work: Path, s_scale: bool) -> None:
    """Export and time the trained models, or (``s_scale``) the S-scale architectures with random weights."""
    from mfv2.config import VARIANTS
    from mfv2.exporters import export

    exports, bench = work / "exports", work / "bench"
    exports.mkdir(parents=True, exist_ok=True)
    bench.mkdir(parents=True, exist_ok=True)
    jobs = ([(f"s_scale_{i}", None, VARIANTS.get("S").replace(**fields)) for i, fields in enumerate(S_SCALE.values())]
            if s_scale else [(_key(name), _model(work, name), None) for name in DESCRIPTIONS])
    for key, checkpoint, variant in jobs:
        if not (exports / key).is_dir():
            export(checkpoint, exports / key, variant=variant, simplify="onnxsim")
        if not (bench / f"{key}.json").is_file():
            _bench(exports / key, bench / f"{key}.json", BENCH_ARGS)


def _speed(path: Path) -> dict[str, Any]:
    """Median and minimum ms per backend and thread count, and the load average, of a ``mfv2 bench`` report."""
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    rows = {f"{r['backend']}_t{r['threads']}": r for r in report["results"] if r["status"] == "ok" and r["backend"] != "torch"}
    out: dict[str, Any] = {f"{b}_ms": rows[b]["median_ms"] for b in rows}
    out.update({f"{b}_min_ms": rows[b]["min_ms"] for b in rows})
    out["load_average"] = report["env"].get("load_average")
    return out


def _budget(route: str, overrides: list[str]) -> dict[str, Any]:
    """Epochs, samples and batch of a route's last stage (the one the comparison trains)."""
    from mfv2.training.routes import load_route, plan_route

    cfg = plan_route(load_route(route), "unused", overrides=overrides)[-1].config
    return {"epochs": cfg["optim"]["epochs"], "samples_per_epoch": cfg["data"]["samples_per_epoch"],
            "batch_size_per_process": cfg["data"]["batch_size"], "lr": cfg["optim"]["lr"],
            "lr_drop_epoch": cfg["optim"]["lr_drop_epoch"]}


def cmd_report(work: Path, out_dir: Path) -> None:
    """Gather training, accuracy, paired differences, FLOPs and speed into ``out_dir``/results.json and results.md."""
    import platform

    from mfv2.bench.flops import graph_flops
    from mfv2.config import VARIANTS
    from mfv2.fileio import atomic_write_text
    from mfv2.models.checkpoint import read_checkpoint

    ev = json.loads((work / "eval.json").read_text())
    scores = ev["scores"]
    models = []
    for name, text in ((n, DESCRIPTIONS[n]) for n in _present(work)):
        cfg = read_checkpoint(_model(work, name)).config
        run = work / name / "run.json"
        models.append({"name": name, "description": text, "config": cfg.to_dict(), **ev["crops"][name],
                       "accuracy": {g: scores[g]["models"][name] for g in scores},
                       "gflops": graph_flops(cfg, "search_decoder").total / 1e9,
                       "budget": _budget(*ROUTES[name]) if name in ROUTES else None,
                       "train": json.loads(run.read_text()) if run.is_file() else None,
                       "speed": _speed(work / "bench" / f"{_key(name)}.json")})
    s_scale = []
    for i, (row, fields) in enumerate(S_SCALE.items()):
        cfg = VARIANTS.get("S").replace(**fields)
        s_scale.append({"name": row, "config": cfg.to_dict(), "gflops": graph_flops(cfg, "search_decoder").total / 1e9,
                        "speed": _speed(work / "bench" / f"s_scale_{i}.json")})
    reports = sorted((work / "bench").glob("*.json"))
    cpu = json.loads(reports[0].read_text())["env"]["cpu"]["model"] if reports else platform.processor() or platform.machine()
    result = {"machine": {"cpu": cpu, "cores": os.cpu_count()},
              "teacher": json.loads((work / "teacher.json").read_text()),
              "eval": {"groups": ev["groups"], "frames": ev["frames"], "seed": ev["seed"], "backend": "torch",
                       "frames_from": "rendered frames, not JPEG", "tracker": "TrackerConfig.preset('synthetic', model)",
                       "tracking_seconds": ev["seconds"]},
              "bench_args": BENCH_ARGS, "models": models,
              "static_box": {g: scores[g]["models"]["static"] for g in scores},
              "paired": {g: scores[g]["paired"] for g in scores}, "s_scale": s_scale}
    atomic_write_text(out_dir / "results.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out_dir / "results.md", _markdown(result))
    log.info("wrote %s and %s", out_dir / "results.json", out_dir / "results.md")


def _ms(speed: dict[str, Any], key: str) -> str:
    if f"{key}_ms" not in speed:
        return "-"
    return f"{speed[f'{key}_ms']:.2f} ({speed[f'{key}_min_ms']:.2f})"


def _loads(rows: list[dict[str, Any]]) -> str:
    loads = [r["speed"]["load_average"][0] for r in rows if r["speed"].get("load_average")]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"


def _diff(d: dict[str, Any]) -> str:
    return f"{d['mean']:+.1f} ± {d['se']:.1f} ({d['wins']}/{d['losses']})"


def _markdown(result: dict[str, Any]) -> str:
    """The tables of ``results.json`` as Markdown (speed columns only where ``bench`` ran)."""
    e, models, rows = result["eval"], result["models"], result["s_scale"]
    groups = [*e["groups"], "all"]
    labels = {g: f"{g} ({'held-out seeds' if g == 'training_families' else 'held out'})" for g in e["groups"]}
    labels["all"] = "all clips"
    clips = {g: result["paired"][g][next(iter(result["paired"][g]))]["clips"] for g in groups}
    budget = next(m["budget"] for m in models if m["budget"])
    teacher = next(m for m in models if m["name"] == "teacher")
    speed = any(m["speed"] for m in models)
    families = "; ".join(f"{g}: " + ", ".join(f"{f} x {n}" for f, n in e["groups"][g].items()) for g in e["groups"])
    lines = [
        "# Compression routes side by side (generated by run_comparison.py report)",
        "",
        f"* Teacher: `{result['teacher']['path']}` (sha256 {result['teacher']['sha256'][:12]}).",
        f"* Training: {budget['epochs']} epochs x {budget['samples_per_epoch']} samples per route (batch "
        f"{budget['batch_size_per_process']} per process, lr {budget['lr']:g} dropped after epoch "
        f"{budget['lr_drop_epoch']}) on the teacher's data (nine training clip families, seed 11, and still pairs); "
        "train s is the wall time of the route's stage.",
        f"* Accuracy: OPE on held-out clips of {e['frames']} frames, seed {e['seed']} ({families}; "
        f"{e['frames_from']}), {e['backend']} backend, `{e['tracker']}` (each model's own crop factors); AUC in %. "
        f"Crop IoU: mean IoU with the ground truth on {CROPS} crops of the routes' validation clips; "
        "teacher IoU: with the teacher's box on the same crops.",
        "* Paired: per-clip AUC of the row's model minus the other, mean ± standard error over the clips "
        "(clips better/worse).",
        "* Cost: GFLOPs of the search decoder per frame (x: of the teacher's)."
        + (f" Speed: `mfv2 bench {' '.join(result['bench_args'])}`, median ms per search frame (minimum in brackets), on "
           f"{result['machine']['cpu']} ({result['machine']['cores']} cores), 1-minute load average {_loads(models)}."
           if speed else " Speed: not measured in this run (see README.md)."),
        "",
        "| model | blocks | template/search | " + " | ".join(f"AUC {labels[g]}, {clips[g]} clips" for g in groups)
        + " | crop IoU | teacher IoU | GFLOPs (x) |" + (" ORT 1 thread ms | ORT 2 threads ms | OpenVINO 2 threads ms |" if speed else "")
        + " train s |",
        "|" + " --- |" * (3 + len(groups) + 4 + (3 if speed else 0)),
    ]
    for m in models:
        c, sp = m["config"], m["speed"]
        seconds = m["train"]["seconds"] if m["train"] else "-"
        lines.append(f"| {m['name']}: {m['description']} | {c['depth']} | {c['template_size']}/{c['search_size']} | "
                     + " | ".join(f"{m['accuracy'][g]['auc']:.1f}" for g in groups)
                     + f" | {m['crop_iou']:.3f} | {m['teacher_iou']:.3f} | "
                     f"{m['gflops']:.4f} ({m['gflops'] / teacher['gflops']:.2f}) |"
                     + (f" {_ms(sp, 'onnxruntime_t1')} | {_ms(sp, 'onnxruntime_t2')} | {_ms(sp, 'openvino_t2')} |" if speed else "")
                     + f" {seconds} |")
    st = result["static_box"]
    lines.append("| static box (reference: the first-frame box on every frame) | - | - | "
                 + " | ".join(f"{st[g]['auc']:.1f}" for g in groups) + " |" + " - |" * (4 + (3 if speed else 0)))
    pairs = list(result["paired"]["all"])
    lines += ["", "Paired per-clip AUC differences:", "",
              "| difference | " + " | ".join(labels[g] for g in groups) + " |", "|" + " --- |" * (1 + len(groups))]
    lines += [f"| {p} | " + " | ".join(_diff(result["paired"][g][p]) for g in groups) + " |" for p in pairs]
    if any(r["speed"] for r in rows):
        lines += [
            "",
            "S-scale architectures (random weights; speed does not depend on the weights), same `mfv2 bench` arguments, "
            f"1-minute load average {_loads(rows)}; 'vs S' is S's minimum time divided by the row's (ONNX Runtime, one thread):",
            "",
            "| architecture | GFLOPs | ORT 1 thread ms | ORT 2 threads ms | OpenVINO 1 thread ms | OpenVINO 2 threads ms | vs S |",
            "|" + " --- |" * 7,
        ]
        base = rows[0]["speed"].get("onnxruntime_t1_min_ms")
        for m in rows:
            sp = m["speed"]
            ratio = f"{base / sp['onnxruntime_t1_min_ms']:.2f}x" if base and sp.get("onnxruntime_t1_min_ms") else "-"
            lines.append(f"| {m['name']} | {m['gflops']:.2f} | {_ms(sp, 'onnxruntime_t1')} | {_ms(sp, 'onnxruntime_t2')} | "
                         f"{_ms(sp, 'openvino_t1')} | {_ms(sp, 'openvino_t2')} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["train", "eval", "bench", "bench-s", "report"])
    p.add_argument("--frames", type=int, default=EVAL_FRAMES, help=f"eval: frames per clip (default {EVAL_FRAMES})")
    p.add_argument("--groups", default=",".join(GROUPS),
                   help="eval: family groups to track, comma-separated (eval.json scores every group whose boxes are cached)")
    p.add_argument("--models", default=",".join(DESCRIPTIONS),
                   help="eval: models to track, comma-separated (e.g. the teacher while the routes train)")
    p.add_argument("--work", type=Path, default=Path("runs/compression19"), help="run folder")
    p.add_argument("--stage1", type=Path, help="train: the teacher, a stage-1 model (runs/demo_families/02_stage1/final.pt)")
    p.add_argument("--routes", default=",".join(ROUTES), help="train: routes to train, comma-separated")
    p.add_argument("--lr-route", default="lr_demo", help="train: the route of lowres/loretrack/loretrack_kd (default lr_demo)")
    p.add_argument("--nproc", type=int, default=2, choices=[1, 2], help="train: processes per route (torchrun)")
    p.add_argument("--out", type=Path, default=HERE, help="report: where results.json and results.md go")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)  # the eval's tracker and crop models are tiny; one thread is fastest
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "train":
        if args.stage1 is None or not args.stage1.is_file():
            p.error("train needs --stage1 CKPT (mfv2 distill --route demo_families --output runs/demo_families "
                    "--stop-after stage1 makes runs/demo_families/02_stage1/final.pt)")
        unknown = sorted(set(args.routes.split(",")) - set(ROUTES))
        if unknown:
            p.error(f"unknown route(s) {', '.join(unknown)}; choose from {', '.join(ROUTES)}")
        cmd_train(args.work, args.stage1, args.routes.split(","), args.nproc, args.lr_route)
    elif args.step == "eval":
        unknown = sorted(set(args.groups.split(",")) - set(GROUPS))
        if unknown:
            p.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
        unknown = sorted(set(args.models.split(",")) - set(DESCRIPTIONS))
        if unknown:
            p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(DESCRIPTIONS)}")
        cmd_eval(args.work, args.frames, args.groups.split(","), args.models.split(","))
    elif args.step in ("bench", "bench-s"):
        cmd_bench(args.work, s_scale=args.step == "bench-s")
    else:
        cmd_report(args.work, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
