"""Fake ``tensorrt`` and cuda-python (``cuda.bindings.runtime``) modules that behave as the real ones do.

Every public name here is one the real packages have (``tests/runtimes/test_tensorrt_fakes.py`` checks them
against the TensorRT bindings wheel and an imported cuda-python). The fakes fail where the real
calls can fail: every CUDA call returns ``(cudaError_t, *values)`` and any of them can be told to
fail (``FakeCudart.fail``); synchronising a capturing stream invalidates the capture, as CUDA does;
``execute_async_v3`` returns False when told to or when its stream is not a live stream. Device and
pinned memory are real (ctypes) buffers, so the buffer code runs as it would on a GPU.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import types
import weakref
from collections import Counter
from typing import Any

import numpy as np


class cudaError_t(enum.IntEnum):  # noqa: N801 - the real names
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


class cudaStreamCaptureMode(enum.IntEnum):  # noqa: N801
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaUUID_t:  # noqa: N801
    def __init__(self, raw: bytes = b"") -> None:
        self.bytes = raw


class cudaDeviceProp:  # noqa: N801
    def __init__(self, name: bytes, major: int, minor: int, total: int, uuid: bytes) -> None:
        self.name, self.major, self.minor, self.totalGlobalMem, self.uuid = name, major, minor, total, cudaUUID_t(uuid)


OK = cudaError_t.cudaSuccess
# Calls that return ``(error, value)``; the others return ``(error,)``.
VALUE_CALLS = frozenset(
    "cudaGetErrorName cudaGetErrorString cudaGetDeviceCount cudaGetDeviceProperties cudaRuntimeGetVersion "
    "cudaDriverGetVersion cudaStreamCreateWithFlags cudaMallocHost cudaMalloc cudaStreamEndCapture cudaGraphInstantiate".split()
)
CUDART_NAMES = (
    "cudaGetErrorName cudaGetErrorString cudaGetDeviceCount cudaGetDeviceProperties cudaRuntimeGetVersion "
    "cudaDriverGetVersion cudaSetDevice cudaStreamCreateWithFlags cudaStreamSynchronize cudaStreamDestroy "
    "cudaMallocHost cudaMalloc cudaFree cudaFreeHost cudaMemcpyAsync cudaStreamBeginCapture cudaStreamEndCapture "
    "cudaGraphInstantiate cudaGraphLaunch cudaGraphExecDestroy cudaGraphDestroy cudaGetLastError"
).split()


class FakeCudart(types.ModuleType):
    """``cuda.bindings.runtime`` on a pretend GPU; ``events`` logs what happened, in order."""

    cudaError_t = cudaError_t
    cudaStreamCaptureMode = cudaStreamCaptureMode
    cudaMemcpyKind = cudaMemcpyKind
    cudaDeviceProp = cudaDeviceProp
    cudaUUID_t = cudaUUID_t
    cudaStreamNonBlocking = 1

    def __init__(self, *, devices: tuple[tuple[str, int, int], ...] = (("Fake GPU", 8, 9),), runtime: int = 12090,
                 driver: int = 13000) -> None:
        super().__init__("cuda.bindings.runtime")
        self.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings.runtime", None)
        self.devices, self.runtime, self.driver = devices, runtime, driver
        self.fail: dict[str, cudaError_t] = {}  # function name -> the error it returns
        self.calls: Counter[str] = Counter()
        self.events: list[str] = []
        self.current = 0
        self.last_error = OK
        self.device: dict[int, ctypes.Array[ctypes.c_ubyte]] = {}
        self.host: dict[int, ctypes.Array[ctypes.c_ubyte]] = {}
        self.streams: dict[int, list[Any] | None] = {}  # handle -> captured ops while capturing, else None
        self.capture_modes: list[int] = []
        self.graphs: dict[int, list[Any]] = {}
        self.execs: dict[int, list[Any]] = {}
        self._next = 0x10
        for name in CUDART_NAMES:
            setattr(self, name, self._wrap(name, getattr(self, "_" + name)))

    def _wrap(self, name: str, fn: Any) -> Any:
        def call(*args: Any) -> tuple[Any, ...]:
            self.calls[name] += 1
            if name in self.fail:
                self.last_error = self.fail[name]
                return (self.fail[name],) + ((None,) if name in VALUE_CALLS else ())
            return fn(*args)

        call.__name__ = name
        return call

    def _handle(self) -> int:
        self._next += 1
        return self._next

    # errors and devices
    def _cudaGetErrorName(self, err: Any) -> tuple[Any, Any]:
        return OK, cudaError_t(err).name.encode()

    def _cudaGetErrorString(self, err: Any) -> tuple[Any, Any]:
        return OK, f"fake description of {cudaError_t(err).name}".encode()

    def _cudaGetLastError(self) -> tuple[Any]:
        err, self.last_error = self.last_error, OK
        return (err,)

    def _cudaGetDeviceCount(self) -> tuple[Any, Any]:
        return OK, len(self.devices)

    def _cudaGetDeviceProperties(self, ordinal: int) -> tuple[Any, Any]:
        if not 0 <= ordinal < len(self.devices):
            return cudaError_t.cudaErrorInvalidDevice, None
        name, major, minor = self.devices[ordinal]
        return OK, cudaDeviceProp(name.encode() + b"\0" * 3, major, minor, (16 << 30) + 123, bytes(range(ordinal, ordinal + 16)))

    def _cudaRuntimeGetVersion(self) -> tuple[Any, Any]:
        return OK, self.runtime

    def _cudaDriverGetVersion(self) -> tuple[Any, Any]:
        return OK, self.driver

    def _cudaSetDevice(self, ordinal: int) -> tuple[Any]:
        if not 0 <= ordinal < len(self.devices):
            return (cudaError_t.cudaErrorInvalidDevice,)
        self.current = ordinal
        return (OK,)

    # streams
    def _cudaStreamCreateWithFlags(self, flags: int) -> tuple[Any, Any]:
        h = self._handle()
        self.streams[h] = None
        return OK, h

    def _cudaStreamSynchronize(self, stream: int) -> tuple[Any]:
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidValue,)
        if self.streams[int(stream)] is not None:  # CUDA invalidates a capture that synchronises
            self.streams[int(stream)] = ["invalidated"]
            return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
        return (OK,)

    def _cudaStreamDestroy(self, stream: int) -> tuple[Any]:
        self.events.append("stream destroyed")
        return (OK,) if self.streams.pop(int(stream), "gone") != "gone" else (cudaError_t.cudaErrorInvalidValue,)

    def capturing(self, stream: int) -> bool:
        return self.streams.get(int(stream)) is not None

    def record(self, stream: int, op: Any) -> bool:
        """Run ``op`` now, or record it if ``stream`` captures; False for a stream that does not exist."""
        if int(stream) not in self.streams:
            return False
        ops = self.streams[int(stream)]
        if ops is None:
            op()
        else:
            ops.append(op)
        return True

    # memory
    def _alloc(self, table: dict[int, Any], size: int, what: str) -> tuple[Any, Any]:
        buf = (ctypes.c_ubyte * size)()
        table[ctypes.addressof(buf)] = buf
        self.events.append(f"{what} {size}")
        return OK, ctypes.addressof(buf)

    def _cudaMallocHost(self, size: int) -> tuple[Any, Any]:
        return self._alloc(self.host, size, "malloc host")

    def _cudaMalloc(self, size: int) -> tuple[Any, Any]:
        return self._alloc(self.device, size, "malloc device")

    def _cudaFree(self, ptr: int) -> tuple[Any]:
        self.events.append("free device")
        return (OK,) if self.device.pop(int(ptr), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def _cudaFreeHost(self, ptr: int) -> tuple[Any]:
        self.events.append("free host")
        return (OK,) if self.host.pop(int(ptr), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def _cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: int) -> tuple[Any]:
        to, frm = (self.device, self.host) if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else (self.host, self.device)
        if int(dst) not in to or int(src) not in frm or kind not in (1, 2):
            return (cudaError_t.cudaErrorInvalidValue,)
        ok = self.record(stream, lambda: ctypes.memmove(int(dst), int(src), count))
        return (OK,) if ok else (cudaError_t.cudaErrorInvalidValue,)

    def view(self, ptr: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        """Device memory at ``ptr`` as an array (what a kernel would see)."""
        return np.frombuffer(memoryview(self.device[int(ptr)]).cast("B"), np.uint8).view(dtype)[: int(np.prod(shape))].reshape(shape)

    # capture and graphs
    def _cudaStreamBeginCapture(self, stream: int, mode: Any) -> tuple[Any]:
        if int(stream) not in self.streams or self.capturing(stream):
            return (cudaError_t.cudaErrorInvalidValue,)
        self.capture_modes.append(int(mode))
        self.streams[int(stream)] = []
        return (OK,)

    def _cudaStreamEndCapture(self, stream: int) -> tuple[Any, Any]:
        if not self.capturing(stream):
            return cudaError_t.cudaErrorInvalidValue, None
        ops, self.streams[int(stream)] = self.streams[int(stream)], None
        if "invalidated" in (ops or []):
            return cudaError_t.cudaErrorStreamCaptureInvalidated, None
        h = self._handle()
        self.graphs[h] = list(ops or [])
        return OK, h

    def _cudaGraphInstantiate(self, graph: int, flags: int) -> tuple[Any, Any]:
        if int(graph) not in self.graphs:
            return cudaError_t.cudaErrorInvalidValue, None
        h = self._handle()
        self.execs[h] = self.graphs[int(graph)]
        return OK, h

    def _cudaGraphLaunch(self, graph_exec: int, stream: int) -> tuple[Any]:
        if int(graph_exec) not in self.execs:
            return (cudaError_t.cudaErrorInvalidValue,)
        self.events.append("graph launch")
        for op in self.execs[int(graph_exec)]:
            self.record(stream, op)
        return (OK,)

    def _cudaGraphExecDestroy(self, graph_exec: int) -> tuple[Any]:
        self.events.append("graph exec destroyed")
        return (OK,) if self.execs.pop(int(graph_exec), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def _cudaGraphDestroy(self, graph: int) -> tuple[Any]:
        self.events.append("graph destroyed")
        return (OK,) if self.graphs.pop(int(graph), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def leaks(self) -> dict[str, int]:
        """What is still allocated or open (all zero after a clean close)."""
        return {"device": len(self.device), "host": len(self.host), "streams": len(self.streams),
                "graphs": len(self.graphs), "execs": len(self.execs)}


def fake_tensorrt(cudart: FakeCudart, version: str = "10.13.3.9", *, bf16: bool = True) -> types.ModuleType:
    """The ``tensorrt`` module: runtime (engines described as JSON) and builder (recording its calls)."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    trt.calls = []  # builder calls, in order
    trt.loggers = []
    trt.execute_ok = True
    trt.released = []  # execution contexts garbage-collected, with cudart's state at that moment

    class DataType(enum.IntEnum):
        FLOAT = 0
        HALF = 1

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            trt.loggers.append(self)

        def log(self, severity: Any, msg: str) -> None:
            raise NotImplementedError

    ILogger.Severity = Severity  # type: ignore[attr-defined]

    def nptype(dtype: Any) -> Any:
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[dtype]

    class ICudaEngine:
        def __init__(self, spec: dict[str, Any]) -> None:
            self.io = {k: (TensorIOMode[mode.upper()], tuple(shape)) for k, (mode, shape) in spec["io"].items()}
            self.names = list(self.io)
            self.num_io_tensors = len(self.names)
            self.graph = spec["graph"]
            self.capturable = spec.get("capturable", True)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> Any:
            return self.io[name][0]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.io[name][1]

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType.FLOAT

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine, self.addresses = engine, {}
            weakref.finalize(self, lambda: trt.released.append(dict(cudart.leaks())))

        def set_tensor_address(self, name: str, memory: int) -> bool:
            cudart.calls["set_tensor_address"] += 1
            if int(memory) not in cudart.device:
                return False
            self.addresses[name] = int(memory)
            return True

        def _tensor(self, name: str) -> np.ndarray:
            return cudart.view(self.addresses[name], self.engine.io[name][1])

        def _compute(self) -> None:
            cudart.calls["execute"] += 1
            if self.engine.graph == "template_encoder":
                self._tensor("kv")[...] = self._tensor("template").mean() + 10 * self._tensor("online_template").mean()
            else:
                self._tensor("boxes")[...] = [[self._tensor("search").mean(), self._tensor("kv").mean(), 0.25, 0.5]]
                self._tensor("score")[...] = 0.75

        def execute_async_v3(self, stream_handle: int) -> bool:
            cudart.calls["enqueue"] += 1
            if not trt.execute_ok or (cudart.capturing(stream_handle) and not self.engine.capturable):
                return False
            return cudart.record(stream_handle, self._compute)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            trt.calls.append(("runtime logger", logger))

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            try:
                return ICudaEngine(json.loads(serialized_engine))
            except ValueError:
                return None

    # builder side
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(TF32="tf32", **({"BF16": "bf16"} if bf16 else {}))
    trt.parse_ok, trt.plan = True, b"\x00PLAN\x01"

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data + b"+tuned"

    class IBuilderConfig:
        def set_memory_pool_limit(self, pool: str, pool_size: int) -> None:
            trt.calls.append(("pool", pool, pool_size))

        def clear_flag(self, flag: str) -> None:
            trt.calls.append(("clear", flag))

        def set_flag(self, flag: str) -> None:
            trt.calls.append(("set", flag))

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            trt.calls.append(("cache", bytes(serialized_timing_cache)))
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            return True

    class Builder:
        def __init__(self, logger: Any) -> None:
            trt.calls.append(("builder logger", logger, cudart.current))

        def create_network(self, flags: int) -> str:
            trt.calls.append(("network", flags))
            return "network"

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def build_serialized_network(self, network: str, config: IBuilderConfig) -> bytes | None:
            return trt.plan

    class OnnxParser:
        num_errors = 1

        def __init__(self, network: str, logger: Any) -> None:
            pass

        def parse_from_file(self, model: str) -> bool:
            trt.calls.append(("parse", model))
            return bool(trt.parse_ok)

        def get_error(self, index: int) -> str:
            return "unsupported node Foo"

    for obj in (DataType, TensorIOMode, ILogger, nptype, Runtime, Builder, OnnxParser):
        setattr(trt, obj.__name__, obj)
    # Classes the module does not export under these names but whose objects the API returns.
    trt.RETURNED_TYPES = (ICudaEngine, IExecutionContext, IBuilderConfig, ITimingCache)
    return trt


def fake_cuda_package(cudart: FakeCudart) -> dict[str, types.ModuleType]:
    """``sys.modules`` entries making ``from cuda.bindings import runtime`` return ``cudart``."""
    cuda = types.ModuleType("cuda")
    cuda.__spec__ = importlib.machinery.ModuleSpec("cuda", None, is_package=True)
    cuda.__path__ = []
    bindings = types.ModuleType("cuda.bindings")
    bindings.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings", None, is_package=True)
    bindings.__path__ = []
    bindings.runtime = cudart
    cuda.bindings = bindings
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": cudart}
