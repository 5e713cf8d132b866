"""Background load for ``mfv2 bench --background-load N``: N busy-looping processes, started and stopped here."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["busy_processes"]

# Each loop also ends by itself once its parent is gone: a bench killed by SIGTERM or SIGKILL runs no
# ``finally``, and busy orphans would keep a core busy for ever.
_BUSY = "import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent: pass"


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run ``n`` processes that each keep one core busy (a pure-Python loop) for the ``with`` block.

    They are killed and reaped on every exit of the block, an exception or Ctrl-C included.
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", _BUSY, str(os.getpid())], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
