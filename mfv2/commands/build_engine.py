"""``mfv2 build-engine``: TensorRT engines from an export directory, on the GPU that will run them."""

from __future__ import annotations

import argparse

HELP = "build TensorRT engines (byte-pure .engine + sidecar JSON) from an export directory, on this GPU"
EXAMPLE = "mfv2 build-engine exports/S --fp16 --workspace 2048 --timing-cache exports/S/timing.cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", metavar="DIR", help="export directory written by 'mfv2 export'")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="from the typed *.fp16.onnx")
    prec.add_argument("--int8", dest="precision", action="store_const", const="int8", help="from the TensorRT int8 graph *.int8-trt.onnx")
    prec.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                      help="weak typing, TensorRT 10 only, compute capability 8.0+")
    p.set_defaults(precision="fp32")
    p.add_argument("--graphs", default="all", help="full, split or all (default: every graph of the export)")
    p.add_argument("--workspace", type=int, metavar="MB", help="builder workspace limit in MiB")
    p.add_argument("--timing-cache", metavar="F", help="timing-cache file to reuse and update")
    p.add_argument("--device", type=int, default=0, metavar="N",
                   help="CUDA device to build on and for (default 0, after CUDA_VISIBLE_DEVICES); nvidia-smi is not needed")


def run(args: argparse.Namespace) -> int:
    from mfv2.errors import ConfigError
    from mfv2.artifacts import GRAPH_SETS
    from mfv2.exporters.tensorrt import build_engines

    choices: dict[str, tuple[str, ...] | None] = {**GRAPH_SETS, "all": None}
    if args.graphs not in choices:
        raise ConfigError(f"--graphs {args.graphs!r}: choose {', '.join(choices)}")
    if args.workspace is not None and args.workspace < 1:
        raise ConfigError(f"--workspace must be a positive number of MiB, got {args.workspace}")
    if args.device < 0:
        raise ConfigError(f"--device must be a CUDA device number (0, 1, ...), got {args.device}")
    engines = build_engines(
        args.directory, args.precision, graphs=choices[args.graphs], workspace_mb=args.workspace,
        timing_cache=args.timing_cache, device_id=args.device,
    )
    for engine in engines:
        print(f"wrote {engine} ({engine.stat().st_size / 1e6:.1f} MB) and {engine.name}.json")
    return 0
