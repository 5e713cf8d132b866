"""TensorRT facts shared by the engine builder (:mod:`mfv2.exporters.tensorrt`) and the runtime
(:mod:`mfv2.runtimes.tensorrt_backend`): the import, the one process-wide logger, and the environment
an engine sidecar records and is checked against (:mod:`mfv2.artifacts.engine`).

A floor module: it imports nothing of mfv2 but ``errors``, so neither user reaches into the other.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from mfv2.errors import BackendUnavailableError

if TYPE_CHECKING:
    from mfv2._cuda import DeviceInfo

__all__ = ["import_tensorrt", "trt_logger", "environment", "nvidia_smi_driver"]


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None


def nvidia_smi_driver(uuid: str) -> str:
    """The driver version ``nvidia-smi`` reports for the GPU ``uuid``; ``""`` without nvidia-smi (Jetson, slim containers)."""
    if not uuid:
        return ""
    out = _run(["nvidia-smi", f"--id={uuid}", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.strip().splitlines()[0].strip() if out and out.strip() else ""


def environment(trt: Any, device: DeviceInfo) -> dict[str, Any]:
    """TensorRT, CUDA and GPU facts of the CUDA device in use, as recorded in and checked against a sidecar.

    The GPU comes from the CUDA runtime (the device that builds or runs the engine, after
    ``CUDA_VISIBLE_DEVICES``); nvidia-smi only adds the driver version where it exists.
    """
    return {
        "tensorrt": str(getattr(trt, "__version__", "")),
        "cuda": device.cuda_runtime,
        "cuda_driver": device.cuda_driver,
        "gpu": device.name,
        "compute_capability": device.compute_capability,
        "gpu_memory_mb": device.memory_mb,
        "gpu_uuid": device.uuid,
        "device_id": device.device_id,
        "driver": nvidia_smi_driver(device.uuid),
    }


def import_tensorrt() -> Any:
    """``import tensorrt``, or a one-line error naming the extra to install."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(
            'TensorRT is not installed; pip install "mfv2[tensorrt]" on the machine with the NVIDIA GPU'
        ) from e
    return trt


@functools.cache
def trt_logger(trt: Any) -> Any:
    """The one TensorRT logger of this process, passing TensorRT's messages to :mod:`logging`.

    TensorRT keeps a single global logger (the first one a builder or runtime receives), so every
    builder and runtime mfv2 creates gets this instance. Messages go to the ``mfv2.tensorrt`` logger:
    errors as ERROR, warnings as WARNING, info and verbose as DEBUG.
    """
    sev = trt.ILogger.Severity
    levels = {sev.INTERNAL_ERROR: logging.CRITICAL, sev.ERROR: logging.ERROR, sev.WARNING: logging.WARNING,
              sev.INFO: logging.DEBUG, sev.VERBOSE: logging.DEBUG}
    sink = logging.getLogger("mfv2.tensorrt")

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity, logging.DEBUG)
            if sink.isEnabledFor(level):
                sink.log(level, "TensorRT: %s", msg)

    return _Logger()
