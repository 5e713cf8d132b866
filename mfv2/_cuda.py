"""The CUDA runtime calls of mfv2's TensorRT path, through cuda-python (``cuda.bindings.runtime``).

cuda-python is what NVIDIA's TensorRT samples use: it installs as wheels for CUDA 12 and 13 (no
toolkit needed to build it, so it works on Jetson runtime images), it has the stream-capture and
CUDA-graph API that pycuda lacks, and its runtime module imports without a GPU, so the error paths
can be tested on a CPU. Every call returns ``(error, *values)``; :func:`check` turns a failure into a
:class:`CudaError` naming the call, the error and CUDA's description of it.

The runtime API works on the device's primary context, which TensorRT uses too, so nothing here
creates, pushes or pops a context: a session selects its device (``cudaSetDevice``) before each use.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mfv2.errors import BackendUnavailableError, ConfigError, Mfv2Error

__all__ = [
    "CudaError",
    "import_cudart",
    "check",
    "error_text",
    "DeviceInfo",
    "device_info",
    "HostDeviceBuffer",
    "Stream",
    "CudaGraph",
    "capture_graph",
]

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "mfv2[tensorrt]" (cuda-python 12.x for CUDA 12 drivers, 13.x for CUDA 13)'
# Errors that mean "no usable GPU here" rather than a failed call.
_NO_DEVICE = ("cudaErrorNoDevice", "cudaErrorInsufficientDriver", "cudaErrorCompatNotSupportedOnDevice")


class CudaError(Mfv2Error):
    """A CUDA runtime call failed; the message names the call and CUDA's error."""


def import_cudart() -> Any:
    """The cuda-python runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.8)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # the layout of cuda-python < 12.8
        except ImportError as e:
            raise BackendUnavailableError(f"the TensorRT path needs cuda-python; install it with: {INSTALL_HINT}") from e
    return runtime


def error_text(cudart: Any, err: Any) -> str:
    """``cudaErrorName (description)`` of a ``cudaError_t``."""
    name, text = cudart.cudaGetErrorName(err)[1], cudart.cudaGetErrorString(err)[1]
    decode = (lambda b: b.decode(errors="replace") if isinstance(b, bytes) else str(b))
    return f"{decode(name)} ({decode(text)})"


def check(cudart: Any, result: tuple[Any, ...], what: str) -> Any:
    """The value(s) of a cuda-python call's ``(error, *values)`` result; :class:`CudaError` on failure."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"{what} failed: {error_text(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


@dataclass(frozen=True)
class DeviceInfo:
    """The CUDA device a build or a session uses, as CUDA numbers it (``CUDA_VISIBLE_DEVICES`` applies)."""

    device_id: int
    name: str
    compute_capability: str  # "8.6"
    memory_mb: int
    uuid: str  # "GPU-xxxxxxxx-...", as nvidia-smi prints it
    cuda_runtime: str  # the CUDA runtime cuda-python carries, "12.9"
    cuda_driver: str  # the newest CUDA the driver supports, "13.0"

    @property
    def capability(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}" if len(h) == 32 else ""


