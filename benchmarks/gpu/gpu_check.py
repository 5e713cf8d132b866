"""The GPU check of issue 25: the torch backend on CUDA against the CPU, then ``mfv2 bench`` rows.

Run by ``benchmarks/gpu/run.sh`` from the source tree (``PYTHONPATH``); it installs nothing and needs
only torch (a CUDA build), numpy, opencv-python-headless, pyyaml and tqdm. Sections, each bounded by
the time budget (default 450 s; a section that would start too late is recorded as skipped):

1. ``env.json``: GPU name, compute capability, memory, driver, torch / CUDA / cuDNN versions.
2. ``parity.json``: S and B (seeded random weights) on CUDA fp32 against the CPU, full graph and the
   KV path (template encoder + search decoder, eager and CUDA-graph replay): boxes, scores and the KV
   within 1e-4; fp16 and bf16 (LayerNorm and heads in fp32, and everything cast) against CUDA fp32.
3. ``tracker.json``: the demo model tracking a synthetic clip on CUDA (fp32 / fp16 / bf16, eager and
   CUDA graph) against the CPU tracker: IoU per frame.
4. ``bench_<variant>_<mode>.{json,md}``: ``mfv2 bench`` rows, torch on CUDA, fp32 / fp16 / bf16, split
   and full, with and without CUDA graphs, batch 1.
5. ``summary.json`` and ``summary.md``: every gate and figure with the machine.

``--dry-run`` runs the same code on the CPU with the tiny variant and a short clip, to test the script
itself; its outputs say so and carry no GPU figures. Without ``--dry-run`` and without CUDA it stops
at once with exit status 2. Exit status 1 means a gate failed or a section broke.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("gpu_check")

PARITY_TOL = 1e-4  # CUDA fp32 against CPU fp32: boxes, scores, KV
LOW_TOL = {"fp16": 1e-2, "bf16": 5e-2}  # box error (normalised to the crop) against CUDA fp32
TRACK_FP32_MEAN_IOU = 0.99  # CUDA fp32 tracker against the CPU tracker
SEED = 0


@dataclass
class Plan:
    """What one run does (the GPU run, or a dry run on the CPU)."""

    out: Path
    device: str
    dry_run: bool
    budget_s: float
    variants: tuple[str, ...]
    precisions: tuple[str, ...]
    cuda_graphs: bool
    clip_frames: int
    clip_size: tuple[int, int]
    bench_iters: int
    bench_precisions: tuple[str, ...]
    bench_frames: int
    tracker_bench: bool
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)


def _write(path: Path, data: Any) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n" if not isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def environment(plan: Plan) -> dict[str, Any]:
    """Machine, GPU and versions."""
    import torch

    import mfv2
    from mfv2.bench.envinfo import capture_env, gpu_names

    env: dict[str, Any] = {
        "dry_run": plan.dry_run,
        "device": plan.device,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "mfv2": mfv2.__version__,
        "python": platform.python_version(),
        "nvidia_smi": gpu_names(),
        "host": capture_env(),
    }
    if plan.device.startswith("cuda"):
        p = torch.cuda.get_device_properties(plan.device)
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gb=round(p.total_memory / 2**30, 1),
                   gpu_count=torch.cuda.device_count())  # fmt: skip
        smi = env["nvidia_smi"]
        env["driver"] = smi[0].split(",")[-1].strip() if smi else _driver_from_proc()
    try:
        root = Path(__file__).resolve().parents[2]
        env["commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


def _driver_from_proc() -> str | None:
    """The NVIDIA kernel driver version without nvidia-smi (containers often lack it)."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    words = text.split()
    return next((w for w in words if w[:1].isdigit() and "." in w), None)


