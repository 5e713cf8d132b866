"""The TensorRT backend: serialized engines from the export directory, run with the TensorRT 10/11 API.

Every I/O tensor gets one pinned host buffer and one device buffer when the engine is loaded; their
addresses are set on the execution context once (``set_tensor_address``), so a frame is: copy the
search crop host -> device, ``execute_async_v3`` on the session's stream, copy the outputs back,
synchronise once. A bound input (the template KV) is uploaded when bound and stays on the device.
With ``cuda_graph=True`` the first inference is captured into a CUDA graph and replayed afterwards
(addresses never change, so the graph stays valid across template updates).

pycuda provides the CUDA calls, hidden behind :class:`CudaBuffer`; it shares the device's primary
context with TensorRT. Not verified on a GPU by this project's CI (no GPU there): the unit tests drive
the code with fake ``tensorrt``/``pycuda`` modules.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mfv2.errors import ConfigError, Mfv2Error
from mfv2.export.manifest import Artifact, Manifest
from mfv2.runtimes.base import BACKENDS, BaseSession, FileBackend

__all__ = ["TensorRtBackend", "TensorRtSession", "CudaBuffer"]

log = logging.getLogger(__name__)


class CudaBuffer:
    """A page-locked host array paired with a device allocation of the same size."""

    def __init__(self, cuda: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._cuda = cuda
        self.host: np.ndarray = cuda.pagelocked_empty(shape, dtype)
        self.device = cuda.mem_alloc(max(self.host.nbytes, 1))

    @property
    def ptr(self) -> int:
        """Device address, as ``set_tensor_address`` wants it."""
        return int(self.device)

    def upload(self, array: np.ndarray, stream: Any) -> None:
        """Copy ``array`` (cast to the buffer's dtype) to the device, asynchronously on ``stream``."""
        if array.shape != self.host.shape:
            raise Mfv2Error(f"TensorRT input of shape {array.shape} does not fit its buffer {self.host.shape}")
        np.copyto(self.host, array, casting="same_kind")
        self._cuda.memcpy_htod_async(self.device, self.host, stream)

    def download(self, stream: Any) -> None:
        """Queue the device -> host copy on ``stream`` (read :attr:`host` after synchronising)."""
        self._cuda.memcpy_dtoh_async(self.host, self.device, stream)

    def free(self) -> None:
        self.device.free()


class TensorRtSession(BaseSession):
    """One TensorRT engine with buffers allocated once, one stream, optional CUDA-graph replay."""

    def __init__(self, path: str | os.PathLike[str], *, device_id: int = 0, cuda_graph: bool = False) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda = cuda
        cuda.init()
        self._ctx = cuda.Device(device_id).retain_primary_context()  # the context TensorRT uses too
        self._buffers: dict[str, CudaBuffer] = {}
        self._graph_exec: Any = None
        self._use_graph = cuda_graph
        try:
            with self._active():
                self._logger = trt.Logger(trt.Logger.WARNING)
                self._runtime = trt.Runtime(self._logger)
                self._engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
                if self._engine is None:
                    raise ConfigError(
                        f"TensorRT {trt.__version__} cannot load {Path(path).name}: engines are tied to the TensorRT version "
                        "and the GPU; rebuild it with 'mfv2 build-engine'"
                    )
                self._context = self._engine.create_execution_context()
                names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
                inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
                shapes = {n: tuple(self._engine.get_tensor_shape(n)) for n in names}
                dynamic = [n for n, s in shapes.items() if any(d < 0 for d in s)]
                if dynamic:
                    raise ConfigError(f"{Path(path).name} has dynamic shapes ({', '.join(dynamic)}); build the engine from the fixed-shape export")
                for n in names:
                    self._buffers[n] = CudaBuffer(cuda, shapes[n], np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))))
                    self._context.set_tensor_address(n, self._buffers[n].ptr)
                self._stream = cuda.Stream()
        except BaseException:
            self._release()
            raise
        super().__init__(inputs, [n for n in names if n not in inputs], f"cuda:{device_id}",
                         {n: shapes[n] for n in inputs})

    @contextmanager
    def _active(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _bind(self, feeds: Mapping[str, np.ndarray]) -> None:
        with self._active():
            for name, array in feeds.items():
                self._buffers[name].upload(np.asarray(array), self._stream)
            self._stream.synchronize()

    def _execute(self) -> None:
        if not self._use_graph:
            if not self._context.execute_async_v3(self._stream.handle):
                raise Mfv2Error("TensorRT execute_async_v3 failed; see the TensorRT log above")
            return
        if self._graph_exec is None:
            # One plain run first lets TensorRT finish its lazy allocations, which capture cannot record.
            if not self._context.execute_async_v3(self._stream.handle):
                raise Mfv2Error("TensorRT execute_async_v3 failed; see the TensorRT log above")
            self._stream.synchronize()
            self._stream.begin_capture(self._cuda.capture_mode.THREAD_LOCAL)
            self._context.execute_async_v3(self._stream.handle)
            self._graph_exec = self._stream.end_capture().instantiate()
            log.debug("tensorrt: captured a CUDA graph")
        self._graph_exec.launch(self._stream)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._active():
            for name, array in feeds.items():
                self._buffers[name].upload(np.asarray(array), self._stream)
            self._execute()
            for name in self.output_names:
                self._buffers[name].download(self._stream)
            self._stream.synchronize()
            return {n: self._buffers[n].host.copy() for n in self.output_names}

    def _release(self) -> None:
        """Free the device buffers and let go of the CUDA context (idempotent)."""
        if self._ctx is None:
            return
        with self._active():
            for buffer in self._buffers.values():
                buffer.free()
            self._buffers.clear()
            self._graph_exec = self._context = self._engine = None
        self._ctx.detach()
        self._ctx = None

    def close(self) -> None:
        self._release()
        super().close()


@BACKENDS.register("tensorrt")
class TensorRtBackend(FileBackend):
    """TensorRT engines (``*.engine``) listed in an export directory's manifest.

    Options:
        device_id: CUDA device ordinal (default 0).
        cuda_graph: capture the first inference in a CUDA graph and replay it (default False).
    """

    name = "tensorrt"
    module = "tensorrt"
    extra = "tensorrt"
    precisions = ("fp32", "fp16", "bf16", "int8")
    formats: ClassVar[tuple[str, ...]] = ("tensorrt",)

    def __init__(self, *, precision: str = "fp32", threads: int | None = None, device_id: int = 0,
                 cuda_graph: bool = False) -> None:
        super().__init__(precision=precision, threads=threads)
        self.device_id = device_id
        self.cuda_graph = cuda_graph

    @classmethod
    def is_available(cls) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "pycuda"))

    def missing_hint(self, directory: Path) -> str:
        flag = "" if self.precision == "fp32" else f" --{self.precision}"
        return f"build engines on this GPU with: mfv2 build-engine {directory}{flag}"

    def discover(self, directory: Path, manifest: Manifest) -> Manifest:
        """Add engines that 'mfv2 build-engine' wrote beside the manifest (``model.engine``, ...) but did not list."""
        from mfv2.export.formats import GRAPH_STEMS, artifact_name

        found = copy.deepcopy(manifest)
        for graph in GRAPH_STEMS:
            name = artifact_name(graph, self.precision, "tensorrt")
            if (directory / name).is_file() and found.find(graph, self.precision, "tensorrt") is None:
                found.add(Artifact(file=name, graph=graph, precision=self.precision, format="tensorrt"))
        return found

    def open(self, path: Path, artifact: Artifact, manifest: Manifest) -> TensorRtSession:
        import tensorrt as trt

        from mfv2.export.tensorrt import check_engine_compatible, environment, read_sidecar

        check_engine_compatible(read_sidecar(path), environment(trt), path.parent)
        return TensorRtSession(path, device_id=self.device_id, cuda_graph=self.cuda_graph)