def device_info(device_id: int = 0, cudart: Any = None) -> DeviceInfo:
    """Name, compute capability and memory of CUDA device ``device_id``, from the CUDA runtime.

    Raises:
        BackendUnavailableError: cuda-python is missing, or there is no CUDA device or driver.
        ConfigError: ``device_id`` is not one of the devices CUDA sees.
    """
    cudart = cudart or import_cudart()
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        text = error_text(cudart, err)
        if any(text.startswith(n) for n in _NO_DEVICE):
            raise BackendUnavailableError(
                f"no CUDA device found ({text}): TensorRT engines are built and run on an NVIDIA GPU with its driver"
            )
        raise CudaError(f"cudaGetDeviceCount failed: {text}")
    if not 0 <= device_id < count:
        raise ConfigError(f"CUDA device {device_id} does not exist; this machine has {count} (0..{count - 1}, after CUDA_VISIBLE_DEVICES)")
    props = check(cudart, cudart.cudaGetDeviceProperties(device_id), f"cudaGetDeviceProperties({device_id})")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(
        device_id=device_id,
        name=name.rstrip("\0").strip(),
        compute_capability=f"{props.major}.{props.minor}",
        memory_mb=int(props.totalGlobalMem) >> 20,
        uuid=_uuid(bytes(props.uuid.bytes)),
        cuda_runtime=_version(check(cudart, cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
        cuda_driver=_version(check(cudart, cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")),
    )


class Stream:
    """A non-blocking CUDA stream (no implicit syncs with the legacy default stream, safe to capture)."""

    def __init__(self, cudart: Any) -> None:
        self._cudart = cudart
        self._stream: Any = check(cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    @property
    def handle(self) -> int:
        """The stream's integer handle, as ``execute_async_v3`` and the cuda-python calls take it."""
        return int(self._stream)

    def synchronize(self) -> None:
        check(self._cudart, self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def destroy(self) -> None:
        """Destroy the stream (idempotent)."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            check(self._cudart, self._cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")


class HostDeviceBuffer:
    """A page-locked host array paired with a device allocation of the same size."""

    def __init__(self, cudart: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self._cudart = cudart
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        size = max(self.nbytes, 1)
        self._host: int | None = check(cudart, cudart.cudaMallocHost(size), f"cudaMallocHost({size})")
        self._device: int | None = None
        try:
            self._device = check(cudart, cudart.cudaMalloc(size), f"cudaMalloc({size})")
        except CudaError:
            self.free()
            raise
        raw = (ctypes.c_ubyte * size).from_address(int(self._host or 0))
        self.host: np.ndarray = np.frombuffer(memoryview(raw).cast("B"), np.uint8, count=self.nbytes).view(dtype).reshape(shape)

    @property
    def ptr(self) -> int:
        """Device address, as ``set_tensor_address`` wants it."""
        return int(self._device or 0)

    def upload(self, array: np.ndarray, stream: Stream) -> None:
        """Copy ``array`` (cast to the buffer's dtype) to the device, asynchronously on ``stream``."""
        if array.shape != self.host.shape:
            raise Mfv2Error(f"TensorRT input of shape {array.shape} does not fit its buffer {self.host.shape}")
        np.copyto(self.host, array, casting="same_kind")
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self._cudart, self._cudart.cudaMemcpyAsync(self.ptr, self._host, self.nbytes, kind, stream.handle), "cudaMemcpyAsync(host -> device)")

    def download(self, stream: Stream) -> None:
        """Queue the device -> host copy on ``stream`` (read :attr:`host` after synchronising)."""
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self._cudart, self._cudart.cudaMemcpyAsync(self._host, self.ptr, self.nbytes, kind, stream.handle), "cudaMemcpyAsync(device -> host)")

    def free(self) -> None:
        """Free both allocations (idempotent); :attr:`host` must not be used afterwards."""
        if self._device is not None:
            device, self._device = self._device, None
            check(self._cudart, self._cudart.cudaFree(device), "cudaFree")
        if self._host is not None:
            host, self._host = self._host, None
            check(self._cudart, self._cudart.cudaFreeHost(host), "cudaFreeHost")


class CudaGraph:
    """An instantiated CUDA graph, replayed on a stream with :meth:`launch`."""

    def __init__(self, cudart: Any, graph: Any, graph_exec: Any) -> None:
        self._cudart, self._graph, self._exec = cudart, graph, graph_exec

    def launch(self, stream: Stream) -> None:
        check(self._cudart, self._cudart.cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        """Destroy the executable graph, then the graph (idempotent)."""
        if self._exec is not None:
            graph_exec, self._exec = self._exec, None
            check(self._cudart, self._cudart.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")
        if self._graph is not None:
            graph, self._graph = self._graph, None
            check(self._cudart, self._cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")


def capture_graph(cudart: Any, stream: Stream, enqueue: Callable[[], bool]) -> CudaGraph:
    """Capture what ``enqueue`` queues on ``stream`` (thread-local mode) into an instantiated graph.

    The capture is always ended, whatever ``enqueue`` does, so the stream never stays in capture
    mode; on failure the partial graph is destroyed and CUDA's last error is cleared.

    Args:
        enqueue: queues the work, returning False when it could not (``execute_async_v3``'s result).

    Raises:
        CudaError: capture could not begin, ``enqueue`` returned False, ending the capture failed
            (an operation that cannot be captured invalidates it) or instantiation failed.
    """
    mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    try:
        check(cudart, cudart.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture")
    except CudaError:
        cudart.cudaGetLastError()
        raise
    ok = False
    try:
        ok = bool(enqueue())
    finally:
        err, graph = cudart.cudaStreamEndCapture(stream.handle)
        failed = err != cudart.cudaError_t.cudaSuccess or not ok
        if failed:
            if graph is not None and int(graph):
                cudart.cudaGraphDestroy(graph)
            cudart.cudaGetLastError()  # a failed capture leaves an error that would surface in a later call
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"cudaStreamEndCapture failed: {error_text(cudart, err)}")
    if not ok:
        raise CudaError("the enqueue returned False during stream capture (execute_async_v3 could not be captured)")
    try:
        graph_exec = check(cudart, cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
    except CudaError:
        cudart.cudaGraphDestroy(graph)
        cudart.cudaGetLastError()
        raise
    return CudaGraph(cudart, graph, graph_exec)
