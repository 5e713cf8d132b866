"""``mfv2 vot-config``: print a ``trackers.ini`` section that runs an mfv2 model in the VOT toolkit."""

from __future__ import annotations

import argparse

from mfv2.commands._common import add_model_options, add_runtime_options

HELP = "print a VOT-toolkit trackers.ini section for a model (TraX or the toolkit's python protocol)"
EXAMPLE = "mfv2 vot-config --model exports/S --backend openvino --threads 2 --output vot-workspace/trackers.ini"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p, model_help="export directory (default: the shipped demo model)",
                      checkpoint_help="checkpoint instead of --model (non-torch backends export it on first use)",
                      variant_help="architecture of --checkpoint (default: detect)")  # fmt: skip
    add_runtime_options(p, device=False)  # the TraX entry runs on the backend's default device
    p.add_argument("--preset", default="vot20", help="tracker settings (default vot20)")
    p.add_argument("--name", help="tracker identifier in the workspace (default mfv2_<model>_<backend>_<precision>)")
    p.add_argument("--protocol", default="traxpython", choices=("traxpython", "python"),
                   help="traxpython: a TraX process (default); python: the toolkit imports the tracker itself")
    p.add_argument("--python", help="interpreter of the TraX process (default: this one, where mfv2 is installed)")
    p.add_argument("--timeout", type=int, default=120, help="seconds the toolkit waits for a reply (default 120)")
    p.add_argument("--output", metavar="INI", help="append the section to this trackers.ini (created if absent) "
                   "instead of printing it")


def run(args: argparse.Namespace) -> int:
    import re
    import sys
    from pathlib import Path

    import mfv2
    from mfv2.errors import ConfigError
    from mfv2.integrations.vot import trackers_ini
    from mfv2.runtimes.base import get_backend

    get_backend(args.backend)  # an unknown name fails here with close matches
    options = ["--backend", args.backend, "--precision", args.precision, "--graph", args.graph, "--preset", args.preset]
    for flag in ("model", "checkpoint"):
        value = getattr(args, flag)
        if value is not None:
            if not Path(value).exists():
                raise ConfigError(f"--{flag} {value} does not exist")
            options += [f"--{flag}", str(Path(value).resolve())]
    if args.variant:
        options += ["--variant", args.variant]
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        options += ["--threads", str(args.threads)]
    if args.timeout < 1:
        raise ConfigError(f"--timeout must be >= 1 second, got {args.timeout}")
    if args.protocol == "traxpython" and args.python is None:
        import importlib.util
        import logging

        if importlib.util.find_spec("trax") is None:
            logging.getLogger(__name__).warning('vot-trax is not installed in %s; the TraX entry needs it: '
                                                'pip install "mfv2[vot]"', sys.executable)
    model = Path(args.model or args.checkpoint or "demo").name.split(".")[0]
    name = args.name or re.sub(r"[^A-Za-z0-9_-]", "_", f"mfv2_{model}_{args.backend}_{args.precision}")
    label = f"mfv2 {model} ({args.backend} {args.precision})"
    package_root = str(Path(mfv2.__file__).resolve().parent.parent)
    section = trackers_ini(name, protocol=args.protocol, options=options, python=args.python or sys.executable,
                           paths=[package_root], timeout=args.timeout, label=label)
    if args.output is None:
        print(section, end="")
        return 0
    import configparser

    from mfv2.fileio import atomic_write_text, check_output_file

    ini = check_output_file(args.output, create_parent=True)
    old = ini.read_text() if ini.is_file() else ""
    parser = configparser.ConfigParser()
    try:
        parser.read_string(old)
    except configparser.Error as e:
        raise ConfigError(f"{ini} is not a trackers.ini file: {str(e).splitlines()[0]}") from e
    if parser.has_section(name):
        raise ConfigError(f"{ini} already has a tracker [{name}]; choose another --name")
    sep = "" if not old or old.endswith("\n\n") else ("\n" if old.endswith("\n") else "\n\n")
    print(f"added tracker [{name}] to {atomic_write_text(ini, old + sep + section)}")
    return 0
