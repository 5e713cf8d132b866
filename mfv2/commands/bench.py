"""``mfv2 bench``: compare backends, precisions, graphs and thread counts on this machine."""

from __future__ import annotations

import argparse
import shlex
import sys

from mfv2.artifacts.formats import GRAPH_SETS
from mfv2.commands._common import PRECISIONS, add_runtime_lists, csv_choices, csv_ints, csv_items

HELP = "benchmark backends x precisions x graphs x threads, model-only and the whole tracker loop"
EXAMPLE = (
    "mfv2 bench --variant S --backends torch,onnxruntime,openvino --precisions fp32,bf16,int8 "
    "--threads 2 --json bench.json --markdown bench.md --plot bench.png"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="S", help="model variant(s), comma-separated (default S); random weights")
    p.add_argument("--model", help="an export directory to benchmark instead of --variant")
    p.add_argument("--checkpoint", help="weights for the torch rows and the export (default: seeded random weights)")
    add_runtime_lists(p)
    p.add_argument("--mode", default="model,tracker",
                   help="model, tracker and/or video (end to end on --video; default model,tracker)")
    p.add_argument("--video", metavar="FILE", help="video file of the video mode (e.g. an H.264 .mp4)")
    p.add_argument("--background-load", type=int, default=0, metavar="N",
                   help="run every row twice: as the machine is, and beside N busy-looping processes (default 0)")
    p.add_argument("--no-auto", action="store_true", help="skip the backend=auto calibration (default: report its pick)")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--iters", type=int, help="timed calls per model-only row (default 200, capped at 10 s)")
    limit.add_argument("--duration", type=float, help="seconds per model-only row instead of a count")
    p.add_argument("--warmup", type=int, help="untimed calls (frames) before timing (default 10)")
    p.add_argument("--frames", type=int, help="tracker-mode clip length (default 300)")
    p.add_argument("--rounds", type=int, default=1, help="run the matrix this many times, interleaved, pooling samples")
    p.add_argument("--quick", action="store_true", help="a short smoke run: 30 calls, 40 frames, a short GEMM probe")
    p.add_argument("--cache", help="where random-weight checkpoints and their exports are kept (default: $MFV2_CACHE or ~/.cache/mfv2, "
                   "checkpoints in bench/, exports in the export cache exports/ that track and eval use too)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before a row is stopped (default 1800)")
    gpu = p.add_argument_group("torch rows on a GPU")
    gpu.add_argument("--device", default="cpu", help="device of the torch rows: cpu (default), cuda or cuda:N")
    gpu.add_argument("--cuda-graph", default="off", help="off, on or off,on: torch rows eager and/or replayed from a CUDA graph")
    gpu.add_argument("--compile", help="torch.compile mode of the torch rows' per-frame step (default: none)")
    p.add_argument("--targets", metavar="N,N,...",
                   help="instead of the matrix: N targets batched in one MultiTracker against N independent trackers, "
                        "same run (e.g. 1,2,4,8; default paths onnxruntime and openvino, fp32 and int8)")
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--markdown", help="write the report as Markdown")
    p.add_argument("--plot", help="write a PNG bar chart")
    p.add_argument("--compare", help="an earlier --json report to show the change against")


def config_from_args(args: argparse.Namespace):  # noqa: ANN201  (BenchConfig, imported lazily)
    """The :class:`~mfv2.bench.config.BenchConfig` of the command-line options."""
    from mfv2.bench.config import BenchConfig
    from mfv2.errors import ConfigError

    threads = csv_ints("--threads", args.threads) if args.threads else ()
    precisions = csv_choices("--precisions", args.precisions, PRECISIONS, "precision") if args.precisions else None
    graphs_on = {"off": False, "on": True}
    if not csv_items(args.cuda_graph) or any(c not in graphs_on for c in csv_items(args.cuda_graph)):
        raise ConfigError(f"--cuda-graph takes off, on or off,on, got {args.cuda_graph!r}")
    quick = dict(iters=30, duration=5.0, warmup=3, frames=40, probe_duration=0.1, probe_sizes=(256, 512)) if args.quick else {}
    values = dict(
        variants=csv_items(args.variant),
        model=args.model,
        checkpoint=args.checkpoint,
        backends=csv_items(args.backends) if args.backends else None,
        precisions=precisions,
        graphs=csv_choices("--graphs", args.graphs, tuple(GRAPH_SETS), "graph"),
        threads=threads,
        modes=csv_items(args.mode) + (("video",) if args.video and "video" not in csv_items(args.mode) else ()),
        rounds=args.rounds,
        cache_dir=args.cache,
        timeout=args.timeout,
        device=args.device,
        cuda_graphs=tuple(graphs_on[c] for c in csv_items(args.cuda_graph)),
        compile=args.compile,
        video=args.video,
        background_load=args.background_load,
        auto=not args.no_auto,
        **quick,
    )
    if args.iters is not None:
        values.update(iters=args.iters, duration=None)
    if args.duration is not None:
        values.update(iters=None, duration=args.duration)
    values.update({k: getattr(args, k) for k in ("warmup", "frames") if getattr(args, k) is not None})
    return BenchConfig(**values)