def _inputs(cfg: Any, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    z, x = cfg.template_size, cfg.search_size
    return [(rng.standard_normal((1, 3, z, z), dtype=np.float32), rng.standard_normal((1, 3, z, z), dtype=np.float32),
             rng.standard_normal((1, 3, x, x), dtype=np.float32)) for _ in range(n)]  # fmt: skip


def _predict_all(runner: Any, inputs: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
    boxes, scores = [], []
    for t, ot, s in inputs:
        runner.set_templates(t, ot)
        for _ in range(2):  # the second call replays the graph captured by the first
            b, sc = runner.predict(s)
        boxes.append(b)
        scores.append(sc)
    return np.concatenate(boxes), np.concatenate(scores)


def _kv(model: Any, device: str, t: np.ndarray, ot: np.ndarray) -> np.ndarray:
    """The template encoder's KV output, read on the host."""
    from mfv2.runtimes.torch_backend import TorchBackend

    _, sessions = TorchBackend(device=device).load(model, "split")
    try:
        return np.asarray(sessions["template_encoder"].infer({"template": t, "online_template": ot})["kv"], dtype=np.float32)
    finally:
        for s in sessions.values():
            s.close()


def parity(plan: Plan) -> dict[str, Any]:
    """CUDA against the CPU at fp32, and the low precisions against CUDA fp32, per variant."""
    import torch

    from mfv2.models import build_model
    from mfv2.runtimes import load_backend

    results: dict[str, Any] = {}
    for variant in plan.variants:
        torch.manual_seed(SEED)
        model = build_model(variant)
        inputs = _inputs(model.config, 4)
        # CPU references per graph: the split graph sums in another order than the full one (1 ulp apart on
        # the CPU), so each device graph is compared with the same graph on the CPU.
        refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for graph in ("full", "split"):
            with load_backend("torch", model, graph=graph) as cpu:
                refs[graph] = _predict_all(cpu, inputs)
        ref_kv = _kv(model, "cpu", *inputs[0][:2])
        rows: list[dict[str, Any]] = []

        def run(precision: str, graph: str, *, cuda_graph: bool = False, keep_fp32: bool = True) -> tuple[np.ndarray, np.ndarray]:
            options: dict[str, Any] = dict(device=plan.device, precision=precision, graph=graph, keep_fp32=keep_fp32)
            if cuda_graph:
                options.update(cuda_graph=True, cuda_graph_fallback=False)
            with load_backend("torch", model, **options) as runner:
                return _predict_all(runner, inputs)

        combos = [("full", False), ("split", False)] + ([("full", True), ("split", True)] if plan.cuda_graphs else [])
        gpu32: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = {}
        for graph, cg in combos:
            try:
                b, s = gpu32[(graph, cg)] = run("fp32", graph, cuda_graph=cg)
            except Exception as e:  # a failed capture (no eager fallback here) fails its row, not the section
                rows.append(dict(check="fp32 vs cpu", precision="fp32", graph=graph, cuda_graph=cg, ok=False,
                                 error=f"{type(e).__name__}: {e}"[:300]))  # fmt: skip
                continue
            ref_b, ref_s = refs[graph]
            err_b, err_s = float(np.abs(b - ref_b).max()), float(np.abs(s - ref_s).max())
            rows.append(dict(check="fp32 vs cpu", precision="fp32", graph=graph, cuda_graph=cg, box_err=err_b,
                             score_err=err_s, tol=PARITY_TOL, ok=max(err_b, err_s) <= PARITY_TOL))  # fmt: skip
        kv_err = float(np.abs(_kv(model, plan.device, *inputs[0][:2]) - ref_kv).max())
        rows.append(dict(check="kv vs cpu", precision="fp32", graph="split", cuda_graph=False, kv_err=kv_err,
                         tol=PARITY_TOL, ok=kv_err <= PARITY_TOL))  # fmt: skip
        for precision in (p for p in plan.precisions if p != "fp32"):
            for keep in (True, False):
                for graph, cg in combos if keep else [("split", False)]:
                    if (graph, False) not in gpu32:
                        continue  # its fp32 reference failed (recorded above)
                    b32, s32 = gpu32[(graph, False)]
                    try:
                        b, s = run(precision, graph, cuda_graph=cg, keep_fp32=keep)
                    except Exception as e:  # e.g. bf16 on a GPU without it: the row says why
                        rows.append(dict(check=f"{precision} vs fp32", precision=precision, graph=graph, cuda_graph=cg,
                                         keep_fp32=keep, ok=False, error=f"{type(e).__name__}: {e}"[:300]))  # fmt: skip
                        continue
                    err_b, err_s = float(np.abs(b - b32).max()), float(np.abs(s - s32).max())
                    tol = LOW_TOL[precision]
                    rows.append(dict(check=f"{precision} vs fp32", precision=precision, graph=graph, cuda_graph=cg,
                                     keep_fp32=keep, box_err=err_b, score_err=err_s, tol=tol,
                                     ok=err_b <= tol if keep else None))  # fmt: skip
        results[variant] = rows
        log.info("parity %s: %s", variant, ", ".join(f"{r['check']} {r['graph']}{' graph' if r['cuda_graph'] else ''}"
                                                     f" {'ok' if r['ok'] else r['ok']}" for r in rows))  # fmt: skip
    return results


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) xywh boxes (mfv2's one IoU, continuous), a NaN box counting as a miss."""
    from mfv2.geometry.boxes import iou_continuous

    return np.nan_to_num(iou_continuous(a, b), nan=0.0)


def tracker(plan: Plan) -> dict[str, Any]:
    """The demo model on a synthetic clip: each CUDA tracker against the CPU tracker, frame by frame."""
    from mfv2.assets import demo_checkpoint
    from mfv2.runtimes import load_backend
    from mfv2.synthetic import make_sequence
    from mfv2.tracking import Tracker

    ckpt = demo_checkpoint()
    if ckpt is None:
        return {"status": "skipped: the demo checkpoint mfv2/assets/mixformerv2_demo_s.pt is missing"}
    width, height = plan.clip_size
    seq = make_sequence(num_frames=plan.clip_frames, width=width, height=height, seed=SEED, backgrounds="procedural")
    gt = np.asarray(seq.boxes, dtype=np.float64)

    def track(**options: Any) -> tuple[np.ndarray, float]:
        with load_backend("torch", ckpt, **options) as runner:
            t = Tracker(runner, runner.manifest.tracker)
            t.init(seq.frame(0), tuple(float(v) for v in gt[0]))
            boxes = [gt[0]]
            t0 = time.perf_counter()
            for i in range(1, len(seq)):
                boxes.append(np.asarray(t.update(seq.frame(i))[1], dtype=np.float64))
            return np.stack(boxes), (time.perf_counter() - t0) / max(len(seq) - 1, 1) * 1000

    cpu, cpu_ms = track(device="cpu")
    runs = [dict(precision="fp32", cuda_graph=False)]
    runs += [dict(precision=p, cuda_graph=cg) for p in plan.precisions for cg in ((False, True) if plan.cuda_graphs else (False,))
             if (p, cg) != ("fp32", False)]  # fmt: skip
    rows = []
    for r in runs:
        options: dict[str, Any] = dict(device=plan.device, precision=r["precision"])
        if r["cuda_graph"]:
            options.update(cuda_graph=True, cuda_graph_fallback=False)
        try:
            boxes, ms = track(**options)
        except Exception as e:
            rows.append({**r, "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        iou = _iou(boxes[1:], cpu[1:])
        mean_iou = float(iou.mean())
        gate = r["precision"] == "fp32"
        rows.append({**r, "mean_iou_vs_cpu": mean_iou, "iou_ge_0.9_vs_cpu": float((iou >= 0.9).mean()),
                     "mean_iou_vs_truth": float(_iou(boxes[1:], gt[1:]).mean()), "ms_per_frame": ms,
                     "ok": mean_iou >= TRACK_FP32_MEAN_IOU if gate else None})  # fmt: skip
    return {"status": "ok", "checkpoint": str(ckpt), "frames": len(seq), "clip": f"{width}x{height}",
            "cpu_mean_iou_vs_truth": float(_iou(cpu[1:], gt[1:]).mean()), "cpu_ms_per_frame": cpu_ms,
            "gate": f"fp32 mean IoU vs the CPU tracker >= {TRACK_FP32_MEAN_IOU}", "rows": rows}  # fmt: skip


def bench(plan: Plan, cache: Path) -> dict[str, Any]:
    """``mfv2 bench`` rows, one command per variant and mode (each its own JSON and Markdown)."""
    jobs = [(v, "model", "split,full") for v in plan.variants]
    if plan.tracker_bench:
        jobs.append((plan.variants[0], "tracker", "split"))
    done: dict[str, Any] = {}
    for variant, mode, graphs in jobs:
        stem = f"bench_{variant}_{mode}"
        left = plan.left() - 15
        if left < 30:
            done[stem] = {"status": f"skipped: {plan.left():.0f} s of the time budget left"}
            continue
        cmd = [sys.executable, "-m", "mfv2", "bench", "--backends", "torch", "--variant", variant, "--mode", mode,
               "--precisions", ",".join(plan.bench_precisions), "--graphs", graphs, "--device", plan.device,
               "--cuda-graph", "off,on" if plan.cuda_graphs else "off", "--threads", str(min(os.cpu_count() or 1, 4)),
               # --quick shortens the CPU GEMM probe (meaningless for GPU rows); --iters/--warmup/--frames set the rest
               "--quick", "--warmup", "20", "--cache", str(cache), "--timeout", "180",
               "--json", str(plan.out / f"{stem}.json"), "--markdown", str(plan.out / f"{stem}.md")]  # fmt: skip
        cmd += ["--frames", str(plan.bench_frames)] if mode == "tracker" else ["--iters", str(plan.bench_iters)]
        log.info("running: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            done[stem] = {"status": f"timed out after {left:.0f} s (the time budget)"}
            continue
        if proc.returncode != 0 or not (plan.out / f"{stem}.json").is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            done[stem] = {"status": f"mfv2 bench exited {proc.returncode}: {tail[:300]}"}
            continue
        report = json.loads((plan.out / f"{stem}.json").read_text())
        done[stem] = {"status": "ok", "rows": [_bench_row(r) for r in report["results"]]}
    return done


def _bench_row(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("variant", "precision", "graph", "mode", "cuda_graph", "status", "median_ms", "p90_ms", "p99_ms",
            "fps", "speedup", "first_ms", "template_ms", "box_err", "fidelity", "count")  # fmt: skip
    return {k: r.get(k) for k in keys}


def _num(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def to_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown: the machine, the gates, the parity, tracker and speed tables."""
    env = summary["env"]
    lines = [f"# mfv2 GPU check ({'DRY RUN on the CPU: checks the script, not GPU figures' if env['dry_run'] else env.get('gpu')})", ""]
    lines += [f"- GPU: {env.get('gpu', '-')} (compute capability {env.get('capability', '-')}, "
              f"{env.get('gpu_memory_gb', '-')} GiB), driver {env.get('driver') or '-'}",
              f"- torch {env['torch']} (CUDA {env['torch_cuda'] or '-'}, cuDNN {env['cudnn'] or '-'}), "
              f"mfv2 {env['mfv2']} at {env.get('commit') or '-'}, Python {env['python']}",
              f"- CPU: {env['host']['cpu'].get('model', '-')}; started {env['host']['time']}; "
              f"took {summary['elapsed_s']:.0f} s; status **{summary['status']}**", ""]  # fmt: skip
    lines += ["## Gates", "", "| gate | result |", "|---|---|"]
    lines += [f"| {g['name']} | {'pass' if g['ok'] else 'FAIL'}{': ' + g['detail'] if g.get('detail') else ''} |"
              for g in summary["gates"]]  # fmt: skip
    for variant, rows in (summary.get("parity") or {}).items():
        if not isinstance(rows, list):
            continue
        lines += ["", f"## Parity, {variant} (max abs error; boxes normalised to the crop)", "",
                  "| check | graph | CUDA graph | LN+heads fp32 | box | score | KV | tol | ok |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            lines.append(f"| {r['check']} | {r['graph']} | {'yes' if r['cuda_graph'] else 'no'} | "
                         f"{'-' if 'keep_fp32' not in r else ('yes' if r['keep_fp32'] else 'no')} | "
                         f"{_num(r.get('box_err'), '.2e')} | {_num(r.get('score_err'), '.2e')} | {_num(r.get('kv_err'), '.2e')} | "
                         f"{_num(r.get('tol'), '.0e')} | {r.get('error') or {True: 'yes', False: 'NO', None: 'report'}[r['ok']]} |")  # fmt: skip
    trk = summary.get("tracker") or {}
    if trk.get("rows"):
        lines += ["", f"## Tracker, demo model, synthetic clip ({trk['frames']} frames, {trk['clip']})", "",
                  f"CPU tracker: mean IoU with the truth {trk['cpu_mean_iou_vs_truth']:.3f}, {trk['cpu_ms_per_frame']:.1f} ms/frame.", "",
                  "| precision | CUDA graph | mean IoU vs CPU | IoU>=0.9 vs CPU | mean IoU vs truth | ms/frame | ok |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in trk["rows"]:
            lines.append(f"| {r['precision']} | {'yes' if r['cuda_graph'] else 'no'} | {_num(r.get('mean_iou_vs_cpu'), '.4f')} | "
                         f"{_num(r.get('iou_ge_0.9_vs_cpu'), '.3f')} | {_num(r.get('mean_iou_vs_truth'), '.3f')} | "
                         f"{_num(r.get('ms_per_frame'), '.2f')} | {r.get('error') or {True: 'yes', False: 'NO', None: 'report'}[r['ok']]} |")  # fmt: skip
    for stem, part in (summary.get("bench") or {}).items():
        lines += ["", f"## {stem} (`mfv2 bench`, torch on {env['device']}, batch 1)", ""]
        if part.get("status") != "ok":
            lines.append(f"Not run: {part.get('status')}")
            continue
        lines += ["| variant | precision | graph | CUDA graph | median ms | p90 ms | p99 ms | FPS | speed-up | templates ms | status |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in part["rows"]:
            lines.append(f"| {r['variant']} | {r['precision']} | {r['graph']} | {'yes' if r.get('cuda_graph') else 'no'} | "
                         f"{_num(r['median_ms'], '.3f')} | {_num(r['p90_ms'], '.3f')} | {_num(r['p99_ms'], '.3f')} | "
                         f"{_num(r['fps'], '.0f')} | {_num(r['speedup'], '.2f')} | {_num(r.get('template_ms'), '.3f')} | "
                         f"{r['status'][:60]} |")  # fmt: skip
    lines += ["", "Speed-up is against torch fp32 full graph without CUDA graph on the same device, same run. "
              "Model-only rows time one search frame per call, host to host (crop upload, the network, "
              "boxes and score back)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _gates(summary: dict[str, Any]) -> list[dict[str, Any]]:
    gates: list[dict[str, Any]] = []
    for name in ("parity", "tracker", "bench"):
        if isinstance(summary.get(name), dict) and "error" in summary[name]:
            gates.append(dict(name=f"{name} section ran", ok=False, detail=summary[name]["error"][:200]))
    for variant, rows in (summary.get("parity") or {}).items():
        if isinstance(rows, list):
            bad = [r for r in rows if r["ok"] is False]
            gates.append(dict(name=f"parity {variant}: CUDA fp32 vs CPU <= {PARITY_TOL:g}, fp16/bf16 vs fp32 within "
                              f"{LOW_TOL['fp16']:g}/{LOW_TOL['bf16']:g}", ok=not bad,
                              detail="; ".join(f"{r['check']} {r['graph']}{' graph' if r['cuda_graph'] else ''}: "
                                               f"{r.get('error') or r.get('box_err', r.get('kv_err'))}" for r in bad)))  # fmt: skip
    trk = summary.get("tracker") or {}
    if trk.get("rows"):
        bad = [r for r in trk["rows"] if r["ok"] is False]
        gates.append(dict(name=f"tracker: {trk['gate']}", ok=not bad,
                          detail="; ".join(f"{r['precision']}{' graph' if r['cuda_graph'] else ''}: "
                                           f"{r.get('error') or r.get('mean_iou_vs_cpu')}" for r in bad)))  # fmt: skip
    for stem, part in (summary.get("bench") or {}).items():
        failed = [r for r in part.get("rows", []) if r["status"] != "ok"]
        gates.append(dict(name=f"{stem}: every row ran", ok=part.get("status") == "ok" and not failed,
                          detail=part.get("status") if part.get("status") != "ok" else
                          "; ".join(f"{r['precision']} {r['graph']}{' graph' if r.get('cuda_graph') else ''}: {r['status']}"
                                    for r in failed)[:300]))  # fmt: skip
    return gates


def _section(summary: dict[str, Any], name: str, fn: Callable[[], Any], plan: Plan, need_s: float) -> None:
    if plan.left() < need_s:
        summary[name] = {"status": f"skipped: {plan.left():.0f} s of the time budget left"}
        return
    t0 = time.monotonic()
    try:
        summary[name] = fn()
    except Exception as e:  # a broken section is recorded and the others still run
        log.error("%s failed: %s", name, e)
        summary[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    log.info("%s took %.0f s", name, time.monotonic() - t0)
    _write(plan.out / f"{name}.json", summary[name])


def make_plan(args: argparse.Namespace) -> Plan:
    if args.dry_run:
        return Plan(out=args.out, device="cpu", dry_run=True, budget_s=args.budget, variants=("tiny",),
                    precisions=("fp32", "bf16"), cuda_graphs=False, clip_frames=12, clip_size=(160, 120),
                    bench_iters=5, bench_precisions=("fp32",), bench_frames=4, tracker_bench=False)  # fmt: skip
    return Plan(out=args.out, device=args.device, dry_run=False, budget_s=args.budget, variants=tuple(args.variants.split(",")),
                precisions=("fp32", "fp16", "bf16"), cuda_graphs=True, clip_frames=args.frames, clip_size=(640, 360),
                bench_iters=args.iters, bench_precisions=("fp32", "fp16", "bf16"), bench_frames=150, tracker_bench=not args.no_tracker_bench)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU with the tiny variant: tests the script only")
    parser.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    parser.add_argument("--variants", default="S,B", help="variants of the parity and bench sections (default S,B)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (default 450)")
    parser.add_argument("--frames", type=int, default=200, help="synthetic clip length of the tracker section (default 200)")
    parser.add_argument("--iters", type=int, default=300, help="timed calls per model-only bench row (default 300)")
    parser.add_argument("--no-tracker-bench", action="store_true", help="skip the tracker-mode bench rows")
    args = parser.parse_args(argv)
    root = str(Path(__file__).resolve().parents[2])  # mfv2 from this source tree, here and in mfv2 bench's processes
    if root not in sys.path:
        sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.out:
        print("gpu_check: error: give the output folder as the first argument or in $OUT", file=sys.stderr)
        return 2
    args.out = Path(args.out)
    try:
        import torch
    except ImportError:
        print("gpu_check: error: torch is not importable; this check needs PyTorch (a CUDA build)", file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        why = "a CPU-only build" if torch.version.cuda is None else "a CUDA build but sees no GPU"
        print(f"gpu_check: error: no CUDA device: torch {torch.__version__} is {why}; run on a CUDA machine, "
              "or pass --dry-run to test the script on the CPU", file=sys.stderr)  # fmt: skip
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(args)
    torch.set_num_threads(min(os.cpu_count() or 1, 4))
    summary: dict[str, Any] = {"env": environment(plan)}
    _write(plan.out / "env.json", summary["env"])
    cache = Path(tempfile.mkdtemp(prefix="mfv2-gpu-check-"))  # random-weight checkpoints: large, not outputs
    try:
        _section(summary, "parity", lambda: parity(plan), plan, need_s=30)
        _section(summary, "tracker", lambda: tracker(plan), plan, need_s=30)
        _section(summary, "bench", lambda: bench(plan, cache), plan, need_s=30)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    summary["gates"] = _gates(summary)
    summary["elapsed_s"] = time.monotonic() - plan.start
    summary["status"] = "dry run" if plan.dry_run else ("pass" if all(g["ok"] for g in summary["gates"]) else "FAIL")
    ok = all(g["ok"] for g in summary["gates"])
    _write(plan.out / "summary.json", summary)
    _write(plan.out / "summary.md", to_markdown(summary))
    print(f"gpu_check: {'all gates pass' if ok else 'a gate failed'}; wrote {plan.out / 'summary.md'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
