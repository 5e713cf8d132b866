"""Import OpenVINO and NNCF with their telemetry off: mfv2 opens no network connection.

``import openvino`` (2024 and later) sends a Google Analytics event from a background thread unless
the user ran ``opt_in_out --opt_out`` (consent file ``~/intel/openvino_telemetry``); NNCF does the
same through the same ``openvino_telemetry`` package. Both fall back to a built-in no-op stub when
that package cannot be imported, so mfv2 makes it unimportable for this process before the first
import of either. If someone imported ``openvino_telemetry`` before mfv2 did, its consent is forced
to "declined" and its send calls become no-ops instead. Every mfv2 import of OpenVINO or NNCF goes
through this module (issue #18). Nothing is written to the user's home folder.
"""

from __future__ import annotations

import functools
import importlib

import sys
from types import ModuleType
from typing import Any

from mfv2.errors import BackendUnavailableError

__all__ = ["import_openvino", "import_nncf", "disable_telemetry", "core"]

_TELEMETRY = "openvino_telemetry"
_SEND_METHODS = ("send_event", "send_error", "send_stack_trace", "start_session", "end_session", "send_opt_in_event")


def _no_op(*args: Any, **kwargs: Any) -> None:
    return None


def disable_telemetry() -> None:
    """Keep OpenVINO's telemetry from loading (or, if it already has, from sending) in this process."""
    loaded = sys.modules.get(_TELEMETRY, None)
    if _TELEMETRY not in sys.modules:
        # A None entry makes ``import openvino_telemetry`` raise ImportError; openvino.tools.ovc and
        # nncf.telemetry catch it and use their stubs.
        sys.modules[_TELEMETRY] = None  # type: ignore[assignment]
        return
    if loaded is None:
        return
    telemetry = getattr(loaded, "Telemetry", None)
    if isinstance(telemetry, type):
        # A data descriptor on the class wins over the instance attribute that init() sets.
        telemetry.consent = property(lambda self: False, lambda self, value: None)  # type: ignore[attr-defined]
        for name in _SEND_METHODS:
            if hasattr(telemetry, name):
                setattr(telemetry, name, _no_op)


def _import(name: str, missing: str) -> ModuleType:
    """``import name`` with telemetry disabled first; not installed is a BackendUnavailableError(``missing``)."""
    disable_telemetry()
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise BackendUnavailableError(missing) from e


def import_openvino() -> ModuleType:
    """``import openvino`` with telemetry disabled first (BackendUnavailableError when not installed)."""
    return _import("openvino", 'OpenVINO is not installed; pip install "mfv2[openvino]"')


def import_nncf() -> ModuleType:
    """``import nncf`` with telemetry disabled first (BackendUnavailableError when not installed)."""
    return _import("nncf", 'OpenVINO int8 needs NNCF; pip install "mfv2[openvino]"')


@functools.cache
def core() -> Any:
    """The process's one ``openvino.Core``.

    Each Core that touches the CPU device installs an alternate signal stack of its own and unmaps it
    when dropped; two Cores dropped in creation order leave the thread's stack pointing at unmapped
    memory, and the next Python-handled signal (Ctrl-C, SIGCHLD) then kills the process with a
    SIGSEGV (benchmarks/segfault/). One Core, kept for the process, never drops its stack.
    """
    return import_openvino().Core()