def run(args: argparse.Namespace) -> int:
    from mfv2.bench.matrix import run_bench
    from mfv2.bench.report import (
        auto_lines,
        compare_results,
        failure_lines,
        format_compare,
        format_table,
        load_report,
        plot_bars,
        write_json,
        write_markdown,
    )

    from mfv2.fileio import check_output_file

    if args.targets:
        return _run_targets(args)
    config = config_from_args(args)
    old = load_report(args.compare) if args.compare else None  # fail on a bad file before the long run
    for target in (args.json, args.markdown, args.plot):  # and on an unwritable output
        if target:
            check_output_file(target, create_parent=True)
    report = run_bench(config, command=shlex.join(["mfv2", *sys.argv[1:]]) if sys.argv[1:] else "mfv2 bench")
    if old is not None:
        report["compare"] = compare_results(report["results"], old["results"])
    env = report["env"]
    print(f"mfv2 bench on {env['cpu']['model']} ({env['isa']}), threads {env['threads']}, load average {env['load_average']}")
    print(format_table(report["results"]))
    for line in failure_lines(report["results"]):
        print(f"not run: {line}")
    for line in auto_lines(report):
        print(line)
    if old is not None:
        print(f"Change against {args.compare}:")
        print(format_compare(report["compare"]))
    for note in report["notes"]:
        print(f"note: {note}")
    if args.json:
        print(f"wrote {write_json(args.json, report)}")
    if args.markdown:
        print(f"wrote {write_markdown(args.markdown, report)}")
    if args.plot:
        print(f"wrote {plot_bars(args.plot, report)}")
    return 0


def _run_targets(args: argparse.Namespace) -> int:
    """``--targets``: the batched-vs-independent rows (:mod:`mfv2.bench.targets`)."""
    import json

    from mfv2.bench.targets import TARGET_PATHS, bench_targets, format_targets
    from mfv2.errors import ConfigError
    from mfv2.fileio import atomic_write_text, check_output_file

    targets = csv_ints("--targets", args.targets, "1,2,4,8")
    threads: tuple[int | None, ...] = csv_ints("--threads", args.threads) if args.threads else (None,)
    backends = csv_items(args.backends) if args.backends else ("onnxruntime", "openvino")
    precisions = csv_choices("--precisions", args.precisions, PRECISIONS, "precision") if args.precisions else None
    paths = [(b, p) for b, p in TARGET_PATHS if b in backends and (precisions is None or p in precisions)]
    paths += [(b, p) for b in backends for p in precisions or () if (b, p) not in paths]
    if not paths:
        raise ConfigError(f"--targets runs onnxruntime and openvino rows; got --backends {','.join(backends)}")
    if args.json:
        check_output_file(args.json, create_parent=True)
    frames = args.frames or (12 if args.quick else 40)
    report = bench_targets(csv_items(args.variant)[0], targets=targets, paths=paths, threads=threads, frames=frames,
                           warmup=args.warmup if args.warmup is not None else (1 if args.quick else 3),
                           rounds=args.rounds if args.rounds > 1 else (1 if args.quick else 2), cache_dir=args.cache)
    env = report["env"]
    print(f"mfv2 bench --targets on {env['cpu']['model']} ({env['isa']}), load average {env['load_average']}")
    print(format_targets(report["rows"]))
    if args.json:
        print(f"wrote {atomic_write_text(args.json, json.dumps(report, indent=2) + chr(10))}")
    return 0
