"""Runtime backends behind one interface: ``load_backend(name, artifact) -> ModelRunner``.

Built-in backends: ``torch`` (eager reference), ``onnxruntime``, ``openvino`` and ``tensorrt``. Each
imports its runtime package on first use, so importing this package needs none of them.
"""

from __future__ import annotations

from mfv2.runtimes import onnxruntime_backend, openvino_backend, tensorrt_backend, torch_backend  # noqa: F401  (register)
from mfv2.runtimes.base import BACKENDS, Backend, BaseSession, FileBackend, Session, available_backends, get_backend
from mfv2.runtimes.runner import ModelRunner, cached_export, load_backend

__all__ = [
    "Session",
    "BaseSession",
    "Backend",
    "FileBackend",
    "BACKENDS",
    "ModelRunner",
    "available_backends",
    "get_backend",
    "load_backend",
    "cached_export",
]
