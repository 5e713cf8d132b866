"""The benchmark matrix: variant x backend x precision x graph x threads x mode, one process per row.

Each row runs in its own worker process (:mod:`mfv2.bench.worker`), so its peak resident memory is
its own and an ONNX Runtime or OpenVINO row imports no torch. The GEMM peak probe runs in a process
of its own too. The baseline of every variant, mode and thread count is its family's
official tracker path (:func:`official_path`: torch fp32, the full graph every frame for MixFormerV2,
the search graph against the cached template stem for MVT); each row's ``speedup`` is the
baseline's median latency over the row's, measured in the same run. Without an export directory the
variant is built with seeded random weights and exported into a cache: speed does not depend on the
weights, but the tracker's boxes then mean nothing beyond their agreement across backends.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfv2.artifacts.families import runtime_family_of
from mfv2.bench.config import BenchConfig, default_precisions
from mfv2.bench.envinfo import capture_env, cpu_info, load_average
from mfv2.bench.flops import count_flops, frame_flops
from mfv2.bench.load import busy_processes
from mfv2.bench.probe import PEAK_PRECISIONS, peak_precision
from mfv2.bench.report import RESULT_FIELDS
from mfv2.bench.rows import Artifacts, prepare_artifacts, rejected_status
from mfv2.config import FamilyConfig, family_variant_config
from mfv2.errors import ConfigError
from mfv2.geometry.boxes import iou_continuous

__all__ = ["plan_rows", "run_bench", "official_path"]

logger = logging.getLogger(__name__)

# The graph the official tracker runs per frame, by template policy: a family whose template never
# changes (policy none, MVT) caches the template state at init and runs the search graph; MixFormerV2's
# released tracker (online templates) runs the full forward every frame.
_OFFICIAL_GRAPH = {"none": "split", "online": "full"}


def _variant_config(variant: str) -> FamilyConfig:
    """The architecture of a variant name or of an export directory's manifest."""
    if Path(variant).is_dir():
        from mfv2.artifacts import load_manifest

        return load_manifest(variant).model
    return family_variant_config(variant)


def official_path(variant: str) -> tuple[str, str, str]:
    """(backend, precision, graph) of the official tracker of ``variant``'s family: the speed-ups' baseline."""
    return "torch", "fp32", _OFFICIAL_GRAPH[runtime_family_of(_variant_config(variant)).template_policy]


def _backends(config: BenchConfig) -> list[tuple[str, bool]]:
    """(name, installed) of the backends to run, torch first; by default every registered one."""
    from mfv2.runtimes import BACKENDS, available_backends

    available = set(available_backends())
    names = list(config.backends) if config.backends else list(BACKENDS)
    return [(b, b in available) for b in sorted(dict.fromkeys(names), key=lambda b: b != "torch")]


def plan_rows(config: BenchConfig, variants: Sequence[str], flags: Sequence[str]) -> list[dict[str, Any]]:
    """The rows to run, baseline first within each variant and mode; one round.

    A backend that is not installed and was not asked for by name gets one row per mode, so the
    report says why it is missing without a block of identical failures.
    """
    threads = config.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,)
    rows = []
    for variant in variants:
        baseline = official_path(variant)
        for mode in config.modes:
            for t in threads:
                rows.append(dict(variant=variant, backend="torch", precision="fp32", graph=baseline[2], mode=mode, threads=t,
                                 baseline=True, **_torch_keys(config, False)))  # fmt: skip
                for backend, installed in _backends(config):
                    precisions = config.precisions or default_precisions(backend, flags)
                    graphed = config.cuda_graphs if backend == "torch" else (False,)
                    combos = [(p, g, c) for p in precisions for g in config.graphs for c in graphed
                              if (backend, p, g) != baseline or c]  # fmt: skip
                    if not installed and not config.backends:
                        combos = combos[:1]
                    rows += [dict(variant=variant, backend=backend, precision=p, graph=g, mode=mode, threads=t, baseline=False,
                                  **(_torch_keys(config, c) if backend == "torch" else {}))
                             for p, g, c in combos]  # fmt: skip
    return rows


def _torch_keys(config: BenchConfig, cuda_graph: bool) -> dict[str, Any]:
    """The torch-backend options of a torch row; none on the CPU defaults, so CPU reports keep their rows."""
    keys: dict[str, Any] = {"device": config.device} if config.device != "cpu" else {}
    if config.cuda_graphs != (False,):
        keys["cuda_graph"] = cuda_graph
    if config.compile:
        keys["compile"] = config.compile
    return keys


