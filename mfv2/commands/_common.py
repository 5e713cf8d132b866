"""The option group track, eval, bench, demo and vot-config share: backend, model, precision, graph,
threads, device; bench takes the plural, comma-separated form (:func:`add_runtime_lists`).

The precision and graph choices come from the format table (:mod:`mfv2.artifacts.formats`) and the
backend names from the backend registry, so a format that gains a precision or a new backend shows up
in every command at once. Importing this module stays light (no runtime package): ``mfv2 --help``
builds every subcommand's parser.
"""

from __future__ import annotations

import argparse
from typing import Any

from mfv2.artifacts.formats import GRAPH_MODES, GRAPH_SETS, PRECISIONS
from mfv2.errors import ConfigError
from mfv2.runtimes import BACKENDS

__all__ = ["PRECISIONS", "GRAPHS", "BACKENDS_HELP", "add_model_options", "add_runtime_options", "add_runtime_lists",
           "add_threads_option", "backend_options", "csv_choices", "csv_items", "csv_ints", "precision_of"]

#: ``split`` (the template encoder and search decoder), ``full``, and ``auto`` (split when exported).
GRAPHS: tuple[str, ...] = GRAPH_MODES
#: The built-in backends (plugins register theirs when first asked for, see runtimes.base).
_BACKEND_NAMES = ", ".join(BACKENDS.names())
BACKENDS_HELP = f"{_BACKEND_NAMES}, a plugin backend, or auto"
_THREADS_HELP = "CPU threads of the runtime (default: the runtime's choice)"


def add_model_options(p: argparse.ArgumentParser, *, checkpoint_help: str, variant_help: str,
                      model_help: str = "export directory written by 'mfv2 export'") -> None:  # fmt: skip
    """``--model DIR`` or ``--checkpoint CK`` (one of them), and ``--variant``."""
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", metavar="DIR", help=model_help)
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
    add_threads_option(g)
    if device:
        g.add_argument("--device", help="backend device: cpu/cuda (torch), cpu/cuda/tensorrt (onnxruntime), CPU/GPU (openvino), N (tensorrt)")


def add_threads_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, help: str = _THREADS_HELP) -> None:
    """``--threads N`` (commands that run every backend, such as demo, take only this one)."""
    p.add_argument("--threads", type=int, help=help)


def add_runtime_lists(p: argparse.ArgumentParser) -> None:
    """bench's plural form: ``--backends``, ``--precisions``, ``--graphs`` and ``--threads``, comma-separated.

    Read them with :func:`csv_items`, :func:`csv_choices` and :func:`csv_ints`.
    """
    g = p.add_argument_group("runtime (comma-separated lists)")
    g.add_argument("--backends", help=f"comma-separated among {_BACKEND_NAMES}, a plugin backend (default: every installed backend)")
    g.add_argument("--precisions", help=f"comma-separated among {','.join(PRECISIONS)} (default: sensible ones per backend)")
    g.add_argument("--graphs", default=",".join(GRAPH_SETS), help=f"{' and/or '.join(GRAPH_SETS)} (default both)")
    g.add_argument("--threads", help="thread counts, comma-separated (default: the usable CPUs)")


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


def csv_items(value: str) -> tuple[str, ...]:
    """The non-empty items of a comma-separated list."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def csv_ints(option: str, value: str, example: str = "1,2") -> tuple[int, ...]:
    """A comma-separated list of integers.

    Raises:
        ConfigError: an item that is not an integer, naming ``option`` and an ``example``.
    """
    try:
        return tuple(int(v) for v in csv_items(value))
    except ValueError as e:
        raise ConfigError(f"{option} must be comma-separated integers, e.g. {example} (got {value!r})") from e


def csv_choices(option: str, value: str, choices: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma-separated list whose items must be among ``choices`` (bench's plural options)."""
    items = csv_items(value)
    bad = [v for v in items if v not in choices]
    if bad:
        raise ConfigError(f"{option}: unknown {what} {', '.join(bad)}; choose from {', '.join(choices)}")
    return items

