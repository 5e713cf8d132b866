"""The ``mfv2`` command: argparse subcommands, each defined in ``mfv2/commands/<name>.py``.

A command module exposes ``HELP`` (one line), ``EXAMPLE`` (shown under ``--help``),
``add_arguments(parser)`` and ``run(args) -> int``. Modules import heavy packages inside ``run``
only, so ``mfv2 --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from mfv2 import __version__
from mfv2.errors import Mfv2Error

__all__ = ["main", "get_parser", "COMMANDS"]

# Subcommand name -> module under mfv2.commands, in the order --help lists them.
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "synth": "synth",
    "convert": "convert",
    "export": "export",
    "build-engine": "build_engine",
    "track": "track",
    "bench": "bench",
    "eval": "eval",
    "train": "train",
    "distill": "distill",
    "vot-config": "vot_config",
}


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"mfv2.commands.{COMMANDS[name]}")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfv2",
        description="MixFormerV2 tracking from training to edge devices.",
        epilog="Run 'mfv2 COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"mfv2 {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _command(name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=f"example:\n  {module.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 runtime failure, 2 bad input)."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(_command(args.command).run(args) or 0)
    except Mfv2Error as e:
        if args.debug:
            raise
        print(f"mfv2: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("mfv2: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
