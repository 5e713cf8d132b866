"""The TensorRT backend: serialized engines from the export directory, run with the TensorRT 10/11 API.

Every I/O tensor gets one pinned host buffer and one device buffer when the engine is loaded; their
addresses are set on the execution context once (``set_tensor_address``), so a frame is: copy the
search crop host -> device, ``execute_async_v3`` on the session's stream, copy the outputs back,
synchronise once. A bound input (the template KV) is uploaded when bound and stays on the device.

Template keys/values never leave the GPU: an output the runner keeps on the device (the encoder's
``kv``) is returned as a :class:`TensorRtDeviceValue` naming its device buffer, and a session of the
same device binds that value by pointing its input's tensor address at the same buffer (no copy,
no host round trip). :meth:`TensorRtSession.write_rows` rewrites some batch rows of a bound input in
its device buffer (one ``cudaMemcpy2DAsync`` per run of rows, device to device from a kept output,
or host to device through the pinned buffer), so a fixed-batch engine serves a
:class:`~mfv2.tracking.MultiTracker`.

With ``cuda_graph=True`` the first inference runs plainly (TensorRT finishes its lazy work there),
then the same enqueue is captured into a CUDA graph (thread-local capture mode) that every later
inference replays; addresses never change, so the graph stays valid across template updates. A
capture that fails (an engine TensorRT cannot capture, a CUDA error) is ended, logged with one
warning, and the session goes on with plain enqueues.

CUDA calls go through cuda-python (:mod:`mfv2._cuda`), on the device's primary context,
which TensorRT shares. On close the stream is synchronised, the graph destroyed, TensorRT's context
and engine released, then the buffers and the stream. Not verified on real hardware (no GPU in
this project's CI), the device-resident KV and the row writes included: the unit tests drive the
code with fake ``tensorrt`` and cuda-python modules whose names are checked against the real packages.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mfv2._tensorrt import environment, trt_logger
from mfv2.artifacts import FORMATS, GRAPH_STEMS, Artifact, Manifest, artifact_name, check_engine_compatible, read_sidecar
from mfv2.errors import ConfigError, Mfv2Error, ShapeError
from mfv2.runtimes.base import BACKENDS, BaseSession, DeviceValue, FileBackend
from mfv2._cuda import CudaError, CudaGraph, HostDeviceBuffer, Stream, capture_graph, check, import_cudart

__all__ = ["TensorRtBackend", "TensorRtSession", "TensorRtDeviceValue"]

log = logging.getLogger(__name__)


class TensorRtDeviceValue(DeviceValue):
    """An output left in its :class:`TensorRtSession`'s device buffer, valid until that session's next run."""

    def __init__(self, buffer: HostDeviceBuffer, session: TensorRtSession) -> None:
        self.buffer = buffer
        self.session = session

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.buffer.host.shape)

    @property
    def device(self) -> str:
        return self.session.device

    def numpy(self) -> np.ndarray:
        """A host copy (device -> host on the owning session's stream)."""
        self.session._select_device()
        self.buffer.download(self.session.stream)
        self.session.stream.synchronize()
        return self.buffer.host.copy()


def _runs(dst: Sequence[int], src: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first destination row, first source row, count) of the runs where both row lists count up by one."""
    out: list[tuple[int, int, int]] = []
    for d, s in zip(dst, src):
        if out and d == out[-1][0] + out[-1][2] and s == out[-1][1] + out[-1][2]:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + 1)
        else:
            out.append((d, s, 1))
    return out


class TensorRtSession(BaseSession):
    """One TensorRT engine with buffers allocated once, one stream, optional CUDA-graph replay."""

    def __init__(self, path: str | os.PathLike[str], *, device_id: int = 0, cuda_graph: bool = False) -> None:
        import tensorrt as trt


        self._cudart = import_cudart()
        self._device_id = device_id
        self._name = Path(path).name
        self._buffers: dict[str, HostDeviceBuffer] = {}
        self._addresses: dict[str, int] = {}  # the device address each tensor is set to now
        self._shared: dict[str, TensorRtDeviceValue] = {}  # inputs bound to another session's output buffer
        self._stream: Stream | None = None
        self._graph: CudaGraph | None = None
        self._use_graph = cuda_graph
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        try:
            self._select_device()
            self._runtime = trt.Runtime(trt_logger(trt))
            self._engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
            if self._engine is None:
                raise ConfigError(
                    f"TensorRT {trt.__version__} cannot load {self._name}: engines are tied to the TensorRT version "
                    "and the GPU; rebuild it with 'mfv2 build-engine'"
                )
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise Mfv2Error(f"TensorRT could not create an execution context for {self._name} (out of GPU memory?)")
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            shapes = {n: tuple(self._engine.get_tensor_shape(n)) for n in names}
            dynamic = [n for n, s in shapes.items() if any(d < 0 for d in s)]
            if dynamic:
                raise ConfigError(f"{self._name} has dynamic shapes ({', '.join(dynamic)}); build the engine from the fixed-shape export")
            for n in names:
                self._buffers[n] = HostDeviceBuffer(self._cudart, shapes[n], np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))))
                self._point(n, self._buffers[n].ptr)
            self._stream = Stream(self._cudart)
        except BaseException:
            self._release()
            raise
        super().__init__(inputs, [n for n in names if n not in inputs], f"cuda:{device_id}",
                         {n: shapes[n] for n in inputs})

    def _select_device(self) -> None:
        # The runtime API's current device is per thread: select it wherever the session is used.
        check(self._cudart, self._cudart.cudaSetDevice(self._device_id), f"cudaSetDevice({self._device_id})")

    @property
    def stream(self) -> Stream:
        if self._stream is None:
            raise Mfv2Error(f"the TensorRT session of {self._name} is closed")
        return self._stream

    def _point(self, name: str, ptr: int) -> None:
        """Set the device address of tensor ``name``; a captured CUDA graph holds the old one, so it goes."""
        if self._addresses.get(name) == ptr:
            return
        if not self._context.set_tensor_address(name, ptr):
            raise Mfv2Error(f"TensorRT refused the device address of {name} in {self._name}")
        self._addresses[name] = ptr
        graph, self._graph = self._graph, None
        if graph is not None:  # captured again on the next run
            graph.destroy()

    def _bind(self, feeds: Mapping[str, Any]) -> None:
        self._select_device()
        for name, value in feeds.items():
            if self._fits(value, self._buffers[name], 0) and value.shape == self._buffers[name].host.shape:
                self._point(name, value.buffer.ptr)  # the encoder's output buffer itself: no copy
                self._shared[name] = value
            else:
                self._buffers[name].upload(np.asarray(value), self.stream)
                self._point(name, self._buffers[name].ptr)
                self._shared.pop(name, None)
        self.stream.synchronize()

    def write_rows(self, name: str, axis: int, rows: Sequence[int], value: Any, source: Sequence[int] | None = None) -> None:
        """Overwrite rows ``rows`` along ``axis`` of the bound input ``name`` with rows ``source`` of ``value``
        (default all of them, in order), in the device buffer the engine reads.

        A :class:`TensorRtDeviceValue` of this device is copied device to device; anything else goes
        host to device through the pinned buffer, only the rows that change. Engines have fixed
        shapes, so every row must lie inside the batch. Unverified on real hardware.
        """
        buf = self._buffers[name]
        shape = buf.host.shape
        src = list(range(len(rows))) if source is None else [int(r) for r in source]
        rows = [int(r) for r in rows]
        if len(src) != len(rows) or not rows or max(rows) >= shape[axis] or min(rows) < 0:
            raise ShapeError(f"rows {rows} of {name} in {self._name}: an engine's batch is fixed at {shape[axis]}")
        self._select_device()
        self._own(name)
        inner = int(np.prod(shape[axis + 1:], dtype=np.int64)) * buf.host.itemsize  # bytes of one row of one slice
        kinds = self._cudart.cudaMemcpyKind
        if self._fits(value, buf, axis):
            src_ptr, src_rows, kind, what = value.buffer.ptr, value.shape[axis], kinds.cudaMemcpyDeviceToDevice, "device -> device"
        else:
            v = np.asarray(value)
            if v.ndim != len(shape) or v.shape[:axis] != shape[:axis] or v.shape[axis + 1:] != shape[axis + 1:]:
                raise ShapeError(f"rows of shape {v.shape} do not fit {name} {shape} in {self._name} (batch axis {axis})")
            buf.host[(slice(None),) * axis + (rows,)] = np.take(v, src, axis=axis)  # staged at their own rows
            src_ptr, src_rows, kind, what = buf.host.ctypes.data, shape[axis], kinds.cudaMemcpyHostToDevice, "host -> device"
            src = rows
        height = int(np.prod(shape[:axis], dtype=np.int64))
        for d, s, count in _runs(rows, src):
            check(self._cudart, self._cudart.cudaMemcpy2DAsync(
                buf.ptr + d * inner, shape[axis] * inner, src_ptr + s * inner, src_rows * inner,
                count * inner, height, kind, self.stream.handle), f"cudaMemcpy2DAsync({what})")  # fmt: skip
        self.stream.synchronize()

    def _fits(self, value: Any, buf: HostDeviceBuffer, axis: int) -> bool:
        """True if ``value`` is a TensorRT output on this device whose rows can be copied into ``buf`` as they are."""
        shape = buf.host.shape
        return (isinstance(value, TensorRtDeviceValue) and value.device == self.device and value.buffer.host.dtype == buf.host.dtype
                and value.shape[:axis] == shape[:axis] and value.shape[axis + 1:] == shape[axis + 1:])  # fmt: skip

    def _own(self, name: str) -> None:
        """Copy an input bound to another session's buffer into this session's own buffer (device to device)."""
        shared = self._shared.pop(name, None)
        if shared is None:
            return
        buf = self._buffers[name]
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        check(self._cudart, self._cudart.cudaMemcpyAsync(buf.ptr, shared.buffer.ptr, buf.nbytes, kind, self.stream.handle),
              "cudaMemcpyAsync(device -> device)")  # fmt: skip
        self._point(name, buf.ptr)

    def _enqueue(self) -> bool:
        return bool(self._context.execute_async_v3(self.stream.handle))

    def _execute(self) -> None:
        if self._graph is not None:
            self._graph.launch(self.stream)
            return
        if not self._enqueue():
            raise Mfv2Error("TensorRT execute_async_v3 failed; see the TensorRT log above")
        if not self._use_graph:
            return
        # The plain run above did this frame's work (and TensorRT's lazy allocations, which capture
        # cannot record); capture the same enqueue for the next frames once it has finished.
        self.stream.synchronize()
        try:
            self._graph = capture_graph(self._cudart, self.stream, self._enqueue)
        except CudaError as e:
            self._use_graph = False
            log.warning("tensorrt: %s cannot be replayed as a CUDA graph (%s); running plain enqueues", self._name, e)
        else:
            log.debug("tensorrt: captured %s in a CUDA graph", self._name)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        self._select_device()
        for name, array in feeds.items():
            self._buffers[name].upload(np.asarray(array), self.stream)
        self._execute()
        for name in self.output_names:
            if name not in self._keep:
                self._buffers[name].download(self.stream)
        self.stream.synchronize()  # kept outputs are complete too, for a session on another stream
        return {n: TensorRtDeviceValue(self._buffers[n], self) if n in self._keep else self._buffers[n].host.copy()
                for n in self.output_names}  # fmt: skip

    def _release(self) -> None:
        """Finish queued work, then free in dependency order: graph, TensorRT objects, buffers, stream (idempotent)."""
        steps = [
            ("synchronise", self._stream.synchronize if self._stream else None),
            ("destroy the CUDA graph", self._graph.destroy if self._graph else None),
        ]
        for what, step in steps:
            self._quietly(what, step)
        self._graph = None
        self._context = self._engine = self._runtime = None  # TensorRT frees them on the last reference
        self._shared.clear()
        for buffer in self._buffers.values():
            self._quietly("free a buffer", buffer.free)
        self._buffers.clear()
        if self._stream is not None:
            self._quietly("destroy the stream", self._stream.destroy)
            self._stream = None

    @staticmethod
    def _quietly(what: str, step: Any) -> None:
        # Release goes on after a failed step, so one CUDA error does not leak everything after it.
        if step is None:
            return
        try:
            step()
        except CudaError as e:
            log.warning("tensorrt: could not %s on close: %s", what, e)

    def close(self) -> None:
        self._release()
        super().close()


def _cuda_python_found() -> bool:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except ImportError:  # no ``cuda`` package at all
            return False
    return False


@BACKENDS.register("tensorrt")
class TensorRtBackend(FileBackend):
    """TensorRT engines (``*.engine``) listed in an export directory's manifest.

    Options:
        device_id: CUDA device ordinal (default 0, after ``CUDA_VISIBLE_DEVICES``).
        cuda_graph: replay each engine's enqueue as a CUDA graph after the first inference (default False).
    """

    name = "tensorrt"
    module = "tensorrt"
    extra = "tensorrt"
    precisions = FORMATS.get("tensorrt").precisions
    formats: ClassVar[tuple[str, ...]] = ("tensorrt",)

    def __init__(self, *, precision: str = "fp32", threads: int | None = None, device_id: int = 0,
                 cuda_graph: bool = False) -> None:
        super().__init__(precision=precision, threads=threads)
        self.device_id = device_id
        self.cuda_graph = cuda_graph

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("tensorrt") is not None and _cuda_python_found()

    def missing_hint(self, directory: Path) -> str:
        flag = "" if self.precision == "fp32" else f" --{self.precision}"
        return f"build engines on this GPU with: mfv2 build-engine {directory}{flag}"

    def discover(self, directory: Path, manifest: Manifest) -> Manifest:
        """Add engines that 'mfv2 build-engine' wrote beside the manifest (``model.engine``, ...) but did not list."""
        found = copy.deepcopy(manifest)
        for graph in GRAPH_STEMS:
            name = artifact_name(graph, self.precision, "tensorrt")
            if (directory / name).is_file() and found.find(graph, self.precision, "tensorrt") is None:
                found.add(Artifact(file=name, graph=graph, precision=self.precision, format="tensorrt"))
        return found

    def open(self, path: Path, artifact: Artifact, manifest: Manifest) -> TensorRtSession:
        import tensorrt as trt

        from mfv2._cuda import device_info

        check_engine_compatible(read_sidecar(path), environment(trt, device_info(self.device_id)), path.parent)
        return TensorRtSession(path, device_id=self.device_id, cuda_graph=self.cuda_graph)
