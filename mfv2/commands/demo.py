"""``mfv2 demo``: the main job on a built-in default, with no files needed."""

from __future__ import annotations

import argparse

from mfv2.commands._common import add_threads_option

HELP = "export MixFormerV2-S, track a synthetic clip on every installed backend, report speed and agreement"
EXAMPLE = "mfv2 demo --output demo_report --threads 2"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="demo_report", help="report folder (default demo_report)")
    p.add_argument("--checkpoint", help="model to use (default: the shipped demo model, else seeded random S weights)")
    p.add_argument("--frames", type=int, default=150, help="length of the synthetic clip (default 150)")
    add_threads_option(p, help="CPU threads of each runtime (default: the runtime's choice)")
    p.add_argument("--quick", action="store_true", help="fp32 paths and a short clip only")


def run(args: argparse.Namespace) -> int:
    import sys

    from mfv2.bench.demo import DemoRow, format_rows, run_demo
    from mfv2.errors import ConfigError

    if args.frames < 2:
        raise ConfigError(f"--frames must be at least 2, got {args.frames}")
    report = run_demo(args.output, checkpoint=args.checkpoint, frames=args.frames, threads=args.threads,
                      quick=args.quick, say=lambda line: print(line, file=sys.stderr))  # fmt: skip
    rows = [DemoRow(**{k: v for k, v in r.items() if k != "label"}) for r in report["rows"]]
    print(format_rows(rows))
    print(f"report: {args.output}/summary.md, demo.json, fps.png, tracked.mp4")
    return 0