def _spawn(args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m mfv2.bench.worker ARGS --out FILE`` and read FILE; failures become a status."""
    with tempfile.TemporaryDirectory(prefix="mfv2-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "mfv2.bench.worker", *args, "--out", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": f"timeout after {timeout:.0f} s"}
        if out.is_file():
            return json.loads(out.read_text())
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"crashed (exit {proc.returncode}): {tail[:200]}"}


def _pool(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the rounds of one row: samples pooled, memory the maximum, the rest from round one."""
    from mfv2.bench.latency import LatencyStats

    ok = [p for p in parts if p.get("status") == "ok"]
    if not ok:
        return parts[0]
    merged = dict(ok[0])
    samples = np.concatenate([p["samples_ms"] for p in ok])
    merged.update(LatencyStats.from_samples(samples, ok[0]["first_ms"]).to_dict())
    merged["peak_rss_mb"] = max(p["peak_rss_mb"] for p in ok)
    return merged


def _finish(row: dict[str, Any], result: dict[str, Any], base: dict[str, Any] | None, peaks: dict[str, Any],
            arts: Artifacts, idle: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Add the derived columns: speed-up, FLOPs, % of peak, agreement with the baseline, and for a row
    beside background load its slow-down against the same path idle (``idle``)."""
    out = {**dict.fromkeys(RESULT_FIELDS), **row}
    out.update({k: v for k, v in result.items() if k not in ("samples_ms", "boxes")})
    cfg = arts.config
    online = runtime_family_of(cfg).template_policy == "online"  # a fixed template is encoded once, not amortised
    try:
        if row["mode"] == "model":
            flops: int | None = count_flops(cfg, "full" if row["graph"] == "full" else "search_decoder", arts.export_dir)
        else:
            flops = frame_flops(cfg, row["graph"], update_interval=arts.update_interval if online else None,
                                export_dir=arts.export_dir)  # fmt: skip
    except (ConfigError, OSError):  # no export to count a family without an analytic count from
        flops = None
    out["gflops_per_frame"] = flops / 1e9 if flops is not None else None
    ok = out.get("status") == "ok"
    on_cpu = row.get("device", "cpu") == "cpu"  # the probe measures the CPU's GEMM peak, not a GPU's
    peak = (peaks.get(str(row["threads"])) or {}).get(peak_precision(row["precision"]), {}).get("gops") if on_cpu else None
    out["pct_peak"] = 100.0 * flops / 1e9 / (out["median_ms"] / 1000.0) / peak if ok and peak and flops else None
    peak_cpu = (peaks.get(str(row["threads"])) or {}).get(peak_precision(row["precision"]), {}).get("gops_cpu") if on_cpu else None
    if ok and peak_cpu and flops and out.get("cpu_ms"):
        out["pct_peak_cpu"] = 100.0 * flops / 1e9 / (out["cpu_ms"] / 1000.0) / peak_cpu
    if idle is not None and ok and idle.get("status") == "ok" and row.get("background_load"):
        out["loaded_slowdown"] = out["median_ms"] / idle["median_ms"]
    base_ok = ok and base is not None and base.get("status") == "ok"
    out["speedup"] = base["median_ms"] / out["median_ms"] if base_ok and base is not None else None
    if base_ok and base is not None and base.get("cpu_ms") and out.get("cpu_ms"):
        out["cpu_speedup"] = base["cpu_ms"] / out["cpu_ms"]
    base_boxes = base.get("boxes") if base_ok and base is not None else None
    if base_boxes is not None and result.get("boxes") is not None:
        a, b = np.asarray(result["boxes"], dtype=np.float64), np.asarray(base_boxes, dtype=np.float64)
        if row["mode"] == "model":
            out["box_err"] = float(np.abs(a - b).max())
        elif a.shape == b.shape:
            iou = np.nan_to_num(iou_continuous(a, b), nan=0.0)  # a NaN box is a miss
            out["fidelity"] = {"iou_ge_0.9": float((iou >= 0.9).mean()), "mean_iou": float(iou.mean())}
    return out


def _measure_peaks(config: BenchConfig, threads: Sequence[int]) -> dict[str, Any]:
    peaks: dict[str, Any] = {}
    for t in threads:
        spec = {"threads": t, "precisions": list(PEAK_PRECISIONS), "duration": config.probe_duration,
                "sizes": list(config.probe_sizes)}  # fmt: skip
        res = _spawn(["--probe", json.dumps(spec)], config.timeout)
        peaks[str(t)] = res.get("peaks") or {p: {"gops": None, "status": res.get("status")} for p in PEAK_PRECISIONS}
    return peaks


def _auto_choices(config: BenchConfig, arts: dict[str, Artifacts]) -> dict[str, Any]:
    """What ``backend="auto"`` picks for each export (in a worker process), or why it could not."""
    out: dict[str, Any] = {}
    for variant, a in arts.items():
        if config.auto and a.export_dir and config.device == "cpu":
            out[variant] = _spawn(["--auto", json.dumps({"artifact": a.export_dir})], config.timeout)
    return out


def _row_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(r.get(k) for k in ("variant", "backend", "precision", "graph", "mode", "threads", "device", "cuda_graph"))


def run_bench(config: BenchConfig, *, command: str = "") -> dict[str, Any]:
    """Run the matrix and return the report (see :mod:`mfv2.bench.report`)."""
    flags = cpu_info()["flags"]
    env = capture_env()
    variants = [config.model] if config.model else list(config.variants)
    rows = plan_rows(config, variants, flags)
    threads = sorted({r["threads"] for r in rows})
    env["threads"] = threads
    arts: dict[str, Artifacts] = {}
    for v in variants:
        needed = {(r["backend"], r["precision"]) for r in rows if r["variant"] == v}
        arts[v] = prepare_artifacts(v, needed, config)
    peaks = _measure_peaks(config, threads)
    auto = _auto_choices(config, arts)
    if config.background_load:  # every row idle, then beside the busy processes
        rows = [{**r, "background_load": n} for n in (0, config.background_load) for r in rows]
    raw: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(rows))}
    levels = sorted({r.get("background_load") or 0 for r in rows})
    for rnd in range(config.rounds):
        for level in levels:
            with busy_processes(level):  # stopped on every exit, Ctrl-C included
                for i, row in enumerate(rows):
                    if (row.get("background_load") or 0) == level:
                        raw[i].append(_run_one(config, arts[row["variant"]], row))
                        res = raw[i][-1]
                        logger.info("round %d row %d/%d %s %s %s %s %s t%d load+%d: %s %s", rnd + 1, i + 1, len(rows),
                                    row["variant"], row["backend"], row["precision"], row["graph"], row["mode"],
                                    row["threads"], level, res.get("status"),
                                    f"{res['median_ms']:.2f} ms" if res.get("status") == "ok" else "")  # fmt: skip
    pooled = [_pool(raw[i]) for i in range(len(rows))]

    def base_key(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["variant"], r["mode"], r["threads"], r.get("background_load")

    baselines = {base_key(r): p for r, p in zip(rows, pooled) if r["baseline"]}
    idle = {_row_key(r): p for r, p in zip(rows, pooled) if not r.get("background_load")}
    results = [_finish(r, p, baselines.get(base_key(r)), peaks, arts[r["variant"]], idle.get(_row_key(r)))
               for r, p in zip(rows, pooled)]  # fmt: skip
    return _report(config, command, env, peaks, auto, arts, results)


def _run_one(config: BenchConfig, a: Artifacts, row: dict[str, Any]) -> dict[str, Any]:
    """One row's result (its worker's), or the status saying why it could not run."""
    from mfv2.runtimes import get_backend

    runs = get_backend(row["backend"]).precisions
    if row["precision"] not in runs:  # asked for in --precisions, but not a precision this backend has
        return {"status": f"not run: the {row['backend']} backend runs {', '.join(runs)}, not {row['precision']}"}
    if a.error and not (row["backend"] == "torch" and a.checkpoint):
        return {"status": a.error}
    if a.manifest is not None and row["backend"] != "torch":
        rejected = rejected_status(a.manifest, row["backend"], row["precision"], row["graph"])
        if rejected:
            return {"status": rejected}
    spec = {**row, **a.spec(row["backend"]), "warmup": config.warmup, "iters": config.iters,
            "duration": config.duration, "frames": config.frames, "video": config.video}  # fmt: skip
    return _spawn(["--row", json.dumps(spec)], config.timeout)


def _report(config: BenchConfig, command: str, env: dict[str, Any], peaks: dict[str, Any], auto: dict[str, Any],
            arts: dict[str, Artifacts], results: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    env["load_average_end"] = load_average()
    notes = [a.note for a in arts.values() if a.note]
    notes += [
        "speedup = baseline median / row median, same run; the baseline (Speed-up 1.00x) is each family's official "
        "tracker path: " + "; ".join(f"{v}: {' '.join(official_path(v))}" for v in arts),
        "model mode times one search frame per call; for split rows the template encoder runs once per "
        "template update and is reported as template_ms",
        "tracker mode times tracker.update() per frame (crop, preprocessing, model, post-processing) on a "
        "synthetic clip; its FLOPs amortise the template encoder over the update interval",
        "pct_peak = model FLOPs per frame / median time / the GEMM peak of the row's precision and threads "
        "(fp16 against the fp32 peak)",
        "peak_rss_mb is the maximum resident memory of the row's own process",
        "pct_peak_cpu is the same ratio on the process CPU clock (row CPU time against the probe's CPU-clock peak), "
        "the estimate to trust when the machine was loaded",
        "cpu_ms is the median process CPU time per call (all threads of the row's process) and cpu_speedup the "
        "baseline's over the row's; with one thread it estimates the latency of an unloaded machine, with more it "
        "is the CPU cost (spinning threads included)",
        "load_1m is the 1-minute load average when the row started: above the core count, other processes "
        "competed for the CPU and multi-threaded rows (torch most) lose more than single-threaded ones",
    ]
    if config.background_load:
        notes.append(f"BG load N rows ran beside N busy-looping processes started by the bench (--background-load "
                     f"{config.background_load}); x idle = their median over the same path's median without them, "
                     "same run; speed-ups compare with the baseline under the same load")  # fmt: skip
    if "video" in config.modes:
        notes.append(f"video mode tracks {config.video} end to end: ms per frame from one box to the next, decode "
                     "on a background thread included; Update ms is the time inside tracker.update() of the same "
                     "frames and Decode ms the file's decode time per frame read alone")  # fmt: skip
    return {"command": command, "env": env, "peaks": peaks, "settings": config.to_dict(), "notes": notes,
            "auto": auto, "results": results}  # fmt: skip
