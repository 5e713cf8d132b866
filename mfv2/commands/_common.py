"""The option group track, eval, bench and demo share: backend, model, precision, graph, threads, device.

The precision and graph choices come from the format table (:mod:`mfv2.artifacts.formats`), so a
format that gains a precision shows up in every command at once. Importing this module stays light:
``mfv2 --help`` builds every subcommand's parser.
"""

from __future__ import annotations

import argparse
from typing import Any

from mfv2.artifacts.formats import FORMATS, GRAPH_STEMS, SPLIT_GRAPHS
from mfv2.errors import ConfigError

__all__ = ["PRECISIONS", "GRAPHS", "BACKENDS_HELP", "add_model_options", "add_runtime_options", "backend_options", "csv_choices",
           "precision_of"]

#: Every precision some format holds, in table order (fp32, fp16, int8, bf16).
PRECISIONS: tuple[str, ...] = tuple(dict.fromkeys(p for name in FORMATS for p in FORMATS.get(name).precisions))
#: ``split`` (the template encoder and search decoder), ``full``, and ``auto`` (split when exported).
GRAPHS: tuple[str, ...] = ("auto", "split", *(g for g in GRAPH_STEMS if g not in SPLIT_GRAPHS))
BACKENDS_HELP = "torch, onnxruntime, openvino, tensorrt, a plugin backend, or auto"


def add_model_options(p: argparse.ArgumentParser, *, checkpoint_help: str, variant_help: str) -> None:
    """``--model DIR`` or ``--checkpoint CK`` (one of them), and ``--variant``."""
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", metavar="DIR", help="export directory written by 'mfv2 export'")
    model.add_argument("--checkpoint", metavar="CK", help=checkpoint_help)
    p.add_argument("--variant", help=variant_help)


def add_runtime_options(p: argparse.ArgumentParser, *, device: bool = True, auto: bool = False) -> None:
    """``--backend``, ``--precision``, ``--graph``, ``--threads`` and (unless ``device=False``) ``--device``.

    With ``auto`` the backend defaults to ``auto`` (the fastest gated CPU path, calibrated once per
    machine and model) and the precision to ``auto`` with it, ``fp32`` with a named backend; read the
    precision with :func:`precision_of`.
    """
    g = p.add_argument_group("runtime")
    if auto:
        g.add_argument("--backend", default="auto", help=f"{BACKENDS_HELP} (default auto: the fastest path whose accuracy "
                       "gate passed, measured once on this machine)")  # fmt: skip
        g.add_argument("--precision", choices=(*PRECISIONS, "auto"), help="default: auto with --backend auto, else fp32")
    else:
        g.add_argument("--backend", default="onnxruntime", help=f"{BACKENDS_HELP} (default onnxruntime)")
        g.add_argument("--precision", default="fp32", choices=(*PRECISIONS, "auto"), help="default fp32")
    g.add_argument("--graph", default="auto", choices=GRAPHS, help="split template-KV graphs, the full graph, or auto (split when exported)")
    g.add_argument("--threads", type=int, help="CPU threads of the runtime (default: the runtime's choice)")
    if device:
        g.add_argument("--device", help="backend device: cpu/cuda (torch), cpu/cuda/tensorrt (onnxruntime), CPU/GPU (openvino), N (tensorrt)")


def precision_of(args: argparse.Namespace) -> str:
    """``--precision``, or its default: ``auto`` with ``--backend auto``, else ``fp32``."""
    return args.precision or ("auto" if args.backend == "auto" else "fp32")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """``load_backend`` keyword options from ``--variant`` (with a checkpoint) and ``--device``."""
    options: dict[str, Any] = {}
    if args.variant and args.checkpoint:
        options["variant"] = args.variant
    if getattr(args, "device", None):
        if args.backend == "tensorrt":
            try:
                options["device_id"] = int(args.device.removeprefix("cuda:"))
            except ValueError as e:
                raise ConfigError(f"--device for tensorrt is a GPU index such as 0, got {args.device!r}") from e
        else:
            options["device"] = args.device
    return options


def csv_choices(option: str, value: str, choices: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma-separated list whose items must be among ``choices`` (bench's plural options)."""
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in choices]
    if bad:
        raise ConfigError(f"{option}: unknown {what} {', '.join(bad)}; choose from {', '.join(choices)}")
    return items

